"""Instant reruns (issue 16, item 4): a finished study is answered from the store without planning it,
importing torch/transformers/datasets or reading its data files, while they and the versions are unchanged."""

import json
import os
import subprocess
import sys

import pytest
import sqlite_utils

from conftest import sst2_study, study_toml
from w2s import plugins
from w2s.commands.cli import cli
from w2s.hookspecs import hookimpl
from w2s.running import driver, instant
from w2s_plugins.bow import BowModel
from w2s_plugins.sst2 import SST2Task

ANSWERED = "answered from the store"
HEAVY = ("torch", "transformers", "datasets")

# Runs the CLI in a fresh interpreter, then reports which heavy modules that process imported.
PROBE = f"""
import sys
from w2s.commands.cli import cli
try:
    cli.main(sys.argv[1:], prog_name="w2s", standalone_mode=False)
finally:
    print("HEAVY=" + ",".join(sorted(m for m in {HEAVY!r} if m in sys.modules)), file=sys.stderr)
"""


def run_in_subprocess(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "W2S_PROGRESS": "0"})


def bow_study(tmp_path, sentiment_dir, name="tiny"):
    """bow -> bow (2-grams): six stages, no torch, a couple of seconds."""
    f = tmp_path / f"{name}.toml"
    f.write_text(sst2_study(sentiment_dir, 'model = "bow"\noptions = { ngram_max = 2 }', name=name,
                            extra='[[losses]]\nname = "xent"\n[[losses]]\nname = "logconf"\n'))
    return f


def no_planning(monkeypatch) -> list:
    """From now on planning or reading a data file fails the test; returns the list of files hashed (SHA-256)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the study was planned or its data was read")

    hashed = []
    real = instant.sha256
    monkeypatch.setattr(driver, "plan_study", refuse)
    monkeypatch.setattr("w2s_plugins.sst2.read_table", refuse)
    monkeypatch.setattr(instant, "sha256", lambda path: hashed.append(path) or real(path))
    return hashed


def sources(db) -> list[dict] | None:
    """The data files recorded for the (one) study's instant reruns."""
    raw = next(sqlite_utils.Database(db).query("SELECT rerun_json FROM studies"))["rerun_json"]
    return json.loads(raw)["files"] if raw else None


def test_a_cached_rerun_prints_the_same_tables_without_importing_torch(tmp_path, sentiment_dir, tiny_bert, runner):
    f, db = tmp_path / "s.toml", tmp_path / "w2s.db"
    f.write_text(study_toml(sentiment_dir, tiny_bert))
    first = runner.invoke(cli, ["study", "run", str(f), "--db", str(db)])
    assert first.exit_code == 0, first.output
    assert ANSWERED not in first.stderr and "PGR" in first.stdout
    assert [s["path"] for s in sources(db)] == [str(sentiment_dir / "test.tsv"), str(sentiment_dir / "train.tsv")]

    n = first.stderr.count(": done in")
    rerun = run_in_subprocess("study", "run", f, "--db", db)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{ANSWERED} (all {n} stages cached; definition, data files, code and versions unchanged)" in rerun.stderr
    assert rerun.stdout == first.stdout  # the header line and every table, byte for byte
    assert "HEAVY=\n" in rerun.stderr, rerun.stderr  # none of torch, transformers, datasets was imported


def test_a_dry_run_of_a_finished_study_reads_its_plan_from_the_store(tmp_path, sentiment_dir, tiny_bert, runner, monkeypatch):
    """The same lines a planning dry run prints (every stage cached, with its key), without planning or importing torch."""
    f, db = tmp_path / "s.toml", tmp_path / "w2s.db"
    f.write_text(study_toml(sentiment_dir, tiny_bert))
    assert runner.invoke(cli, ["study", "run", str(f), "--db", str(db)]).exit_code == 0
    fast = run_in_subprocess("study", "run", f, "--db", db, "--dry-run")
    assert fast.returncode == 0, fast.stderr
    assert "HEAVY=\n" in fast.stderr, fast.stderr
    monkeypatch.setattr(instant, "answer_from_store", lambda store, spec: None)  # force planning
    planned = runner.invoke(cli, ["study", "run", str(f), "--db", str(db), "--dry-run"])
    assert planned.exit_code == 0, planned.output
    assert fast.stdout == planned.stdout and " cached)" in fast.stdout.splitlines()[0]
    assert sum(", key " in line for line in fast.stdout.splitlines()) == len(fast.stdout.splitlines()) - 1 > 3


