"""gth-maintd: the maintenance daemon of the Global Travel Hub data layer."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gth-maintd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
