"""Benchmark: the bootstrapping chain of studies/chain_sst2.toml on real SST-2; writes wall time and results.

    python benchmarks/chain_sst2.py [--data ../shared/data/sst2] [--db PATH] [--out benchmarks/results/chain_sst2.json]

bow -> minilm-l2 (MiniLM-L6 truncated to 2 layers) -> minilm-l6 -> smollm2-135m, each step on a
fresh 200-example transfer split, beside the direct bow -> smollm2-135m transfer. A fresh store is
used unless --db is given, so every stage is really run and timed.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import sqlite_utils

from w2s.running.driver import Driver
from w2s.reporting.tables import results_table
from w2s.storing.store import Store
from w2s.planning.study import load_study

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("role", "weak", "strong", "loss", "seed", "weak_acc", "student_acc", "ceiling_acc", "pgr", "pgr_ci_low", "pgr_ci_high", "agreement", "n_test")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("W2S_DATA_DIR") or str(ROOT.parent / "shared" / "data" / "sst2"))
    parser.add_argument("--study", default=str(ROOT / "studies" / "chain_sst2.toml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="study override, e.g. task.n_transfer=100")
    parser.add_argument("--db", help="store to use (default: a fresh temporary one)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "chain_sst2.json"))
    parser.add_argument("--no-run", action="store_true", help="only write the JSON of what --db already holds (e.g. a partial run)")
    args = parser.parse_args()
    study = load_study(args.study, [f"task.data_dir={json.dumps(str(Path(args.data).resolve()))}", *args.overrides])
    db_path = Path(args.db) if args.db else Path(tempfile.mkdtemp()) / "w2s.db"
    store = Store(db_path)
    start = time.perf_counter()
    study_id = store.find_study(study.name)["id"] if args.no_run else Driver(store).run(study)
    wall = time.perf_counter() - start
    if args.no_run:  # wall time of the stages that ran, from the store
        wall = sum(r["seconds"] or 0 for r in sqlite_utils.Database(db_path).query(
            "SELECT seconds FROM stages WHERE key IN (SELECT stage_key FROM study_stages WHERE study_id = ?)", [study_id]))
    db = sqlite_utils.Database(db_path)
    stage_rows = list(db.query(
        "SELECT kind, role, model, seconds FROM stages WHERE key IN (SELECT stage_key FROM study_stages WHERE study_id = ?) ORDER BY started",
        [study_id]))
    chain = [m.label for m in study.chain]
    statuses = list(db.query("SELECT DISTINCT ss.stage_key, st.status FROM study_stages ss LEFT JOIN stages st ON st.key = ss.stage_key "
                             "WHERE ss.study_id = ?", [study_id]))
    evaluations = sorted(db.query("SELECT * FROM evaluations WHERE study_id = ?", [study_id]),
                         key=lambda r: (r["role"] != "chain_step", chain.index(r["strong"])))
    report = results_table(store, study_id)
    out = {
        "benchmark": "chain_sst2",
        "chain": chain,
        "chain_transfer": study.spec.study.chain_transfer,
        "data": args.data,
        "n_weak_train": study.spec.task.n_weak_train,
        "n_transfer_per_step": study.spec.task.n_transfer,
        "n_test": study.spec.task.n_test,
        "evaluations": [{k: r[k] for k in COLUMNS} for r in evaluations],
        "stage_seconds": [{"kind": s["kind"], "role": s["role"], "model": s["model"], "seconds": round(s["seconds"] or 0, 1)} for s in stage_rows],
        "wall_seconds": round(wall, 1),
        "stage_seconds_total": round(sum(s["seconds"] or 0 for s in stage_rows), 1),
        "wall_note": "with --no-run, wall_seconds is the sum of the stored stage times" if args.no_run else "this invocation (cached stages cost ~0 s)",
        "stages_done": f"{sum(s['status'] == 'done' for s in statuses)}/{len(statuses)}",
        "report": report.splitlines(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_at_end": os.getloadavg()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(report)
    print(f"wall time {wall:.0f}s; written to {args.out}")


if __name__ == "__main__":
    main()
