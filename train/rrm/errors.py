"""User errors of the RRM commands: the CLI prints their one-line message and exits with code 2."""


class UserError(ValueError):
    pass
