"""User-facing errors: one line that names the problem and the fix.

The CLI prints ``SolError`` messages without a traceback; everything else is a bug.
"""


class SolError(Exception):
    """A problem the user can fix; ``str(err)`` is one line that says how."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))


class ConflictError(SolError):
    """Two techniques write the same exclusive seam, or one needs a capability the model lacks."""
