"""The store at scale (issue 16): m007's indexes (and an older store migrating to them), the queries using
them, the dry run's throughput only for pending models, the disk line of `study show` and `w2s gc`."""

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import sqlite_utils
from click.testing import CliRunner

from w2s.commands.cli import cli
from w2s.storing.gc import human_bytes
from w2s.storing.migrations import migrations
from w2s.storing.store import Store
from w2s.storing.throughput import measured_rates
from conftest import write_sentiment_tsvs

M007_INDEXES = {"idx_studies_created", "idx_studies_name", "idx_metrics_name", "idx_study_stages_role", "idx_study_stages_key",
                "idx_artifacts_stage", "idx_stages_running", "idx_stages_unrekeyed"}

STUDY = """
[study]
name = "{name}"
seeds = [0]
keep_checkpoints = "all"  # the disk and gc tests need checkpoints to count and keep

[task]
name = "sst2"
data_dir = "{data}"
n_weak_train = 40
n_transfer = 80
n_test = 60

[weak]
model = "bow"

[strong]
model = "bow"
label = "{strong}"
options = {{ ngram_max = {ngram} }}

[[losses]]
name = "xent"
"""


def invoke(*args, code=0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def indexes(path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        conn.close()


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Two bow studies in one store that share their weak stages: alpha (bigram strong) and beta (trigram strong)."""
    folder = tmp_path_factory.mktemp("scale")
    data = write_sentiment_tsvs(folder / "data")
    db = folder / "w2s.db"
    ids = {}
    for name, strong, ngram in (("alpha", "bow-bigrams", 2), ("beta", "bow-trigrams", 3)):
        path = folder / f"{name}.toml"
        path.write_text(STUDY.format(name=name, data=data, strong=strong, ngram=ngram))
        invoke("study", "run", path, "--db", db)
        ids[name] = Store(db, readonly=True).find_study(name)["id"]
    return {"db": db, "folder": folder, "ids": ids}


# -- m007 ------------------------------------------------------------------------------
def test_a_new_store_has_the_m007_indexes(tmp_path):
    Store(tmp_path / "w2s.db")
    assert M007_INDEXES <= indexes(tmp_path / "w2s.db")


def test_an_older_store_opens_read_only_and_migrates_on_the_first_write_open(tmp_path):
    path = tmp_path / "w2s.db"
    db = sqlite_utils.Database(path)
    migrations.apply(db, stop_before="m007_scale_indexes")  # the schema the previous w2s wrote
    db["studies"].insert({"id": "01OLD", "name": "old", "toml": "", "spec_json": "{}", "hash": "h", "created": "2026-01-01T00:00:00+00:00",
                          "status": "done", "notes": ""})
    db["stages"].insert({"id": "s1", "key": "0123456789abcdef", "kind": "fit", "role": "weak", "status": "done", "created": "2026-01-01",
                         "study_id": "01OLD", "legacy_key": "0123456789abcdef"})
    db["artifacts"].insert({"id": "a1", "stage_key": "0123456789abcdef", "kind": "checkpoint", "path": "/nowhere", "bytes": 5, "created": "x"})
    db.close()
    assert not M007_INDEXES & indexes(path)

    old = Store(path, readonly=True)  # read-only commands work on the old schema and never migrate it
    assert old.find_study("old")["id"] == "01OLD" and old.has_legacy_stages()
    assert not M007_INDEXES & indexes(path)

    store = Store(path)
    assert M007_INDEXES <= indexes(path)
    assert "m007_scale_indexes" in [r["name"] for r in store.db.query("SELECT name FROM _sqlite_migrations ORDER BY rowid")]
    assert store.find_study("old")["name"] == "old" and store.has_legacy_stages()
    assert store.artifact("0123456789abcdef") == Path("/nowhere")


@pytest.mark.parametrize("sql, index", [
    ("SELECT id FROM studies ORDER BY created DESC, id DESC LIMIT 20", "idx_studies_created"),
    ("SELECT * FROM results WHERE study_id = 'x'", "idx_metrics_name"),
    ("SELECT task, loss, avg(pgr) FROM results GROUP BY task, loss", "idx_study_stages_role"),
    ("SELECT * FROM evaluations WHERE study_id = 'x'", "idx_metrics_name"),
    ("SELECT path FROM artifacts WHERE stage_key = 'k' AND kind = 'checkpoint'", "idx_artifacts_stage"),
    ("UPDATE study_stages SET stage_key = 'a' WHERE stage_key = 'b'", "idx_study_stages_key"),
    ("SELECT key FROM stages WHERE status = 'running' LIMIT 1", "idx_stages_running"),
    ("SELECT 1 FROM stages WHERE legacy_key = key LIMIT 1", "idx_stages_unrekeyed"),
])
def test_the_store_queries_use_the_m007_indexes(tmp_path, sql, index):
    store = Store(tmp_path / "w2s.db")
    plan = " ".join(str(r[-1]) for r in store.db.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall())
    assert index in plan, plan


# -- dry-run throughput --------------------------------------------------------------------
def test_rates_of_some_models_equal_those_models_rates_over_the_whole_store(stored):
    store = Store(stored["db"], readonly=True)
    every, bow = measured_rates(store), measured_rates(store, {"bow"})
    assert bow.exact and bow.exact == every.exact  # only bow in this store
    assert measured_rates(store, {"gpt2"}).exact == {}


def test_a_fully_cached_dry_run_prints_every_stage_cached_and_no_estimate(stored):
    out = invoke("study", "run", stored["folder"] / "alpha.toml", "--db", stored["db"], "--dry-run").output
    assert "(8 cached)" in out and "estimated" not in out


# -- disk per study ------------------------------------------------------------------------
def test_study_show_prints_the_disk_of_its_artifacts(stored):
    conn = sqlite3.connect(stored["db"])
    for name, study_id in stored["ids"].items():
        total, n = conn.execute("SELECT sum(bytes), count(*) FROM artifacts WHERE stage_key IN "
                                "(SELECT stage_key FROM study_stages WHERE study_id = ?)", [study_id]).fetchone()
        shared = conn.execute("SELECT sum(a.bytes) FROM artifacts a JOIN stages s ON s.key = a.stage_key WHERE s.role = 'weak' "
                              "AND a.stage_key IN (SELECT stage_key FROM study_stages WHERE study_id = ?)", [study_id]).fetchone()[0]
        assert n == 3 and total > 0 and shared > 0  # weak, ceiling and student fits; the weak fit is both studies'
        out = invoke("study", "show", name, "--db", stored["db"]).output
        assert f"disk: {human_bytes(total)} in 3 artifact(s) ({human_bytes(shared)} shared with other studies)" in out.splitlines()[1]
        disk = json.loads(invoke("study", "show", name, "--db", stored["db"], "--json").output)["disk"]
        assert disk == {"artifacts": 3, "bytes": total, "shared_bytes": shared}
    conn.close()


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 999, 1234, 90_000_000, 2.5e12)] == ["0 B", "999 B", "1.2 kB", "90.0 MB", "2.5 TB"]


# -- gc ------------------------------------------------------------------------------------
def referenced_paths(db) -> list[Path]:
    conn = sqlite3.connect(db)
    paths = [Path(r[0]) for r in conn.execute("SELECT path FROM artifacts")]
    conn.close()
    return paths


def orphan(root: Path, name: str = "fedcba9876543210", size: int = 4096) -> Path:
    folder = root / name
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "checkpoint" / "weights.bin").write_bytes(b"\0" * size)
    return folder


def test_gc_deletes_an_orphan_folder_and_keeps_every_referenced_artifact(stored):
    root = stored["db"].parent / "artifacts"
    referenced = referenced_paths(stored["db"])
    assert referenced and all(p.exists() for p in referenced)
    lost = orphan(root)
    features = root / "features" / "abc"  # the hf probe's shared feature cache: not a stage folder, never touched
    features.mkdir(parents=True)
    (root / "notes.txt").write_text("mine")
    moved = orphan(root, "1111111111111111")  # no stage has this key, but an artifact row's path points into it: kept
    conn = sqlite3.connect(stored["db"])
    with conn:
        conn.execute("INSERT INTO artifacts (id, stage_key, kind, path, bytes, created) SELECT 'moved', key, 'extra', ?, 4096, 'x' "
                     "FROM stages LIMIT 1", [str(moved / "checkpoint")])
    conn.close()

    out = invoke("gc", "--db", stored["db"]).output
    assert not lost.exists() and moved.exists()
    assert f"deleted {lost}" in out and "1 unreferenced artifact folder(s)" in out and "freed 4.1 kB" in out
    assert all(p.exists() for p in referenced)
    assert features.exists() and (root / "notes.txt").exists()
    assert "0 unreferenced artifact folder(s)" in invoke("gc", "--db", stored["db"]).output
    conn = sqlite3.connect(stored["db"])
    with conn:
        conn.execute("DELETE FROM artifacts WHERE id = 'moved'")
    conn.close()
    shutil.rmtree(moved)


def test_gc_dry_run_deletes_nothing(stored):
    root = stored["db"].parent / "artifacts"
    lost = orphan(root, "00000000000000aa", size=2000)
    out = invoke("gc", "--db", stored["db"], "--dry-run").output
    assert f"would delete {lost}" in out and "would free 2.0 kB" in out and "nothing was deleted" in out
    assert (lost / "checkpoint" / "weights.bin").exists()
    invoke("gc", "--db", stored["db"])
    assert not lost.exists()


def test_gc_refuses_while_a_stage_is_running(stored):
    lost = orphan(stored["db"].parent / "artifacts", "00000000000000bb")
    conn = sqlite3.connect(stored["db"])
    key = conn.execute("SELECT key FROM stages WHERE kind = 'fit' LIMIT 1").fetchone()[0]
    with conn:
        conn.execute("UPDATE stages SET status = 'running' WHERE key = ?", [key])
    try:
        for args in ((), ("--dry-run",)):
            result = invoke("gc", "--db", stored["db"], *args, code=1)
            assert "running" in result.output and key in result.output and len(result.output.strip().splitlines()) == 1
        assert lost.exists()
    finally:
        with conn:
            conn.execute("UPDATE stages SET status = 'done' WHERE key = ?", [key])
        conn.close()
    invoke("gc", "--db", stored["db"])
    assert not lost.exists()


def test_gc_without_a_store_says_so(tmp_path):
    result = invoke("gc", "--db", tmp_path / "none.db", code=1)
    assert "no w2s database here yet" in result.output and not (tmp_path / "none.db").exists()
