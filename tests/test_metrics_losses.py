"""Metrics, PGR and its CI, flags, the losses and the shared training pieces."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from w2s import metrics
from w2s.api import Loss
from w2s.train import cosine_with_warmup, length_buckets
from w2s_plugins.losses import entropy_loss, kl_loss, logconf_loss, product_loss, warmup_coef, window_loss, xent_loss


def test_pgr_values_and_undefined_gap():
    assert metrics.pgr(0.6, 0.7, 0.8) == pytest.approx(0.5)
    assert metrics.pgr(0.6, 0.55, 0.8) == pytest.approx(-0.25)
    assert math.isnan(metrics.pgr(0.7, 0.8, 0.7))


def paired_percentile_bootstrap(weak, student, ceiling, seed, n_boot=1000):
    """Burns et al.'s CI by hand: resample test examples (the same rows for all three models), PGR per resample."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        rows = rng.integers(0, len(weak), size=len(weak))
        w, s, c = weak[rows].mean(), student[rows].mean(), ceiling[rows].mean()
        if c > w:
            values.append((s - w) / (c - w))
    if len(values) < n_boot / 2:
        return math.nan, math.nan
    return tuple(float(x) for x in np.percentile(values, [2.5, 97.5]))


def test_bootstrap_pgr_ci_matches_a_hand_written_paired_percentile_bootstrap():
    rng = np.random.default_rng(0)
    weak, student, ceiling = (rng.random(400) < p for p in (0.6, 0.7, 0.8))
    for seed in (0, 7):
        assert metrics.bootstrap_pgr(weak, student, ceiling, seed=seed) == pytest.approx(paired_percentile_bootstrap(weak, student, ceiling, seed))
    unpaired = metrics.bootstrap_pgr(weak, student, rng.permutation(ceiling), seed=0)  # pairing matters: shuffled rows differ
    assert unpaired != pytest.approx(metrics.bootstrap_pgr(weak, student, ceiling, seed=0))
    # no gap in most resamples: both ends NaN, by hand too
    same = rng.random(400) < 0.7
    assert all(math.isnan(x) for x in metrics.bootstrap_pgr(same, student, same, seed=0))
    assert all(math.isnan(x) for x in paired_percentile_bootstrap(same, student, same, 0))


def test_stored_pgr_ci_is_the_hand_written_bootstrap(tmp_path):
    from w2s.running.stages import run_evaluate

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    correct = {name: rng.random(300) < p for name, p in (("weak", 0.65), ("student", 0.72), ("ceiling", 0.85))}
    inputs = {name: {f"t{i}": {"pred": int(labels[i] if ok else 1 - labels[i]), "label": int(labels[i]), "probs": [0.5, 0.5]}
                     for i, ok in enumerate(c)} for name, c in correct.items()}
    result = run_evaluate({"seed": 3}, inputs, None)
    order = np.argsort([f"t{i}" for i in range(300)])  # the stage sorts example ids
    low, high = paired_percentile_bootstrap(*(correct[n][order] for n in ("weak", "student", "ceiling")), seed=3)
    assert result.metrics[("test", "pgr_ci_low")] == pytest.approx(low) and result.metrics[("test", "pgr_ci_high")] == pytest.approx(high)


def test_ceiling_not_above_weak_is_flagged():
    flags = metrics.pgr_flags(weak_acc=0.8, ceiling_acc=0.75)
    assert len(flags) == 1 and flags[0].startswith("ceiling<=weak")
    assert metrics.pgr_flags(0.6, 0.8) == []
    assert metrics.pgr_flags(0.6, 0.8, baseline_acc=0.65)[0].startswith("degenerate")


def test_agreement_split_by_weak_right_and_wrong():
    labels = np.array([1, 1, 0, 0])
    weak = np.array([1, 0, 0, 1])  # right, wrong, right, wrong
    student = np.array([1, 0, 1, 0])  # agrees, agrees, disagrees, disagrees
    out = metrics.agreement(student, weak, labels)
    assert out == {"agreement": 0.5, "agreement_weak_right": 0.5, "agreement_weak_wrong": 0.5}


