"""[[task]] grids: one protocol over several tasks, run whole or one task at a time, with measured model sizes and the
scaling figures (accuracy and PGR against strong size, median PGR across tasks)."""

import numpy as np
import pytest
from PIL import Image

from click.testing import CliRunner
from conftest import WORDS, write_sentiment_tsvs

from w2s.commands.cli import cli
from w2s.reporting.html import write_report
from w2s.reporting.scaling import median_pgr
from w2s.storing.store import Store



def grid_toml(data_a, data_b, bert, seeds="[0]") -> str:
    """bow and a 1-layer tiny BERT supervise the 1- and 2-layer BERT, on two SST-2-style data sets."""
    bert_table = """model = "hf"
label = "bert-l{k}"
options = {{ path = "{path}", max_length = 16, num_layers = {k} }}
train = {{ epochs = 6, batch_size = 8, lr = 3e-3 }}
"""
    tasks = "".join(f"""
[[task]]
name = "sst2"
label = "{label}"
data_dir = "{folder}"
n_weak_train = 40
n_transfer = 60
n_test = 40
""" for label, folder in (("sst2_a", data_a), ("sst2_b", data_b)))
    return f"""
[study]
name = "tiny_grid"
seeds = {seeds}
{tasks}
[[weak]]
model = "bow"

[[weak]]
{bert_table.format(k=1, path=bert)}
[[strong]]
{bert_table.format(k=1, path=bert)}
[[strong]]
{bert_table.format(k=2, path=bert)}
[[losses]]
name = "xent"

[[losses]]
name = "logconf"
"""


