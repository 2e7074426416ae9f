"""W2S_DATA_DIR is a root with one folder per task; data_dir wins; BoolQ's Hugging Face export file names work."""

import shutil
from pathlib import Path

from w2s.commands.cli import cli
from w2s.plugins import make_task
from w2s.storing.store import Store
from conftest import write_sentiment_tsvs

FIXTURES = Path(__file__).parent / "fixtures"


def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "shared-data"
    write_sentiment_tsvs(root / "sst2", n_train=80, n_test=30)
    shutil.copytree(FIXTURES / "ethics", root / "ethics")
    return root


def test_each_task_reads_its_own_folder_of_the_root_and_data_dir_wins(tmp_path, monkeypatch):
    root = data_root(tmp_path)
    monkeypatch.setenv("W2S_DATA_DIR", str(root))
    assert make_task("sst2", {}, None, "task").data_dir == root / "sst2"
    assert make_task("ethics", {"subset": "justice"}, None, "task").data_dir == root / "ethics"
    assert make_task("sst2", {}, tmp_path / "elsewhere", "task").data_dir == tmp_path / "elsewhere"
    monkeypatch.setenv("W2S_DATA_DIR", str(root / "sst2"))  # a root without a task folder: the folder itself (older setups)
    assert len(make_task("sst2", {}, None, "task").load("train")) == 80


def test_an_sst2_study_with_ethics_evals_runs_with_the_root_alone(tmp_path, runner, monkeypatch):
    monkeypatch.setenv("W2S_DATA_DIR", str(data_root(tmp_path)))
    study = tmp_path / "s.toml"
    study.write_text("""
[study]
name = "roots"
[task]
name = "sst2"
n_weak_train = 30
n_transfer = 40
[weak]
model = "bow"
[strong]
model = "bow"
options = { ngram_max = 2 }
[[eval]]
task = "ethics"
options = { subset = "justice" }
splits = ["test", "test_hard"]
models = ["weak", "ceiling"]
""")
    result = runner.invoke(cli, ["study", "run", str(study), "--db", str(tmp_path / "w2s.db")])
    assert result.exit_code == 0, result.output
    store = Store(tmp_path / "w2s.db", readonly=True)
    scored = {r["split"]: r["n"] for r in store.db.query(
        "SELECT m.split, m.value AS n FROM metrics m JOIN stages st ON st.key = m.stage_key WHERE st.kind = 'eval' AND m.name = 'n'")}
    assert scored == {"test": 8.0, "test_hard": 4.0}  # the justice fixture's Test and Hard Test rows


def test_boolq_reads_the_hugging_face_export(tmp_path):
    shutil.copy(FIXTURES / "boolq" / "superglue" / "train.jsonl", tmp_path / "train.jsonl")
    shutil.copy(FIXTURES / "boolq" / "superglue" / "val.jsonl", tmp_path / "validation.jsonl")
    task = make_task("boolq", {}, tmp_path, "task")
    assert len(task.load("test")) == 16 and len(task.load("train")) == 48


def test_the_datasets_cache_lives_under_w2s_home(tmp_path, isolated_home):
    make_task("sst2", {}, write_sentiment_tsvs(tmp_path / "d"), "task").load("train")
    assert any((isolated_home / "datasets").rglob("*.arrow"))
