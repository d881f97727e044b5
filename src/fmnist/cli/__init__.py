"""The `fmnist` command: one module per group of subcommands, and main() that runs them."""

from fmnist.cli.main import main

__all__ = ["main"]
