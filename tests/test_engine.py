"""The engine: cached reruns, disjoint recorded splits, crash safety, a read-only query."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import sqlite_utils

from w2s.commands.cli import cli
from conftest import study_toml


@pytest.fixture(scope="module")
def stored(tmp_path_factory, tiny_bert):
    """One tiny study run once for the module: (study file, db, first run's result)."""
    from click.testing import CliRunner
    from conftest import write_sentiment_tsvs

    tmp_path = tmp_path_factory.mktemp("stored")
    f = tmp_path / "s.toml"
    f.write_text(study_toml(write_sentiment_tsvs(tmp_path / "data"), tiny_bert))
    db = tmp_path / "w2s.db"
    first = CliRunner().invoke(cli, ["study", "run", str(f), "--db", str(db)])
    assert first.exit_code == 0, first.output
    return f, db, first


def results_rows(db):
    return list(sqlite_utils.Database(db).query("select loss, weak_acc, student_acc, ceiling_acc, pgr from results order by loss"))


def test_rerun_is_cached_and_identical(runner, stored):
    f, db, first = stored
    before = results_rows(db)
    assert [r["loss"] for r in before] == ["logconf", "xent"]
    second = runner.invoke(cli, ["study", "run", str(f), "--db", str(db)])
    assert second.exit_code == 0
    stage_lines = [l for l in second.output.splitlines() if l.startswith("[")]
    assert len(stage_lines) == 6 and all(l.endswith(": cached") for l in stage_lines)
    assert results_rows(db) == before
    db_ = sqlite_utils.Database(db)
    assert db_.execute("select count(*) from studies").fetchone()[0] == 1
    assert db_.execute("select count(*) from stages").fetchone()[0] == 6


def test_results_match_printed_table_and_predictions(stored):
    f, db, first = stored
    db_ = sqlite_utils.Database(db)
    row = next(db_.query("select * from results where loss = 'xent'"))
    assert f"{row['weak_acc']:.3f}" in first.output and f"{row['ceiling_acc']:.3f}" in first.output
    # the weak accuracy in the results view is recomputed from the stored test predictions
    weak_key = next(db_.query("select stage_key from study_stages where role = 'weak_test'"))["stage_key"]
    preds = list(db_.query("select pred, label from predictions where stage_key = ? and split = 'test'", [weak_key]))
    assert len(preds) == 60
    assert row["weak_acc"] == pytest.approx(sum(p["pred"] == p["label"] for p in preds) / 60)


def test_splits_are_disjoint_seeded_and_recorded(stored):
    f, db, _ = stored
    splits = {r["name"]: json.loads(r["ids_json"]) for r in sqlite_utils.Database(db).query("select * from splits")}
    assert set(splits) == {"weak_train", "transfer", "test"}
    assert len(splits["weak_train"]) == 40 and len(splits["transfer"]) == 80 and len(splits["test"]) == 60
    assert not set(splits["weak_train"]) & set(splits["transfer"])
    assert all(i.startswith("train-") for i in splits["transfer"]) and all(i.startswith("test-") for i in splits["test"])


def test_dry_run_marks_cached_stages(runner, stored, tmp_path):
    f, db, _ = stored
    result = runner.invoke(cli, ["study", "run", str(f), "--db", str(db), "--dry-run", "--set", "losses=[{name='xent'},{name='product'}]"])
    assert result.exit_code == 0, result.output
    assert "6 stages (4 cached)" in result.output  # weak, ceiling and each student predict in their fit stage
    assert "[product]" in result.output and "to run" in result.output


def test_query_is_read_only(runner, stored):
    f, db, _ = stored
    ok = runner.invoke(cli, ["query", "select study, loss, pgr from results", "--db", str(db), "--json"])
    assert ok.exit_code == 0 and {r["loss"] for r in json.loads(ok.output)} == {"xent", "logconf"}
    refused = runner.invoke(cli, ["query", "drop table studies", "--db", str(db)])
    assert refused.exit_code != 0 and "readonly" in refused.output and "Traceback" not in refused.output
    assert sqlite_utils.Database(db).execute("select count(*) from studies").fetchone()[0] == 1


def test_rerun_drops_links_its_plan_no_longer_has(runner, stored, tmp_path):
    """Same study, stage keys changed (e.g. a plugin default): the old links go, the old stages stay."""
    import sqlite3

    f, db0, _ = stored
    db = tmp_path / "copy.db"
    with sqlite3.connect(db) as target:
        sqlite3.connect(db0).backup(target)  # WAL-safe copy
    d = sqlite_utils.Database(db)
    study_id = next(d.query("select id from studies"))["id"]
    old = next(d.query("select stage_key from study_stages where role = 'student'"))["stage_key"]
    d["study_stages"].insert({"study_id": study_id, "stage_key": old, "role": "student_old_default", "seed": 0})
    links = d.execute("select count(*) from study_stages").fetchone()[0]
    result = runner.invoke(cli, ["study", "run", str(f), "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert d.execute("select count(*) from study_stages").fetchone()[0] == links - 1
    assert not list(d.query("select * from study_stages where role = 'student_old_default'"))
    assert d.execute("select count(*) from stages where key = ?", [old]).fetchone()[0] == 1


def test_study_list_and_show(runner, stored):
    f, db, _ = stored
    listed = runner.invoke(cli, ["study", "list", "--db", str(db), "--json"])
    study_id = json.loads(listed.output)[0]["id"]
    shown = runner.invoke(cli, ["study", "show", study_id[:8], "--db", str(db)])
    assert shown.exit_code == 0 and "PGR" in shown.output and "student xent" in shown.output


def test_sigkill_during_student_stage_then_resume(tmp_path, sentiment_dir, tiny_bert):
    """Kill -9 mid-student, rerun: it completes, one done row per stage key, no partial outputs kept."""
    f = tmp_path / "s.toml"
    f.write_text(study_toml(sentiment_dir, tiny_bert, losses=("xent",)).replace("epochs = 2", "epochs = 15"))
    db = tmp_path / "w2s.db"
    cmd = [sys.executable, "-m", "w2s", "study", "run", str(f), "--db", str(db)]
    env = {**os.environ, "W2S_PROGRESS": "0"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    killed_key = None
    while time.time() < deadline and killed_key is None and proc.poll() is None:
        time.sleep(0.1)
        try:
            row = next(sqlite_utils.Database(db).query("select key from stages where role='student' and status='running'"), None)
        except Exception:  # the store is not created yet
            row = None
        if row:
            proc.send_signal(signal.SIGKILL)
            killed_key = row["key"]
    proc.wait(timeout=30)
    assert killed_key, "the student stage never started (or finished before it could be killed)"
    db_ = sqlite_utils.Database(db)
    assert db_.execute("select status from stages where key=?", [killed_key]).fetchone()[0] == "running"
    assert db_.execute("select count(*) from predictions where stage_key=?", [killed_key]).fetchone()[0] == 0
    done_before = {r["key"] for r in db_.query("select key from stages where status='done'")}
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    stages = list(db_.query("select key, status from stages"))
    assert len(stages) == len({s["key"] for s in stages}) == 4  # weak, ceiling, student (each predicting in its fit), evaluate
    assert all(s["status"] == "done" for s in stages)
    assert rerun.stderr.count(": cached") == len(done_before) >= 2  # the weak and the ceiling fit
    # the restarted stage has exactly one run's outputs: one curve per step, no duplicates
    assert db_.execute("select count(*) from artifacts where stage_key=?", [killed_key]).fetchone()[0] == 0  # keep_checkpoints = "needed"
    assert db_.execute("select count(*) from predictions where stage_key=? and split='test'", [killed_key]).fetchone()[0] == 60
    steps = db_.execute("select count(*), count(distinct step) from curves where stage_key=? and name='train_loss'", [killed_key]).fetchone()
    assert steps[0] == steps[1] == 75
    assert next(db_.query("select count(*) as n from results"))["n"] == 1
