"""Benchmark: bow -> minilm-l6 on real SST-2 (../shared/data/sst2); writes JSON with accuracies, PGR and stage times.

    python benchmarks/sst2_minilm.py [--data ../shared/data/sst2] [--out benchmarks/results/sst2_minilm.json]

2,000 weak-train and 2,000 transfer examples are drawn from train.tsv; test.tsv (the 872-sentence
GLUE validation split) is the test set. A fresh store is used so every stage is really run and timed.
"""

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import sqlite_utils

from w2s.running.driver import Driver
from w2s.storing.store import Store
from w2s.planning.study import load_study

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sst2"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sst2_minilm.json"))
    parser.add_argument("--db", help="store to use (default: a fresh temporary one)")
    args = parser.parse_args()
    study = load_study(ROOT / "studies" / "sst2_minilm.toml", [f"task.data_dir={json.dumps(str(Path(args.data).resolve()))}"])
    db_path = Path(args.db) if args.db else Path(tempfile.mkdtemp()) / "w2s.db"
    start = time.perf_counter()
    study_id = Driver(Store(db_path)).run(study)
    wall = time.perf_counter() - start
    db = sqlite_utils.Database(db_path)
    stages = list(db.query(
        "SELECT role, model, loss, seconds FROM stages WHERE key IN (SELECT stage_key FROM study_stages WHERE study_id = ?) "
        "ORDER BY started", [study_id]))
    results = list(db.query("SELECT * FROM results WHERE study_id = ?", [study_id]))
    out = {
        "benchmark": "sst2_minilm",
        "data": args.data,
        "n_weak_train": study.spec.task.n_weak_train,
        "n_transfer": study.spec.task.n_transfer,
        "n_test": int(results[0]["n_test"]),
        "results": [{k: r[k] for k in ("weak", "strong", "loss", "seed", "weak_acc", "student_acc", "ceiling_acc", "pgr", "pgr_ci_low", "pgr_ci_high", "agreement")} for r in results],
        "stage_seconds": [{"role": s["role"], "model": s["model"], "loss": s["loss"] if s["role"] == "student" else None, "seconds": round(s["seconds"] or 0, 2)} for s in stages],
        "wall_seconds": round(wall, 1),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["results"], indent=2))
    print(f"wall time {wall:.0f}s; written to {args.out}")


if __name__ == "__main__":
    main()
