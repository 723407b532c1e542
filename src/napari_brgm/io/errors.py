"""The one exception type the readers raise for input they cannot turn into an image."""

from __future__ import annotations

from pathlib import Path


class ReadError(ValueError):
    """A file or folder could not be read as a medical image.

    The message always names the path and the reason, so it can be shown to the user as is.
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"Cannot open {self.path}: {reason}")
