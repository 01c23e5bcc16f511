"""Errors a user can cause: said in one line that names the field and the fix, exit code 2."""


class UserError(Exception):
    """Bad input from the user; the CLI prints the message and exits with code 2."""