def test_b_a_touched_data_file_is_hashed_once_and_still_answered(tmp_path, sentiment_dir, runner, monkeypatch):
    f, db = bow_study(tmp_path, sentiment_dir), tmp_path / "w2s.db"
    first = runner.invoke(cli, ["study", "run", str(f), "--db", str(db)])
    assert first.exit_code == 0, first.output
    recorded = sources(db)
    hashed = no_planning(monkeypatch)

    again = runner.invoke(cli, ["study", "run", str(f), "--db", str(db)])
    assert again.exit_code == 0, again.output
    assert ANSWERED in again.stderr and again.stdout == first.stdout
    assert hashed == []  # same size and mtime: not even hashed

    train = sentiment_dir / "train.tsv"
    st = train.stat()
    os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched: new mtime, same bytes
    touched = runner.invoke(cli, ["study", "run", str(f), "--db", str(db)])
    assert touched.exit_code == 0, touched.output
    assert ANSWERED in touched.stderr and touched.stdout == first.stdout
    assert hashed == [train]  # hashed once, the content matched
    now = {s["path"]: s for s in sources(db)}
    assert now[str(train)]["mtime_ns"] == st.st_mtime_ns + 5_000_000_000  # the new mtime is stored ...
    assert now[str(train)]["sha256"] == {s["path"]: s for s in recorded}[str(train)]["sha256"]

    runner.invoke(cli, ["study", "run", str(f), "--db", str(db)])
    assert hashed == [train]  # ... so the next rerun reads nothing again


