"""Burns et al.'s Figure 3 for a grid study: accuracy and PGR against the strong model's size.

Rows are plain dicts, one per (task, weak, strong, loss, seed) evaluate stage, with the measured
sizes of both models attached (`sized_rows` reads them from the store; the burns_mini benchmark
reads the same rows back from its committed JSON), so the figures draw from either source.

Size is the measured non-embedding parameter count of the fitted model (`n_params_non_embedding`,
recorded by every fit stage): MiniLM's 11.7M-weight token embedding would otherwise squash a
1-to-6-layer ladder into a factor of 1.7. Tables also carry the total `n_params`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..storing.store import Store
from .plots import COLORS, evaluate_rows, mean_ci, panel_grid

SIZE = "n_params_non_embedding"


def model_sizes(store: Store, study_id: str) -> dict[str, dict[str, float]]:
    """Measured sizes per model label, from any of its fit stages in the study: {label: {n_params, n_params_non_embedding}}."""
    rows = store.db.query(
        "SELECT DISTINCT st.model, m.name, m.value FROM study_stages ss JOIN stages st ON st.key = ss.stage_key "
        "JOIN metrics m ON m.stage_key = st.key WHERE ss.study_id = ? AND st.kind = 'fit' AND ss.role IN ('weak', 'ceiling') "
        "AND m.name IN ('n_params', 'n_params_non_embedding')",
        [study_id],
    )
    sizes: dict[str, dict[str, float]] = {}
    for r in rows:
        sizes.setdefault(r["model"], {})[r["name"]] = r["value"]
    return sizes


def sized_rows(store: Store, study_id: str) -> list[dict]:
    """The study's evaluate rows, each with both models' measured sizes (None where a model recorded none)."""
    sizes = model_sizes(store, study_id)
    return [{**r, "weak_size": sizes.get(r["weak"], {}).get(SIZE), "strong_size": sizes.get(r["strong"], {}).get(SIZE),
             "strong_n_params": sizes.get(r["strong"], {}).get("n_params")} for r in evaluate_rows(store, study_id)]


def _label_order(rows: list[dict], key: str, size: str) -> list[str]:
    """Model labels from the smallest to the largest (unknown sizes first, by name)."""
    seen = {r[key]: r.get(size) or 0 for r in rows}
    return sorted(seen, key=lambda label: (seen[label], str(label)))


def _panels(rows: list[dict]) -> list[dict]:
    """One panel per (loss, task): losses down, tasks across."""
    tasks = sorted({r["task"] for r in rows}, key=str)
    losses = sorted({r["loss"] for r in rows}, key=lambda x: (x != "xent", str(x)))
    return [{"task": t, "loss": loss, "rows": [r for r in rows if r["task"] == t and r["loss"] == loss]} for loss in losses for t in tasks]


def _colors(weak_models: list[str]) -> dict[str, tuple]:
    """Darker for larger supervisors, as in Burns et al."""
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return {w: cmap(0.85 * i / max(1, len(weak_models) - 1)) for i, w in enumerate(weak_models)}


def _errorbar(ax, xs, stats, **kwargs):
    ys = [s[0] for s in stats]
    low = [max(s[0] - s[1], 0) if s[1] is not None else 0 for s in stats]
    high = [max(s[2] - s[0], 0) if s[2] is not None else 0 for s in stats]
    return ax.errorbar(xs, ys, yerr=[low, high], capsize=3, **kwargs)


def _size_range(rows: list[dict]) -> tuple[float, float]:
    """One x range for every panel (strong and weak sizes, a margin each side): a task with a single defined PGR
    would otherwise get an axis of its own."""
    sizes = [r[key] for r in rows for key in ("strong_size", "weak_size") if r.get(key)]
    return min(sizes) / 1.15, max(sizes) * 1.15


def _size_axes(ax, panel: dict, ylabel: str, legend_at: str, xlim: tuple[float, float]) -> None:
    """The axes every per-task panel shares: log strong size, the panel's task and loss, a legend when it has lines."""
    ax.set_xscale("log")
    ax.set_xlim(*xlim)
    ax.set_xlabel("strong model: non-embedding parameters (measured)", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{panel['task']} [{panel['loss']}]", fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, loc=legend_at)


def _task_panels(rows: list[dict], draw, path: Path, note: str) -> Path:
    """One panel per (loss, task): losses down, tasks across."""
    return panel_grid(_panels(rows), draw, (4.6, 3.6), path, columns=len({r["task"] for r in rows}), note=note)


def accuracy_figure(rows: list[dict], path: Path) -> Path:
    """Per task and loss: students' test accuracy against strong size, a line per weak model; ceiling dashed;
    each weak supervisor's own accuracy as a star at its size. Error bars: 95% CI over seeds."""
    weak_models = _label_order(rows, "weak", "weak_size")
    colors, xlim = _colors(weak_models), _size_range(rows)

    def draw(ax, panel):
        prs = panel["rows"]
        strongs = _label_order(prs, "strong", "strong_size")
        size = {r["strong"]: r["strong_size"] for r in prs}
        ceiling = [mean_ci([r for r in prs if r["strong"] == s], "ceiling_acc")[:3] for s in strongs]
        _errorbar(ax, [size[s] for s in strongs], ceiling, color="black", ls="--", marker="s", ms=4, label="ceiling (ground truth)")
        for weak in weak_models:
            mine = [r for r in prs if r["weak"] == weak]
            if not mine:
                continue
            targets = _label_order(mine, "strong", "strong_size")
            stats = [mean_ci([r for r in mine if r["strong"] == s], "student_acc")[:3] for s in targets]
            _errorbar(ax, [size[s] for s in targets], stats, color=colors[weak], marker="o", ms=4, label=f"weak {weak}")
            if mine[0].get("weak_size"):
                own = mean_ci(mine, "weak_acc")
                ax.plot([mine[0]["weak_size"]], [own[0]], "*", color=colors[weak], ms=11, mec="black", mew=0.5)
        points = [y for line in ax.lines for y in line.get_ydata()]
        if points:  # the CI over 2-3 seeds can be wide; the axis follows the means
            ax.set_ylim(max(0.0, min(points) - 0.08), min(1.0, max(points) + 0.08))
        _size_axes(ax, panel, "test accuracy", "lower right", xlim)

    return _task_panels(rows, draw, path, note="stars: each weak supervisor's own accuracy at its size; bars: 95% CI over seeds")


def pgr_figure(rows: list[dict], path: Path) -> Path:
    """Per task and loss: PGR against strong size, a line per weak model (mean over seeds, 95% CI); flagged hollow."""
    weak_models = _label_order(rows, "weak", "weak_size")
    colors, xlim = _colors(weak_models), _size_range(rows)

    def draw(ax, panel):
        prs = panel["rows"]
        for weak in weak_models:
            mine = [r for r in prs if r["weak"] == weak and r.get("pgr") is not None]
            if not mine:
                continue
            targets = _label_order(mine, "strong", "strong_size")
            xs = [next(r["strong_size"] for r in mine if r["strong"] == s) for s in targets]
            stats = [mean_ci([r for r in mine if r["strong"] == s], "pgr")[:3] for s in targets]
            _errorbar(ax, xs, stats, color=colors[weak], marker="o", ms=4, label=f"weak {weak}")
            flagged = [(x, st[0]) for x, st, s in zip(xs, stats, targets) if any(r.get("flagged") for r in mine if r["strong"] == s)]
            if flagged:
                ax.plot(*zip(*flagged), "o", mfc="white", mec=colors[weak], ms=8, mew=1.3, ls="none")
        ax.axhline(0, color="black", lw=0.6)
        ax.axhline(1, color="black", lw=0.4, ls=":")
        ax.set_ylim(-1.0, 1.5)  # a PGR whose gap is within noise explodes; it is clipped, never dropped (see the JSON)
        _size_axes(ax, panel, "PGR", "upper left", xlim)

    return _task_panels(rows, draw, path, note="hollow: flagged (gap within noise, near-majority or one class); y clipped to [-1, 1.5]")


def median_pgr(rows: list[dict], resamples: int = 2000, seed: int = 0) -> list[dict]:
    """Per (loss, strong): the median over tasks of each task's median PGR over its (weak, seed) rows.

    The 95% CI is a two-level percentile bootstrap: resample the tasks, then each task's rows. With a
    handful of tasks the CI is wide, and it should be: it is the spread a new task would show.
    """
    rng = np.random.default_rng(seed)
    out = []
    for loss in sorted({r["loss"] for r in rows}, key=lambda x: (x != "xent", str(x))):
        for strong in _label_order(rows, "strong", "strong_size"):
            mine = [r for r in rows if r["loss"] == loss and r["strong"] == strong and r.get("pgr") is not None]
            per_task = [np.array([r["pgr"] for r in mine if r["task"] == t]) for t in sorted({r["task"] for r in mine}, key=str)]
            if not per_task:
                continue
            point = float(np.median([np.median(v) for v in per_task]))
            draws = np.empty(resamples)
            for i in range(resamples):
                tasks = rng.integers(len(per_task), size=len(per_task))
                draws[i] = np.median([np.median(rng.choice(per_task[t], size=len(per_task[t]))) for t in tasks])
            low, high = np.percentile(draws, [2.5, 97.5])
            out.append({"loss": loss, "strong": strong, "strong_size": mine[0].get("strong_size"),
                        "strong_n_params": mine[0].get("strong_n_params"), "median_pgr": point, "ci_low": float(low),
                        "ci_high": float(high), "n_tasks": len(per_task), "n_rows": len(mine),
                        "n_flagged": sum(bool(r.get("flagged")) for r in mine)})
    return out


def median_pgr_figure(summary: list[dict], path: Path) -> Path:
    """Median PGR across tasks against strong size, one line per loss, with the bootstrap CI."""
    def draw(ax, _):
        for loss in sorted({s["loss"] for s in summary}, key=lambda x: (x != "xent", str(x))):
            line = [s for s in summary if s["loss"] == loss]
            _errorbar(ax, [s["strong_size"] for s in line], [(s["median_pgr"], s["ci_low"], s["ci_high"]) for s in line],
                      marker="o", label=loss, color=COLORS["student"] if loss == "xent" else "#d62728")
        tasks = max((s["n_tasks"] for s in summary), default=0)
        medians = [s["median_pgr"] for s in summary]
        if medians:  # the axis follows the medians: a CI over a near-zero gap can reach -35 (burns_mini, virtue)
            ax.set_ylim(min(-1.0, min(medians) - 0.3), max(1.0, max(medians) + 0.3))
        ax.axhline(0, color="black", lw=0.6)
        ax.axhline(1, color="black", lw=0.4, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("strong model: non-embedding parameters (measured)")
        ax.set_ylabel("median PGR across tasks")
        ax.set_title(f"median PGR over {tasks} task{'s' if tasks != 1 else ''} (95% CI: bootstrap over tasks and rows; "
                     "bars clipped at the axis)", fontsize=9)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)

    return panel_grid([None], draw, (6.5, 4.2), path)


def write_figures(rows: list[dict], out_dir: Path) -> dict[str, Path]:
    """The three scaling figures of a grid study; {} unless at least two strong models have a measured size."""
    rows = [r for r in rows if r.get("strong_size")]
    if len({r["strong"] for r in rows}) < 2:
        return {}
    out_dir = Path(out_dir)
    return {"scaling_accuracy": accuracy_figure(rows, out_dir / "scaling_accuracy.png"),
            "scaling_pgr": pgr_figure(rows, out_dir / "scaling_pgr.png"),
            "median_pgr": median_pgr_figure(median_pgr(rows), out_dir / "median_pgr.png")}

