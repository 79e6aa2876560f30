"""One exception type for every user-facing problem: the CLI prints its message on one line and exits 2."""


class DiffusiaError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""
