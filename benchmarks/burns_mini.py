"""Benchmark: studies/burns_mini.toml, one task at a time, committed as JSON; then the figures over every committed task.

    W2S_DATA_DIR=../shared/data python benchmarks/burns_mini.py run --task sst2 --db burns.db [--jobs 2]
    python benchmarks/burns_mini.py export --task sst2 --db burns.db     # JSON of a task already run in that store
    python benchmarks/burns_mini.py figures                               # PNGs + summary.json from every task's JSON

A store does not outlive a machine, so each finished task is written to benchmarks/results/burns_mini/<task>.json:
every model's test accuracy per seed, every pair's PGR (per seed with its paired-bootstrap CI, and the mean over
seeds with a t-interval), measured n_params, each stage's wall time, and the task's wall time (the time any of its
stages was running). `figures` draws the scaling figures of w2s.reporting.scaling from those rows, so the committed
PNGs are what `w2s report` draws for the same store.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from w2s.reporting import scaling
from w2s.reporting.plots import mean_ci as mean_over_seeds
from w2s.metrics import mean_ci
from w2s.planning.study import task_label
from w2s.reporting.tables import accuracy_rows
from w2s.storing.store import Store

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "studies" / "burns_mini.toml"
OUT = ROOT / "benchmarks" / "results" / "burns_mini"


def slug(task: str) -> str:
    return task.replace("/", "_")


def run(task: str, db: str, jobs: int) -> None:
    """Run one task of the study (cached stages are skipped), then export it."""
    command = ["w2s", "study", "run", str(STUDY), "--task", task, "--db", db, "--executor", "processes", "--jobs", str(jobs)]
    subprocess.run(command, check=True)
    export(task, db)


def study_of(store: Store, task: str) -> dict:
    """The newest burns_mini study in the store that has evaluate rows of `task`."""
    row = next(store.db.query(
        "SELECT s.* FROM studies s WHERE s.name = 'burns_mini' AND EXISTS (SELECT 1 FROM study_stages ss WHERE ss.study_id = s.id "
        "AND ss.task = ? AND ss.role = 'evaluate') ORDER BY s.created DESC LIMIT 1", [task]), None)
    if row is None:
        sys.exit(f"{task}: no burns_mini study with that task in this store; run it first (burns_mini.py run --task {task})")
    return row


def stage_rows(store: Store, study_id: str, task: str) -> list[dict]:
    """Each stage of the task once: kind, role, model, loss, seed, wall seconds, torch threads, start and end."""
    rows = store.db.query(
        "SELECT DISTINCT st.key, st.kind, st.role, st.model, st.loss, st.seed, st.seconds, st.started, st.finished, "
        "json_extract(st.worker_json, '$.threads') AS threads FROM study_stages ss JOIN stages st ON st.key = ss.stage_key "
        "WHERE ss.study_id = ? AND ss.task = ? ORDER BY st.started", [study_id, task])
    return [{k: r[k] for k in ("kind", "role", "model", "loss", "seed", "seconds", "threads", "started", "finished")} for r in rows]


def busy_wall_seconds(stages: list[dict]) -> float | None:
    """Seconds during which at least one stage was running: the union of the stages' [started, finished] intervals.

    A task run in several sittings (stopped, then resumed from the cache in a later session) counts only the time its
    stages ran, not the hours between sittings, which max(finished) - min(started) would.
    """
    spans = sorted((datetime.fromisoformat(s["started"]), datetime.fromisoformat(s["finished"]))
                   for s in stages if s["started"] and s["finished"])
    if not spans:
        return None
    total, (start, end) = 0.0, spans[0]
    for next_start, next_end in spans[1:]:
        if next_start > end:
            total += (end - start).total_seconds()
            start, end = next_start, next_end
        else:
            end = max(end, next_end)
    return round(total + (end - start).total_seconds(), 1)


def pair_summaries(rows: list[dict]) -> list[dict]:
    """Per (weak, strong, loss): the per-seed PGRs with their bootstrap CIs, and the mean with a t-interval over seeds."""
    out = []
    for key in sorted({(r["weak"], r["strong"], r["loss"]) for r in rows}, key=lambda k: tuple(map(str, k))):
        group = [r for r in rows if (r["weak"], r["strong"], r["loss"]) == key]
        mean, low, high, n = mean_over_seeds(group, "pgr")
        out.append({"weak": key[0], "strong": key[1], "loss": key[2], "pgr_mean": mean, "pgr_ci_low": low, "pgr_ci_high": high,
                    "ci": "t-interval over seeds" if n > 1 else "paired bootstrap over test examples", "n_seeds": n, "flagged_seeds": sum(bool(r.get("flagged")) for r in group),
                    "per_seed": [{k: r.get(k) for k in ("seed", "weak_acc", "student_acc", "ceiling_acc", "pgr", "pgr_ci_low", "pgr_ci_high",
                                                        "gap", "gap_ci_low", "gap_ci_high", "agreement", "flagged")} for r in group]})
    return out


def accuracy_summaries(store: Store, study_id: str, task: str) -> list[dict]:
    """Every model's test accuracy (weak, ceiling, each student), per seed and as a mean with a t-interval over seeds."""
    acc = [r for r in accuracy_rows(store, study_id) if r["task"] == task]
    out = []
    for model in sorted({r["model"] for r in acc}):
        values = [r.get("accuracy") for r in acc if r["model"] == model]
        mean, low, high = mean_ci(values)
        out.append({"model": model, "accuracy_mean": mean, "ci_low": None if low != low else low, "ci_high": None if high != high else high,
                    "per_seed": {str(r["seed"]): r.get("accuracy") for r in acc if r["model"] == model}, "n_test": acc[0].get("n")})
    return out


