"""Classification metrics (scikit-learn), PGR with bootstrap CIs, agreement and sanity flags."""

from __future__ import annotations

import math

import numpy as np

N_BOOTSTRAP = 1000


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, AUROC, precision, recall and F1 (binary; macro-averaged otherwise)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score  # here: 1 s of every `w2s` start otherwise

    probs = np.asarray(probs, dtype=float)
    labels = np.asarray(labels, dtype=int)
    preds = probs.argmax(axis=1)
    binary = probs.shape[1] == 2
    average = "binary" if binary else "macro"
    precision, recall, f1, _ = precision_recall_fscore_support(labels, preds, average=average, zero_division=0)
    out = {"accuracy": float(accuracy_score(labels, preds)), "precision": float(precision), "recall": float(recall), "f1": float(f1), "n": float(len(labels))}
    if len(set(labels.tolist())) > 1:
        out["auroc"] = float(
            roc_auc_score(labels, probs[:, 1]) if binary else roc_auc_score(labels, probs, multi_class="ovr", labels=list(range(probs.shape[1])))
        )
    return out


def choice_accuracy(probs, labels) -> dict[str, float]:
    """Accuracy over per-example choice lists (ragged probs); a row with no mass counts as wrong."""
    from sklearn.metrics import accuracy_score

    labels = np.asarray(labels, dtype=int)
    preds = np.array([int(np.argmax(p)) if float(np.sum(p)) > 0 else -1 for p in probs], dtype=int)
    return {"accuracy": float(accuracy_score(labels, preds)) if len(labels) else float("nan"), "n": float(len(labels))}


def pgr(weak: float, student: float, ceiling: float) -> float:
    """Performance gap recovered; NaN when the ceiling does not beat the weak model."""
    gap = ceiling - weak
    return (student - weak) / gap if gap > 0 else math.nan


def resampled_pgr(weak, student, ceiling, idx: np.ndarray) -> np.ndarray:
    """PGR on each bootstrap resample (rows of `idx` index the test examples); NaN where the gap is not positive."""
    wa, sa, ca = weak[idx].mean(1), student[idx].mean(1), ceiling[idx].mean(1)
    gap = ca - wa
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gap > 0, (sa - wa) / gap, np.nan)


def percentile_ci(samples: np.ndarray, n_boot: int) -> tuple[float, float]:
    """95% percentile interval of the finite samples; NaN when fewer than half the resamples are finite."""
    samples = samples[np.isfinite(samples)]
    if len(samples) < n_boot * 0.5:
        return math.nan, math.nan
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_pgr(weak_correct, student_correct, ceiling_correct, seed: int = 0, n_boot: int = N_BOOTSTRAP) -> tuple[float, float]:
    """95% percentile CI of PGR, resampling test examples (paired across the three models)."""
    w, s, c = (np.asarray(x, dtype=float) for x in (weak_correct, student_correct, ceiling_correct))
    idx = np.random.default_rng(seed).integers(0, len(w), size=(n_boot, len(w)))
    return percentile_ci(resampled_pgr(w, s, c, idx), n_boot)


def bootstrap_pgr_difference(weak_correct, student_a, ceiling_a, student_b, ceiling_b, seed: int = 0,
                             n_boot: int = N_BOOTSTRAP) -> tuple[float, float, float]:
    """PGR(a) - PGR(b) of two student/ceiling pairs under one weak supervisor, and its 95% percentile CI,
    resampling the shared test examples (paired across all five models), e.g. with and without adaptation."""
    w, sa, ca, sb, cb = (np.asarray(x, dtype=float) for x in (weak_correct, student_a, ceiling_a, student_b, ceiling_b))
    point = pgr(w.mean(), sa.mean(), ca.mean()) - pgr(w.mean(), sb.mean(), cb.mean())
    idx = np.random.default_rng(seed).integers(0, len(w), size=(n_boot, len(w)))
    return (point, *percentile_ci(resampled_pgr(w, sa, ca, idx) - resampled_pgr(w, sb, cb, idx), n_boot))


def bootstrap_gap(weak_correct, ceiling_correct, seed: int = 0, n_boot: int = N_BOOTSTRAP) -> tuple[float, float]:
    """95% paired percentile CI of the gap acc(ceiling) - acc(weak), resampling test examples."""
    w, c = (np.asarray(x, dtype=float) for x in (weak_correct, ceiling_correct))
    idx = np.random.default_rng(seed).integers(0, len(w), size=(n_boot, len(w)))
    low, high = np.percentile(c[idx].mean(1) - w[idx].mean(1), [2.5, 97.5])
    return float(low), float(high)


def bootstrap_accuracy(correct, seed: int = 0, n_boot: int = N_BOOTSTRAP) -> tuple[float, float]:
    """95% percentile CI of an accuracy over test examples."""
    c = np.asarray(correct, dtype=float)
    rng = np.random.default_rng(seed)
    means = c[rng.integers(0, len(c), size=(n_boot, len(c)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def agreement(student_pred, weak_pred, labels) -> dict[str, float]:
    """Student-supervisor agreement overall and where the supervisor is right or wrong."""
    s, w, y = (np.asarray(x) for x in (student_pred, weak_pred, labels))
    agree = s == w
    weak_right = w == y
    out = {"agreement": float(agree.mean())}
    if weak_right.any():
        out["agreement_weak_right"] = float(agree[weak_right].mean())
    if (~weak_right).any():
        out["agreement_weak_wrong"] = float(agree[~weak_right].mean())
    return out


def mean_ci(values) -> tuple[float, float, float]:
    """Mean and a t-based 95% CI across seeds (NaN half-width with one seed)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    if len(v) < 2:
        return m, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - half, m + half


def pgr_flags(weak_acc: float, ceiling_acc: float, baseline_acc: float | None = None, gap_ci: tuple[float, float] | None = None) -> list[str]:
    """Reasons PGR is undefined or meaningless for this pair; empty when it is fine."""
    flags = []
    if ceiling_acc <= weak_acc:
        flags.append("ceiling<=weak: the strong ceiling does not beat the weak supervisor, so PGR is undefined")
    elif gap_ci is not None and gap_ci[0] <= 0:
        flags.append(f"gap-noise: ceiling - weak = {ceiling_acc - weak_acc:.3f}, 95% CI [{gap_ci[0]:.3f}, {gap_ci[1]:.3f}] includes 0, "
                     "so PGR divides by noise")
    if baseline_acc is not None and baseline_acc >= weak_acc:
        flags.append("degenerate: the strong model before training already matches or beats the weak supervisor")
    return flags


def prediction_flags(preds: dict[str, np.ndarray], labels: np.ndarray, acc_ci: dict[str, tuple[float, float]]) -> list[str]:
    """Models whose test predictions are one class, and a student or ceiling within noise of the majority-class rate."""
    labels = np.asarray(labels)
    if not len(labels):
        return []
    classes, counts = np.unique(labels, return_counts=True)
    majority, rate = classes[counts.argmax()], float(counts.max() / len(labels))
    flags = []
    for name, pred in preds.items():
        if len(np.unique(pred)) == 1:
            flags.append(f"single-class: the {name} predicts class {int(pred[0])} for all {len(pred)} test examples; its accuracy "
                         f"is the share of that class, and PGR rests on it")
        elif name in ("student", "ceiling") and acc_ci[name][0] <= rate <= acc_ci[name][1]:
            flags.append(f"near-majority: the {name}'s test accuracy (95% CI [{acc_ci[name][0]:.3f}, {acc_ci[name][1]:.3f}]) is within noise "
                         f"of always answering class {int(majority)} ({rate:.3f}), and PGR rests on it")
    return flags
