"""The one error type for user mistakes.

A :class:`CompressError` carries a one-line message that says what was wrong and what to do.
The CLI prints that line and exits with code 2; anything else that escapes is a bug and keeps
its traceback.
"""


class CompressError(Exception):
    """A user error: bad input, an unreachable budget, a missing runtime."""
