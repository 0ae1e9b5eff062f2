"""The one error type of the data layer: every bad input is a one-line `DataError` naming the path and what was
expected, so a sweep fails on its first job instead of after hours, or never reads the wrong folder."""
from __future__ import annotations


class DataError(ValueError):
    """Bad data configuration or files: the message names what, where, and what was expected."""


class BadImageError(DataError):
    """An image file that cannot be decoded; `path` lets `bad_images=skip` name it and move on.

    The message alone must rebuild it: a DataLoader worker re-raises it in the main process as `type(msg)`.
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path
