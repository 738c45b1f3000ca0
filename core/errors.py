"""Exceptions raised on bad input.

Every problem a user can cause (a wrong option, a missing or malformed file, a model that
does not fit the data) raises a :class:`ScrutinyError`. The CLI prints its message as one
line and exits with code 2; library callers can catch it like the built-in it subclasses.
"""

__all__ = ["ScrutinyError", "InputError", "DataError", "CheckpointError", "describe_raised"]


class ScrutinyError(Exception):
    """Base class: the message is complete and fit to show a user as is."""


class InputError(ScrutinyError, ValueError):
    """An option or argument has a value that cannot be used."""


class DataError(ScrutinyError, ValueError):
    """A data set file or column is missing or malformed."""


class CheckpointError(ScrutinyError, ValueError):
    """A checkpoint or model file is missing, corrupt or does not fit the data."""


def describe_raised(exc: BaseException) -> str:
    """``TypeName: first line of the message``: one line on what a user's code (a model
    factory, a model's forward) raised, for a CheckpointError."""
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r})"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
