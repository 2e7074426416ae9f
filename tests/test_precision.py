"""hf options.precision: bf16 runs fit and predict forward passes under bfloat16 autocast; fp32 (the default) keeps
every number and every stage key; same seed, same numbers."""

import numpy as np
import torch

from w2s.api import Example
from w2s.plugins import make_loss, make_model, make_task
from conftest import WORDS

LINEAR = torch.nn.Linear.forward


class Ctx:
    seed, stage_key, validation, split = 0, "precision", None, None

    def __init__(self):
        self.curves, self.metrics = [], {}

    def log_curve(self, step, name, value):
        self.curves.append((step, name, value))

    def log_metric(self, split, name, value):
        self.metrics[(split, name)] = value

    def echo(self, message):
        pass


def fit(tiny_bert, monkeypatch, **options):
    """Fit a tiny BERT on 24 sentences; returns (curves, test probabilities, autocast state seen by each forward)."""
    task = make_task("sst2", {}, None, "task")
    rng = np.random.default_rng(0)
    examples = [Example(str(i), " ".join(rng.choice(WORDS, 6)), i % 2) for i in range(24)]
    targets = np.eye(2, dtype=np.float32)[[e.label for e in examples]]
    model = make_model("hf", {"path": str(tiny_bert), "max_length": 16, **options}, {"epochs": 2, "batch_size": 8}, "strong")
    seen = []
    monkeypatch.setattr(torch.nn.Linear, "forward", lambda self, x: seen.append(torch.is_autocast_enabled("cpu")) or LINEAR(self, x))
    ctx = Ctx()
    trained = model.fit(examples, targets, make_loss("xent", {}, "loss"), task, ctx)
    fitting = list(seen)
    probs = trained.predict(examples, task)
    return ctx.curves, probs, fitting, seen[len(fitting):]


def test_bf16_autocasts_fit_and_predict_and_stays_close(tiny_bert, monkeypatch):
    curves, probs, fitting, predicting = fit(tiny_bert, monkeypatch)
    assert not any(fitting) and not any(predicting)
    bf_curves, bf_probs, bf_fitting, bf_predicting = fit(tiny_bert, monkeypatch, precision="bf16")
    assert all(bf_fitting) and all(bf_predicting) and bf_fitting and bf_predicting
    losses = [v for _, name, v in curves if name == "train_loss"]
    bf_losses = [v for _, name, v in bf_curves if name == "train_loss"]
    assert losses != bf_losses and np.allclose(losses, bf_losses, atol=0.05)  # bfloat16 matmuls: close, not equal
    assert np.allclose(probs, bf_probs, atol=0.05)


def test_fp32_same_seed_same_numbers(tiny_bert, monkeypatch):
    first, second = fit(tiny_bert, monkeypatch), fit(tiny_bert, monkeypatch)
    assert first[0] == second[0] and np.array_equal(first[1], second[1])


def test_the_default_precision_stays_out_of_stage_keys(tiny_bert):
    default = make_model("hf", {"path": str(tiny_bert)}, {}, "strong").spec()
    assert "precision" not in default["options"]
    assert make_model("hf", {"path": str(tiny_bert), "precision": "bf16"}, {}, "strong").spec()["options"]["precision"] == "bf16"
