"""The one error type for mistakes a user can cause; the CLI turns it into one stderr line."""


class FmnistError(Exception):
    """A failure the user can act on (bad data, bad file, bad run folder). Exit code 1."""

    exit_code = 1


class UsageError(FmnistError):
    """A bad command line or config value. Exit code 2, like argparse."""

    exit_code = 2
