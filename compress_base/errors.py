"""The one error type for user mistakes.

A :class:`CompressError` carries a one-line message that says what was wrong and what to do.
The CLI prints that line and exits with code 2; anything else that escapes is a bug and keeps
its traceback.
"""


class CompressError(Exception):
    """A user error: bad input, an unreachable budget, a missing runtime."""


def first_line(exc_or_text) -> str:
    """The first line of an exception's message (or of a text), for a one-line error; an exception
    without a message gives its type name."""
    lines = str(exc_or_text).strip().splitlines()
    if lines:
        return lines[0]
    return type(exc_or_text).__name__ if isinstance(exc_or_text, BaseException) else ""
