"""Methods: chains, grids, seeds with mean +- CI, strong baseline, GT early stopping, sanity flags, linear probes."""

import json
from pathlib import Path

import numpy as np
import pytest
import sqlite_utils

from w2s import plugins
from w2s.api import Example, W2SError
from w2s.commands.cli import cli
from conftest import store_stage
from w2s.running.stages import run_evaluate
from w2s.running.work import StageResult
from w2s.planning.methods import grid_pairs
from w2s.metrics import mean_ci, pgr_flags
from w2s.reporting.tables import results_table
from w2s.storing.store import Store


def hf_table(header: str, path, label: str | None = None, num_layers: int | None = None, lr: float = 1e-3, epochs: int = 1) -> str:
    lines = [header, 'model = "hf"'] + ([f'label = "{label}"'] if label else [])
    lines += [f"options = {{ path = \"{path}\", max_length = 16{f', num_layers = {num_layers}' if num_layers else ''} }}",
              f"train = {{ epochs = {epochs}, batch_size = 16, lr = {lr} }}"]
    return "\n".join(lines) + "\n"


def header(data_dir, name: str, seeds=(0,), n_weak=30, n_transfer=40, n_test=40, study_extra: str = "") -> str:
    return f"""
[study]
name = "{name}"
seeds = {list(seeds)}
{study_extra}

[task]
name = "sst2"
data_dir = "{data_dir}"
n_weak_train = {n_weak}
n_transfer = {n_transfer}
n_test = {n_test}
"""


def run(runner, tmp_path, text: str, *args):
    f = tmp_path / "study.toml"
    f.write_text(text)
    db = tmp_path / "w2s.db"
    result = runner.invoke(cli, ["study", "run", str(f), "--db", str(db), *args])
    return result, sqlite_utils.Database(db)


# -- sanity flags with constructed numbers ------------------------------------------------------


def test_flags_with_constructed_numbers():
    assert pgr_flags(0.80, 0.90, 0.70) == []
    assert [f.split(":")[0] for f in pgr_flags(0.80, 0.78)] == ["ceiling<=weak"]
    assert [f.split(":")[0] for f in pgr_flags(0.80, 0.80)] == ["ceiling<=weak"]
    assert [f.split(":")[0] for f in pgr_flags(0.70, 0.90, 0.75)] == ["degenerate"]
    assert [f.split(":")[0] for f in pgr_flags(0.70, 0.65, 0.70)] == ["ceiling<=weak", "degenerate"]


def store_predictions(store: Store, key: str, correct: list[bool], role: str, study_id: str):
    """A finished predict stage whose test predictions are right exactly where `correct` says."""
    labels = [i % 2 for i in range(len(correct))]
    probs = [[0.1, 0.9] if (lab == 1) == ok else [0.9, 0.1] for lab, ok in zip(labels, correct)]
    store_stage(store, study_id, key, {"kind": "predict", "role": role},
                StageResult(predictions={"test": ([f"t{i}" for i in range(len(correct))], probs, labels)}))


def evaluate_pair(store: Store, *keys: str, seed: int, baseline_key: str | None = None) -> StageResult:
    """The evaluate stage function on the stored test predictions of weak, student, ceiling (and baseline)."""
    names = dict(zip(("weak", "student", "ceiling"), keys), **({"baseline": baseline_key} if baseline_key else {}))
    return run_evaluate({"seed": seed}, {name: store.predictions(key, "test") for name, key in names.items()}, None)


