"""Exceptions gpu4d raises for problems the user can fix.

The CLI prints these as one line and exits non-zero, without a traceback.
"""


class Gpu4dError(Exception):
    """Base class of every error that is the user's to fix."""


class InputError(Gpu4dError, ValueError):
    """Bad input data, file or argument; the message names which and what is wrong."""


class BackendUnavailable(Gpu4dError, RuntimeError):
    """The requested backend cannot run on this machine; the message says what is missing."""


class OutputError(Gpu4dError, OSError):
    """The results cannot be written where asked."""


class Gpu4dWarning(UserWarning):
    """Something the user should know that does not stop the run (the CLI prints one line)."""
