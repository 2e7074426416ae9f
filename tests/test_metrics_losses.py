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


def test_bootstrap_pgr_ci_brackets_the_point_estimate():
    rng = np.random.default_rng(0)
    y = np.ones(400)
    weak, student, ceiling = (rng.random(400) < p for p in (0.6, 0.7, 0.8))
    low, high = metrics.bootstrap_pgr(weak, student, ceiling, seed=0)
    point = metrics.pgr(weak.mean(), student.mean(), ceiling.mean())
    assert low < point < high and high - low < 1.5
    assert metrics.bootstrap_pgr(weak, student, ceiling, seed=0) == (low, high)  # seeded


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
    # fully warmed up: target = the student's own hardened predictions, with half of the batch
    # (the weak labels' prior of class 1 is 0.525) put in class 1: examples 2 and 3 have the largest p(1)
    hardened = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    expected = torch.nn.functional.cross_entropy(logits, hardened).item()
    assert logconf_loss(logits, targets, 1.0, opts).item() == pytest.approx(expected, rel=1e-5)


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
