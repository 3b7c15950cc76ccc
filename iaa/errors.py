"""User-facing errors: the CLI prints them as one line, never as a traceback."""

from __future__ import annotations


class IAAError(Exception):
    """A problem with the user's input (config, data, weights) that the user can fix."""


class TrainingDivergedError(IAAError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
