"""One study described (`w2s study show --json`) and several compared side by side (`w2s study compare`)."""

from __future__ import annotations

import json

from ..api import W2SError
from ..storing.queries import stage_rows, study_disk
from ..storing.store import Store
from .tables import accuracy_rows, results


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
        "disk": study_disk(store, row["id"]),
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
