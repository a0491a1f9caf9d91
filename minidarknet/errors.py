"""The project's own error and warning types.

Every problem with user input (a cfg file, a weights file, an image, a data set) is raised as a
subclass of MiniDarknetError with a one-line message that names where the problem is; the CLI
prints that line and exits with status 2.  Warnings (where Darknet would warn) go through the
`warnings` module with the DarknetWarning category, so scripts can filter or escalate them.
"""
import warnings


class MiniDarknetError(Exception):
    """Base class: bad input that the user can fix.  str(e) is the one-line message."""


class CfgError(MiniDarknetError):
    """A malformed or unsupported cfg file: the message starts with FILE:LINE:."""

    def __init__(self, path, line, message):
        self.path, self.line = path, line
        where = f"{path}:{line}: " if line else f"{path}: "
        super().__init__(where + message)


class WeightsError(MiniDarknetError):
    """A weights file that does not fit the network: names the file, layer and byte offset."""


class ImageError(MiniDarknetError):
    """An image that cannot be read."""


class DataError(MiniDarknetError):
    """A training or validation data set entry that cannot be used."""


class ShapeError(MiniDarknetError):
    """An array handed to the API whose shape does not fit the network."""


class DarknetWarning(UserWarning):
    """Something Darknet would warn about (unused key, leftover weights, ...)."""


def warn(message):
    warnings.warn(message, DarknetWarning, stacklevel=3)
