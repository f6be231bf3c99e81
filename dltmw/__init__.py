"""dltmw: messaging middleware for permissioned distributed ledgers (see README.md).

The embedding API will live here; today the package exports its version only.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dltmw")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
