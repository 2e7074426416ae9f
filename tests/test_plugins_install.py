"""Installing and uninstalling real plugin packages with `w2s plugins install/uninstall` (pip, offline).

These run `python -m w2s` in fresh processes, as a user would: plugins load once per process.
"""

import json
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "w2s-task-example"
NETWORK_MARKERS = ("No matching distribution", "Could not find a version", "NewConnectionError", "Network is unreachable",
                   "Temporary failure in name resolution")

SPAM_STUDY = """
[study]
name = "spam-bow-to-bigrams"

[task]
name = "example-spam"
n_weak_train = 100
n_transfer = 200
n_test = 120

[weak]
model = "bow"

[strong]
model = "bow"
label = "bow-bigrams"
options = { ngram_max = 2 }
"""


def w2s(*args, check=True):
    """Run `python -m w2s ARGS` offline in a fresh interpreter; pip never reaches an index."""
    env_extra = {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    import os

    done = subprocess.run([sys.executable, "-m", "w2s", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **env_extra}, timeout=300)
    if check:
        assert done.returncode == 0, f"w2s {' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}"
    return done


def installed(dist: str) -> bool:
    try:
        distribution(dist)
        return True
    except PackageNotFoundError:
        return False


def pip_uninstall(dist: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", dist], capture_output=True)


def install_or_skip(path: Path, expect_ok: bool = True):
    """`w2s plugins install PATH --no-deps --no-build-isolation`; skip (with the reason) if pip needs the network."""
    done = w2s("plugins", "install", path, "--no-deps", "--no-build-isolation", check=False)
    output = done.stdout + done.stderr
    marker = next((m for m in NETWORK_MARKERS if m in output), None)
    if done.returncode != 0 and marker:
        pytest.skip(f"installing {path.name} offline is impossible here: pip would need the network ({marker})")
    if expect_ok:
        assert done.returncode == 0, output
    return done


def test_install_example_run_a_study_with_its_task_then_uninstall(tmp_path):
    source = shutil.copytree(EXAMPLE, tmp_path / "w2s-task-example", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    pip_uninstall("w2s-task-example")
    try:
        done = install_or_skip(source)
        assert "installed plugin task-example (w2s-task-example 0.1.0): registered task example-spam" in done.stdout

        listed = json.loads(w2s("plugins", "list", "--json").stdout)
        assert {"name": "example-spam", "kind": "task", "plugin": "task-example"}.items() <= next(
            r for r in listed if r["name"] == "example-spam").items()

        study = tmp_path / "spam.toml"
        study.write_text(SPAM_STUDY)
        db = tmp_path / "w2s.db"
        w2s("study", "run", study, "--db", db)
        rows = json.loads(w2s("query", "select task, weak, strong, weak_acc, ceiling_acc, pgr from results", "--db", db, "--json").stdout)
        assert [(r["task"], r["weak"], r["strong"]) for r in rows] == [("example-spam", "bow", "bow-bigrams")]
        assert 0.5 < rows[0]["weak_acc"] < rows[0]["ceiling_acc"] <= 1.0

        done = w2s("plugins", "uninstall", "task-example", "--yes")
        assert "uninstalled w2s-task-example" in done.stdout
        assert not installed("w2s-task-example")
        assert "example-spam" not in w2s("plugins", "list").stdout
    finally:
        pip_uninstall("w2s-task-example")


BROKEN_PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "w2s-broken-example"
version = "0.0.1"

[project.entry-points.w2s]
broken-example = "w2s_broken_example"

[tool.setuptools]
packages = ["w2s_broken_example"]
"""


def test_plugin_that_raises_on_import_warns_and_can_always_be_uninstalled(tmp_path):
    package = tmp_path / "w2s-broken-example"
    (package / "w2s_broken_example").mkdir(parents=True)
    (package / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    (package / "w2s_broken_example" / "__init__.py").write_text('raise RuntimeError("boom at import")\n')
    pip_uninstall("w2s-broken-example")
    try:
        done = install_or_skip(package, expect_ok=False)
        assert done.returncode != 0 and installed("w2s-broken-example")
        assert "plugin 'broken-example'" in done.stderr and "RuntimeError: boom at import" in done.stderr
        assert "w2s plugins uninstall broken-example" in done.stderr

        listed = w2s("plugins", "list")
        assert "plugin 'broken-example' (w2s_broken_example) failed to load and was skipped" in listed.stderr
        assert "sst2" in listed.stdout and "bow" in listed.stdout
        assert "# The w2s store: schema" in w2s("schema").stdout
        available = {r["name"]: r for r in json.loads(w2s("plugins", "available", "--json").stdout)}
        assert available["broken-example"]["installed"] is True

        removed = w2s("plugins", "uninstall", "broken-example", "-y")
        assert "uninstalled w2s-broken-example" in removed.stdout
        assert "failed to load" not in removed.stderr  # uninstall never imports plugins
        assert not installed("w2s-broken-example")
        assert "failed to load" not in w2s("plugins", "list").stderr
    finally:
        pip_uninstall("w2s-broken-example")


def test_uninstall_refuses_built_ins_and_unknown_names():
    assert "built into w2s and cannot be uninstalled" in w2s("plugins", "uninstall", "sst2", "-y", check=False).stderr
    done = w2s("plugins", "uninstall", "no-such-plugin", "-y", check=False)
    assert done.returncode == 1 and "no installed plugin or package 'no-such-plugin'" in done.stderr


def test_install_targets_resolve_registry_names_paths_and_requirements(tmp_path):
    from w2s.api import W2SError
    from w2s.commands.installer import install_target

    assert install_target("task-example") == (str(EXAMPLE), "task-example")
    assert install_target(str(EXAMPLE)) == (str(EXAMPLE), None)
    assert install_target("w2s-something>=0.2") == ("w2s-something>=0.2", None)
    with pytest.raises(W2SError, match="'sst2' is built into w2s and already installed"):
        install_target("sst2")
    with pytest.raises(W2SError, match="no pyproject.toml or setup.py here"):
        install_target(str(tmp_path))


def test_available_lists_registry_and_marks_installed(runner):
    from w2s.commands.cli import cli

    result = runner.invoke(cli, ["plugins", "available", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["sst2"]["installed"] is True and rows["sst2"]["source"] == "built-in"
    example = rows["task-example"]
    assert example["source"] == "third-party" and example["provides"] == ["example-spam"]
    assert example["installed"] is installed("w2s-task-example") and example["install"] == "w2s plugins install task-example"
