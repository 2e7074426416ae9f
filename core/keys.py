"""API keys: stored in $W2S_HOME/keys.json (mode 0600), overridden by environment variables."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .api import W2SError
from .home import w2s_home


def keys_path() -> Path:
    return w2s_home() / "keys.json"


def stored_keys() -> dict[str, str]:
    path = keys_path()
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise W2SError(f"{path}: not valid JSON; delete it and run `w2s keys set NAME` again") from None


def save_key(name: str, value: str) -> Path:
    """Store a key in keys.json, created with mode 0600 (owner read/write only)."""
    value = value.strip()
    if not value:
        raise W2SError(f"keys set {name}: the key is empty; paste the key when prompted")
    path = keys_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = {**stored_keys(), name: value}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(keys, f, indent=2)
    os.chmod(path, 0o600)
    return path


def get_key(name: str, env_var: str) -> str:
    """The key from `env_var`, else from keys.json; a one-line error saying how to set it."""
    value = os.environ.get(env_var) or stored_keys().get(name)
    if not value:
        raise W2SError(f"no {name} API key: set {env_var} or run `w2s keys set {name}`")
    return value
