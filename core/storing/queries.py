"""Past studies in the store: filter, list, full-text search, their stages, and delete."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..api import W2SError
from .store import Store

DURATION = re.compile(r"^(\d+)([mhdw])$")
USES_MODEL = (
    "EXISTS (SELECT 1 FROM json_each(s.spec_json, '$.{side}') m "
    "WHERE :model IN (json_extract(m.value, '$.model'), json_extract(m.value, '$.label')))"
)
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str) -> str:
    """`--since` as an ISO timestamp: a date, a datetime, or an age such as 3h, 2d, 1w."""
    match = DURATION.match(value.strip())
    if match:
        moment = datetime.now(timezone.utc) - timedelta(**{UNITS[match[2]]: int(match[1])})
        return moment.isoformat(timespec="seconds")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise W2SError(f"--since {value!r}: expected a date (2026-11-21), a datetime or an age such as 3h, 2d, 1w") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def has_fts(store: Store) -> bool:
    return store.db["studies_fts"].exists()


def list_studies(store: Store, task=None, model=None, since=None, status=None, search=None, limit=20) -> list[dict]:
    """Studies newest first, filtered by task, model (name or label), age, status and full-text search."""
    where, params = [], {}
    if task:  # a [task] table, or any of a study's [[task]] tables (by name or label)
        where.append("(json_extract(s.spec_json, '$.task.name') = :task OR EXISTS (SELECT 1 FROM json_each(s.spec_json, '$.task') t "
                     "WHERE t.type = 'object' AND :task IN (json_extract(t.value, '$.name'), json_extract(t.value, '$.label'))))")
        params["task"] = task
    if model:
        where.append("(" + " OR ".join(USES_MODEL.format(side=side) for side in ("weak", "strong", "chain")) + ")")
        params["model"] = model
    if since:
        where.append("s.created >= :since")
        params["since"] = parse_since(since)
    if status:
        where.append("s.status = :status")
        params["status"] = status
    if search:
        if has_fts(store):
            where.append("s.rowid IN (SELECT rowid FROM studies_fts WHERE studies_fts MATCH :search)")
            params["search"] = fts_query(search)
        else:  # a store created before m002 and opened read-only
            where.append("(s.name LIKE :search OR s.notes LIKE :search)")
            params["search"] = f"%{search}%"
    sql = (
        "SELECT s.id, s.name, s.status, COALESCE(json_extract(s.spec_json, '$.task.name'), (SELECT group_concat(COALESCE("
        "json_extract(t.value, '$.label'), json_extract(t.value, '$.name')), ',') FROM json_each(s.spec_json, '$.task') t)) AS task, s.created, s.updated, s.path, s.notes "
        f"FROM studies s {'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY s.created DESC, s.id DESC LIMIT :limit"
    )
    return list(store.db.query(sql, {**params, "limit": limit}))


def fts_query(text: str) -> str:
    """Quote each word so user text never becomes FTS syntax; words are ANDed, the last one prefix-matched."""
    words = [w.replace('"', "") for w in text.split() if w.replace('"', "")]
    if not words:
        raise W2SError("--search: give at least one word to search study names and notes for")
    return " ".join(f'"{w}"' for w in words[:-1]) + (" " if len(words) > 1 else "") + f'"{words[-1]}"*'


def stage_rows(store: Store, study_id: str) -> list[dict]:
    return list(
        store.db.query(
            "SELECT DISTINCT st.key, st.kind, st.role, st.model, st.loss, st.seed, st.status, st.seconds, st.error, "
            "(SELECT max(value) FROM metrics m WHERE m.stage_key = st.key AND m.name = 'truncated_share') AS truncated_share "
            "FROM study_stages ss JOIN stages st ON st.key = ss.stage_key WHERE ss.study_id = ? ORDER BY st.created, st.key",
            [study_id],
        )
    )


DISK_SQL = """
SELECT count(*) AS artifacts, coalesce(sum(a.bytes), 0) AS bytes,
       coalesce(sum(CASE WHEN EXISTS (SELECT 1 FROM study_stages o WHERE o.stage_key = a.stage_key AND o.study_id != :id)
                    THEN a.bytes END), 0) AS shared_bytes
