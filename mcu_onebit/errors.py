"""The one user-facing error type. The CLI prints its message on one line and exits with
its `exit_code`: 2 for a mistake, 130 for an interruption, 1 for a multi-process run that
lost a process."""


class OnebitError(Exception):
    """A problem the user can fix: the message names it and says what to do."""

    exit_code = 2


class Interrupted(OnebitError):
    """Ctrl-C: the message says what was kept and how to go on."""

    exit_code = 130


class ClusterFailure(OnebitError):
    """A multi-process run stopped because a process failed: the message says what was kept."""

    exit_code = 1
