"""Forge adapters (GitLab, GitHub, local git) behind one small interface."""
