"""Errors a user can act on.

The CLI prints a :class:`UserError` as one line (no traceback) and exits with status 2, so every
message must name the file, field or value at fault and, where there is one, the fix.
"""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when it has none): for one-line errors."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class UserError(Exception):
    """Bad input or a bad request: shown to the user as a single line."""


class RunStopped(Exception):
    """A run that stopped on a failure outside its input (Ray lost nodes more often than it may
    resume after) with everything it finished stored: one line, status 1, and a rerun resumes."""
