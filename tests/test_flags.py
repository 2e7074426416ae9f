"""Flags for misleading results: one-class models, accuracies within noise of the majority rate, and gaps whose CI includes 0."""

import numpy as np
import pytest

from w2s import plugins
from w2s.api import Example, Model, Task, Trained
from w2s.commands.cli import cli
from w2s.hookspecs import hookimpl
from w2s.metrics import bootstrap_gap, pgr_flags, prediction_flags


def names(flags):
    return [f.split(":")[0] for f in flags]


def test_single_class_and_near_majority_flags():
    labels = np.array([1] * 70 + [0] * 30)
    one_class = np.ones(100, dtype=int)
    good = labels.copy()
    good[:5] = 1 - good[:5]
    coin = np.array([i % 2 for i in range(100)])
    ci = {"weak": (0.6, 0.7), "student": (0.62, 0.78), "ceiling": (0.9, 0.99)}
    flags = prediction_flags({"weak": coin, "student": good, "ceiling": one_class}, labels, ci)
    assert names(flags) == ["near-majority", "single-class"]  # the student's CI holds 0.70; the ceiling answers 1 always
    assert "the student's" in flags[0] and "0.700" in flags[0] and "the ceiling predicts class 1 for all 100" in flags[1]
    assert prediction_flags({"weak": coin, "student": good}, labels, {"weak": (0.4, 0.6), "student": (0.9, 0.99)}) == []


def test_gap_noise_flag_and_the_paired_gap_ci():
    assert names(pgr_flags(0.70, 0.72, gap_ci=(-0.01, 0.05))) == ["gap-noise"]
    assert pgr_flags(0.70, 0.80, gap_ci=(0.02, 0.15)) == []
    assert names(pgr_flags(0.70, 0.70, gap_ci=(-0.1, 0.1))) == ["ceiling<=weak"]  # undefined already: one flag, not two
    rng = np.random.default_rng(3)
    weak, ceiling = rng.random(200) < 0.7, rng.random(200) < 0.75
    idx = np.random.default_rng(5).integers(0, 200, size=(1000, 200))  # the same draws, by hand
    expected = np.percentile(ceiling[idx].mean(1) - weak[idx].mean(1), [2.5, 97.5])
    assert bootstrap_gap(weak, ceiling, seed=5) == pytest.approx(tuple(expected))


class NoSignalTask(Task):
    """Inline: random words, balanced train labels, test labels 75% yes (BoolQ's shape)."""

    name = "nosignal_inline"
    label_words = ("no", "yes")

    def load(self, split):
        rng = np.random.default_rng(0 if split == "train" else 1)
        words = "alpha beta gamma delta epsilon zeta eta theta".split()
        n = 200 if split == "train" else 80
        labels = [i % 2 for i in range(n)] if split == "train" else [int(i % 4 != 0) for i in range(n)]
        return [Example(f"{split}-{i}", " ".join(rng.choice(words, 6)), lab) for i, lab in enumerate(labels)]


class YesTrained(Trained):
    def predict(self, examples, task, ctx=None):
        return np.tile([0.2, 0.8], (len(examples), 1))

    def save(self, path):
        path.write_text("yes")


class AlwaysYes(Model):
    """Inline: answers yes whatever it is trained on (the BoolQ student and ceiling did)."""

    name = "yes_inline"

    def fit(self, examples, soft_targets, loss, task, ctx):
        return YesTrained()

    def load(self, path, task):
        return YesTrained()


class Inline:
    @hookimpl
    def register_tasks(self, register):
        register(NoSignalTask)

    @hookimpl
    def register_models(self, register):
        register(AlwaysYes)


def test_a_one_class_student_and_ceiling_are_flagged_and_pgr_is_not_clean(tmp_path, runner):
    study = tmp_path / "yes.toml"
    study.write_text('[study]\nname = "yes"\n[task]\nname = "nosignal_inline"\nn_weak_train = 100\nn_transfer = 100\n'
                     '[weak]\nmodel = "bow"\n[strong]\nmodel = "yes_inline"\n')
    unregister = plugins.register_inline(Inline(), "flags-inline")
    try:
        result = runner.invoke(cli, ["study", "run", str(study), "--db", str(tmp_path / "w2s.db")])
    finally:
        unregister()
    assert result.exit_code == 0, result.output
    out = result.output
    assert "FLAG: single-class: the student predicts class 1 for all 80 test examples" in out
    assert "FLAG: single-class: the ceiling predicts class 1 for all 80 test examples" in out
    row = next(line for line in out.splitlines() if line.split()[:4] == ["0", "bow", "yes_inline", "xent"])
    assert "(1.00)!" in row and " 1.00 " not in row.replace("(1.00)!", "")  # student = ceiling = 0.75: PGR 1.00, never clean
    assert "0.750" in row


def test_figures_draw_flagged_pgrs_apart(tmp_path, monkeypatch):
    from w2s.reporting import plots

    assert plots._pgr_label({"pgr": 1.0, "pgr_low": 1.0, "pgr_high": 1.0, "flagged": True}) == "PGR (1.00)!\nflagged"
    assert plots._pgr_label({"pgr": 0.5, "pgr_low": 0.2, "pgr_high": 0.7}) == "PGR 0.50\n[0.20, 0.70]"
    drawn = []
    real_plot = plots.plt.Axes.plot
    monkeypatch.setattr(plots.plt.Axes, "plot", lambda ax, *a, **k: drawn.append(k) or real_plot(ax, *a, **k))
    rows = [{"weak": "bow", "strong": s, "loss": "xent", "pgr": p, "pgr_ci_low": p - 0.2, "pgr_ci_high": p + 0.2, "ceiling_acc": c,
             "flagged": f} for s, p, c, f in (("a", 0.3, 0.7, False), ("b", 2.17, 0.716, True))]
    plots.grid_figure(rows, tmp_path / "grid.png")
    hollow = [k for k in drawn if k.get("mfc") == "white"]
    assert len(hollow) == 2 and any("flagged" in k.get("label", "") for k in hollow)  # the flagged point, and its legend entry
