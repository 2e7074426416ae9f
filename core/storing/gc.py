"""`w2s gc`: delete the artifact folders under the store's artifacts root that no stage row references.

Every stage writes its files into `<artifacts root>/<stage key>/` (checkpoints: `.../checkpoint`).
A folder there is an orphan when its name is a stage key that the `stages` table no longer has and
no `artifacts` row's path names it (a study deleted by hand, a store rebuilt, a copy of another
store's folder). Anything else under the root (the hf probe's shared `features/` cache, files a user
put there) is never touched, and neither is a folder any stage row names, whatever its status.

While a stage is `running` in the store, gc refuses: that stage's driver writes into the root. The
orphans are picked and renamed aside (`.gc-<key>`) inside one write transaction, the same lock a
driver takes to claim a stage, so no stage starts writing into a folder gc is about to delete; the
renamed folders are deleted after the lock is released. A `.gc-*` folder left by an interrupted gc
is deleted by the next one.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from ..api import W2SError
from .store import Store, _size

STAGE_FOLDER = re.compile(r"^[0-9a-f]{16}$")
TRASH = ".gc-"


def refuse_if_running(store: Store) -> None:
    row = next(store.db.query("SELECT key, kind, model, started FROM stages WHERE status = 'running' LIMIT 1"), None)
    if row:
        n = next(store.db.query("SELECT count(*) AS n FROM stages WHERE status = 'running'"))["n"]
        raise W2SError(f"gc: {n} stage(s) are running in {store.path} (e.g. {row['kind']} {row['model'] or ''} {row['key']}, started "
                       f"{row['started']}); run gc when they finish (a stage left 'running' by a crash: rerun its study first)")


def stage_keys(store: Store) -> set[str]:
    """Every stage key in the store, and every scheme-1 key a stage was stored under."""
    keys = {r["key"] for r in store.db.query("SELECT key FROM stages")}
    return keys | {r["legacy_key"] for r in store.db.query("SELECT legacy_key FROM stages WHERE legacy_key IS NOT NULL")}


def named_by_an_artifact(store: Store, name: str) -> bool:
    """Some artifact row's path has this folder name in it (a checkpoint moved or written under another key's
    folder): kept, whatever the path's spelling of the root (symlinks, --artifact-root)."""
    return next(store.db.query("SELECT 1 AS x FROM artifacts WHERE instr(path, ?) > 0 LIMIT 1", [name]), None) is not None


def orphans(store: Store) -> list[Path]:
    """Folders (and stray files) under the artifacts root named like a stage key that nothing references, plus gc leftovers."""
    root = store.artifacts_root
    if not root.is_dir():
        return []
    keys = stage_keys(store)
    out = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(TRASH):
            out.append(entry)
        elif (STAGE_FOLDER.match(entry.name) and entry.name not in keys and not entry.is_symlink()
              and not named_by_an_artifact(store, entry.name)):
            out.append(entry)
    return out


def collect(store: Store, dry_run: bool = False) -> dict:
    """Delete (or with dry_run, list) the orphan artifact folders; returns {"paths", "bytes", "dry_run"}."""
    refuse_if_running(store)
    if dry_run:
        found = orphans(store)
        return {"paths": [str(p) for p in found], "bytes": sum(_size(p) or 0 for p in found), "dry_run": True}
    conn = store.db.conn
    if conn.in_transaction:
        conn.commit()
    conn.execute("BEGIN IMMEDIATE")  # no driver claims a stage (and starts writing its folder) until the orphans are aside
    moved: list[tuple[Path, Path, int]] = []
    try:
        refuse_if_running(store)
        for path in orphans(store):
            size = _size(path) or 0
            trash = path if path.name.startswith(TRASH) else path.with_name(f"{TRASH}{path.name}-{os.getpid()}")
            if trash != path:
                path.rename(trash)
            moved.append((path, trash, size))
    finally:
        conn.commit()
    for _, trash, _ in moved:
        if trash.is_dir() and not trash.is_symlink():
            shutil.rmtree(trash)
        else:
            trash.unlink(missing_ok=True)
    return {"paths": [str(p) for p, _, _ in moved], "bytes": sum(s for _, _, s in moved), "dry_run": False}


def human_bytes(n: float | None) -> str:
    """1234567 -> '1.2 MB' (decimal units, like `du --si`)."""
    n = float(n or 0)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"