def export(task: str, db: str) -> Path:
    store = Store(db, readonly=True)
    study = study_of(store, task)
    rows = [r for r in scaling.sized_rows(store, study["id"]) if r["task"] == task]
    stages = stage_rows(store, study["id"], task)
    spec = json.loads(study["spec_json"])
    tasks = spec["task"] if isinstance(spec["task"], list) else [spec["task"]]
    out = {
        "benchmark": "burns_mini",
        "task": task,
        "task_spec": next((t for t in tasks if task_label(t, isinstance(spec["task"], list)) == task), None),
        "seeds": spec["study"]["seeds"],
        "models": scaling.model_sizes(store, study["id"]),
        "accuracy": accuracy_summaries(store, study["id"], task),
        "pairs": pair_summaries(rows),
        "rows": [{k: v for k, v in r.items() if k != "stage_key"} for r in rows],
        "stages": stages,
        "stage_seconds_total": round(sum(s["seconds"] or 0 for s in stages), 1),
        "wall_seconds": busy_wall_seconds(stages),
        "executor": sorted({s["threads"] for s in stages if s["threads"] is not None}),
        "versions": json.loads(study["versions_json"] or "{}"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "processor": platform.processor() or platform.machine()},
    }
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{slug(task)}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{task}: {len(rows)} evaluate rows, {len(stages)} stages, {out['stage_seconds_total']:.0f} s of stage time, "
          f"{out['wall_seconds']} s wall; written to {path}")
    return path


def figures() -> None:
    """The scaling figures and the median-PGR table over every committed task."""
    pieces = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json")) if p.name != "summary.json"]
    if not pieces:
        sys.exit(f"no task JSON in {OUT}; export a task first")
    rows = [r for piece in pieces for r in piece["rows"]]
    paths = scaling.write_figures(rows, OUT)
    summary = scaling.median_pgr(rows)
    # a sensitivity check with the flag rule the platform applied before the grid ran: rows whose gap is within
    # noise or whose student is within noise of a constant answer carry no PGR signal
    unflagged = scaling.median_pgr([r for r in rows if not r.get("flagged")])
    totals = {"tasks": [p["task"] for p in pieces], "stage_seconds_total": round(sum(p["stage_seconds_total"] for p in pieces), 1),
              "wall_seconds_total": round(sum(p["wall_seconds"] or 0 for p in pieces), 1), "median_pgr": summary,
              "median_pgr_unflagged_rows": unflagged}
    (OUT / "summary.json").write_text(json.dumps(totals, indent=1) + "\n")
    for title, table in (("every row with a PGR", summary), ("unflagged rows only", unflagged)):
        print(f"median PGR per strong size, {title}:")
        print("| loss | strong | non-embedding params | median PGR | 95% CI | tasks | rows (flagged) |\n|---|---|---|---|---|---|---|")
        for s in table:
            print(f"| {s['loss']} | {s['strong']} | {s['strong_size'] / 1e6:.1f}M | {s['median_pgr']:.2f} | [{s['ci_low']:.2f}, {s['ci_high']:.2f}] "
                  f"| {s['n_tasks']} | {s['n_rows']} ({s['n_flagged']}) |")
    print(f"tasks: {', '.join(totals['tasks'])}; stage time {totals['stage_seconds_total'] / 3600:.2f} h, "
          f"wall {totals['wall_seconds_total'] / 3600:.2f} h; figures: {', '.join(str(p) for p in paths.values())}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "export"):
        p = sub.add_parser(name)
        p.add_argument("--task", required=True, help="a task label of burns_mini.toml, e.g. sst2 or ethics/justice")
        p.add_argument("--db", required=True, help="the store to run in or read from")
        if name == "run":
            p.add_argument("--jobs", type=int, default=2)
    sub.add_parser("figures")
    args = parser.parse_args()
    if args.command == "run":
        run(args.task, args.db, args.jobs)
    elif args.command == "export":
        export(args.task, args.db)
    else:
        figures()


if __name__ == "__main__":
    main()
