"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (a name, a budget, a path, a configuration): the message says how to fix it."""


class ConfigError(UserError, ValueError):
    """A configuration that does not fit its search space (unknown name, out of bounds, wrong type)."""


class DataError(UserError):
    """A data file that is missing or corrupt; the message names the file and how to get it."""


class Interrupted(BaseException):
    """A signal (SIGTERM, SIGHUP) asked the process to stop; raised where it lands, like ``KeyboardInterrupt``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
