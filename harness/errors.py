"""Errors a user can act on.

The CLI prints a :class:`UserError` as one line (no traceback) and exits with status 2, so every
message must name the file, field or value at fault and, where there is one, the fix.
"""


class UserError(Exception):
    """Bad input or a bad request: shown to the user as a single line."""
