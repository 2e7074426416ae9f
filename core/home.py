"""Where w2s keeps its files: $W2S_HOME (default: the platform's app folder), the default store in it."""

from __future__ import annotations

import os
from pathlib import Path

import click


def w2s_home() -> Path:
    return Path(os.environ.get("W2S_HOME") or click.get_app_dir("w2s"))


def default_db_path() -> Path:
    return w2s_home() / "w2s.db"
