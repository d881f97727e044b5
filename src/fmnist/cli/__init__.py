"""The `fmnist` command: one module per group of subcommands, and main() that runs them."""

from fmnist.cli.main import main, run

__all__ = ["main", "run"]
