"""Benchmark: one grid of independent stages on real SST-2, run by each executor side by side; wall time and speedup.

    python benchmarks/executors.py [--data ../shared/data/sst2] [--rounds 1] [--out benchmarks/results/executors.json]

The grid (generated below) is built for executor timing, not as a W2S experiment: 2 seeds; weak models
are MiniLM-L6 linear probes truncated to 1-4 layers (logistic regression on cached frozen features) and a
bag-of-words model; strong models are three bag-of-words variants. 3,000 weak-train / 3,000 transfer
examples come from train.tsv, and the 872 GLUE validation sentences are the test set: 132 stages. The
heavy work, encoding a split with a probe's frozen layers, sits in independent stages (a probe's fit on
A, its labels on B, its test predictions on T). Stages that need the same split's features wait for the
one computing them, so a grid whose strong models were probes would mostly wait, and show little speedup.
Every run is a separate `w2s study run` process on a fresh store (so nothing is cached, features
included), with one torch/BLAS thread per stage:

    local            --executor local --threads 1            (one stage at a time)
    processes        --executor processes --jobs 2 --threads 1
    ray              --executor ray --jobs 2 --threads 1     (a local Ray runtime started by the run)
    local-all-cores  --executor local                        (one stage at a time, torch on every core)

Runs are interleaved when --rounds > 1. The predictions of the three one-thread runs are compared
bit for bit; the JSON records wall times, the speedup over `local`, and the summed stage time.
"""

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = {
    "local": ["--executor", "local", "--threads", "1"],
    "processes": ["--executor", "processes", "--jobs", "2", "--threads", "1"],
    "ray": ["--executor", "ray", "--jobs", "2", "--threads", "1"],
    "local-all-cores": ["--executor", "local"],
}
BOWS = [("bow-c01", "{ C = 0.1 }", "{ ngram_max = 1 }"), ("bow-bigram", "{ C = 1.0 }", "{ ngram_max = 2 }"),
        ("bow-bigram-c01", "{ C = 0.1 }", "{ ngram_max = 2 }")]


def study_toml(data: Path) -> str:
    probes = "".join(
        f'\n[[weak]]\nmodel = "minilm-l6"\nlabel = "probe-l{k}"\noptions = {{ num_layers = {k}, max_length = 64 }}\n'
        f'train = {{ mode = "logistic_regression", eval_batch_size = 64 }}\n' for k in (1, 2, 3, 4))
    strong = "".join(f'\n[[strong]]\nmodel = "bow"\nlabel = "{label}"\ntrain = {train}\noptions = {options}\n' for label, train, options in BOWS)
    return f"""[study]
name = "executors-benchmark"
seeds = [0, 1]
notes = "benchmarks/executors.py: independent linear-probe and bag-of-words stages, for executor wall times"

[task]
name = "sst2"
data_dir = "{data}"
n_weak_train = 3000
n_transfer = 3000
n_test = 872
{probes}
[[weak]]
model = "bow"
{strong}"""


def run(study: Path, db: Path, args: list[str]) -> float:
    env = {**os.environ, "W2S_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "w2s", "study", "run", str(study), "--db", str(db), *args],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
    return wall


def store_facts(db: Path) -> dict:
    conn = sqlite3.connect(db)
    stages, serial = conn.execute("SELECT count(*), sum(seconds) FROM stages WHERE status = 'done'").fetchone()
    predictions = {(k, s, e): p for k, s, e, p in conn.execute("SELECT stage_key, split, example_id, probs_json FROM predictions")}
    results = [dict(zip(("weak", "strong", "seed", "weak_acc", "student_acc", "ceiling_acc", "pgr"), r)) for r in conn.execute(
        "SELECT weak, strong, seed, weak_acc, student_acc, ceiling_acc, pgr FROM results ORDER BY seed, weak, strong")]
    conn.close()
    return {"stages": stages, "stage_seconds": serial, "predictions": predictions, "results": results}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "sst2"))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "executors.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="w2s-executors-"))
    study = work / "grid.toml"
    study.write_text(study_toml(Path(args.data).resolve()))
    walls: dict[str, list[float]] = {name: [] for name in RUNS}
    facts = {}
    for round_ in range(args.rounds):
        for name, flags in RUNS.items():
            db = work / f"{name}-{round_}" / "w2s.db"
            walls[name].append(run(study, db, flags))
            facts[name] = store_facts(db)
            print(f"round {round_ + 1}: {name:16s} {walls[name][-1]:7.1f} s wall, {facts[name]['stages']} stages, "
                  f"{facts[name]['stage_seconds']:.0f} s of stage time", flush=True)
    best = {name: min(w) for name, w in walls.items()}
    same = {name: facts[name]["predictions"] == facts["local"]["predictions"] for name in ("processes", "ray")}
    out = {
        "benchmark": "executors",
        "data": args.data,
        "study": study.read_text(),
        "rounds": args.rounds,
        "stages": facts["local"]["stages"],
        "wall_seconds": {name: [round(w, 1) for w in ws] for name, ws in walls.items()},
        "best_wall_seconds": {name: round(w, 1) for name, w in best.items()},
        "speedup_vs_local_1_thread": {name: round(best["local"] / w, 2) for name, w in best.items()},
        "summed_stage_seconds": {name: round(f["stage_seconds"], 1) for name, f in facts.items()},
        "predictions_identical_to_local": same,
        "results": facts["local"]["results"],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("best_wall_seconds", "speedup_vs_local_1_thread", "predictions_identical_to_local")}, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