def test_evaluate_pair_flags_degenerate_and_ceiling_from_constructed_predictions(tmp_path):
    store = Store(tmp_path / "w2s.db")
    study_id = store.upsert_study("flags", "", {}, "h", None, {})
    n = 20
    # weak right on 14/20, student 15/20, ceiling 13/20 (below weak), pretrained baseline 16/20 (above weak)
    for key, k in (("weak", 14), ("student", 15), ("ceiling", 13), ("baseline", 16)):
        store_predictions(store, key, [i < k for i in range(n)], f"{key}_test", study_id)
    result = evaluate_pair(store, "weak", "student", "ceiling", seed=0, baseline_key="baseline")
    assert result.metrics[("test", "weak_acc")] == pytest.approx(0.70)
    assert result.metrics[("test", "baseline_acc")] == pytest.approx(0.80)
    assert result.metrics[("test", "pgr")] is None  # undefined: ceiling <= weak
    # and the ceiling's 0.65 (95% CI reaching 0.5) is within noise of always answering one class
    assert [f.split(":")[0] for f in result.output["flags"]] == ["ceiling<=weak", "degenerate", "near-majority"]
    # a sound pair: ceiling 18/20, baseline 12/20 -> PGR (0.75 - 0.70) / (0.90 - 0.70) = 0.25, no flags
    store_predictions(store, "ceiling2", [i < 18 for i in range(n)], "ceiling_test", study_id)
    store_predictions(store, "baseline2", [i < 12 for i in range(n)], "baseline_test", study_id)
    sound = evaluate_pair(store, "weak", "student", "ceiling2", seed=0, baseline_key="baseline2")
    assert sound.metrics[("test", "pgr")] == pytest.approx(0.25) and sound.output["flags"] == []
    # the report prints the flags of a stored evaluate stage
    store_stage(store, study_id, "eval", {"kind": "evaluate", "role": "evaluate"}, result)
    store.link_stage(study_id, "eval", "evaluate", {"task": "t", "weak": "w", "strong": "s", "loss": "xent", "seed": 0})
    text = results_table(store, study_id)
    assert "FLAG: ceiling<=weak" in text and "FLAG: degenerate" in text
    # with a second pair in the study, each flag names the pair it is about
    store_stage(store, study_id, "eval2", {"kind": "evaluate", "role": "evaluate"}, sound)
    store.link_stage(study_id, "eval2", "evaluate", {"task": "t", "weak": "w", "strong": "s2", "loss": "xent", "seed": 0})
    flags = [line for line in results_table(store, study_id).splitlines() if line.startswith("FLAG")]
    assert [f.split(":")[0] for f in flags] == ["FLAG (w -> s)"] * 3


# -- grids --------------------------------------------------------------------------------------


def bow(ngram_max: int):
    model = plugins.make_model("bow", {"ngram_max": ngram_max}, {}, "weak")
    model.label = f"bow{ngram_max}"
    return model


def test_grid_rule_runs_every_weak_before_strong_pair():
    a, b, c = bow(1), bow(2), bow(3)
    assert [(w.label, [s.label for s in ss]) for w, ss in grid_pairs([a, b], [c])] == [("bow1", ["bow3"]), ("bow2", ["bow3"])]
    ladder = grid_pairs([a, b], [bow(2), c])  # b appears in both lists: b -> b is skipped, b -> c runs
    assert [(w.label, [s.label for s in ss]) for w, ss in ladder] == [("bow1", ["bow2", "bow3"]), ("bow2", ["bow3"])]


