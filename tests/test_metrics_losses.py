"""Metrics, PGR and its CI, flags, the losses and the shared training pieces."""

import math

import numpy as np
import pytest
import torch

from w2s import metrics
from w2s.api import Loss
from w2s.train import cosine_with_warmup, length_buckets
from w2s_plugins.losses import logconf_loss, product_loss, warmup_coef, xent_loss


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
