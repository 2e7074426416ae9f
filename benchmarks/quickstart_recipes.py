"""Benchmark: quickstart recipes (bow -> MiniLM-L6) scored on a validation split carved from the quickstart's train file.

    python benchmarks/quickstart_recipes.py [--only NAME ...] [--out benchmarks/results/quickstart_recipes.json]

Issue 13 asks for a quickstart whose xent PGR is >= 0.3 with the CI's lower bound above 0, chosen
without looking at its test split. So the quickstart's test.tsv is never read here: VALIDATION rows of
studies/data/quickstart/train.tsv (shuffled with seed 12345) become the validation "test" split and the
rest the pool for weak-train and transfer. Each recipe runs as its own study on one store (weak stages
shared), and the JSON keeps every seed's accuracies and PGR with its CI.

Sessions 4-6 scored 13 recipes on the first 1,800-sentence data (train 1,500, validation 300 of it, pool
1,200); none reached the bar, and the spread between seeds with 300 sentences was the obstacle. Their rows
stay in the JSON, their `data` field naming the 1,800-sentence data; the script at commit 22408bf reruns them. Session 8 added
1,500 hand-written sentences (train 2,500, test 800), so these recipes score on 500 validation sentences
with a 2,000-sentence pool.
"""

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
VALIDATION = 500
DATA = f"2,500-sentence train file (session 8): {VALIDATION} validation, pool {2500 - VALIDATION:,}"
FT = '[strong.options]\nmax_length = 64\n[strong.train]\nepochs = {epochs}\nbatch_size = {batch}\nlr = {lr}\n'
WEAK = 'model = "bow"\n'
SHIPPED = FT.format(epochs=2, batch=32, lr="1e-4")  # the quickstart's strong recipe since session 8
THREE_EPOCHS = FT.format(epochs=3, batch=16, lr="5e-5")  # the quickstart's strong recipe before session 8


def bow(c: float) -> str:
    """The [weak] table's body for a bag of words with regularisation C = c (default 1)."""
    return WEAK + f"[weak.train]\nC = {c}\n"


class Recipe(NamedTuple):
    strong: str  # the [strong] tables after `model = "minilm-l6"`
    losses: list[str]  # beside xent
    n_weak_train: int
    n_transfer: int
    seeds: list[int]
    weak: str = WEAK  # the [weak] table's body


RECIPES = {
    "finetune-3ep-5e-5 (the shipped recipe), transfer 1,400": Recipe(THREE_EPOCHS, ["logconf"], 600, 1400, [0, 1, 2]),
    "finetune-2ep-5e-5, transfer 1,400": Recipe(FT.format(epochs=2, batch=16, lr="5e-5"), ["logconf"], 600, 1400, [0, 1, 2]),
    "finetune-2ep-1e-4-bs32 (burns_mini's recipe), transfer 1,400": Recipe(SHIPPED, ["logconf"], 600, 1400, [0, 1, 2]),
    # the quickstart's earlier sizes (600 / 800), at which 3 epochs fit its 3-minute budget
    "finetune-3ep-5e-5 (the shipped recipe), transfer 800": Recipe(THREE_EPOCHS, ["logconf"], 600, 800, [0, 1, 2]),
    # the weak side: a more regularised bag of words gives softer labels where it is unsure; fewer
    # weak-train sentences give errors that follow fewer words
    "bow C=0.1, finetune-2ep-1e-4-bs32": Recipe(SHIPPED, [], 600, 1400, [0, 1, 2], bow(0.1)),
    "bow C=0.3, finetune-2ep-1e-4-bs32": Recipe(SHIPPED, [], 600, 1400, [0, 1, 2], bow(0.3)),
    "bow weak-train 200, finetune-2ep-1e-4-bs32": Recipe(SHIPPED, [], 200, 1400, [0, 1, 2]),
    # C = 0.1 and 0.3 scored below the default C = 1 (0.04, 0.16 against 0.23): the other direction
    "bow C=3, finetune-2ep-1e-4-bs32": Recipe(SHIPPED, [], 600, 1400, [0, 1, 2], bow(3.0)),
    "bow C=10, finetune-2ep-1e-4-bs32": Recipe(SHIPPED, [], 600, 1400, [0, 1, 2], bow(10.0)),
}


