"""The one user-facing error type. The CLI prints its message on one line and exits 2."""


class OnebitError(Exception):
    """A problem the user can fix: the message names it and says what to do."""
