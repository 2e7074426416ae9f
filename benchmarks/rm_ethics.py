"""Benchmark: studies/rm_ethics.toml (reward models on ETHICS utilitarianism pairs) end to end; JSON with the table,
the effect of task adaptation on PGR (paired bootstrap CI), and the run time.

    W2S_DATA_DIR=../shared/data python benchmarks/rm_ethics.py [--db PATH] [--threads N]

A fresh store by default, so every stage is really run and timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from w2s.metrics import bootstrap_pgr_difference
from w2s.storing.store import Store

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "rm_ethics.toml"
OUT = ROOT / "benchmarks" / "results" / "rm_ethics.json"
PLAIN, ADAPTED = "minilm-l6", "minilm-l6+adapt"


def correct(store: Store, study_id: str, role: str, **labels) -> tuple[np.ndarray, list[str]]:
    """Per test pair, whether the stage with this role (and labels) ranked it right, in id order."""
    where = "".join(f" AND ss.{k} = ?" for k in labels)
    key = next(store.db.query(f"SELECT ss.stage_key FROM study_stages ss WHERE ss.study_id = ? AND ss.role = ?{where}",
                              [study_id, role, *labels.values()]))["stage_key"]
    rows = store.predictions(key, "test")
    ids = sorted(rows)
    return np.array([rows[i]["pred"] == rows[i]["label"] for i in ids]), ids


def gap_of(store: Store, study_id: str, strong: str, loss: str) -> dict:
    """The evaluate stage's ceiling - weak gap and its paired bootstrap CI."""
    key = next(store.db.query("SELECT stage_key FROM study_stages WHERE study_id = ? AND role = 'evaluate' AND strong = ? AND loss = ?",
                              [study_id, strong, loss]))["stage_key"]
    metrics = {m["name"]: m["value"] for m in store.db.query("SELECT name, value FROM metrics WHERE stage_key = ?", [key])}
    return {k: metrics.get(k) for k in ("gap", "gap_ci_low", "gap_ci_high")}


def adaptation_effect(store: Store, study_id: str, losses: list[str]) -> list[dict]:
    """Per loss: PGR with adaptation minus PGR without, with a paired bootstrap CI over the shared test pairs."""
    weak, ids = correct(store, study_id, "weak_test")
    out = []
    for loss in losses:
        parts = {}
        for strong in (ADAPTED, PLAIN):
            parts[strong] = (correct(store, study_id, "student_test", strong=strong, loss=loss)[0],
                             correct(store, study_id, "ceiling_test", strong=strong)[0])
        point, low, high = bootstrap_pgr_difference(weak, *parts[ADAPTED], *parts[PLAIN])
        out.append({"loss": loss, "pgr_adapted_minus_plain": point, "ci_low": low, "ci_high": high, "n_test": len(ids)})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="store to use (default: a fresh temporary one)")
    parser.add_argument("--threads", type=int, help="torch threads per stage")
    args = parser.parse_args()
    db = Path(args.db) if args.db else Path(tempfile.mkdtemp()) / "w2s.db"
    start = time.perf_counter()
    command = ["w2s", "study", "run", str(STUDY), "--db", str(db)] + (["--threads", str(args.threads)] if args.threads else [])
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    store = Store(db, readonly=True)
    study = store.find_study("rm_ethics")
    results = list(store.db.query("SELECT * FROM results WHERE study_id = ? ORDER BY strong, loss", [study["id"]]))
    stages = list(store.db.query(
        "SELECT DISTINCT st.kind, st.role, st.model, st.loss, st.seconds FROM study_stages ss JOIN stages st ON st.key = ss.stage_key "
        "WHERE ss.study_id = ? ORDER BY st.started", [study["id"]]))
    losses = sorted({r["loss"] for r in results}, key=["xent", "logconf", "window"].index)
    out = {
        "benchmark": "rm_ethics",
        "study": json.loads(study["spec_json"]),
        "metric": "pairwise accuracy on test pairs (the reward model ranks the more pleasant scenario higher)",
        "results": [{**{k: r[k] for k in ("weak", "strong", "loss", "seed", "weak_acc", "student_acc", "ceiling_acc", "pgr", "pgr_ci_low",
                                           "pgr_ci_high", "agreement", "n_test")},
                     "flags": json.loads(r["flags"] or "[]"), **gap_of(store, study["id"], r["strong"], r["loss"])} for r in results],
        "adaptation_effect": adaptation_effect(store, study["id"], losses),
        "stage_seconds": [{k: s[k] for k in ("kind", "role", "model", "loss", "seconds")} for s in stages],
        "stage_seconds_total": round(sum(s["seconds"] or 0 for s in stages), 1),
        "wall_seconds": round(wall, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["adaptation_effect"], indent=1))
    print(f"wall {wall:.0f} s, stage time {out['stage_seconds_total']:.0f} s; written to {OUT}")


if __name__ == "__main__":
    main()
