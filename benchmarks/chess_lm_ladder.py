"""Results of studies/chess_lm_ladder.toml (issue 17) as JSON, with `w2s report`'s figures beside it.

    w2s study run studies/chess_lm_ladder.toml --db ladder.db --executor processes --jobs 2
    python benchmarks/chess_lm_ladder.py --db ladder.db
    python benchmarks/chess_lm_ladder.py --db ladder.db --study chess_lm_engine --out benchmarks/results/chess_lm_engine.json

A store does not outlive a machine, so the numbers are committed: benchmarks/results/chess_lm_ladder.json holds
each fitted model's test metrics (accuracy with its bootstrap CI, exact match and illegal-move rate of free
generation, measured size), every chain step and the direct transfer with PGR and its CI, the chain minus direct
difference with its paired CI, each stage's wall time, and the table `w2s study show` prints. The PNGs of
`w2s report` go to benchmarks/results/chess_lm_ladder/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import datetime
from pathlib import Path

from w2s.reporting.html import write_report
from w2s.reporting.tables import results_table
from w2s.storing.store import Store

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"
FIT_ROLES = ("weak", "student", "ceiling")


def fitted_models(store: Store, study_id: str) -> list[dict]:
    """Every fit of the study with its labels, wall time and metrics per split ({split: {name: value}})."""
    marks = ",".join("?" * len(FIT_ROLES))
    links = store.db.query(
        f"SELECT DISTINCT ss.stage_key, ss.role, ss.weak, ss.strong, ss.loss, ss.seed, st.model, st.seconds, st.started, st.finished "
        f"FROM study_stages ss JOIN stages st ON st.key = ss.stage_key WHERE ss.study_id = ? AND ss.role IN ({marks}) ORDER BY st.started",
        [study_id, *FIT_ROLES])
    out = []
    for link in links:
        metrics: dict[str, dict] = {}
        for m in store.db.query("SELECT split, name, value FROM metrics WHERE stage_key = ? ORDER BY split, name", [link["stage_key"]]):
            metrics.setdefault(m["split"] or "", {})[m["name"]] = m["value"]
        out.append({**link, "metrics": metrics})
    return out


def evaluations(store: Store, study_id: str) -> list[dict]:
    """Weak/strong pairs, chain steps and the direct transfer: every test metric of each evaluate stage (PGR, CIs,
    chain minus direct)."""
    links = store.db.query("SELECT DISTINCT ss.stage_key, ss.role, ss.weak, ss.strong, ss.loss, ss.seed, st.output_json FROM study_stages ss "
                           "JOIN stages st ON st.key = ss.stage_key WHERE ss.study_id = ? AND ss.role IN ('evaluate', 'chain_step', 'chain_direct') "
                           "ORDER BY ss.role DESC, st.started", [study_id])
    out = []
    for link in links:
        metrics = {m["name"]: m["value"] for m in store.db.query("SELECT name, value FROM metrics WHERE stage_key = ? ORDER BY name",
                                                                   [link["stage_key"]])}
        flags = json.loads(link.pop("output_json") or "{}").get("flags", [])
        out.append({**link, **metrics, "flags": flags})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="the store the study ran in")
    parser.add_argument("--study", default="chess_lm_ladder", help="study name or id in that store")
    parser.add_argument("--out", default=str(OUT / "chess_lm_ladder.json"))
    args = parser.parse_args()
    store = Store(Path(args.db))
    study = store.find_study(args.study)
    fits = fitted_models(store, study["id"])
    stages = list(store.db.query("SELECT st.kind, st.role, st.model, st.seconds, st.started, st.finished FROM stages st WHERE st.key IN "
                                 "(SELECT stage_key FROM study_stages WHERE study_id = ?) ORDER BY st.started", [study["id"]]))
    attempts = list(store.db.query("SELECT a.stage_key, st.role, st.model, a.status, a.started, a.finished, a.error FROM stage_attempts a "
                                   "JOIN stages st ON st.key = a.stage_key WHERE a.stage_key IN (SELECT stage_key FROM study_stages "
                                   "WHERE study_id = ?) ORDER BY a.started", [study["id"]]))
    ran = [a for a in attempts if a["started"] and a["finished"]]
    span = (datetime.fromisoformat(max(a["finished"] for a in ran)) - datetime.fromisoformat(min(a["started"] for a in ran))).total_seconds()
    out = {
        "benchmark": study["name"],
        "study": {"id": study["id"], "name": study["name"], "spec": json.loads(study["spec_json"])},
        "fits": fits,
        "evaluations": evaluations(store, study["id"]),
        "stage_seconds_total": round(sum(s["seconds"] or 0 for s in stages), 1),
        "wall_seconds": round(span, 1),
        "wall_note": "first attempt's start to the last attempt's end, failed and abandoned attempts included (see attempts); "
                     "stage_seconds_total sums the finished stages",
        "attempts": attempts,
        "report": results_table(store, study["id"]).splitlines(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    figures = write_report(store, study["id"], path.with_suffix(""))
    print("\n".join(out["report"]))
    print(f"written {path} and {', '.join(str(p) for p in figures['figures'].values())}")


if __name__ == "__main__":
    main()
