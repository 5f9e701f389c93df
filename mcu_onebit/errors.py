"""The one user-facing error type. The CLI prints its message on one line and exits with
its `exit_code`: 2 for a mistake, 130 for an interruption."""


class OnebitError(Exception):
    """A problem the user can fix: the message names it and says what to do."""

    exit_code = 2


class Interrupted(OnebitError):
    """Ctrl-C: the message says what was kept and how to go on."""

    exit_code = 130