def test_grid_trains_each_weak_once_and_prints_pgr_matrix(runner, tmp_path, sentiment_dir, tiny_bert):
    text = header(sentiment_dir, "grid") + """
[[weak]]
model = "bow"
label = "bow1"

[[weak]]
model = "bow"
label = "bow2"
options = { ngram_max = 2 }

""" + hf_table("[[strong]]", tiny_bert, "bert1", num_layers=1) + "\n" + hf_table("[[strong]]", tiny_bert, "bert2")
    result, db = run(runner, tmp_path, text)
    assert result.exit_code == 0, result.output
    weak_fits = list(db.query("select model_json from stages where role = 'weak' and kind = 'fit'"))
    assert len(weak_fits) == 2  # two weak models, each fit once although each serves two pairs
    assert sorted(json.loads(r["model_json"])["options"].get("ngram_max", 1) for r in weak_fits) == [1, 2]  # defaults are left out
    assert db.execute("select count(distinct stage_key) from study_stages where role = 'weak_labels'").fetchone()[0] == 2
    assert db.execute("select count(*) from stages where role = 'ceiling' and kind = 'fit'").fetchone()[0] == 2
    pairs = {(r["weak"], r["strong"]): r["pgr"] for r in db.query("select * from results")}
    assert set(pairs) == {("bow1", "bert1"), ("bow1", "bert2"), ("bow2", "bert1"), ("bow2", "bert2")}
    assert "PGR matrix [xent]" in result.output
    matrix = result.output.split("PGR matrix [xent]")[1]
    row = next(line for line in matrix.splitlines() if line.startswith("bow2"))
    expected = [f"{pairs[('bow2', s)]:.2f}" if pairs[("bow2", s)] is not None else "-" for s in ("bert1", "bert2")]
    assert row.split()[1:] == expected
    # truncation is part of the model spec, hence of the stage key
    specs = [json.loads(r["model_json"]) for r in db.query("select model_json from stages where role = 'ceiling' and kind = 'fit'")]
    assert sorted(str(s["options"].get("num_layers")) for s in specs) == ["1", "None"]


# -- chains -------------------------------------------------------------------------------------


CHAIN_TAIL = """
[[chain]]
model = "bow"
"""


def chain_text(data_dir, tiny_bert, transfer="fresh") -> str:
    return (header(data_dir, "chain", study_extra=f'chain_transfer = "{transfer}"') + CHAIN_TAIL + "\n"
            + hf_table("[[chain]]", tiny_bert, "bert1", num_layers=1) + "\n" + hf_table("[[chain]]", tiny_bert, "bert2"))


def test_chain_fits_each_model_on_the_previous_models_labels(runner, tmp_path, sentiment_dir, tiny_bert):
    result, db = run(runner, tmp_path, chain_text(sentiment_dir, tiny_bert))
    assert result.exit_code == 0, result.output
    splits = {r["name"]: set(json.loads(r["ids_json"])) for r in db.query("select * from splits")}
    assert {"weak_train", "transfer", "transfer_2", "test"} <= set(splits)
    assert len(splits["transfer"]) == len(splits["transfer_2"]) == 40
    assert not splits["transfer"] & splits["transfer_2"] and not splits["weak_train"] & splits["transfer_2"]
    # step 2: bert2 learns from the predictions bert1's *student* made on the second transfer split
    students = {(r["weak"], r["strong"]): r["stage_key"] for r in db.query("select * from study_stages where role = 'student'")}
    assert set(students) == {("bow", "bert1"), ("bert1", "bert2"), ("bow", "bert2")}
    step2 = spec_of(db, students[("bert1", "bert2")])
    assert step2["targets"] == students[("bow", "bert1")]  # bert1's student stage predicts step 2's labels (keep_checkpoints "needed")
    labeller = spec_of(db, step2["targets"])
    split_key = next(db.query("select key from splits where name = 'transfer_2'"))["key"]
    assert labeller["predict"]["transfer_2"] == step2["data"] == split_key
    # the direct bow -> bert2 transfer uses the same examples as the last chain step
    direct = spec_of(db, students[("bow", "bert2")])
    assert direct["data"] == split_key
    evals = list(db.query("select role, weak, strong, weak_acc, student_acc, ceiling_acc, pgr from evaluations order by role, strong"))
    assert [(r["role"], r["weak"], r["strong"]) for r in evals] == [
        ("chain_direct", "bow", "bert2"), ("chain_step", "bow", "bert1"), ("chain_step", "bert1", "bert2")]
    # the report: per-step rows and the direct transfer, with the accuracies of the evaluations view
    table = result.output.split("Bootstrapping chain bow -> bert1 -> bert2")[1].splitlines()
    for r in evals:
        name = ("direct " if r["role"] == "chain_direct" else "") + f"{r['weak']} -> {r['strong']}"
        line = next(l for l in table if f" {name} " in l and (r["role"] == "chain_direct") == ("direct" in l))
        assert f"{r['student_acc']:.3f}" in line and f"{r['ceiling_acc']:.3f}" in line
    # bootstrapping against direct transfer: the chain's last student minus the direct student, same test examples
    direct_eval, last_step = evals[0], evals[2]
    key = next(db.query("select stage_key from study_stages where role = 'chain_direct'"))["stage_key"]
    m = {r["name"]: r["value"] for r in db.query("select name, value from metrics where stage_key = ?", [key])}
    assert m["chain_acc"] == last_step["student_acc"]
    assert m["chain_minus_direct"] == pytest.approx(last_step["student_acc"] - direct_eval["student_acc"])
    assert m["chain_minus_direct_ci_low"] <= m["chain_minus_direct"] <= m["chain_minus_direct_ci_high"]
    gap = direct_eval["ceiling_acc"] - direct_eval["weak_acc"]
    if gap > 0:
        assert m["chain_minus_direct_pgr"] == pytest.approx(m["chain_minus_direct"] / gap)
    line = next(l for l in table if l.startswith("chain - direct [seed 0, xent]"))
    assert f"student accuracy {m['chain_minus_direct']:+.3f} [{m['chain_minus_direct_ci_low']:+.3f}, {m['chain_minus_direct_ci_high']:+.3f}]" in line


