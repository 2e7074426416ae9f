"""The plugin system: entry points, broken plugins, W2S_LOAD_PLUGINS, registry sync, inline plugins."""

import json
import os
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import sqlite_utils

from w2s import plugins
from w2s.api import Example, Model, Task, Trained
from w2s.running.driver import Driver
from w2s.hookspecs import hookimpl
from w2s.storing.store import Store
from w2s.planning.study import parse_study

ROOT = Path(__file__).resolve().parents[1]


def w2s(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "w2s", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=120)


def test_builtin_plugins_are_listed_with_kind_version_and_origin():
    rows = json.loads(w2s("plugins", "list", "--json").stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["sst2"]["kind"] == "task" and by_name["bow"]["kind"] == "model" and by_name["logconf"]["kind"] == "loss"
    assert by_name["minilm-l6"]["plugin"] == "hf"
    assert "entry point w2s_plugins.sst2 in w2s" in by_name["sst2"]["source"]
    assert all(r["version"] for r in rows)


def test_broken_plugin_warns_and_the_rest_still_load(tmp_path):
    """A plugin whose module raises on import: one warning line naming it; `plugins list` still works."""
    (tmp_path / "w2s_broken.py").write_text("raise RuntimeError('boom at import')\n")
    dist = tmp_path / "w2s_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: w2s-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[w2s]\nbroken = w2s_broken\n")
    result = w2s("plugins", "list", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0
    warnings = [l for l in result.stderr.splitlines() if "broken" in l]
    assert len(warnings) == 1 and "failed to load and was skipped" in warnings[0] and "boom at import" in warnings[0]
    assert "Traceback" not in result.stderr
    assert "sst2" in result.stdout and "logconf" in result.stdout


def test_load_only_the_plugins_named_in_env():
    rows = json.loads(w2s("plugins", "list", "--json", env={"W2S_LOAD_PLUGINS": "sst2,losses"}).stdout)
    assert {r["plugin"] for r in rows} == {"sst2", "losses"}


def test_registry_toml_matches_entry_points_and_registrations():
    registry = tomllib.loads((ROOT / "registry.toml").read_text())["plugin"]
    builtin = [p for p in registry if "module" in p]
    eps = {ep.name: ep.value for ep in entry_points(group="w2s") if ep.dist and ep.dist.name == "w2s"}
    assert {p["name"]: p["module"] for p in builtin} == eps
    registered = {}
    for r in plugins.everything():
        registered.setdefault(r.plugin, set()).add(r.name)
    for p in builtin:
        assert set(p["provides"]) == registered.get(p["name"], set()), p["name"]
        assert p["kind"] in {"task", "model", "loss", "executor"} and p["summary"]


class ParityTask(Task):
    """Inline test task: is the number of 'x' characters odd?"""

    name = "parity_inline"
    label_words = ("even", "odd")

    def load(self, split):
        rng = np.random.default_rng(0 if split == "train" else 1)
        counts = rng.integers(0, 9, size=120 if split == "train" else 40)
        return [Example(f"{split}-{i}", " ".join(["xx"] * int(c)) + " yy", int(c) % 2) for i, c in enumerate(counts)]


class CountTrained(Trained):
    def __init__(self, flip):
        self.flip = flip

    def predict(self, examples, task, ctx=None):
        odd = np.array([e.text.split().count("xx") % 2 for e in examples])
        odd = 1 - odd if self.flip else odd
        return np.stack([1.0 - odd, odd], axis=1) * 0.9 + 0.05

    def save(self, path):
        path.write_text(json.dumps({"flip": self.flip}))


class CountModel(Model):
    """Inline test model: counts x's; learns whether the labels are flipped."""

    name = "count_inline"

    def fit(self, examples, soft_targets, loss, task, ctx):
        odd = np.array([e.text.split().count("xx") % 2 for e in examples])
        return CountTrained(bool((soft_targets.argmax(1) != odd).mean() > 0.5))

    def load(self, path, task):
        return CountTrained(json.loads(path.read_text())["flip"])


class InlinePlugin:
    @hookimpl
    def register_tasks(self, register):
        register(ParityTask)

    @hookimpl
    def register_models(self, register):
        register(CountModel)


def test_inline_task_and_model_plugin_run_a_whole_study(tmp_path):
    unregister = plugins.register_inline(InlinePlugin(), "inline-test")
    try:
        assert plugins.tasks()["parity_inline"].plugin == "inline-test"
        study = parse_study(
            """
            [study]
            name = "inline"
            [task]
            name = "parity_inline"
            n_weak_train = 40
            n_transfer = 60
            n_test = 40
            [weak]
            model = "bow"
            [strong]
            model = "count_inline"
            """
        )
        store = Store(tmp_path / "w2s.db")
        study_id = Driver(store, echo=lambda s: None).run(study)
        row = next(sqlite_utils.Database(tmp_path / "w2s.db").query("select * from results where study_id = ?", [study_id]))
        assert row["ceiling_acc"] == 1.0  # the count model recovers parity exactly from ground truth
        assert row["weak_acc"] < 0.8  # bag-of-words cannot count
        assert row["loss"] == "xent" and row["strong"] == "count_inline"
    finally:
        unregister()
    assert "parity_inline" not in plugins.tasks()