@pytest.fixture(scope="module")
def grid_store(tmp_path_factory, tiny_bert):
    """The tiny grid run the way burns_mini is: one task first (--task sst2_b), then the whole study on the same store."""
    root = tmp_path_factory.mktemp("grid")
    path = root / "grid.toml"
    path.write_text(grid_toml(write_sentiment_tsvs(root / "a", seed=0), write_sentiment_tsvs(root / "b", seed=1), tiny_bert))
    env = {"W2S_HOME": str(root / "home"), "W2S_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "W2S_DATA_DIR": None}
    runner, db = CliRunner(), root / "grid.db"
    first = runner.invoke(cli, ["study", "run", str(path), "--db", str(db), "--task", "sst2_b"], env=env)
    assert first.exit_code == 0, first.output
    piece = {r["task"] for r in Store(db).db.query("SELECT DISTINCT task FROM study_stages")}
    piece_stages = Store(db).db.execute("SELECT count(*) FROM stages").fetchone()[0]
    whole = runner.invoke(cli, ["study", "run", str(path), "--db", str(db)], env=env)
    assert whole.exit_code == 0, whole.output
    return {"db": db, "piece_tasks": piece, "piece_stages": piece_stages, "output": whole.output, "path": path, "root": root}


def test_a_task_grid_runs_one_task_at_a_time_then_whole_with_every_stage_cached(grid_store):
    assert grid_store["piece_tasks"] == {"sst2_b"}
    store = Store(grid_store["db"])
    # the sst2_b stages were reused by the whole run, not run again: each key has one attempt
    attempts = dict(store.db.execute("SELECT stage_key, count(*) FROM stage_attempts GROUP BY stage_key").fetchall())
    assert max(attempts.values()) == 1
    assert store.db.execute("SELECT count(*) FROM stages").fetchone()[0] == 2 * grid_store["piece_stages"]
    study = store.find_study("tiny_grid")
    rows = list(store.db.query("SELECT task, weak, strong FROM evaluations WHERE study_id = ? AND role = 'evaluate'", [study["id"]]))
    assert len(rows) == 2 * 3 * 2  # 2 tasks x 3 pairs (bow->l1, bow->l2, l1->l2) x 2 losses, one seed
    assert {(r["weak"], r["strong"]) for r in rows} == {("bow", "bert-l1"), ("bow", "bert-l2"), ("bert-l1", "bert-l2")}
    assert {r["task"] for r in rows} == {"sst2_a", "sst2_b"}
    table = grid_store["output"]
    assert "PGR matrix [sst2_a, xent]" in table and "PGR matrix [sst2_b, logconf]" in table
    assert "sst2_a: fit weak bow on weak_train (ground truth)" in table  # progress names the task


def test_every_fit_records_its_measured_parameter_count(grid_store):
    store = Store(grid_store["db"])
    sizes = {}
    for fit in store.db.query("SELECT key, model FROM stages WHERE kind = 'fit'"):
        metrics = {m["name"]: m["value"] for m in store.db.query("SELECT name, value FROM metrics WHERE stage_key = ?", [fit["key"]])}
        assert metrics.get("n_params", 0) > 0, fit
        sizes[fit["model"]] = (metrics["n_params"], metrics["n_params_non_embedding"])
    # tiny BERT, hidden 32 and intermediate 64: an encoder layer has 4 x (32x32 + 32) + 2 x 32 x 64 + 64 + 32 + 2 x 2 x 32 weights
    assert sizes["bert-l2"][1] - sizes["bert-l1"][1] == 4 * (32 * 32 + 32) + 2 * 32 * 64 + 64 + 32 + 2 * 2 * 32
    assert sizes["bert-l2"][0] - sizes["bert-l2"][1] == sizes["bert-l1"][0] - sizes["bert-l1"][1] > 0  # the same embeddings
    assert sizes["bow"][0] == sizes["bow"][1]  # a bag of words: a weight per word seen in A, plus the intercept
    assert 10 < sizes["bow"][0] <= len(WORDS) + 1


def test_the_report_of_a_task_grid_draws_the_scaling_figures_with_a_panel_per_task_and_loss(grid_store, tmp_path):
    out = write_report(Store(grid_store["db"]), "tiny_grid", tmp_path / "report")
    figures = out["figures"]
    assert {"scaling_accuracy", "scaling_pgr", "median_pgr"} <= set(figures)
    assert "grid" not in figures  # its lines would pool the two tasks

    def panels(name):
        return Image.open(figures[name]).text["Description"].splitlines()

    expected = ["sst2_a [xent]", "sst2_b [xent]", "sst2_a [logconf]", "sst2_b [logconf]"]
    assert panels("scaling_accuracy") == expected  # losses down, tasks across
    assert panels("scaling_pgr") == expected
    store = Store(grid_store["db"])
    defined = {r["task"] for r in store.db.query("SELECT task FROM evaluations WHERE role = 'evaluate' AND pgr IS NOT NULL")}
    n = len(defined)  # the median runs over tasks with a defined PGR (ceiling above weak)
    assert panels("median_pgr") == [f"median PGR over {n} task{'s' if n != 1 else ''} (95% CI: bootstrap over tasks and rows; bars clipped at the axis)"]


def test_median_pgr_is_the_median_over_tasks_of_each_tasks_median():
    rows = []
    for task, values in {"a": [0.1, 0.2, 0.9], "b": [0.5, 0.6], "c": [-0.4, 0.0, 0.3]}.items():
        rows += [{"task": task, "loss": "xent", "strong": "big", "strong_size": 10.0, "pgr": v, "flagged": v < 0} for v in values]
    rows.append({"task": "a", "loss": "xent", "strong": "big", "strong_size": 10.0, "pgr": None})
    (summary,) = median_pgr(rows, resamples=400)
    assert summary["median_pgr"] == pytest.approx(np.median([0.2, 0.55, 0.0]))
    assert summary["n_tasks"] == 3 and summary["n_rows"] == 8 and summary["n_flagged"] == 1
    assert -0.4 <= summary["ci_low"] <= summary["median_pgr"] <= summary["ci_high"] <= 0.9


def run(runner, *args):
    return runner.invoke(cli, ["study", "run", *map(str, args)])


def test_task_grid_mistakes_are_one_line(runner, tmp_path, sentiment_dir, tiny_bert):
    path = tmp_path / "dup.toml"
    path.write_text(grid_toml(sentiment_dir, sentiment_dir, tiny_bert))
    path.write_text(path.read_text().replace('label = "sst2_b"', 'label = "sst2_a"'))
    result = run(runner, path, "--dry-run")
    assert "task[1]: label 'sst2_a' is already used by task[0]; give it a distinct label" in result.output
    path.write_text(grid_toml(sentiment_dir, sentiment_dir, tiny_bert))
    result = run(runner, path, "--dry-run", "--task", "boolq")
    assert result.exit_code != 0
    assert "study.only_tasks: no task labelled 'boolq'; the study's tasks are sst2_a, sst2_b" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_show_compare_and_rerun_read_a_task_grid(grid_store):
    env = {"W2S_HOME": str(grid_store["root"] / "home"), "HF_HUB_OFFLINE": "1", "W2S_PROGRESS": "0"}
    runner, db = CliRunner(), str(grid_store["db"])
    show = runner.invoke(cli, ["study", "show", "tiny_grid", "--db", db], env=env)
    assert show.exit_code == 0, show.output
    assert "tasks sst2_a, sst2_b; weak bow, bert-l1; strong bert-l1, bert-l2" in show.output
    listed = runner.invoke(cli, ["study", "list", "--db", db, "--task", "sst2_b"], env=env)
    assert "tiny_grid" in listed.output and "sst2_a,sst2_b" in listed.output
    rerun = runner.invoke(cli, ["study", "rerun", "tiny_grid", "--db", db], env=env)
    assert rerun.exit_code == 0, rerun.output
    progress = [line for line in rerun.output.splitlines() if line.startswith("[")]
    assert progress and all(line.endswith(": cached") for line in progress)


def test_a_bad_field_in_a_task_table_names_the_table_not_the_union(runner, tmp_path):
    base = '[study]\nname = "x"\n{tasks}\n[weak]\nmodel = "bow"\n[strong]\nmodel = "bow"\n'
    one = '[task]\nname = "sst2"\nn_weak_train = 10\nn_transfer = "ten"\n'
    grid = '[[task]]\nname = "sst2"\nn_weak_train = 10\nn_transfer = 10\n[[task]]\nname = "sst2"\nlabel = "b"\nn_weak_train = 10\nn_transfer = 10\nbogus = 1\n'
    for tasks, message in ((one, "task.n_transfer: Input should be a valid integer"), (grid, "task.1.bogus: unknown option; valid: data_dir, label")):
        path = tmp_path / "bad.toml"
        path.write_text(base.format(tasks=tasks))
        out = run(runner, path, "--dry-run")
        assert out.exit_code != 0 and message in out.output and "TaskSpec" not in out.output, out.output