def test_classification_metrics_match_hand_computation():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    out = metrics.classification_metrics(probs, np.array([0, 1, 1, 1]))
    assert out["accuracy"] == 0.75 and out["precision"] == 1.0 and out["recall"] == pytest.approx(2 / 3)
    assert out["auroc"] == 1.0


def test_logconf_alpha_warms_up_linearly_not_in_a_jump():
    opts = {"alpha_max": 0.75, "warmup_frac": 0.2}
    assert [round(warmup_coef(f, opts), 4) for f in (0.0, 0.1, 0.2, 0.5, 1.0)] == [0.0, 0.375, 0.75, 0.75, 0.75]


def test_logconf_equals_xent_at_start_and_uses_weak_prior_threshold():
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.5], [0.0, 0.2], [0.0, 3.0]])
    targets = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.1, 0.9]])
    opts = {"alpha_max": 1.0, "warmup_frac": 0.5}
    assert logconf_loss(logits, targets, 0.0, opts).item() == pytest.approx(xent_loss(logits, targets, 0.0, {}).item())


def test_logconf_hardens_by_the_weak_prior_not_by_argmax():
    # argmax (and a 0.5 threshold) put all four in class 0; the weak labels' prior of class 1 is 0.5,
    # so the two examples with the largest p(1) are hardened to class 1
    logits = torch.tensor([[3.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    targets = torch.tensor([[0.8, 0.2], [0.2, 0.8], [0.7, 0.3], [0.3, 0.7]])
    prior_hardened = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    argmax_hardened = torch.tensor([[1.0, 0.0]] * 4)
    opts = {"alpha_max": 1.0, "warmup_frac": 0.5}
    value = logconf_loss(logits, targets, 1.0, opts).item()
    assert value == pytest.approx(torch.nn.functional.cross_entropy(logits, prior_hardened).item(), rel=1e-5)
    assert value != pytest.approx(torch.nn.functional.cross_entropy(logits, argmax_hardened).item(), rel=1e-2)


def test_product_loss_target_is_normalised_product():
    logits = torch.zeros(1, 2)  # student uniform: target equals the weak labels
    targets = torch.tensor([[0.8, 0.2]])
    value = product_loss(logits, targets, 1.0, {"alpha": 1.0, "beta": 1.0, "warmup_frac": 0.1})
    assert value.item() == pytest.approx(xent_loss(logits, targets, 1.0, {}).item())


def test_loss_object_applies_its_options():
    loss = Loss("logconf", logconf_loss, {"alpha_max": 0.5, "warmup_frac": 0.1})
    logits, targets = torch.randn(8, 2), torch.softmax(torch.randn(8, 2), -1)
    assert loss(logits, targets, 1.0).item() == pytest.approx(logconf_loss(logits, targets, 1.0, loss.options).item())



# -- EleutherAI/w2s's entropy, window and kl, checked against plain-python arithmetic ---------------
LOGITS = [[2.0, -1.0], [0.5, 0.5], [-1.0, 3.0]]
WEAK = [[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]]


def py_softmax(row):
    exps = [math.exp(x - max(row)) for x in row]
    return [e / sum(exps) for e in exps]


def py_xent(row, target):
    return -sum(t * math.log(p) for t, p in zip(target, py_softmax(row)))


def py_entropy(row):
    return -sum(p * math.log(p) for p in py_softmax(row))


def test_entropy_loss_mixes_xent_and_student_entropy_by_hand():
    logits, targets = torch.tensor(LOGITS), torch.tensor(WEAK)
    opts = {"alpha_max": 0.5, "warmup_frac": 0.1}
    for step_frac, alpha in ((1.0, 0.5), (0.05, 0.25)):
        expected = sum((1 - alpha) * py_xent(r, t) + alpha * py_entropy(r) for r, t in zip(LOGITS, WEAK)) / 3
        assert entropy_loss(logits, targets, step_frac, opts).item() == pytest.approx(expected, abs=1e-6)


def test_entropy_loss_is_xent_before_warmup_and_minimises_entropy_after():
    logits, targets = torch.tensor(LOGITS, requires_grad=True), torch.tensor(WEAK)
    opts = {"alpha_max": 1.0, "warmup_frac": 0.2}
    assert entropy_loss(logits, targets, 0.0, opts).item() == pytest.approx(sum(map(py_xent, LOGITS, WEAK)) / 3, abs=1e-6)
    # past warm-up with alpha_max = 1 the loss is the mean entropy alone, and its gradient is live (the reference's
    # detached target would give zero): dH/dz_k = -p_k (log p_k + H), over the batch of 3
    entropy_loss(logits, targets, 0.5, opts).backward()
    for row, grad in zip(LOGITS, logits.grad.tolist()):
        probs, h = py_softmax(row), py_entropy(row)
        for p, g in zip(probs, grad):
            assert g == pytest.approx(-p * (math.log(p) + h) / 3, abs=1e-6)
    assert logits.grad[0, 0] < 0 < logits.grad[0, 1]  # descending makes example 0 more confident in class 0


def test_window_loss_keeps_only_examples_the_student_is_unsure_of():
    # radius 0.15 keeps max prob < 0.65: example 1 (0.5, 0.5) only; examples 0 (0.95) and 2 (0.98) drop out,
    # and the sum is divided by the whole batch of 3
    opts = {"radius": 0.15}
    value = window_loss(torch.tensor(LOGITS), torch.tensor(WEAK), 0.5, opts).item()
    assert value == pytest.approx(py_xent(LOGITS[1], WEAK[1]) / 3, abs=1e-6)
    assert value == pytest.approx(math.log(2) / 3, abs=1e-6)
    moved = [[5.0, -2.0], [0.5, 0.5], [-1.0, 1.0]]  # dropped examples change but stay confident (0.999, 0.88)
    assert window_loss(torch.tensor(moved), torch.tensor(WEAK), 0.5, opts).item() == pytest.approx(value, abs=1e-6)
    kept_moved = [[2.0, -1.0], [0.7, 0.5], [-1.0, 3.0]]  # the kept example changes: the loss does too
    expected = py_xent(kept_moved[1], WEAK[1]) / 3
    assert window_loss(torch.tensor(kept_moved), torch.tensor(WEAK), 0.5, opts).item() == pytest.approx(expected, abs=1e-6)
    # the widest window keeps all three: plain xent
    wide = window_loss(torch.tensor(LOGITS), torch.tensor(WEAK), 0.5, {"radius": 0.5}).item()
    assert wide == pytest.approx(sum(map(py_xent, LOGITS, WEAK)) / 3, abs=1e-6)


def test_window_loss_with_every_example_dropped_is_a_zero_with_a_zero_gradient():
    logits = torch.tensor([[2.0, -1.0], [-1.0, 3.0]], requires_grad=True)
    value = window_loss(logits, torch.tensor([[0.9, 0.1], [0.2, 0.8]]), 0.5, {"radius": 0.15})
    assert value.item() == 0.0 and not torch.isnan(value)
    value.backward()
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


def test_window_loss_multiclass_uses_the_argmax_probability():
    logits = [[1.0, 0.0, 0.0], [3.0, 0.0, 0.0]]  # max probs e/(e+2) = 0.58 (kept), e^3/(e^3+2) = 0.91 (dropped)
    targets = [[0.2, 0.5, 0.3], [0.6, 0.2, 0.2]]
    value = window_loss(torch.tensor(logits), torch.tensor(targets), 0.5, {"radius": 0.15}).item()
    assert value == pytest.approx(py_xent(logits[0], targets[0]) / 2, abs=1e-6)


def test_kl_loss_by_hand_with_zero_targets():
    targets = [[1.0, 0.0], [0.4, 0.6], [0.2, 0.8]]  # 0 log 0 = 0 in the first row
    expected = sum(sum(w * (math.log(w) - math.log(p)) for w, p in zip(t, py_softmax(r)) if w > 0)
                   for r, t in zip(LOGITS, targets)) / 3
    assert kl_loss(torch.tensor(LOGITS), torch.tensor(targets), 0.5, {}).item() == pytest.approx(expected, abs=1e-6)
    multi = [[0.5, 0.0, 0.5]]
    expected = sum(w * (math.log(w) - math.log(p)) for w, p in zip(multi[0], py_softmax([1.0, 2.0, 0.0])) if w > 0)
    assert kl_loss(torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor(multi), 0.5, {}).item() == pytest.approx(expected, abs=1e-6)


def test_kl_loss_is_zero_when_the_student_matches_and_trains_like_xent():
    logits = torch.tensor(LOGITS, requires_grad=True)
    same = torch.softmax(logits, -1).detach()
    assert kl_loss(logits, same, 0.5, {}).item() == pytest.approx(0.0, abs=1e-6)
    kl_loss(logits, torch.tensor(WEAK), 0.5, {}).backward()
    expected = [[(p - w) / 3 for p, w in zip(py_softmax(r), t)] for r, t in zip(LOGITS, WEAK)]
    assert logits.grad.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]


@pytest.mark.parametrize("table,expect", [
    ('name = "window"\n[losses.options]\nradius = -0.1', "losses[1].options.radius: Input should be greater than 0"),
    ('name = "entropy"\n[losses.options]\nalpha_max = 1.5', "losses[1].options.alpha_max: Input should be less than or equal to 1"),
    ('name = "kl"\n[losses.options]\nradius = 0.2', "losses[1].options: loss 'kl' takes no options"),
], ids=["window-radius", "entropy-alpha_max", "kl-options"])
def test_new_loss_bad_options_are_one_line_study_errors(runner, tmp_path, sentiment_dir, table, expect):
    from conftest import sst2_study
    from w2s.commands.cli import cli

    f = tmp_path / "bad.toml"
    f.write_text(sst2_study(sentiment_dir, 'model = "bow"', extra=f'[[losses]]\nname = "xent"\n[[losses]]\n{table}\n'))
    result = runner.invoke(cli, ["study", "run", str(f), "--db", str(tmp_path / "w2s.db")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and "Traceback" not in result.output and len(lines) == 1, result.output
    assert str(f) in lines[0] and expect in lines[0]


def test_new_losses_are_registered_with_their_defaults():
    from w2s import plugins

    registered = plugins.losses()
    assert {"entropy", "window", "kl"} <= set(registered)
    assert plugins.make_loss("entropy", {}, "loss").options == {"alpha_max": 0.5, "warmup_frac": 0.08}
    assert plugins.make_loss("window", {}, "loss").options == {"radius": 0.15}
    assert plugins.make_loss("kl", {}, "loss").options == {}

def test_cosine_schedule_warms_up_then_decays_to_zero():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cosine_with_warmup(opt, warmup_steps=2, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[2] == 1.0
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:])) and sched.get_last_lr()[0] == pytest.approx(0.0)


def test_length_buckets_cover_every_example_once_and_group_lengths():
    lengths = list(np.random.default_rng(0).integers(1, 100, size=250))
    batches = length_buckets(lengths, 16, np.random.default_rng(0))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(250))
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
    assert spread < 20  # random batches would spread ~90


def test_last_token_pooling_ignores_pad_id(tiny_bert):
    """Pooling reads the last attended token even when pad id is 0 (the reference code's bug)."""
    from w2s_plugins.hf import pooled_classifier_class
    from transformers import AutoModel

    module = pooled_classifier_class()(AutoModel.from_pretrained(tiny_bert), 2, "last")
    ids = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    hidden = module.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    feats = module.features(ids, mask)
    assert torch.allclose(feats[0], hidden[0, 2]) and torch.allclose(feats[1], hidden[1, 4])


def test_pgr_difference_is_paired_and_hand_checkable():
    from w2s.metrics import bootstrap_pgr_difference

    weak = np.array([1, 0, 0, 0, 1, 0, 0, 0, 1, 0] * 20)  # 0.3
    ceiling = np.array([1, 1, 1, 1, 1, 1, 1, 0, 1, 0] * 20)  # 0.8
    student_a = np.array([1, 1, 1, 0, 1, 1, 0, 0, 1, 0] * 20)  # 0.6: PGR 0.6
    student_b = np.array([1, 1, 0, 0, 1, 0, 0, 0, 1, 0] * 20)  # 0.4: PGR 0.2
    point, low, high = bootstrap_pgr_difference(weak, student_a, ceiling, student_b, ceiling, seed=0)
    assert point == pytest.approx(0.4)
    assert 0 < low < 0.4 < high
    same = bootstrap_pgr_difference(weak, student_a, ceiling, student_a, ceiling)
    assert same == (0.0, 0.0, 0.0)


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 300), min_size=1, max_size=400), budget=st.integers(1, 4096), seed=st.integers(0, 10))
def test_token_budget_batches_cover_every_example_once_within_the_budget(lengths, budget, seed):
    from w2s.train import token_budget_batches

    batches = token_budget_batches(lengths, budget, np.random.default_rng(seed), chunk=64)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))  # every example exactly once per epoch
    for batch in batches:
        padded = len(batch) * max(lengths[i] for i in batch)
        assert padded <= budget or len(batch) == 1  # only an example longer than the budget goes over, alone
    assert batches == token_budget_batches(lengths, budget, np.random.default_rng(seed), chunk=64)  # seeded