def spec_of(db, key: str) -> dict:
    return json.loads(next(db.query("select spec_json from stages where key = ?", [key]))["spec_json"])


def test_chain_same_transfer_and_data_errors(runner, tmp_path, sentiment_dir, tiny_bert):
    result, db = run(runner, tmp_path, chain_text(sentiment_dir, tiny_bert, "same"), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "on transfer " in result.output and "transfer_2" not in result.output  # every step reuses one transfer split
    assert db["splits"].count == 0  # a dry run stores nothing
    too_big = chain_text(sentiment_dir, tiny_bert).replace("n_transfer = 40", "n_transfer = 70")
    result, _ = run(runner, tmp_path, too_big, "--dry-run")
    assert result.exit_code == 1 and "task.n_transfer" in result.output and 'chain_transfer = "same"' in result.output
    one = header(sentiment_dir, "c1") + CHAIN_TAIL
    result, _ = run(runner, tmp_path, one, "--dry-run")
    assert result.exit_code == 1 and "chain: a chain needs at least two models" in result.output
    dup = header(sentiment_dir, "c2") + CHAIN_TAIL + CHAIN_TAIL
    result, _ = run(runner, tmp_path, dup, "--dry-run")
    assert result.exit_code == 1 and "chain[1]: label 'bow' is already used by chain[0]" in result.output


# -- seeds ----------------------------------------------------------------------------------------


def seeds_text(data_dir, tiny_bert) -> str:
    strong = hf_table("[strong]", tiny_bert, "bert", lr=3e-3, epochs=8)
    return header(data_dir, "seeds", seeds=(0, 1, 2), n_transfer=80) + '[weak]\nmodel = "bow"\n\n' + strong


def test_seeds_mean_ci_row_and_rerun_after_delete_is_identical(runner, tmp_path, sentiment_dir, tiny_bert):
    result, db = run(runner, tmp_path, seeds_text(sentiment_dir, tiny_bert))
    assert result.exit_code == 0, result.output
    rows = list(db.query("select seed, weak_acc, student_acc, ceiling_acc, pgr from results order by seed"))
    assert [r["seed"] for r in rows] == [0, 1, 2] and all(r["pgr"] is not None for r in rows)
    mean_line = next(l for l in result.output.splitlines() if l.startswith("mean ") and " bow " in l and "(seeds)" in l)
    m, low, high = mean_ci([r["pgr"] for r in rows])
    assert f"{m:.2f}" in mean_line and f"[{low:.2f}, {high:.2f}] (seeds)" in mean_line
    weak_mean = next(l for l in result.output.splitlines() if l.startswith("mean ") and "weak (bow)" in l)
    wm, wl, wh = mean_ci([r["weak_acc"] for r in rows])
    assert f"{wm:.3f} [{wl:.3f}, {wh:.3f}]" in weak_mean
    before = probs_of_seed(db, 1)
    keys = [r["key"] for r in db.query("select key from stages where seed = 1")]
    assert len(keys) == 4  # weak, ceiling and student fits (each predicting on its splits) and the evaluate stage
    marks = ",".join("?" * len(keys))
    for table in ("metrics", "predictions", "curves", "artifacts"):
        db.execute(f"delete from {table} where stage_key in ({marks})", keys)
    db.execute(f"delete from study_stages where stage_key in ({marks})", keys)
    db.execute(f"delete from stages where key in ({marks})", keys)
    db.conn.commit()
    again, db = run(runner, tmp_path, seeds_text(sentiment_dir, tiny_bert))
    assert again.exit_code == 0, again.output
    assert sum(l.endswith(": cached") for l in again.output.splitlines()) == 8
    assert list(db.query("select seed, weak_acc, student_acc, ceiling_acc, pgr from results order by seed")) == rows
    assert probs_of_seed(db, 1) == before


def probs_of_seed(db, seed: int) -> dict:
    sql = "select st.role, p.example_id, p.probs_json from predictions p join stages st on st.key = p.stage_key where st.seed = ?"
    return {(r["role"], r["example_id"]): r["probs_json"] for r in db.query(sql, [seed])}


# -- baseline and ground-truth early stopping ------------------------------------------------------


def test_baseline_row_and_oracle_early_stopping_row(runner, tmp_path, sentiment_dir, tiny_bert):
    text = (header(sentiment_dir, "oracle", n_transfer=60, study_extra='baseline = "linear_probe"')
            + '[weak]\nmodel = "bow"\n\n' + hf_table("[strong]", tiny_bert, "bert", epochs=2)
            + "\n[gt_early_stopping]\nn_val = 20\neval_every = 2\n")
    result, db = run(runner, tmp_path, text)
    assert result.exit_code == 0, result.output
    splits = {r["name"]: set(json.loads(r["ids_json"])) for r in db.query("select * from splits")}
    assert len(splits["validation"]) == 20 and len(splits["transfer"]) == 40 and not splits["validation"] & splits["transfer"]
    # the headline PGR has one row; the oracle is its own labelled row
    assert db.execute("select count(*) from results").fetchone()[0] == 1
    oracle = next(db.query("select * from evaluations where role = 'oracle_evaluate'"))
    assert "ORACLE diagnostic" in result.output and "oracle, GT early stopping: student xent (bow->bert)" in result.output
    assert f"{oracle['student_acc']:.3f}" in result.output.split("ORACLE diagnostic")[1]
    # checkpoint selection: validation accuracy every 2 steps, the kept step is the best one
    key = next(db.query("select key from stages where role = 'student_oracle'"))["key"]
    curve = {r["step"]: r["value"] for r in db.query("select step, value from curves where stage_key = ? and name = 'val_acc'", [key])}
    best = next(db.query("select step, value from curves where stage_key = ? and name = 'best_val_acc'", [key]))
    assert len(curve) >= 3 and best["value"] == max(curve.values()) and curve[best["step"]] == best["value"]
    assert min(s for s, v in curve.items() if v == best["value"]) == best["step"]
    # the strong model before fine-tuning: a probe on frozen features, fit on the weak model's split A
    baseline = next(db.query("select * from stages where role = 'baseline' and kind = 'fit'"))
    assert json.loads(baseline["model_json"])["train"]["mode"] == "logistic_regression"  # fit to convergence
    assert json.loads(baseline["spec_json"])["data"] == next(db.query("select key from splits where name = 'weak_train'"))["key"]
    line = next(l for l in result.output.splitlines() if "Strong Model (pretrained) (bert)" in l)
    evaluate = next(db.query("select * from evaluations where role = 'evaluate'"))
    assert f"{evaluate['baseline_acc']:.3f}" in line
    flags = json.loads(evaluate["flags"])
    assert any(f.startswith("degenerate") for f in flags) == (evaluate["baseline_acc"] >= evaluate["weak_acc"])


# -- linear probe with cached features ----------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3])
def test_logistic_regression_probe_matches_scikit_learn(k):
    """The torch head carries the fitted regression exactly; one-hot targets = a plain fit on the labels."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from w2s_plugins.hf_probe import logistic_regression, probe_head, set_linear

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    y = np.argmax(x[:, :k] + 0.3 * rng.normal(size=(300, k)), axis=1)
    head = probe_head(8, k)
    set_linear(head.linear, *logistic_regression(x, np.eye(k)[y]))
    probs = torch.softmax(head(torch.from_numpy(x)), -1).detach().numpy()
    reference = LogisticRegression(max_iter=2000).fit(x, y).predict_proba(x)
    assert np.allclose(probs, reference, atol=1e-4)
    assert (probs.argmax(1) == y).mean() > 0.8
    with pytest.raises(W2SError, match="needs two classes"):
        logistic_regression(x, np.eye(k)[np.zeros(300, dtype=int)])


class FakeContext:
    def __init__(self, folder: Path, seed: int = 0):
        self.seed, self.stage_key, self.validation, self.split = seed, "probe", None, None
        self.artifact_dir = folder / "artifacts" / "probe"
        self.curves = []

    def log_curve(self, step, name, value):
        self.curves.append((step, name, value))

    def log_metric(self, split, name, value):
        pass

    def echo(self, message):
        pass


@pytest.fixture
def encoder_calls(monkeypatch):
    """Counts the examples that go through the BERT encoder."""
    from transformers.models.bert.modeling_bert import BertModel

    seen = []
    forward = BertModel.forward

    def counting(self, input_ids=None, *args, **kwargs):
        seen.append(int(input_ids.shape[0]))
        return forward(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(BertModel, "forward", counting)
    return seen


def test_linear_probe_runs_the_encoder_once_per_example(tmp_path, tiny_bert, sentiment_dir, encoder_calls):
    task = plugins.make_task("sst2", {}, sentiment_dir, "task")
    examples = task.load("train")[:64]
    targets = np.eye(2, dtype=np.float32)[[e.label for e in examples]]
    xent = plugins.make_loss("xent", {}, "loss")
    options = {"path": str(tiny_bert), "max_length": 16}
    probe = plugins.make_model("hf", options, {"mode": "linear_probe", "epochs": 10, "batch_size": 8, "lr": 1e-2}, "strong")
    ctx = FakeContext(tmp_path)
    trained = probe.fit(examples, targets, xent, task, ctx)
    assert sum(encoder_calls) == 64  # 10 epochs x 8 batches of head updates, one encoder pass per example
    assert len([c for c in ctx.curves if c[1] == "train_loss"]) == 80
    probs = trained.predict(examples, task)
    assert sum(encoder_calls) == 64  # predictions on seen examples read the cache
    unseen = task.load("test")[:10]
    trained.predict(unseen, task)
    assert sum(encoder_calls) == 74
    # another probe on the same model and data (other lr) reuses the on-disk features: no encoder call
    other = plugins.make_model("hf", options, {"mode": "linear_probe", "epochs": 10, "batch_size": 8, "lr": 1e-3}, "strong")
    other.fit(examples, targets, xent, task, FakeContext(tmp_path, seed=1))
    assert sum(encoder_calls) == 74
    # truncating the encoder is a different model: its features are computed afresh
    short = plugins.make_model("hf", {**options, "num_layers": 1}, {"mode": "linear_probe", "epochs": 1}, "strong")
    short.fit(examples[:8], targets[:8], xent, task, FakeContext(tmp_path))
    assert sum(encoder_calls) == 82
    # the cached features are the encoder's features: same predictions as a fresh forward pass
    import torch

    tokenizer, module = probe.build(2)
    batch = tokenizer([task.render(e) for e in examples[:5]], truncation=True, max_length=16, padding=True, return_tensors="pt")
    with torch.inference_mode():
        fresh = torch.softmax(trained.head(module.features(batch["input_ids"], batch["attention_mask"])), -1).numpy()
    np.testing.assert_allclose(fresh, probs[:5], atol=1e-5)
    # a saved probe reloads and predicts the same, still without the encoder
    trained.save(tmp_path / "ckpt")
    calls = sum(encoder_calls)
    reloaded = probe.load(tmp_path / "ckpt", task)
    np.testing.assert_allclose(reloaded.predict(examples, task), probs, atol=1e-6)
    assert sum(encoder_calls) == calls


def test_finetune_mode_runs_the_encoder_every_step(tmp_path, tiny_bert, sentiment_dir, encoder_calls):
    task = plugins.make_task("sst2", {}, sentiment_dir, "task")
    examples = task.load("train")[:32]
    targets = np.eye(2, dtype=np.float32)[[e.label for e in examples]]
    model = plugins.make_model("hf", {"path": str(tiny_bert), "max_length": 16}, {"epochs": 3, "batch_size": 8}, "strong")
    model.fit(examples, targets, plugins.make_loss("xent", {}, "loss"), task, FakeContext(tmp_path))
    assert sum(encoder_calls) == 3 * 32


@pytest.mark.slow
def test_minilm_truncated_to_two_layers():
    model = plugins.make_model("minilm-l6", {"num_layers": 2}, {}, "strong")
    tokenizer, module = model.build(2)
    assert module.backbone.config.num_hidden_layers == 2 and len(module.backbone.encoder.layer) == 2
    assert model.spec()["options"]["num_layers"] == 2


def test_prompt_baseline_for_causal_lm_and_lm_head_oracle(runner, tmp_path, sentiment_dir, tiny_gpt2):
    strong = f"""[strong]
model = "hf"
label = "gpt"
options = {{ path = "{tiny_gpt2}", head = "lm", max_length = 128 }}
train = {{ epochs = 1, batch_size = 16, lr = 1e-3 }}
"""
    text = (header(sentiment_dir, "prompt", n_test=20, study_extra='baseline = "auto"\nbaseline_k_shot = 2\nkeep_checkpoints = "all"')
            + '[weak]\nmodel = "bow"\n\n' + strong + "\n[gt_early_stopping]\nn_val = 10\neval_every = 1\n")
    result, db = run(runner, tmp_path, text)
    assert result.exit_code == 0, result.output
    fit = next(db.query("select * from stages where role = 'baseline' and kind = 'fit'"))
    assert json.loads(fit["model_json"])["model"] == "prompt-baseline" and json.loads(fit["model_json"])["k_shot"] == 2
    saved = json.loads(Path(next(db.query("select path from artifacts where stage_key = ?", [fit["key"]]))["path"]).read_text())
    weak_train = set(json.loads(next(db.query("select ids_json from splits where name = 'weak_train'"))["ids_json"]))
    assert set(saved["ids"]) <= weak_train and sorted(s["label"] for s in saved["shots"]) == [0, 1]
    # the stored baseline probabilities are the pretrained LM's label-word scores after the 2-shot prefix
    from w2s.prompting import fewshot_prefix, softmax_rows

    model = plugins.make_model("hf", {"path": str(tiny_gpt2), "head": "lm", "max_length": 128}, {}, "strong")
    task = plugins.make_task("sst2", {}, sentiment_dir, "task")
    shots = [Example(s["id"], s["text"], s["label"]) for s in saved["shots"]]
    stored = next(db.query("select p.example_id, p.probs_json from predictions p join stages st on st.key = p.stage_key "
                           "where st.role = 'baseline_test' order by p.example_id limit 1"))
    example = next(e for e in task.load("test") if e.id == stored["example_id"])
    scores = model.pretrained(task).score_many([fewshot_prefix(task, shots) + task.render(example)], [task.label_words])
    np.testing.assert_allclose(json.loads(stored["probs_json"]), softmax_rows(scores)[0], atol=1e-5)
    assert "Strong Model (pretrained) (gpt)" in result.output
    # the LM-head student also supports the oracle: validation accuracy after every step
    key = next(db.query("select key from stages where role = 'student_oracle'"))["key"]
    assert db.execute("select count(*) from curves where stage_key = ? and name = 'val_acc'", [key]).fetchone()[0] == 2  # 30 examples / 16


def test_chain_rejects_pair_only_options(runner, tmp_path, sentiment_dir, tiny_bert):
    mixed = chain_text(sentiment_dir, tiny_bert) + '\n[weak]\nmodel = "bow"\n'
    result, _ = run(runner, tmp_path, mixed, "--dry-run")
    assert result.exit_code == 1 and "either [[chain]] models or weak/strong models" in result.output
    oracle = chain_text(sentiment_dir, tiny_bert) + "\n[gt_early_stopping]\nn_val = 5\n"
    result, _ = run(runner, tmp_path, oracle, "--dry-run")
    assert result.exit_code == 1 and "gt_early_stopping and study.baseline apply to weak/strong pairs" in result.output


@pytest.mark.slow
def test_minilm_linear_probe_2000_examples_10_epochs_encodes_each_example_once(tmp_path, encoder_calls):
    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
    task = plugins.make_task("sst2", {}, data, "task")
    examples = task.load("train")[:2000]
    targets = np.eye(2, dtype=np.float32)[[e.label for e in examples]]
    probe = plugins.make_model("minilm-l6", {"max_length": 64}, {"mode": "linear_probe", "epochs": 10, "batch_size": 32, "lr": 1e-3}, "strong")
    ctx = FakeContext(tmp_path)
    trained = probe.fit(examples, targets, plugins.make_loss("xent", {}, "loss"), task, ctx)
    assert sum(encoder_calls) == 2000 and len([c for c in ctx.curves if c[1] == "train_loss"]) == 10 * 63
    assert (trained.predict(examples, task).argmax(1) == targets.argmax(1)).mean() > 0.7 and sum(encoder_calls) == 2000


def test_logistic_regression_mode_refuses_other_losses(tiny_bert):
    from w2s import plugins

    model = plugins.make_model("hf", {"path": str(tiny_bert)}, {"mode": "logistic_regression"}, "strong")
    with pytest.raises(W2SError) as err:
        model.check_fit([], plugins.make_loss("logconf", {}, "loss"), None)
    assert str(err.value) == ("hf.train.mode = \"logistic_regression\" fits cross-entropy only (loss is 'logconf'); "
                              'use mode = "linear_probe" for other losses')
    model.check_fit([], plugins.make_loss("xent", {}, "loss"), None)  # fine


def test_chain_against_direct_difference_and_its_paired_ci():
    """chain - direct on the same test examples: the accuracy difference, the PGR difference (same M1 and ceiling, so
    the accuracy difference over the gap), and bootstrap CIs that exclude 0 when the chain is clearly better."""
    from w2s.running.stages import chain_against_direct

    n = 200
    idx = np.arange(n)
    correct = {"weak": idx < 100, "ceiling": idx < 180, "student": idx < 120, "chain": idx < 150}  # 0.50, 0.90, 0.60, 0.75
    m = {name: value for (_, name), value in chain_against_direct(correct, seed=0).items()}
    assert m["chain_minus_direct"] == pytest.approx(0.15)
    assert m["chain_minus_direct_pgr"] == pytest.approx(0.15 / 0.40)
    assert 0 < m["chain_minus_direct_ci_low"] < 0.15 < m["chain_minus_direct_ci_high"]
    assert 0 < m["chain_minus_direct_pgr_ci_low"] < 0.375 < m["chain_minus_direct_pgr_ci_high"]
    same = chain_against_direct({**correct, "chain": correct["student"]}, seed=0)
    assert same[("test", "chain_minus_direct")] == 0 and same[("test", "chain_minus_direct_ci_low")] == 0 == same[("test", "chain_minus_direct_ci_high")]
