"""The store at scale (issue 16, item 5): 1,000 studies, 20,000 stages and 5 million prediction rows.

    nice -n 10 python benchmarks/store_scale.py --phase before     # build the store (once), time it
    nice -n 10 python benchmarks/store_scale.py --phase after      # open it with this w2s (migrates), time again

The store is filled directly through the Store's sqlite-utils connection, in bulk, with the shapes a
real run writes (checked against a small real study): studies with a full spec_json and TOML, per
study one weak fit, its transfer and test predictions, one ceiling fit and its test predictions, and
per loss (5) a student fit, its test predictions and an evaluate stage with the 19 evaluate metrics,
all linked through study_stages; predict stages carry the per-split metrics, fits n_params metrics, a
training curve, a checkpoint artifact row and their data splits; every stage has one attempt row.
The prediction rows are spread evenly over the predict stages (about 625 each).

One extra study is real: a bow grid (studies/…-like TOML written into the work folder, sentiment
data generated beside it) run with `w2s study run` into the big store, so its stages are done rows
and `w2s study run GRID --dry-run` plans a fully cached grid against the big store.

Each command is timed several times as a whole subprocess (`w2s ...`: Python start, imports, the
store work and the printing) and in-process through click's CliRunner (imports already warm: the
store work alone); medians are reported. Results merge into benchmarks/results/store_scale.json
under the phase's name, so `before` and `after` sit side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "store_scale.json"

TASKS = ["sst2", "ethics", "boolq", "chess_puzzles", "files"]
WEAK = [("bow", None, {}), ("minilm-l6", "minilm-l1", {"num_layers": 1, "max_length": 64}),
        ("minilm-l6", "minilm-l2", {"num_layers": 2, "max_length": 64}), ("gpt2", None, {})]
STRONG = [("minilm-l6", None, {"max_length": 64}), ("minilm-l6", "minilm-l4", {"num_layers": 4, "max_length": 64}),
          ("smollm2-135m", None, {"max_length": 128}), ("bert", None, {})]
LOSSES = ["xent", "logconf", "product", "entropy", "window"]
EVAL_METRICS = ["agreement", "agreement_weak_right", "agreement_weak_wrong", "ceiling_acc", "ceiling_acc_ci_high", "ceiling_acc_ci_low",
                "gap", "gap_ci_high", "gap_ci_low", "n_test", "pgr", "pgr_ci_high", "pgr_ci_low", "student_acc",
                "student_acc_ci_high", "student_acc_ci_low", "weak_acc", "weak_acc_ci_high", "weak_acc_ci_low"]
PREDICT_METRICS = ["accuracy", "auroc", "f1", "n", "precision", "recall"]
WORDS = "good great fine awful bad boring fun dull film movie plot actors story not very really but and the a was is".split()


# -- building the store --------------------------------------------------------------
def hexkey(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"


def ulid_like(rng: random.Random, moment: datetime) -> str:
    """A ULID-shaped id (26 Crockford characters, time first) from a seeded generator."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    value = (int(moment.timestamp() * 1000) << 80) | rng.getrandbits(80)
    return "".join(alphabet[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def model_entry(model):
    name, label, options = model
    return {"model": name, "label": label, "options": options, "train": {"epochs": 3, "batch_size": 32, "lr": 1e-4} if name != "bow" else {},
            "adapt": None}


def model_json(model) -> str:
    name, _, options = model
    return json.dumps({"model": name, "version": "1", "options": options, "train": {"epochs": 3, "batch_size": 32, "lr": 1e-4} if name != "bow" else {}})


def label(model) -> str:
    return model[1] or model[0]


def study_toml(name: str, task: str, seed: int, weak, strong, notes: str) -> str:
    opts = lambda m: f"options = {{ {', '.join(f'{k} = {v}' for k, v in m[2].items())} }}\n" if m[2] else ""
    lab = lambda m: f'label = "{m[1]}"\n' if m[1] else ""
    losses = "".join(f'\n[[losses]]\nname = "{loss}"\n' for loss in LOSSES)
    return (f'[study]\nname = "{name}"\nseeds = [{seed}]\nnotes = "{notes}"\n\n[task]\nname = "{task}"\nn_weak_train = 500\n'
            f'n_transfer = 625\nn_test = 625\n\n[weak]\nmodel = "{weak[0]}"\n{lab(weak)}{opts(weak)}\n'
            f'[strong]\nmodel = "{strong[0]}"\n{lab(strong)}{opts(strong)}{losses}')


def build(db_path: Path, n_studies: int, n_predictions: int, seed: int = 0) -> dict:
    """Fill a new store (schema up to the migrations of this w2s, or up to --stop-before) in bulk."""
    rng = random.Random(seed)
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA synchronous = OFF")
    start = datetime(2025, 12, 1, tzinfo=timezone.utc)
    per_study_predict = 3 + len(LOSSES)
    n_predict = n_studies * per_study_predict
    base, extra = divmod(n_predictions, n_predict)
    counts = {t: 0 for t in ("studies", "stages", "study_stages", "metrics", "curves", "predictions", "artifacts", "splits", "stage_attempts")}

    def insert(table: str, rows: list[dict]) -> None:
        if rows:
            columns = list(rows[0])
            conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                             [[r[c] for c in columns] for r in rows])
            counts[table] += len(rows)

    counter = [0]  # predict stages so far: the first `extra` get one more prediction row
    for i in range(n_studies):
        created = start + timedelta(minutes=500 * i + rng.randint(0, 400))
        iso = lambda moment: moment.isoformat(timespec="seconds")
        task = TASKS[i % len(TASKS)]
        weak, strong = WEAK[i % len(WEAK)], STRONG[(i // len(WEAK)) % len(STRONG)]
        study_seed = i % 3
        name = f"{task}_{label(weak)}_to_{label(strong)}_s{study_seed}_{i:04d}"
        notes = f"{label(weak)} supervises {label(strong)} on {task}, seed {study_seed}, five losses"
        study_id = ulid_like(rng, created)
        spec = {"study": {"name": name, "seeds": [study_seed], "notes": notes, "chain_transfer": "fresh", "baseline": "none",
                          "baseline_k_shot": 4, "only_tasks": None, "keep_checkpoints": "all"},
                "task": {"name": task, "label": None, "options": {}, "data_dir": None, "n_weak_train": 500, "n_transfer": 625, "n_test": 625},
                "weak": [model_entry(weak)], "strong": [model_entry(strong)], "chain": [],
                "losses": [{"name": loss, "label": None, "options": {}} for loss in LOSSES], "evals": [], "executor": None}
        insert("studies", [{"id": study_id, "name": name, "toml": study_toml(name, task, study_seed, weak, strong, notes),
                            "spec_json": json.dumps(spec), "hash": hexkey(rng), "path": f"studies/{name}.toml", "created": iso(created),
                            "updated": iso(created + timedelta(minutes=40)), "status": "done" if i % 50 else "failed",
                            "versions_json": json.dumps({"w2s": "0.1.0", "python": "3.11.7", "torch": "2.13.0+cpu", "transformers": "5.24.0"}),
                            "notes": notes}])
        splits = {}
        for split_name, n in (("weak_train", 500), ("transfer", 625), ("test", 625)):
            key = hexkey(rng)
            splits[split_name] = key
            insert("splits", [{"key": key, "task": task, "name": split_name, "seed": study_seed, "n": n,
                               "ids_json": json.dumps([f"{'test' if split_name == 'test' else 'train'}-{rng.randrange(70000)}" for _ in range(n)]),
                               "created": iso(created)}])
        stages, links, metrics, curves, artifacts, attempts, predicts = [], [], [], [], [], [], []
        clock = [created]

        def stage(kind, role, model, loss, spec_json, upstream, output=None, link_labels=None, split=None):
            key = hexkey(rng)
            begun = clock[0] + timedelta(seconds=1)
            seconds = {"fit": rng.uniform(10, 400), "predict": rng.uniform(1, 30), "evaluate": rng.uniform(0.01, 0.5)}[kind]
            clock[0] = begun + timedelta(seconds=seconds)
            stage_id = ulid_like(rng, begun)
            stages.append({"id": stage_id, "key": key, "kind": kind, "role": role, "task": task, "model": label(model) if model else None,
                           "model_json": model_json(model) if model and kind != "evaluate" else None, "loss": loss, "seed": study_seed,
                           "spec_json": json.dumps(spec_json), "upstream_json": json.dumps(upstream), "output_json": json.dumps(output or {}),
                           "status": "done", "created": begun.isoformat(timespec="milliseconds"),
                           "started": begun.isoformat(timespec="milliseconds"), "finished": clock[0].isoformat(timespec="milliseconds"),
                           "seconds": seconds, "error": None, "study_id": study_id, "owner_json": None, "heartbeat": None,
                           "worker_json": json.dumps({"host": "vm", "pid": 4000 + i}), "executor": "local", "legacy_key": None})
            attempts.append({"id": ulid_like(rng, begun), "stage_key": key, "run_id": ulid_like(rng, created), "executor": "local",
                             "owner_json": json.dumps({"host": "vm", "pid": 4000 + i}), "worker_json": None,
                             "started": begun.isoformat(timespec="milliseconds"), "finished": clock[0].isoformat(timespec="milliseconds"),
                             "seconds": seconds, "status": "done", "error": None})
            links.append({"study_id": study_id, "stage_key": key, "role": role, "task": task, "weak": label(weak), "strong": label(strong),
                          "loss": loss, "seed": study_seed, **(link_labels or {})})
            if kind == "fit":
                size = 1_900 if model[0] == "bow" else rng.randint(20_000_000, 540_000_000)
                artifacts.append({"id": ulid_like(rng, begun), "stage_key": key, "kind": "checkpoint", "path": f"/w2s/artifacts/{key}/checkpoint",
                                  "bytes": size, "created": clock[0].isoformat(timespec="seconds")})
                metrics.extend({"stage_key": key, "split": "model", "name": n, "value": float(v)}
                               for n, v in (("n_params", size // 4), ("n_params_non_embedding", size // 5)))
                curves.extend({"stage_key": key, "step": step, "name": n, "value": rng.random()}
                              for step in range(1, 51) for n in ("train_loss", "lr"))
            if kind == "predict":
                n = base + (1 if counter[0] < extra else 0)
                counter[0] += 1
                predicts.append((key, split, n))
                values = {name: rng.uniform(0.5, 0.95) for name in PREDICT_METRICS} | {"n": float(n)}
                metrics.extend({"stage_key": key, "split": split, "name": name, "value": values[name]} for name in PREDICT_METRICS)
            if kind == "evaluate":
                weak_acc, ceiling_acc = rng.uniform(0.55, 0.75), rng.uniform(0.8, 0.95)
                student_acc = rng.uniform(weak_acc - 0.05, ceiling_acc)
                pgr = (student_acc - weak_acc) / (ceiling_acc - weak_acc)
                values = {"weak_acc": weak_acc, "student_acc": student_acc, "ceiling_acc": ceiling_acc, "pgr": pgr, "n_test": 625.0,
                          "gap": ceiling_acc - weak_acc, "agreement": rng.uniform(0.7, 0.95)}
                metrics.extend({"stage_key": key, "split": "test", "name": name,
                                "value": values.get(name, values.get(name.rsplit("_ci_", 1)[0], 0.0) + (0.05 if name.endswith("high") else -0.05))}
                               for name in EVAL_METRICS)
            return key

        fit_spec = lambda model, loss, data, targets: {"kind": "fit", "task": {"name": task, "version": "1", "options": {}}, "data": data,
                                                         "model": json.loads(model_json(model)), "loss": {"name": loss, "options": {}},
                                                         "targets": targets, "seed": study_seed}
        weak_fit = stage("fit", "weak", weak, None, fit_spec(weak, "xent", splits["weak_train"], "ground_truth"), [], link_labels={"loss": None})
        labels_key = stage("predict", "weak_labels", weak, None, {"kind": "predict", "fit": weak_fit, "data": splits["transfer"]},
                           [weak_fit], link_labels={"loss": None}, split="transfer")
        weak_test = stage("predict", "weak_test", weak, None, {"kind": "predict", "fit": weak_fit, "data": splits["test"]},
                          [weak_fit], link_labels={"loss": None}, split="test")
        ceiling = stage("fit", "ceiling", strong, None, fit_spec(strong, "xent", splits["transfer"], "ground_truth"), [], link_labels={"loss": None})
        ceiling_test = stage("predict", "ceiling_test", strong, None, {"kind": "predict", "fit": ceiling, "data": splits["test"]},
                             [ceiling], link_labels={"loss": None}, split="test")
        for loss in LOSSES:
            student = stage("fit", "student", strong, loss, fit_spec(strong, loss, splits["transfer"], labels_key), [labels_key])
            student_test = stage("predict", "student_test", strong, loss,
                                 {"kind": "predict", "fit": student, "data": splits["test"]}, [student], split="test")
            flags = ["near-majority: the student's test accuracy is within noise of always answering class 0"] if rng.random() < 0.1 else []
            stage("evaluate", "evaluate", strong, loss, {"kind": "evaluate", "weak": weak_test, "student": student_test, "ceiling": ceiling_test, "v": 2},
                  [weak_test, student_test, ceiling_test], output={"flags": flags})
        insert("stages", stages)
        insert("study_stages", links)
        insert("metrics", metrics)
        insert("curves", curves)
        insert("artifacts", artifacts)
        insert("stage_attempts", attempts)
        for key, split, n in predicts:
            prefix = "test" if split == "test" else "train"
            rows = []
            for j in range(n):
                p = rng.random()
                label_ = rng.randrange(2)
                rows.append((key, split, f"{prefix}-{j}", p, f"[{1 - p:.6f}, {p:.6f}]", int(p > 0.5), label_))
            conn.executemany("INSERT INTO predictions (stage_key, split, example_id, prob, probs_json, pred, label) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            counts["predictions"] += n
        if i % 100 == 99:
            conn.commit()
            print(f"  {i + 1} studies, {counts['predictions']:,} prediction rows", file=sys.stderr, flush=True)
    conn.commit()  # no ANALYZE: a store w2s writes has no sqlite_stat1, so the planner goes by the schema alone
    conn.close()
    return counts


def copy_rows(source: Path, target: Path) -> int:
    """Every row of every table of `source` into the same table of `target` (columns both have; FTS tables are
    kept by the target's triggers); returns how many."""
    conn = sqlite3.connect(target)
    conn.execute("ATTACH DATABASE ? AS source", [str(source)])
    tables = [r[0] for r in conn.execute("SELECT name FROM source.sqlite_master WHERE type = 'table' AND name NOT LIKE '%fts%' "
                                         "AND name NOT LIKE '\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite%'")]
    copied = 0
    for table in tables:
        theirs = [r[1] for r in conn.execute(f"PRAGMA source.table_info([{table}])")]
        ours = {r[1] for r in conn.execute(f"PRAGMA main.table_info([{table}])")}
        columns = ", ".join(f"[{c}]" for c in theirs if c in ours)
        copied += conn.execute(f"INSERT OR IGNORE INTO main.[{table}] ({columns}) SELECT {columns} FROM source.[{table}]").rowcount
    conn.commit()
    conn.execute("DETACH DATABASE source")
    conn.close()
    return copied


def sentiment_data(folder: Path, n_train: int = 2000, n_test: int = 600, seed: int = 0) -> Path:
    """Sentences whose label follows good/bad words, some negated (tests/conftest.py's generator, larger)."""
    rng = random.Random(seed)
    pos, neg = ["good", "great", "fun", "fine"], ["awful", "bad", "boring", "dull"]
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", n_train), ("test.tsv", n_test)):
        lines = ["sentence\tlabel"]
        for i in range(n):
            lab = i % 2
            word = rng.choice(pos if lab else neg)
            if rng.random() < 0.2:
                word = rng.choice(neg if lab else pos)
                text = f"the {rng.choice(['film', 'movie', 'plot'])} was not {word}"
            else:
                text = f"the {rng.choice(['film', 'movie', 'plot', 'story'])} was {rng.choice(['very', 'really', 'a'])} {word} {rng.choice(WORDS)}"
            lines.append(f"{text}\t{lab}")
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


GRID = """# A cached grid for the store-scale benchmark: 2 weak x 3 strong bag-of-words models, 3 losses, 3 seeds.
[study]
name = "store_scale_grid"
seeds = [0, 1, 2]
notes = "bag-of-words grid planned against a store of 1,000 studies"

[task]
name = "sst2"
data_dir = "{data}"
n_weak_train = 400
n_transfer = 800
n_test = 600

[[weak]]
model = "bow"

[[weak]]
model = "bow"
label = "bow-bigrams"
options = {{ ngram_max = 2 }}

[[strong]]
model = "bow"
label = "bow-bigrams"
options = {{ ngram_max = 2 }}

[[strong]]
model = "bow"
label = "bow-trigrams"
options = {{ ngram_max = 3 }}

[[strong]]
model = "bow"
label = "bow-trigrams-c10"
options = {{ ngram_max = 3 }}
train = {{ C = 10.0 }}

[[losses]]
name = "xent"

[[losses]]
name = "logconf"

[[losses]]
name = "product"
"""


# -- timing ---------------------------------------------------------------------------
def env() -> dict:
    return {**os.environ, "W2S_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}


def w2s(*args) -> list[str]:
    """The installed `w2s` script beside this Python (else python -m w2s): what a user types."""
    script = Path(sys.executable).parent / "w2s"
    return [str(script) if script.exists() else sys.executable, *([] if script.exists() else ["-m", "w2s"]), *map(str, args)]


def time_subprocess(args: list[str], runs: int) -> dict:
    """Wall seconds of the whole command, and its CPU seconds (user + system: what it costs without the
    other processes sharing the machine's cores)."""
    seconds, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        begin = time.perf_counter()
        done = subprocess.run(args, capture_output=True, text=True, env=env())
        seconds.append(time.perf_counter() - begin)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return {"median_s": round(statistics.median(seconds), 4), "runs_s": [round(s, 4) for s in seconds],
            "median_cpu_s": round(statistics.median(cpu), 4)}


def time_in_process(argv: list[str], runs: int) -> dict:
    from click.testing import CliRunner

    from w2s.commands.cli import cli

    seconds = []
    for _ in range(runs):
        begin = time.perf_counter()
        result = CliRunner().invoke(cli, [str(a) for a in argv])
        seconds.append(time.perf_counter() - begin)
        if result.exit_code != 0:
            raise SystemExit(f"w2s {' '.join(map(str, argv))} failed in-process:\n{result.output}")
    return {"median_s": round(statistics.median(seconds), 4), "runs_s": [round(s, 4) for s in seconds]}


def store_counts(db_path: Path) -> dict:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    out = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
           for t in ("studies", "stages", "study_stages", "metrics", "curves", "predictions", "artifacts", "splits")}
    out["results_rows"] = conn.execute("SELECT count(*) FROM results").fetchone()[0]
    out["indexes"] = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex%'"))
    out["migrations"] = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY rowid")]
    conn.close()
    out["file_mb"] = round(db_path.stat().st_size / 1e6, 1)
    return out


def commands(work: Path, db: Path) -> dict[str, list]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    ids = [r[0] for r in conn.execute("SELECT id FROM studies WHERE name LIKE 'sst2_%' ORDER BY created")]
    conn.close()
    a, b = ids[len(ids) // 2], ids[min(len(ids) // 2 + 4, len(ids) - 1)]
    aggregate = ("SELECT task, strong, loss, count(*) AS n, avg(pgr) AS mean_pgr, avg(student_acc) AS student_acc "
                 "FROM results GROUP BY task, strong, loss ORDER BY mean_pgr DESC LIMIT 20")
    filtered = "SELECT study, weak, strong, loss, seed, weak_acc, student_acc, ceiling_acc, pgr FROM results WHERE task = :t AND loss = 'xent' AND pgr > 0.5"
    return {
        "study list": ["study", "list", "--db", db],
        "study list --task --model": ["study", "list", "--db", db, "--task", "sst2", "--model", "minilm-l4", "-n", "50"],
        "study list --search": ["study", "list", "--db", db, "--search", "supervises smollm2"],
        "study show": ["study", "show", a, "--db", db],
        "study compare": ["study", "compare", a, b, "--db", db],
        "query results (group by)": ["query", aggregate, "--db", db],
        "query results (filter)": ["query", filtered, "-p", "t=sst2", "--db", db],
        "study run --dry-run (cached grid)": ["study", "run", work / "grid.toml", "--db", db, "--dry-run"],
        # the same grid with a 4th seed: 57 stages pending, so the throughput of the grid's models is read (estimates)
        "study run --dry-run (grid, 57 pending)": ["study", "run", work / "grid.toml", "--db", db, "--dry-run", "--seed", "0", "--seed", "3"],
        "gc --dry-run": ["gc", "--db", db, "--dry-run"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", default="before", help="Name of this measurement in the JSON (before, after).")
    parser.add_argument("--work", type=Path, default=Path("/tmp/w2s-store-scale"), help="Folder for the store, the grid and its data.")
    parser.add_argument("--studies", type=int, default=999, help="Synthetic studies (the grid study makes one more).")
    parser.add_argument("--predictions", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rebuild", action="store_true", help="Build the store again even if the work folder has one.")
    parser.add_argument("--stop-before", help="Build with the schema of an older w2s: stop before this migration (e.g. m007_scale_indexes); "
                        "the store is then migrated (timed) before the commands run, unless --no-migrate.")
    parser.add_argument("--no-migrate", action="store_true", help="Time the commands on the store as built (read-only commands never migrate).")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from w2s.storing.migrations import migrations

    work = args.work
    db = work / "w2s.db"
    built = {}
    if args.rebuild or not db.exists():
        work.mkdir(parents=True, exist_ok=True)
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), work / "grid.db", work / "grid.db-wal", work / "grid.db-shm"):
            path.unlink(missing_ok=True)
        import sqlite_utils

        schema = sqlite_utils.Database(db)
        schema.enable_wal()
        migrations.apply(schema, stop_before=args.stop_before)
        schema.close()
        begin = time.perf_counter()
        counts = build(db, args.studies, args.predictions)
        built["fill_seconds"] = round(time.perf_counter() - begin, 1)
        data = sentiment_data(work / "data")
        (work / "grid.toml").write_text(GRID.format(data=data))
        begin = time.perf_counter()
        # the grid runs in a store of its own beside the big one (same artifacts/ folder), then its rows are
        # copied over: the big store keeps the schema it was built with (--stop-before) until it is migrated below
        run = subprocess.run(w2s("study", "run", work / "grid.toml", "--db", work / "grid.db"), capture_output=True, text=True, env=env())
        if run.returncode != 0:
            raise SystemExit(f"the grid study failed:\n{run.stdout}\n{run.stderr}")
        built["grid_run_seconds"] = round(time.perf_counter() - begin, 1)
        built["grid_rows_copied"] = copy_rows(work / "grid.db", db)
        print(f"built {db}: {counts} in {built['fill_seconds']} s; grid run {built['grid_run_seconds']} s", file=sys.stderr)

    # A w2s that adds migrations upgrades an older store the first time it opens it for writing
    # (`study run`); the read-only commands never write. Do that once, timed, before the commands.
    import sqlite_utils

    conn = sqlite_utils.Database(db)
    pending = [m.name for m in migrations.pending(conn)]
    conn.close()
    migrate_seconds = None
    if pending and not args.no_migrate:
        from w2s.storing.store import Store

        begin = time.perf_counter()
        Store(db).db.close()
        migrate_seconds = round(time.perf_counter() - begin, 2)

    load_before = os.getloadavg()
    dry = subprocess.run(w2s("study", "run", work / "grid.toml", "--db", db, "--dry-run"), capture_output=True, text=True, env=env())
    head = dry.stdout.splitlines()[0] if dry.stdout else dry.stderr
    startup = time_subprocess(w2s("--version"), args.runs)
    timings = {}
    for name, argv in commands(work, db).items():
        print(f"timing {name} ...", file=sys.stderr, flush=True)
        timings[name] = {"command": "w2s " + " ".join(str(a) for a in argv), "subprocess": time_subprocess(w2s(*argv), args.runs),
                         "in_process": time_in_process(argv, args.runs)}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    phase = {
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
                    "load_average_1min": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)}},
        "store": store_counts(db),
        "pending_migrations_applied": pending if migrate_seconds is not None else [],
        "migrate_seconds": migrate_seconds,
        "dry_run_first_line": head,
        "startup_w2s_version_s": startup,
        "timings": timings,
        **({"build": built} if built else {}),
    }
    out = json.loads(args.out.read_text()) if args.out.exists() else {}
    out.setdefault("about", "benchmarks/store_scale.py: median seconds of several runs; subprocess = the whole `w2s` command "
                             "(Python start, imports, store work, printing), in_process = click's CliRunner in a warm process")
    earlier = out.setdefault("phases", {}).get(args.phase, {})
    if migrate_seconds is None and earlier.get("migrate_seconds") is not None:  # timed again on the store that phase migrated
        phase.update({k: earlier[k] for k in ("pending_migrations_applied", "migrate_seconds")})
    if not built and "build" in earlier:
        phase["build"] = earlier["build"]
    out["phases"][args.phase] = phase
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    width = max(map(len, timings))
    print(f"{'command':<{width}}  subprocess  (cpu)  in-process")
    for name, t in timings.items():
        print(f"{name:<{width}}  {t['subprocess']['median_s']:>9.3f}s  {t['subprocess']['median_cpu_s']:.3f}s  {t['in_process']['median_s']:>9.3f}s")
    print(f"(w2s --version alone: {startup['median_s']:.3f}s; {head})")


if __name__ == "__main__":
    main()