def test_token_budget_makes_bigger_batches_of_short_texts():
    from w2s.train import TrainConfig, token_budget_batches, training_batches

    lengths = [8] * 100 + [64] * 100
    batches = token_budget_batches(lengths, 512, np.random.default_rng(0))
    short = [len(b) for b in batches if max(lengths[i] for i in b) == 8]
    long = [len(b) for b in batches if max(lengths[i] for i in b) == 64]
    assert max(short) == 64 and max(long) == 8  # 512 tokens: 64 rows of 8, or 8 rows of 64
    assert sum(short) + sum(long) == 200
    assert len(training_batches(lengths, TrainConfig(batch_size=32), np.random.default_rng(0))) == 7  # without it: batch_size
    assert training_batches(lengths, TrainConfig(batch_tokens=512), np.random.default_rng(0)) == batches


def test_a_fit_with_a_token_budget_trains(tiny_bert, tmp_path):
    from conftest import write_sentiment_tsvs

    from w2s.plugins import make_loss, make_model, make_task

    task = make_task("sst2", {}, write_sentiment_tsvs(tmp_path / "d", n_train=160, n_test=60), "task")
    train, test = task.load("train"), task.load("test")
    model = make_model("hf", {"path": str(tiny_bert), "max_length": 16}, {"epochs": 6, "batch_tokens": 96, "lr": 3e-3}, "strong")

    class Ctx:
        seed, split, validation, curves = 0, None, None, []

        def log_curve(self, step, name, value):
            self.curves.append((step, name, value))

        def log_metric(self, *a):
            pass

        def echo(self, *a):
            pass

    ctx = Ctx()
    trained = model.fit(train, np.eye(2)[[e.label for e in train]], make_loss("xent", {}, "loss"), task, ctx)
    steps = max(step for step, name, _ in ctx.curves if name == "train_loss")
    assert steps > 6 * 160 / 32  # ~12-token sentences: 8 a batch under 96 tokens, so more steps than 32-example batches give
    assert (trained.predict(test, task).argmax(1) == [e.label for e in test]).mean() > 0.6
