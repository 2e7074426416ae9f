"""Storing: the SQLite store, its migrations, stage claims shared by several drivers, and queries."""

import sys


def _import_sqlite_utils_without_pandas() -> None:
    """sqlite-utils imports pandas at import time when it is installed, only to store pandas.Timestamp values
    as TEXT. w2s never stores pandas values, and that import was a third of every `w2s` command's start
    (benchmarks/store_scale.py), so sqlite-utils is imported here with pandas hidden. Whatever imports pandas
    later (datasets) gets it as usual; if pandas is already loaded, sqlite-utils simply uses it."""
    if "sqlite_utils" in sys.modules or "pandas" in sys.modules:
        return
    sys.modules["pandas"] = None  # `import pandas` raises ImportError, which sqlite-utils catches
    try:
        import sqlite_utils  # noqa: F401
    finally:
        del sys.modules["pandas"]


_import_sqlite_utils_without_pandas()
