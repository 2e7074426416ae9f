"""Past studies in the store: filter, describe, compare, rerun and delete."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .api import W2SError
from .report import accuracy_rows, results
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
    if task:
        where.append("json_extract(s.spec_json, '$.task.name') = :task")
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
        "SELECT s.id, s.name, s.status, json_extract(s.spec_json, '$.task.name') AS task, s.created, s.updated, s.path, s.notes "
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
            "SELECT DISTINCT st.key, st.kind, st.role, st.model, st.loss, st.seed, st.status, st.seconds, st.error "
            "FROM study_stages ss JOIN stages st ON st.key = ss.stage_key WHERE ss.study_id = ? ORDER BY st.created, st.key",
            [study_id],
        )
    )


def describe(store: Store, ref: str) -> dict:
    """Everything `study show --json` prints: the study, its spec, stages, accuracies, results and flags."""
    row = store.find_study(ref)
    res = results(store, row["id"])
    return {
        "id": row["id"],
        "name": row["name"],
        "status": row["status"],
        "created": row["created"],
        "updated": row["updated"],
        "path": row["path"],
        "notes": row["notes"],
        "hash": row["hash"],
        "spec": json.loads(row["spec_json"]),
        "versions": json.loads(row["versions_json"] or "{}"),
        "stages": stage_rows(store, row["id"]),
        "accuracies": accuracy_rows(store, row["id"]),
        "results": res,
        "flags": sorted({f for r in res for f in json.loads(r["flags"] or "[]")}),
    }


# -- compare ---------------------------------------------------------------------
COMPARED = ("weak_acc", "student_acc", "ceiling_acc", "pgr", "pgr_ci_low", "pgr_ci_high")
PAIR = ("task", "weak", "strong", "loss", "role")


def evaluation_rows(store: Store, study_id: str) -> list[dict]:
    """Headline rows plus chain steps and oracle rows (the `evaluations` view), else the `results` view."""
    if store.db["evaluations"].exists():
        return list(store.db.query("SELECT * FROM evaluations WHERE study_id = ? ORDER BY seed, loss", [study_id]))
    return [{**r, "role": "evaluate"} for r in results(store, study_id)]


def compare(store: Store, refs: list[str]) -> dict:
    """Results of several studies aligned by (task, weak, strong, loss, role); seeds are averaged."""
    if len(refs) < 2:
        raise W2SError("study compare: give at least two studies (id, id prefix or name)")
    studies = [store.find_study(ref) for ref in refs]
    labels = study_labels(studies)
    pairs: dict[tuple, dict] = {}
    for study, label in zip(studies, labels):
        grouped: dict[tuple, list[dict]] = {}
        for r in evaluation_rows(store, study["id"]):
            grouped.setdefault(tuple(r[k] for k in PAIR), []).append(r)
        for key, rows in grouped.items():
            entry = pairs.setdefault(key, {**dict(zip(PAIR, key)), "studies": {}})
            entry["studies"][label] = {"study_id": study["id"], "seeds": len(rows), **{m: mean(r[m] for r in rows) for m in COMPARED}}
    return {
        "studies": [{"label": label, "id": s["id"], "name": s["name"], "status": s["status"]} for s, label in zip(studies, labels)],
        "pairs": [pairs[k] for k in sorted(pairs, key=lambda k: tuple(str(x) for x in k))],
    }


def study_labels(studies: list[dict]) -> list[str]:
    """Study names, made unique with an id prefix where two share a name."""
    names = [s["name"] for s in studies]
    return [n if names.count(n) == 1 else f"{n}@{s['id'][-6:]}" for n, s in zip(names, studies)]


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


# -- rerun -----------------------------------------------------------------------
def rerun_study(store: Store, ref: str):
    """Parse a stored study again, reproducing the stored spec (resolved data_dir, --set/--limit overrides)."""
    from .study import parse_study

    row = store.find_study(ref)
    stored = json.loads(row["spec_json"])
    path = Path(row["path"]) if row["path"] else None
    overrides = [f"{key}={json.dumps(value)}" for key, value in leaf_differences(stored, _raw_spec(row["toml"]))]
    study = parse_study(row["toml"], path, overrides)
    if study.hash() != row["hash"]:
        diff = ", ".join(k for k, _ in leaf_differences(stored, study.spec_json())) or "defaults of an updated w2s"
        raise W2SError(f"study {row['name']} ({row['id']}): the stored definition no longer parses to the same spec ({diff}); "
                       f"run the TOML file with `w2s study run` instead")
    return study


def _raw_spec(toml_text: str) -> dict:
    import tomllib

    return tomllib.loads(toml_text)


def leaf_differences(stored: dict, raw: dict, prefix: str = ""):
    """(dotted.key, stored value) for every stored scalar/list leaf the raw TOML lacks or sets differently."""
    for key, value in stored.items():
        dotted = f"{prefix}{key}"
        here = raw.get(key) if isinstance(raw, dict) else None
        if isinstance(value, dict):
            yield from leaf_differences(value, here if isinstance(here, dict) else {}, dotted + ".")
        elif value is not None and value != here and not _is_list_of_tables(value):
            yield dotted, value


def _is_list_of_tables(value) -> bool:
    return isinstance(value, list) and any(isinstance(v, dict) for v in value)


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
