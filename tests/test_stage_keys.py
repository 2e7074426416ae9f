"""Content-addressed stage keys: moving the data or adding an option with a default keeps every stage cached;
stores keyed the older way are rekeyed on the next run (migration m006_legacy_keys, planning/legacy.py)."""

import shutil
from pathlib import Path

from pydantic import Field

from w2s.api import KEY_SCHEME
from w2s.commands.cli import cli
from w2s.storing.store import Store
from w2s_plugins.bow import BowModel
from conftest import write_sentiment_tsvs

FIXTURES = Path(__file__).parent / "fixtures"


def study_text(sst2: Path, ethics: Path) -> str:
    return f"""
[study]
name = "keys"
[task]
name = "sst2"
data_dir = "{sst2}"
n_weak_train = 30
n_transfer = 40
n_test = 20
[weak]
model = "bow"
[strong]
model = "bow"
options = {{ ngram_max = 2 }}
[[eval]]
task = "ethics"
data_dir = "{ethics}"
options = {{ subset = "justice" }}
models = ["weak", "ceiling"]
"""


def setup(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    write_sentiment_tsvs(data / "sst2", n_train=80, n_test=30)
    shutil.copytree(FIXTURES / "ethics", data / "ethics")
    study = tmp_path / "keys.toml"
    study.write_text(study_text(data / "sst2", data / "ethics"))
    return data, study


def run(runner, study: Path, db: Path) -> str:
    result = runner.invoke(cli, ["study", "run", str(study), "--db", str(db)])
    assert result.exit_code == 0, result.output
    return result.output


def stage_keys(db: Path) -> set[str]:
    return {r["key"] for r in Store(db, readonly=True).db.query("SELECT key FROM stages")}


def test_moving_the_data_folder_keeps_every_stage_cached(tmp_path, runner):
    data, study = setup(tmp_path)
    db = tmp_path / "w2s.db"
    first = run(runner, study, db)
    assert first.count(": running") == 9  # 7 protocol stages (the student predicts in its fit stage) and 2 evals
    moved = tmp_path / "moved"
    shutil.move(data, moved)
    study.write_text(study_text(moved / "sst2", moved / "ethics"))
    again = run(runner, study, db)
    assert ": running" not in again and again.count(": cached") == 9, again
    keys = stage_keys(db)
    spec_texts = " ".join(r["spec_json"] for r in Store(db, readonly=True).db.query("SELECT spec_json FROM stages"))
    assert str(tmp_path) not in spec_texts  # no path in any stage's key material
    changed = tmp_path / "changed"
    shutil.copytree(moved, changed)
    (changed / "sst2" / "test.tsv").write_text((changed / "sst2" / "test.tsv").read_text().replace("the film", "the plot", 1))
    study.write_text(study_text(changed / "sst2", changed / "ethics"))
    third = run(runner, study, db)  # other content: the stages that read test (and their evaluations) run again
    assert ": running" in third and stage_keys(db) > keys


def test_a_new_option_with_a_default_keeps_every_stage_cached(tmp_path, runner, monkeypatch):
    _, study = setup(tmp_path)
    db = tmp_path / "w2s.db"
    run(runner, study, db)

    class Options(BowModel.Options):
        stop_words: str | None = Field(default=None, description="an option added in a later release")

    monkeypatch.setattr(BowModel, "Options", Options)
    again = run(runner, study, db)
    assert ": running" not in again and again.count(": cached") == 9, again
    study.write_text(study.read_text().replace("options = { ngram_max = 2 }", 'options = { ngram_max = 2, stop_words = "english" }'))
    assert run(runner, study, db).count(": running") == 5  # a non-default value is part of the strong model's key


def test_an_older_store_is_rekeyed_and_its_results_stay_cached(tmp_path, runner):
    _, study = setup(tmp_path)
    db = tmp_path / "w2s.db"
    token = KEY_SCHEME.set(1)  # the store as w2s wrote it before content-addressed keys
    try:
        run(runner, study, db)
    finally:
        KEY_SCHEME.reset(token)
    store = Store(db)
    store.db.execute("UPDATE stages SET legacy_key = key")  # what m006 does to every stage already stored
    store.db.conn.commit()
    old = stage_keys(db)
    again = run(runner, study, db)
    assert "rekeyed 8 stage(s) stored under older keys" in again  # every stage but the evaluate stage (it gained flags)
    assert again.count(": cached") == 8 and again.count(": running") == 1 and "evaluate bow -> bow [xent]: running" in again
    new = stage_keys(db)
    assert len(new - old) == 9 and len(old - new) == 8  # 8 renamed (the folded student too), 1 new evaluate stage; the old evaluate row stays
    rows = Store(db, readonly=True)
    renamed = list(rows.db.query("SELECT key, legacy_key FROM stages WHERE legacy_key IS NOT NULL AND legacy_key != key"))
    assert len(renamed) == 8
    for table in ("predictions", "metrics", "study_stages", "artifacts", "stage_attempts"):  # everything follows the new keys
        orphans = list(rows.db.query(f"SELECT DISTINCT stage_key FROM {table} WHERE stage_key IN (SELECT legacy_key FROM stages WHERE legacy_key != key)"))
        assert orphans == [], table
    shown = runner.invoke(cli, ["study", "show", "keys", "--db", str(db)])
    assert shown.exit_code == 0 and "0       bow     bow" in shown.output and shown.output.count(" done ") >= 9
    dry = runner.invoke(cli, ["study", "run", str(study), "--db", str(db), "--dry-run"])
    assert "9 stages (9 cached)" in dry.output


def test_weights_from_an_installed_package_are_keyed_by_the_package_not_its_folder(tmp_path, monkeypatch):
    """Moving (or rebuilding) the Python environment moves site-packages: the stage keys stay."""
    import importlib

    from w2s import plugins
    from w2s_plugins import hf_loading

    keys = []
    for env in ("env-a", "env-b"):
        site = tmp_path / env / "site-packages"
        (site / "w2s_fake_weights" / "model").mkdir(parents=True)
        (site / "w2s_fake_weights" / "__init__.py").write_text("")
        monkeypatch.syspath_prepend(str(site))
        importlib.invalidate_caches()
        monkeypatch.setattr(hf_loading, "WEIGHTS_MODULES", ("w2s_fake_weights",))
        monkeypatch.delitem(__import__("sys").modules, "w2s_fake_weights", raising=False)
        model = plugins.make_model("hf", {"path": str(site / "w2s_fake_weights" / "model")}, {}, "strong")
        assert model.spec()["options"]["path"] == "w2s_fake_weights:model"
        keys.append(model.spec())
        monkeypatch.undo()
    assert keys[0] == keys[1]
    assert plugins.make_model("hf", {"path": str(tmp_path / "elsewhere")}, {}, "strong").spec()["options"]["path"] == str(tmp_path / "elsewhere")