def validation_data(folder: Path) -> Path:
    rows = (ROOT / "studies" / "data" / "quickstart" / "train.tsv").read_text().splitlines()
    head, body = rows[0], rows[1:]
    random.Random(12345).shuffle(body)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.tsv").write_text("\n".join([head] + body[VALIDATION:]) + "\n")
    (folder / "test.tsv").write_text("\n".join([head] + body[:VALIDATION]) + "\n")  # validation, from the train file
    return folder


def study(name: str, data: Path, recipe: Recipe) -> str:
    extra = "".join(f'\n[[losses]]\nname = "{loss}"\n' for loss in recipe.losses)
    return (f'[study]\nname = "{name}"\nseeds = {recipe.seeds}\n\n[task]\nname = "sst2"\ndata_dir = "{data}"\n'
            f"n_weak_train = {recipe.n_weak_train}\nn_transfer = {recipe.n_transfer}\nn_test = {VALIDATION}\n\n[weak]\n{recipe.weak}\n"
            f'[strong]\nmodel = "minilm-l6"\n{recipe.strong}\n[[losses]]\nname = "xent"\n{extra}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="recipe names to run (default: all)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quickstart_recipes.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="w2s-qs-recipes-"))
    data, db = validation_data(work / "data"), work / "w2s.db"
    out = {"benchmark": "quickstart_recipes", "validation": f"{VALIDATION} rows of studies/data/quickstart/train.tsv (seed 12345); test.tsv unused",
           "recipes": []}
    earlier = json.loads(Path(args.out).read_text())["recipes"] if Path(args.out).exists() else []
    for name, recipe in RECIPES.items():
        if args.only and name not in args.only:
            continue
        f = work / f"{len(out['recipes'])}.toml"
        f.write_text(study(name, data, recipe))
        start = time.perf_counter()
        done = subprocess.run(["w2s", "study", "run", str(f), "--db", str(db)], capture_output=True, text=True,
                              env={**os.environ, "W2S_PROGRESS": "0", "HF_HUB_OFFLINE": "1"})
        if done.returncode:
            sys.exit(f"{name} failed:\n{done.stderr[-2000:]}")
        rows = sqlite3.connect(db).execute(
            "SELECT loss, seed, weak_acc, student_acc, ceiling_acc, pgr, pgr_ci_low, pgr_ci_high FROM results WHERE study = ? ORDER BY loss, seed",
            [name]).fetchall()
        keys = ("loss", "seed", "weak_acc", "student_acc", "ceiling_acc", "pgr", "pgr_ci_low", "pgr_ci_high")
        out["recipes"].append({"name": name, "data": DATA, "n_weak_train": recipe.n_weak_train, "n_transfer": recipe.n_transfer,
                               "n_validation": VALIDATION, "strong": recipe.strong.strip(), "weak": recipe.weak.strip(),
                               "wall_seconds": round(time.perf_counter() - start, 1), "rows": [dict(zip(keys, r)) for r in rows]})
        print(name, json.dumps(out["recipes"][-1]["rows"]), flush=True)
    ran = {r["name"] for r in out["recipes"]}  # a partial run (--only) keeps the other recipes' earlier results
    out["recipes"] = [r for r in earlier if r["name"] not in ran] + out["recipes"]
    for recipe in out["recipes"]:
        pgrs = {loss: [r["pgr"] for r in recipe["rows"] if r["loss"] == loss and r["pgr"] is not None] for loss in {r["loss"] for r in recipe["rows"]}}
        recipe["mean_pgr"] = {loss: round(sum(v) / len(v), 3) if v else None for loss, v in sorted(pgrs.items())}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
