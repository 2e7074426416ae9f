"""Tests that can fail: split determinism, chain targets, a read-only query, and a plugin that raises on import."""

import hashlib
import json
import sys

from w2s import plugins
from w2s.commands.cli import cli
from w2s.planning.protocol import Protocol
from w2s.planning.study import parse_study
from w2s.storing.store import Store
from conftest import sst2_study


def split_ids(sentiment_dir, seed: int) -> dict:
    study = parse_study(sst2_study(sentiment_dir, 'model = "bow"\noptions = { ngram_max = 2 }'))
    return {s.name: s.ids for s in Protocol(study).splits(seed)}


def test_splits_are_deterministic_per_seed_and_differ_across_seeds(sentiment_dir, tmp_path, runner):
    first, again, other = split_ids(sentiment_dir, 0), split_ids(sentiment_dir, 0), split_ids(sentiment_dir, 1)
    assert first == again and first["weak_train"] != other["weak_train"] and first["transfer"] != other["transfer"]
    assert not set(first["weak_train"]) & set(first["transfer"])
    stored = []
    for db in (tmp_path / "a.db", tmp_path / "b.db"):  # the same seed in a fresh store records the same ids
        study = tmp_path / "s.toml"
        study.write_text(sst2_study(sentiment_dir, 'model = "bow"\noptions = { ngram_max = 2 }'))
        assert runner.invoke(cli, ["study", "run", str(study), "--db", str(db)]).exit_code == 0
        rows = Store(db, readonly=True).db.query("SELECT name, ids_json FROM splits ORDER BY name")
        stored.append({r["name"]: json.loads(r["ids_json"]) for r in rows})
    assert stored[0] == stored[1] and stored[0]["weak_train"] == first["weak_train"] and stored[0]["test"] == first["test"]


def test_chain_step_two_trains_on_step_one_stored_predictions(sentiment_dir, tmp_path, runner, monkeypatch):
    from w2s.running import stages as stage_functions

    seen = []
    real_fit = stage_functions.run_fit

    def recording_fit(spec, inputs, ctx):
        if inputs["targets"] is not None:
            seen.append((spec["model"]["label"], {e.id: inputs["targets"][e.id]["probs"] for e in inputs["examples"]}))
        return real_fit(spec, inputs, ctx)

    monkeypatch.setitem(stage_functions.STAGE_FUNCTIONS, "fit", recording_fit)
    study = tmp_path / "chain.toml"
    study.write_text(f"""
[study]
name = "chain"
[task]
name = "sst2"
data_dir = "{sentiment_dir}"
n_weak_train = 30
n_transfer = 30
n_test = 20
[[chain]]
model = "bow"
label = "m1"
[[chain]]
model = "bow"
label = "m2"
options = {{ ngram_max = 2 }}
[[chain]]
model = "bow"
label = "m3"
options = {{ ngram_max = 3 }}
""")
    db = tmp_path / "w2s.db"
    assert runner.invoke(cli, ["study", "run", str(study), "--db", str(db)]).exit_code == 0
    store = Store(db, readonly=True)
    m2_fit = next(store.db.query("SELECT key FROM stages WHERE kind = 'fit' AND model = 'm2' AND role = 'student'"))["key"]
    m2_labels = m2_fit  # keep_checkpoints = "needed": m2's fit stage predicts its labels for step 2 itself
    stored = {i: r["probs"] for i, r in store.predictions(m2_labels, "transfer_2").items()}  # step 2's fresh transfer split
    m3_targets = [targets for label, targets in seen if label == "m3"]  # the chain step, then the direct m1 -> m3
    assert len(m3_targets) == 2 and m3_targets[0] == stored  # step 2 trained on exactly what m2 predicted and the store holds
    assert m3_targets[1] != stored and set(m3_targets[1]) == set(stored)  # the direct transfer: m1's labels on the same examples
    assert set(json.loads(next(store.db.query("SELECT spec_json FROM stages WHERE key = ?", [m2_fit]))["spec_json"])["predict"]) == {"transfer_2", "test"}


def test_query_leaves_the_store_byte_identical(sentiment_dir, tmp_path, runner):
    study = tmp_path / "s.toml"
    study.write_text(sst2_study(sentiment_dir, 'model = "bow"\noptions = { ngram_max = 2 }'))
    db = tmp_path / "w2s.db"
    assert runner.invoke(cli, ["study", "run", str(study), "--db", str(db)]).exit_code == 0
    store = Store(db)
    store.db.execute("DROP INDEX idx_stages_legacy")  # the store as it was before m006: a read-only open must not apply it
    store.db.execute("DROP INDEX idx_stages_unrekeyed")  # (m007's index on legacy_key goes with it)
    store.db.execute("ALTER TABLE stages DROP COLUMN legacy_key")
    store.db.execute("DELETE FROM _sqlite_migrations WHERE name IN ('m006_legacy_keys', 'm007_scale_indexes')")
    store.db.conn.commit()
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.db.conn.close()
    files = sorted(p for p in tmp_path.iterdir() if p.name.startswith("w2s.db"))
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    for args in (["query", "select count(*) from stages"], ["query", "delete from stages"], ["study", "show", "tiny"], ["study", "list"]):
        runner.invoke(cli, [*args, "--db", str(db)])
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    assert before == after


def test_a_plugin_that_raises_on_import_does_not_stop_a_study_that_does_not_use_it(sentiment_dir, tmp_path, runner, monkeypatch):
    (tmp_path / "broken_w2s_plugin.py").write_text("raise RuntimeError('this plugin is broken')\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    class EntryPoint:
        name, value, group, dist = "broken", "broken_w2s_plugin", "w2s", None

        def load(self):
            import importlib

            return importlib.import_module(self.value)

    real = plugins.entry_points
    monkeypatch.setattr(plugins, "entry_points", lambda **kw: [*real(**kw), EntryPoint()])
    monkeypatch.setattr(plugins, "_loaded", False, raising=False)
    study = tmp_path / "s.toml"
    study.write_text(sst2_study(sentiment_dir, 'model = "bow"\noptions = { ngram_max = 2 }'))
    result = runner.invoke(cli, ["study", "run", str(study), "--db", str(tmp_path / "w2s.db")])
    assert result.exit_code == 0, result.output
    assert "plugin 'broken' (broken_w2s_plugin) failed to load and was skipped: RuntimeError: this plugin is broken" in result.output
    assert "weak (bow)" in result.output
    sys.modules.pop("broken_w2s_plugin", None)
