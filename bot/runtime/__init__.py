"""Runtimes: the CI job, the webhook server with its durable queue, the poller."""
