"""The SQLite store (sqlite-utils): studies, stages, metrics, curves, predictions, jobs, artifacts."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import sqlite_utils
from filelock import FileLock
from ulid import ULID

from ..api import W2SError
from ..home import default_db_path
from .migrations import migrations


KEYED_TABLES = ("study_stages", "predictions", "metrics", "artifacts", "curves", "partial_predictions", "jobs", "eval_prompts",
                "stage_attempts")  # every table with a stage_key column


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_id() -> str:
    return str(ULID())


class Store:
    """One SQLite file plus an `artifacts/` folder beside it. Only drivers write it; stages never open it."""

    def __init__(self, path: str | Path | None = None, readonly: bool = False):
        self.path = Path(path) if path else default_db_path()
        self.readonly = readonly
        if readonly:
            if not self.path.exists():
                raise W2SError(f"{self.path}: no w2s database here yet; run a study first or pass --db PATH")
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)  # never a write, not even a pending migration
            self.db = sqlite_utils.Database(conn)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite_utils.Database(self.path)
            self.db.execute("PRAGMA busy_timeout = 10000")
            with self._schema_lock():
                self.db.enable_wal()
                migrations.apply(self.db)
        self.db.execute("PRAGMA busy_timeout = 10000")
        self.artifacts_root = self.path.parent / "artifacts"

    def _schema_lock(self) -> FileLock:
        """Two drivers opening a new (or older) store at once: one creates or upgrades the schema, the other waits."""
        return FileLock(f"{self.path}.lock", timeout=60)

    # -- studies ---------------------------------------------------------
    def upsert_study(self, name: str, toml_text: str, spec: dict, hash_: str, path: str | None, versions: dict) -> str:
        """Reuse the study with the same definition hash, else create one; returns its id."""
        row = next(self.db.query("SELECT id FROM studies WHERE hash = ? ORDER BY created DESC LIMIT 1", [hash_]), None)
        if row:
            self.db["studies"].update(row["id"], {"status": "running", "updated": now(), "versions_json": json.dumps(versions),
                                                  "rerun_json": None})
            return row["id"]
        study_id = new_id()
        self.db["studies"].insert(
            {
                "id": study_id,
                "name": name,
                "toml": toml_text,
                "spec_json": json.dumps(spec),
                "hash": hash_,
                "path": path,
                "created": now(),
                "updated": now(),
                "status": "running",
                "versions_json": json.dumps(versions),
                "notes": spec.get("study", {}).get("notes", ""),
            }
        )
        return study_id

    def set_study_status(self, study_id: str, status: str) -> None:
        self.db["studies"].update(study_id, {"status": status, "updated": now()})

    def record_rerun(self, study_id: str, rerun: dict | None) -> None:
        """What a rerun of the finished study is answered from (running/instant.py); None: plan it again."""
        self.db["studies"].update(study_id, {"rerun_json": None if rerun is None else json.dumps(rerun)})

    def find_study(self, ref: str) -> dict:
        """A study by id, id prefix or name (latest with that name)."""
        rows = list(
            self.db.query(
                "SELECT * FROM studies WHERE id = ? OR id LIKE ? OR name = ? ORDER BY created DESC",
                [ref, f"{ref}%" if len(ref) >= 6 else ref, ref],
            )
        )
        if not rows:
            raise W2SError(f"no study {ref!r} in {self.path}; see `w2s study list`")
        exact = [r for r in rows if ref in (r["id"], r["name"])]
        if not exact and len(rows) > 1:  # ULIDs made within a second share their first 8 characters
            raise W2SError(f"study id prefix {ref!r} matches {len(rows)} studies in {self.path}; give more of the id (see `w2s study list`)")
        return (exact or rows)[0]

    # -- stages ----------------------------------------------------------
    def stage(self, key: str) -> dict | None:
        return next(self.db.query("SELECT * FROM stages WHERE key = ?", [key]), None)

    def stage_status(self, key: str) -> str | None:
        row = self.stage(key)
        return row["status"] if row else None

    def has_legacy_stages(self) -> bool:
        """True while some stage still has its scheme-1 key (stored before keys became content-addressed)."""
        return next(self.db.query("SELECT 1 AS x FROM stages WHERE legacy_key = key LIMIT 1"), None) is not None

    def rekey(self, old: str, new: str) -> None:
        """Rename a stage's key in every table that refers to it (and in other stages' specs and upstream lists)."""
        with self.db.conn:
            self.db.execute("UPDATE stages SET key = ? WHERE key = ?", [new, old])
            for table in KEYED_TABLES:
                self.db.execute(f"UPDATE {table} SET stage_key = ? WHERE stage_key = ?", [new, old])
            for column in ("spec_json", "upstream_json"):
                self.db.execute(f"UPDATE stages SET {column} = replace({column}, ?, ?) WHERE instr({column}, ?) > 0", [f'"{old}"', f'"{new}"', f'"{old}"'])

    def unlink_stale(self, study_id: str, keep: set[tuple[str, str]]) -> int:
        """Drop the study's links to (stage, role) pairs its plan no longer has (e.g. after a plugin's
        defaults changed); the stages and their results stay in the store. Returns how many went."""
        stale = [(r["stage_key"], r["role"]) for r in self.db.query("SELECT stage_key, role FROM study_stages WHERE study_id = ?", [study_id])
                 if (r["stage_key"], r["role"]) not in keep]
        with self.db.conn:
            for key, role in stale:
                self.db.execute("DELETE FROM study_stages WHERE study_id = ? AND stage_key = ? AND role = ?", [study_id, key, role])
        return len(stale)

    def link_stage(self, study_id: str, key: str, role: str, labels: dict) -> None:
        self.db["study_stages"].upsert(
            {"study_id": study_id, "stage_key": key, "role": role, **labels},
            pk=("study_id", "stage_key", "role"),
        )

    def write_outputs(self, key: str, result) -> None:
        """Insert a finished stage's outputs with plain statements, inside the caller's transaction
        (sqlite-utils' table helpers commit on their own)."""
        rows = {
            "predictions": prediction_rows(key, result.predictions),
            "metrics": [{"stage_key": key, "split": split, "name": name, "value": value} for (split, name), value in result.metrics.items()],
            "curves": [{"stage_key": key, "step": s, "name": n, "value": v} for s, n, v in result.curves],
            "artifacts": [{"id": new_id(), "stage_key": key, "kind": kind, "path": str(path), "bytes": _size(path), "created": now()}
                          for kind, path in result.artifacts.items()],
            **result.tables,
        }
        for table, items in rows.items():
            if items:
                columns = list(items[0])
                self.db.conn.executemany(f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                                         [[item[c] for c in columns] for item in items])
        self.db.conn.execute("DELETE FROM partial_predictions WHERE stage_key = ?", [key])

    def predictions(self, key: str, split: str) -> dict[str, dict]:
        """A stage's stored predictions on a split: example id -> {probs, pred, label}."""
        rows = self.db.query("SELECT example_id, probs_json, pred, label FROM predictions WHERE stage_key = ? AND split = ?", [key, split])
        return {r["example_id"]: {"probs": json.loads(r["probs_json"]), "pred": r["pred"], "label": r["label"]} for r in rows}

    def artifact(self, key: str, kind: str = "checkpoint") -> Path | None:
        row = next(self.db.query("SELECT path FROM artifacts WHERE stage_key = ? AND kind = ?", [key, kind]), None)
        return Path(row["path"]) if row else None

    # -- partial predictions (resumable remote inference) ------------------
    def partial_predictions(self, key: str, split: str) -> dict[str, list[float]]:
        rows = self.db.query(
            "SELECT example_id, probs_json FROM partial_predictions WHERE stage_key = ? AND split = ?", [key, split]
        )
        return {r["example_id"]: json.loads(r["probs_json"]) for r in rows}

    def all_partial_predictions(self, key: str) -> dict[str, dict[str, list[float]]]:
        """What interrupted attempts of a stage already bought: split -> example id -> probs."""
        out: dict[str, dict[str, list[float]]] = {}
        for r in self.db.query("SELECT split, example_id, probs_json FROM partial_predictions WHERE stage_key = ?", [key]):
            out.setdefault(r["split"], {})[r["example_id"]] = json.loads(r["probs_json"])
        return out

    def save_partial_prediction(self, key: str, split: str, example_id: str, probs: Iterable[float]) -> None:
        with self.db.conn:
            self.db["partial_predictions"].insert(
                {"stage_key": key, "split": split, "example_id": example_id, "probs_json": json.dumps([float(p) for p in probs]), "created": now()},
                replace=True,
            )

    # -- remote jobs -------------------------------------------------------
    def find_job(self, key: str, provider: str) -> dict | None:
        row = next(
            self.db.query(
                "SELECT * FROM jobs WHERE stage_key = ? AND provider = ? ORDER BY created DESC LIMIT 1", [key, provider]
            ),
            None,
        )
        if row:
            row["info"] = json.loads(row.pop("info_json") or "{}")
        return row

    def jobs(self, key: str) -> dict[str, dict]:
        """The latest remote job of a stage per provider (a rerun re-attaches instead of launching again)."""
        providers = [r["provider"] for r in self.db.query("SELECT DISTINCT provider FROM jobs WHERE stage_key = ?", [key])]
        return {p: self.find_job(key, p) for p in providers}

    def remember_job(self, key: str, provider: str, job_id: str, info: dict) -> None:
        with self.db.conn:
            existing = self.find_job(key, provider)
            if existing and existing["job_id"] == job_id:
                self.db["jobs"].update(existing["id"], {"status": info.get("status"), "info_json": json.dumps(info), "updated": now()})
            else:
                self.db["jobs"].insert(
                    {"id": new_id(), "stage_key": key, "provider": provider, "job_id": job_id, "status": info.get("status"),
                     "info_json": json.dumps(info), "created": now(), "updated": now()}
                )

    # -- splits ------------------------------------------------------------
    def record_split(self, key: str, task: str, name: str, seed: int | None, ids: list[str]) -> None:
        self.db["splits"].insert(
            {"key": key, "task": task, "name": name, "seed": seed, "n": len(ids), "ids_json": json.dumps(ids), "created": now()},
            ignore=True,
        )


def prediction_rows(key: str, predictions: dict) -> list[dict]:
    """One row per (split, example): all probabilities, the top one (binary: P(class 1)), argmax and gold label."""
    rows = []
    for split, (ids, probs, labels) in predictions.items():
        for example_id, p, label in zip(ids, probs, labels):
            p = [float(x) for x in p]
            rows.append({
                "stage_key": key, "split": split, "example_id": example_id, "prob": p[1] if len(p) == 2 else max(p),
                "probs_json": json.dumps(p),
                "pred": int(max(range(len(p)), key=p.__getitem__)) if sum(p) > 0 else -1,  # -1: no answer (e.g. illegal move)
                "label": None if label is None else int(label),
            })
    return rows


def _size(path) -> int | None:
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return None
