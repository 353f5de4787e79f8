"""Errors that the CLI turns into one line and exit code 2 (bad input) or 1 (check failed)."""


class UserError(Exception):
    """Bad input from the user: a missing file, an unknown name, a malformed option.

    The CLI prints ``error: <message>`` on one line and exits with code 2.
    """


class ValidationFailed(Exception):
    """A numerical or lint check ran and failed; the CLI exits with code 1."""