FROM artifacts a WHERE a.stage_key IN (SELECT stage_key FROM study_stages WHERE study_id = :id)
"""


def study_disk(store: Store, study_id: str) -> dict:
    """The artifacts (checkpoints) of a study's stages: how many, their bytes as recorded when written, and the
    bytes of those another study's stages also use (shared stages: deleting this study keeps them)."""
    return dict(next(store.db.query(DISK_SQL, {"id": study_id})))


def disk_line(disk: dict) -> str:
    """`disk: 1.2 GB in 7 artifacts (0.4 GB shared with other studies)` for `w2s study show`."""
    from .gc import human_bytes

    if not disk["artifacts"]:
        return "disk: no artifacts stored"
    shared = f" ({human_bytes(disk['shared_bytes'])} shared with other studies)" if disk["shared_bytes"] else ""
    return f"disk: {human_bytes(disk['bytes'])} in {disk['artifacts']} artifact(s){shared}"


# -- delete ----------------------------------------------------------------------
def deletion_plan(store: Store, study_id: str) -> tuple[list[str], list[str]]:
    """(stage keys only this study uses, stage keys shared with another study)."""
    keys = [r["stage_key"] for r in store.db.query("SELECT DISTINCT stage_key FROM study_stages WHERE study_id = ?", [study_id])]
    shared = {
        r["stage_key"]
        for r in store.db.query("SELECT DISTINCT stage_key FROM study_stages WHERE study_id != ?", [study_id])
    }
    return [k for k in keys if k not in shared], [k for k in keys if k in shared]


def delete_study(store: Store, study_id: str) -> dict:
    """Remove a study, its links, and the stages, rows and artifact files that no other study uses."""
    owned, shared = deletion_plan(store, study_id)
    paths = [Path(r["path"]) for k in owned for r in store.db.query("SELECT path FROM artifacts WHERE stage_key = ?", [k])]
    paths += [store.artifacts_root / k for k in owned]
    data_keys = {
        json.loads(r["spec_json"] or "{}").get("data")
        for k in owned
        for r in store.db.query("SELECT spec_json FROM stages WHERE key = ?", [k])
    } - {None}
    with store.db.conn:
        per_stage = [t.name for t in store.db.tables if "stage_key" in t.columns_dict and t.name != "study_stages"]
        for key in owned:
            for table in per_stage:
                store.db.execute(f"DELETE FROM [{table}] WHERE stage_key = ?", [key])
            store.db.execute("DELETE FROM stages WHERE key = ?", [key])
        store.db.execute("DELETE FROM study_stages WHERE study_id = ?", [study_id])
        for key in shared:  # keep a shared stage's creator pointing at a study that still exists
            store.db.execute(
                "UPDATE stages SET study_id = (SELECT study_id FROM study_stages WHERE stage_key = ? LIMIT 1) WHERE key = ? AND study_id = ?",
                [key, key, study_id],
            )
        still_used = {json.loads(r["spec_json"] or "{}").get("data") for r in store.db.query("SELECT spec_json FROM stages")}
        for split_key in data_keys - still_used:
            store.db.execute("DELETE FROM splits WHERE key = ?", [split_key])
        store.db.execute("DELETE FROM studies WHERE id = ?", [study_id])
    removed = [p for p in dict.fromkeys(paths) if _remove(p, store.artifacts_root)]
    return {"stages_deleted": len(owned), "stages_kept": len(shared), "files_removed": len(removed)}


def _remove(path: Path, root: Path) -> bool:
    """Delete an artifact file or folder, but only inside the store's artifacts folder."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    if path.is_dir():
        shutil.rmtree(path)
        return True
    if path.exists():
        path.unlink()
        return True
    return False
