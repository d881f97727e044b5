"""The one error type for mistakes a user can cause; the CLI turns it into one stderr line."""


class FmnistError(Exception):
    """A failure the user can act on (bad data, bad file, bad run folder). Exit code 1."""

    exit_code = 1


class UsageError(FmnistError):
    """A bad command line or config value. Exit code 2, like argparse. `command`: the (sub)command
    whose line it was, for the message's prefix ("fmnist train: error: ...")."""

    exit_code = 2

    def __init__(self, message: str, command: str = ""):
        super().__init__(message)
        self.command = command
