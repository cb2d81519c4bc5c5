"""User errors of the RRM commands (also ValueErrors): the CLI prints their one-line message, exit code 2."""
from editkit.errors import UserError as CoreUserError


class UserError(CoreUserError, ValueError):
    pass
