"""Unsupervised task adaptation (Burns et al. 5.2.2): a cached adapt stage whose weights the student and ceiling start from."""

import json

import pytest
import torch
from conftest import sst2_study
from transformers import AutoModel

from w2s.commands.cli import cli
from w2s.storing.store import Store


def adapted_study(data_dir, bert, adapt: str) -> str:
    strong = f"""model = "hf"
options = {{ path = "{bert}", max_length = 16 }}
train = {{ epochs = 2, batch_size = 16, lr = 1e-3 }}
{adapt}"""
    return sst2_study(data_dir, strong, extra='[[losses]]\nname = "xent"\n')


def run(runner, path, db):
    return runner.invoke(cli, ["study", "run", str(path), "--db", str(db)])


def test_adaptation_is_a_cached_stage_and_changes_the_weights_the_student_and_ceiling_start_from(runner, tmp_path, sentiment_dir, tiny_bert):
    path, db = tmp_path / "adapt.toml", tmp_path / "s.db"
    path.write_text(adapted_study(sentiment_dir, tiny_bert, "adapt = { epochs = 2, lr = 1e-3, batch_size = 16 }"))
    result = run(runner, path, db)
    assert result.exit_code == 0, result.output
    assert "adapt hf on transfer text (no labels)" in result.output
    store = Store(db)
    (adapt,) = list(store.db.query("SELECT key, status FROM stages WHERE kind = 'adapt'"))
    assert adapt["status"] == "done"
    assert store.db.execute("SELECT count(*) FROM curves WHERE stage_key = ? AND name = 'adapt_loss'", [adapt["key"]]).fetchone()[0] > 0
    for role in ("student", "ceiling"):  # both start from the adapted weights: the adapt stage is upstream, and in their key
        fit = next(store.db.query("SELECT spec_json, upstream_json FROM stages WHERE role = ?", [role]))
        assert json.loads(fit["spec_json"])["init"] == adapt["key"] and adapt["key"] in json.loads(fit["upstream_json"])
    weak = next(store.db.query("SELECT spec_json FROM stages WHERE role = 'weak'"))
    assert "init" not in json.loads(weak["spec_json"])

    adapted = AutoModel.from_pretrained(store.artifact(adapt["key"]))
    pretrained = AutoModel.from_pretrained(tiny_bert)
    changed = [name for name, p in pretrained.state_dict().items() if not torch.equal(p, adapted.state_dict()[name])]
    assert any("encoder.layer.0" in name for name in changed)  # the masked-LM loss moved the backbone

    again = run(runner, path, db)  # cached: the adapt stage ran once
    assert again.exit_code == 0
    assert store.db.execute("SELECT count(*) FROM stage_attempts WHERE stage_key = ?", [adapt["key"]]).fetchone()[0] == 1


def test_the_same_study_without_adaptation_has_other_student_and_ceiling_keys_and_shares_the_weak_model(runner, tmp_path, sentiment_dir, tiny_bert):
    db = tmp_path / "s.db"
    keys = {}
    for name, adapt in (("plain", ""), ("adapted", "adapt = { epochs = 1 }")):
        path = tmp_path / f"{name}.toml"
        path.write_text(adapted_study(sentiment_dir, tiny_bert, adapt).replace('name = "tiny"', f'name = "{name}"'))
        out = runner.invoke(cli, ["study", "run", str(path), "--db", str(db), "--dry-run"])
        assert out.exit_code == 0, out.output
        keys[name] = {line.split("key ")[1][:10]: line for line in out.output.splitlines() if "key " in line}
    shared = set(keys["plain"]) & set(keys["adapted"])
    assert all("bow" in keys["plain"][k] for k in shared) and shared  # weak stages only
    assert any("from adapted weights" in line for line in keys["adapted"].values())


def test_fitting_from_adapted_weights_loads_them(tmp_path, tiny_bert, sentiment_dir):
    """HFModel.adapted(path): the same hyperparameters, the backbone read from the adapted folder."""
    from transformers import AutoTokenizer

    from w2s.plugins import make_model

    model = make_model("hf", {"path": str(tiny_bert), "max_length": 16}, {"epochs": 1}, "strong")
    folder = tmp_path / "adapted"
    weights = AutoModel.from_pretrained(tiny_bert)
    with torch.no_grad():
        weights.embeddings.word_embeddings.weight.add_(1.0)
    weights.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    again = model.adapted(str(folder))
    assert again.train == model.train and again.options.max_length == 16 and again.options.path == str(folder)
    _, module = again.build(2)
    assert torch.equal(module.backbone.embeddings.word_embeddings.weight, weights.embeddings.word_embeddings.weight)


@pytest.mark.parametrize("table, message", [
    ("adapt = { lr = -1 }", "strong.adapt.lr"),
    ("adapt = { epochs = 1, bogus = 2 }", "strong.adapt.bogus: unknown option"),
])
def test_bad_adapt_options_are_one_line(runner, tmp_path, sentiment_dir, tiny_bert, table, message):
    path = tmp_path / "bad.toml"
    path.write_text(adapted_study(sentiment_dir, tiny_bert, table))
    out = runner.invoke(cli, ["study", "run", str(path), "--dry-run"])
    assert out.exit_code != 0 and message in out.output and len(out.output.strip().splitlines()) == 1


def test_adapt_on_a_weak_model_or_a_model_without_adaptation_is_one_line(runner, tmp_path, sentiment_dir, tiny_bert):
    path = tmp_path / "bad.toml"
    path.write_text(sst2_study(sentiment_dir, 'model = "bow"\nadapt = { epochs = 1 }', weak='model = "bow"'))
    out = runner.invoke(cli, ["study", "run", str(path), "--dry-run"])
    assert "strong.adapt: model 'bow' has no unsupervised task adaptation" in out.output
    path.write_text(sst2_study(sentiment_dir, 'model = "bow"', weak='model = "bow"\nadapt = { epochs = 1 }'))
    out = runner.invoke(cli, ["study", "run", str(path), "--dry-run"])
    assert "weak.adapt: unsupervised task adaptation applies to strong models" in out.output