def test_c_changed_content_plans_again_and_recomputes(tmp_path, sentiment_dir, runner):
    f, db = bow_study(tmp_path, sentiment_dir), tmp_path / "w2s.db"
    first = runner.invoke(cli, ["study", "run", str(f), "--db", str(db)])
    assert first.exit_code == 0, first.output
    test = sentiment_dir / "test.tsv"
    lines = test.read_text().splitlines()
    lines[1] = lines[1][:-1] + ("0" if lines[1].endswith("1") else "1")  # one label flipped: same size, other bytes
    size = test.stat().st_size
    test.write_text("\n".join(lines) + "\n")
    st = test.stat()
    os.utime(test, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert test.stat().st_size == size

    changed = runner.invoke(cli, ["study", "run", str(f), "--db", str(db)])
    assert changed.exit_code == 0, changed.output
    assert ANSWERED not in changed.stderr
    assert changed.stderr.count(": done in") == 6 and ": cached" not in changed.stderr  # new data fingerprint: every stage anew
    assert {s["path"]: s for s in sources(db)}[str(test)]["sha256"] == instant.sha256(test)

    again = runner.invoke(cli, ["study", "run", str(f), "--db", str(db)])
    assert ANSWERED in again.stderr and again.stdout == changed.stdout

    dry = runner.invoke(cli, ["study", "run", str(f), "--db", str(db), "--dry-run"])  # a dry run always plans
    assert dry.exit_code == 0 and ANSWERED not in dry.output and "6 stages (6 cached)" in dry.output


class NoFilesSST2(SST2Task):
    """SST-2 from the same local files, but it does not name them (as a hub data set could not)."""

    name = "sst2_nofiles_inline"

    def source_files(self):
        return None


class NoFilesPlugin:
    @hookimpl
    def register_tasks(self, register):
        register(NoFilesSST2)


def test_d_a_task_that_cannot_name_its_files_never_takes_the_fast_path(tmp_path, sentiment_dir, runner):
    f, db = bow_study(tmp_path, sentiment_dir), tmp_path / "w2s.db"
    f.write_text(f.read_text().replace('name = "sst2"', f'name = "{NoFilesSST2.name}"'))
    unregister = plugins.register_inline(NoFilesPlugin(), "nofiles-inline")
    try:
        first = runner.invoke(cli, ["study", "run", str(f), "--db", str(db)])
        assert first.exit_code == 0, first.output
        assert sources(db) is None
        again = runner.invoke(cli, ["study", "run", str(f), "--db", str(db)])
    finally:
        unregister()
    assert again.exit_code == 0, again.output
    assert ANSWERED not in again.stderr and again.stderr.count(": cached") == 6  # planned: every stage found cached
    assert again.stdout == first.stdout


def test_other_versions_or_an_altered_or_unfinished_study_plan_again(tmp_path, sentiment_dir, runner):
    f, db = bow_study(tmp_path, sentiment_dir), tmp_path / "w2s.db"
    assert runner.invoke(cli, ["study", "run", str(f), "--db", str(db)]).exit_code == 0
    store = sqlite_utils.Database(db)

    def alter(sql, *params):
        store.execute(sql, list(params))
        store.conn.commit()
        out = runner.invoke(cli, ["study", "run", str(f), "--db", str(db)])
        assert out.exit_code == 0 and ANSWERED not in out.stderr, out.output
        return out

    versions = json.loads(next(store.query("SELECT versions_json FROM studies"))["versions_json"])
    planned = alter("UPDATE studies SET versions_json = ?", json.dumps({**versions, "numpy": "0.0.1"}))
    assert planned.stderr.count(": cached") == 6
    answered = runner.invoke(cli, ["study", "run", str(f), "--db", str(db)])  # the versions were recorded again
    assert answered.stderr.splitlines()[0].startswith(f"study tiny: {ANSWERED} (all 6 stages cached")
    assert answered.stderr.splitlines()[1:] == planned.stderr.splitlines()  # then the very lines a planned cached run prints
    assert answered.stdout == planned.stdout

    key = next(store.query("SELECT stage_key FROM study_stages WHERE role = 'student'"))["stage_key"]
    alter("INSERT INTO study_stages (study_id, stage_key, role) SELECT id, ?, 'student_old' FROM studies", key)  # a link the plan lacks
    assert not list(store.query("SELECT 1 FROM study_stages WHERE role = 'student_old'"))  # planning dropped it
    assert ANSWERED in runner.invoke(cli, ["study", "run", str(f), "--db", str(db)]).stderr
    alter("UPDATE stages SET legacy_key = key")  # stages still under scheme-1 keys: planning would rekey them
    store.execute("UPDATE stages SET legacy_key = NULL")  # (the planner leaves a scheme-2 key alone: undo it by hand)
    store.conn.commit()
    assert ANSWERED in runner.invoke(cli, ["study", "run", str(f), "--db", str(db)]).stderr
    unfinished = alter("UPDATE stages SET status = 'failed' WHERE kind = 'evaluate'")
    assert unfinished.stderr.count(": done in") == 2


def test_changed_code_plans_again(tmp_path, sentiment_dir, runner, monkeypatch):
    """A plugin edited in place (its version unchanged): a new option on its class, or its module file touched."""
    module = tmp_path / "edited_inline_plugin.py"
    module.write_text("from w2s.hookspecs import hookimpl\n\n\n@hookimpl\ndef register_losses(register):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import edited_inline_plugin

    f, db = bow_study(tmp_path, sentiment_dir), tmp_path / "w2s.db"
    unregister = plugins.register_inline(edited_inline_plugin, "edited-inline")
    try:
        run = lambda: runner.invoke(cli, ["study", "run", str(f), "--db", str(db)])  # noqa: E731
        assert run().exit_code == 0 and ANSWERED in run().stderr

        class Options(BowModel.Options):
            stop_words: str | None = None

        monkeypatch.setattr(BowModel, "Options", Options)
        again = run()
        assert ANSWERED not in again.stderr and again.stderr.count(": cached") == 6  # planned; same keys
        assert ANSWERED in run().stderr

        st = module.stat()
        os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
        touched = run()
        assert ANSWERED not in touched.stderr and touched.stderr.count(": cached") == 6
    finally:
        unregister()
