"""The one error type the CLI turns into a single line on stderr and exit code 2."""


class UserError(Exception):
    """Bad input or a missing prerequisite: the message says what is wrong and how to fix it."""
