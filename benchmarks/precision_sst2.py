"""Benchmark: does bf16 cost accuracy? MiniLM-L6 in fp32 and in bf16 on real SST-2, three seeds, one study (issue 16).

    W2S_DATA_DIR=../shared/data python benchmarks/precision_sst2.py [--db PATH] [--jobs 1] [--out benchmarks/results/precision_sst2.json]

bow supervises two strong models that differ only in `options.precision` ("fp32", "bf16": forward passes under
bfloat16 autocast); 2,000 weak-train and 2,000 transfer sentences from train.tsv, the 872 of test.tsv (GLUE
validation) as test, max_length 64, 2 epochs, batch 32, lr 1e-4 (burns_mini's recipe), seeds 0, 1 and 2. The JSON
has each model's test accuracy per seed and the means, each pair's PGR, and every fit stage's wall time, so the
speed of the two precisions is also compared on the same stages. The issue's bar: the mean ceiling accuracy in
bf16 within 1 point of fp32.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
from pathlib import Path

import sqlite_utils

ROOT = Path(__file__).resolve().parents[1]
STRONG = """
[[strong]]
model = "minilm-l6"
label = "minilm-{precision}"
options = {{ max_length = 64, precision = "{precision}" }}
train = {{ epochs = 2, batch_size = 32, lr = 1e-4 }}
"""


def study_text(data: Path) -> str:
    return (f'[study]\nname = "precision_sst2"\nseeds = [0, 1, 2]\n\n[task]\nname = "sst2"\ndata_dir = "{data}"\n'
            'n_weak_train = 2000\nn_transfer = 2000\nn_test = 872\n\n[weak]\nmodel = "bow"\n'
            + "".join(STRONG.format(precision=p) for p in ("fp32", "bf16")) + '\n[[losses]]\nname = "xent"\n')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(os.environ.get("W2S_DATA_DIR", ROOT.parent / "shared" / "data")) / "sst2"))
    parser.add_argument("--db", help="store to use (default: a fresh temporary one)")
    parser.add_argument("--jobs", type=int, default=1, help="stages at once (processes executor when > 1)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "precision_sst2.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="w2s-precision-"))
    study = work / "precision_sst2.toml"
    study.write_text(study_text(Path(args.data).resolve()))
    db_path = Path(args.db) if args.db else work / "w2s.db"
    executor = ["--executor", "processes", "--jobs", str(args.jobs)] if args.jobs > 1 else []
    subprocess.run(["w2s", "study", "run", str(study), "--db", str(db_path), *executor], check=True)
    db = sqlite_utils.Database(db_path)
    study_id = next(db.query("SELECT id FROM studies WHERE name = 'precision_sst2' ORDER BY created DESC LIMIT 1"))["id"]
    results = list(db.query("SELECT strong, seed, weak_acc, student_acc, ceiling_acc, pgr, pgr_ci_low, pgr_ci_high FROM results "
                            "WHERE study_id = ? ORDER BY strong, seed", [study_id]))
    fits = list(db.query("SELECT DISTINCT st.role, st.model, st.seed, st.seconds, json_extract(st.worker_json, '$.threads') AS threads "
                         "FROM study_stages ss JOIN stages st ON st.key = ss.stage_key WHERE ss.study_id = ? AND st.kind = 'fit' "
                         "ORDER BY st.model, st.role, st.seed", [study_id]))
    summary = {}
    for precision in ("fp32", "bf16"):
        rows = [r for r in results if r["strong"] == f"minilm-{precision}"]
        seconds = [f["seconds"] for f in fits if f["model"] == f"minilm-{precision}"]
        summary[precision] = {"ceiling_acc_mean": statistics.mean(r["ceiling_acc"] for r in rows),
                              "student_acc_mean": statistics.mean(r["student_acc"] for r in rows),
                              "pgr_mean": statistics.mean(r["pgr"] for r in rows), "fit_seconds_total": sum(seconds)}
    summary["ceiling_gap_points"] = 100 * (summary["bf16"]["ceiling_acc_mean"] - summary["fp32"]["ceiling_acc_mean"])
    summary["fit_speedup_bf16"] = summary["fp32"]["fit_seconds_total"] / summary["bf16"]["fit_seconds_total"]
    out = {"benchmark": "precision_sst2", "study": study_text(Path("<W2S_DATA_DIR>/sst2")), "machine": platform.processor() or platform.machine(),
           "cpus": os.cpu_count(), "jobs": args.jobs, "summary": summary, "results": results, "fit_stages": fits}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
