"""The one exception every checkpoint problem turns into."""

from __future__ import annotations


class CheckpointError(Exception):
    """A file that is not a valid, safe generator checkpoint; the message names the file and the reason."""
