"""w2s: weak-to-strong generalization studies."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("w2s")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
