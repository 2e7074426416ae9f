"""keep_checkpoints: "needed" (the default) stores no weights that no later stage loads; "all" keeps every fit's.

Both give the same results: a folded fit predicts with the model it just trained, a kept one reloads it.
"""

import sqlite_utils

from conftest import study_toml
from w2s.commands.cli import cli


def run(runner, tmp_path, name, text):
    f = tmp_path / f"{name}.toml"
    f.write_text(text)
    db = tmp_path / name / "w2s.db"
    result = runner.invoke(cli, ["study", "run", str(f), "--db", str(db)])
    assert result.exit_code == 0, result.output
    return sqlite_utils.Database(db), db


def result_rows(db):
    return [dict(r) for r in db.query("select task, weak, strong, loss, seed, weak_acc, student_acc, ceiling_acc, pgr, pgr_ci_low, pgr_ci_high "
                                      "from results order by loss")]


def test_needed_keeps_no_checkpoint_and_matches_all(runner, tmp_path, sentiment_dir, tiny_bert):
    needed, needed_path = run(runner, tmp_path, "needed", study_toml(sentiment_dir, tiny_bert))
    kept, kept_path = run(runner, tmp_path, "all", study_toml(sentiment_dir, tiny_bert, extra="").replace(
        'seeds = [0]', 'seeds = [0]\nkeep_checkpoints = "all"'))

    assert result_rows(needed) == result_rows(kept)
    assert len(result_rows(needed)) == 2
    # "needed": no artifact rows and no checkpoint folders; every fit predicted in its own stage
    assert needed.execute("select count(*) from artifacts").fetchone()[0] == 0
    assert not list((needed_path.parent / "artifacts").glob("*/checkpoint"))
    assert needed.execute("select count(*) from stages where kind = 'predict'").fetchone()[0] == 0
    # "all": a checkpoint per fit (weak, ceiling, two students) and a predict stage per split it labels
    assert kept.execute("select count(*) from artifacts where kind = 'checkpoint'").fetchone()[0] == 4
    assert len(list((kept_path.parent / "artifacts").glob("*/checkpoint"))) == 4
    assert kept.execute("select count(*) from stages where kind = 'predict'").fetchone()[0] == 5
    # the same predictions, split by split, whichever stage made them
    for role in ("weak_test", "student_test", "ceiling_test"):
        def probs(db):
            return sorted((r["split"], r["example_id"], r["probs_json"]) for r in db.query(
                "select p.split, p.example_id, p.probs_json from study_stages ss join predictions p on p.stage_key = ss.stage_key "
                "where ss.role = ? and p.split = 'test' and ss.loss is not 'logconf'", [role]))
        assert probs(needed) == probs(kept)
    # the weak model's transfer labels (the students' targets) are stored under its folded fit stage
    weak = next(needed.query("select stage_key from study_stages where role = 'weak_labels'"))["stage_key"]
    assert next(needed.query("select kind, role from stages where key = ?", [weak])) == {"kind": "fit", "role": "weak"}
    assert needed.execute("select count(*) from predictions where stage_key = ? and split = 'transfer'", [weak]).fetchone()[0] == 80


def test_a_fit_another_stage_loads_keeps_its_checkpoint(runner, tmp_path, sentiment_dir, tiny_bert):
    """A cross-task eval loads the students' weights: those fits stay separate and keep them; the rest fold."""
    evals = f"""
[[eval]]
task = "sst2"
data_dir = "{sentiment_dir}"
n = 20
models = ["students"]
"""
    db, path = run(runner, tmp_path, "evals", study_toml(sentiment_dir, tiny_bert, losses=("xent",), extra=evals))
    kept = {r["role"] for r in db.query("select s.role from artifacts a join stages s on s.key = a.stage_key")}
    assert kept == {"student"}
    predicts = {r["role"] for r in db.query("select role from stages where kind = 'predict'")}
    assert predicts == {"student_test"}
    assert db.execute("select count(*) from results").fetchone()[0] == 1


def test_switching_the_option_reruns_fits_under_other_keys(runner, tmp_path, sentiment_dir, tiny_bert):
    """The folded stage is another stage: one store holds both forms, and neither run reads the other's."""
    f = tmp_path / "s.toml"
    f.write_text(study_toml(sentiment_dir, tiny_bert, losses=("xent",)))
    db = tmp_path / "w2s.db"
    assert runner.invoke(cli, ["study", "run", str(f), "--db", str(db)]).exit_code == 0
    again = runner.invoke(cli, ["study", "run", str(f), "--db", str(db), "--set", 'study.keep_checkpoints="all"', "--dry-run"])
    assert again.exit_code == 0, again.output
    assert "8 stages (0 cached)" in again.output  # other stages, and the evaluate stage names other inputs
    seed1 = runner.invoke(cli, ["study", "run", str(f), "--db", str(db), "--seed", "1", "--dry-run"])
    folded = [line for line in seed1.output.splitlines() if line.startswith("  [") and ", predict on " in line]
    assert len(folded) == 3 and all("(to run, key" in line and line.rstrip().endswith(" s") for line in folded), seed1.output
