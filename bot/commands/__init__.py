"""Entry points (one module per subcommand)."""
