"""Figures of a stored study (matplotlib, Agg): accuracies with CIs and PGR, training curves, grids, chains.

Row builders read the store; figure functions take plain rows, so constructed rows test them.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..storing.store import Store  # noqa: E402

COLORS = {"weak": "#9e9e9e", "student": "#1f77b4", "baseline": "#ff7f0e", "ceiling": "#2ca02c"}
ACC_COLORS = {"val": "#9467bd", "best": "#8c564b", "train": "#1f77b4", "": "#17becf"}


# -- rows from the store ---------------------------------------------------------------
def evaluate_rows(store: Store, study_id: str, roles=("evaluate",)) -> list[dict]:
    """One row per evaluate stage of the study: labels plus every test metric (accuracies, CIs, PGR)."""
    marks = ",".join("?" * len(roles))
    links = store.db.query(
        f"SELECT DISTINCT ss.stage_key, ss.role, ss.task, ss.weak, ss.strong, ss.loss, ss.seed, "
        f"json_array_length(json_extract(st.output_json, '$.flags')) > 0 AS flagged FROM study_stages ss "
        f"JOIN stages st ON st.key = ss.stage_key WHERE ss.study_id = ? AND ss.role IN ({marks}) AND st.status = 'done'",
        [study_id, *roles],
    )
    rows = []
    for link in links:
        metrics = {m["name"]: m["value"] for m in store.db.query("SELECT name, value FROM metrics WHERE stage_key = ?", [link["stage_key"]])}
        rows.append({**link, "flagged": bool(link["flagged"]), **metrics})
    return rows


def accuracy_panels(rows: list[dict]) -> list[dict]:
    """Per (task, weak, strong): bars for weak, each student loss and the ceiling, averaged over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["weak"], r["strong"]), []).append(r)
    panels = []
    for (task, weak, strong), group in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        losses = sorted({r["loss"] for r in group}, key=str)
        bars = [_bar(f"weak\n{weak}", "weak", group, "weak_acc")]
        for loss in losses:
            of_loss = [r for r in group if r["loss"] == loss]
            bar = _bar(f"student\n{loss}", "student", of_loss, "student_acc")
            bar.update(zip(("pgr", "pgr_low", "pgr_high"), mean_ci(of_loss, "pgr")), flagged=any(r.get("flagged") for r in of_loss))
            bars.append(bar)
        if any(r.get("baseline_acc") is not None for r in group):
            bars.append(_bar("strong\npretrained", "baseline", group, "baseline_acc"))
        bars.append(_bar(f"ceiling\n{strong}", "ceiling", group, "ceiling_acc"))
        seeds = sorted({r["seed"] for r in group}, key=str)
        panels.append({"title": f"{task}: {weak} -> {strong}", "seeds": seeds, "bars": bars})
    return panels


def _bar(label: str, kind: str, rows: list[dict], metric: str) -> dict:
    """One bar: the mean over seeds with its 95% CI (see `mean_ci`)."""
    value, low, high, n = mean_ci(rows, metric)
    return {"label": label, "kind": kind, "value": value, "low": low, "high": high, "n_seeds": n}


def mean_ci(rows: list[dict], metric: str) -> tuple:
    """(mean over seeds, CI low, CI high, n seeds): the stored bootstrap CI for one seed, a t-interval across seeds otherwise."""
    seeds = sorted({r["seed"] for r in rows if r.get(metric) is not None}, key=str)
    per_seed = [_stat([r for r in rows if r["seed"] == seed], metric) for seed in seeds]
    if not per_seed:
        return None, None, None, 0
    value = float(np.mean(per_seed))
    if len(per_seed) == 1:
        return value, _stat(rows, f"{metric}_ci_low"), _stat(rows, f"{metric}_ci_high"), 1
    from scipy import stats

    half = stats.t.ppf(0.975, len(per_seed) - 1) * float(np.std(per_seed, ddof=1)) / math.sqrt(len(per_seed))
    return value, value - half, value + half, len(per_seed)


def _stat(rows: list[dict], metric: str) -> float | None:
    values = [r[metric] for r in rows if r.get(metric) is not None]
    return float(np.mean(values)) if values else None


def curve_rows(store: Store, study_id: str) -> list[dict]:
    """Training curves of every fit stage of the study: stage title, name, steps and values."""
    stages = store.db.query(
        "SELECT DISTINCT st.key, st.role, st.model, st.loss, st.seed FROM study_stages ss JOIN stages st ON st.key = ss.stage_key "
        "WHERE ss.study_id = ? AND st.kind = 'fit' ORDER BY st.created, st.key",
        [study_id],
    )
    out = []
    for st in stages:
        points = list(store.db.query("SELECT name, step, value FROM curves WHERE stage_key = ? ORDER BY name, step", [st["key"]]))
        if not points:
            continue
        title = f"{st['role']} {st['model']}" + (f" [{st['loss']}]" if st["role"] == "student" and st["loss"] else "") + f" seed {st['seed']}"
        series: dict[str, tuple[list, list]] = {}
        for p in points:
            steps, values = series.setdefault(p["name"], ([], []))
            steps.append(p["step"])
            values.append(p["value"])
        out.append({"title": title, "key": st["key"], "series": series})
    return out


def grid_rows(store: Store, study_id: str) -> list[dict]:
    """PGR per (weak, strong, loss), averaged over seeds, with the strong model's size when known."""
    rows = evaluate_rows(store, study_id)
    pairs = {(r["weak"], r["strong"]) for r in rows}
    if len({w for w, _ in pairs}) < 2 and len({s for _, s in pairs}) < 2:
        return []
    sizes = strong_sizes(store, study_id)
    grouped: dict[tuple, list[dict]] = {}
    for r in rows:
        grouped.setdefault((r["weak"], r["strong"], r["loss"]), []).append(r)
    return [
        {"weak": w, "strong": s, "loss": loss, **dict(zip(("pgr", "pgr_ci_low", "pgr_ci_high", "seeds"), mean_ci(g, "pgr"))),
         "ceiling_acc": _stat(g, "ceiling_acc"), "flagged": any(r.get("flagged") for r in g), **sizes.get(s, {})}
        for (w, s, loss), g in sorted(grouped.items(), key=lambda kv: tuple(map(str, kv[0])))
    ]


def strong_sizes(store: Store, study_id: str) -> dict[str, dict]:
    """Size of each strong model: an `n_params` metric of its ceiling fit, else its checkpoint bytes."""
    out = {}
    rows = store.db.query(
        "SELECT DISTINCT ss.strong, st.key FROM study_stages ss JOIN stages st ON st.key = ss.stage_key "
        "WHERE ss.study_id = ? AND ss.role = 'ceiling'",
        [study_id],
    )
    for r in rows:
        params = next(store.db.query("SELECT value FROM metrics WHERE stage_key = ? AND name = 'n_params'", [r["key"]]), None)
        ckpt = next(store.db.query("SELECT bytes FROM artifacts WHERE stage_key = ? AND kind = 'checkpoint'", [r["key"]]), None)
        if params and params["value"]:
            out[r["strong"]] = {"size": params["value"], "size_unit": "parameters"}
        elif ckpt and ckpt["bytes"]:
            out[r["strong"]] = {"size": ckpt["bytes"], "size_unit": "checkpoint bytes"}
    return out


def chain_rows(store: Store, study_id: str) -> list[dict]:
    """Accuracy along each chain M1 -> ... -> Mn (per loss, averaged over seeds), plus the direct M1 -> Mn."""
    steps = evaluate_rows(store, study_id, roles=("chain_step",))
    direct = evaluate_rows(store, study_id, roles=("chain_direct",))
    out = []
    for loss in sorted({r["loss"] for r in steps}, key=str):
        of_loss = [r for r in steps if r["loss"] == loss]
        order = _chain_order({(r["weak"], r["strong"]) for r in of_loss})
        if not order:
            continue
        first = [r for r in of_loss if r["weak"] == order[0]]
        out.append({"loss": loss, "position": 0, "model": order[0], "kind": "M1 (ground truth)", **_acc(first, "weak_acc")})
        for i, model in enumerate(order[1:], 1):
            step = [r for r in of_loss if r["strong"] == model]
            out.append({"loss": loss, "position": i, "model": model, "kind": "chain student", **_acc(step, "student_acc"),
                        "pgr": _stat(step, "pgr"), "ceiling": _stat(step, "ceiling_acc"), "flagged": any(r.get("flagged") for r in step)})
        last = [r for r in direct if r["loss"] == loss]
        if last:
            out.append({"loss": loss, "position": len(order) - 1, "model": order[-1], "kind": "direct M1 -> Mn",
                        **_acc(last, "student_acc"), "pgr": _stat(last, "pgr"), "flagged": any(r.get("flagged") for r in last),
                        "chain_minus_direct": mean_ci(last, "chain_minus_direct")[:3]})
    return out


def _acc(rows: list[dict], metric: str) -> dict:
    value, low, high, _ = mean_ci(rows, metric)
    return {"accuracy": value, "low": low, "high": high}


def _chain_order(edges: set[tuple]) -> list:
    """Models of a chain in order, from its (supervisor, student) edges."""
    following = dict(edges)
    heads = [w for w, _ in edges if w not in {s for _, s in edges}]
    if len(heads) != 1:
        return []
    order = [heads[0]]
    while order[-1] in following and len(order) <= len(edges):
        order.append(following[order[-1]])
    return order


# -- figures --------------------------------------------------------------------------
def accuracy_figure(panels: list[dict], path: Path) -> Path:
    """Paper-style bars: test accuracy of weak, students and ceiling with 95% CIs; PGR over each student."""
    width = max(2.0 + 1.3 * max(len(p["bars"]) for p in panels), 4.5)
    return panel_grid(panels, _accuracy_panel, (width, 4.2), path)


def _accuracy_panel(ax, panel: dict) -> None:
    bars = panel["bars"]
    x = np.arange(len(bars))
    values = [b["value"] if b["value"] is not None else 0.0 for b in bars]
    ax.bar(x, values, color=[COLORS[b["kind"]] for b in bars], width=0.65)
    for i, b in enumerate(bars):
        if b["value"] is not None and b["low"] is not None and b["high"] is not None:
            ax.errorbar(i, b["value"], yerr=[[b["value"] - b["low"]], [b["high"] - b["value"]]], color="black", capsize=4, lw=1)
        if b["value"] is not None:
            ax.text(i, 0.02, f"{b['value']:.3f}", ha="center", va="bottom", fontsize=8, color="white", fontweight="bold")
        if b["kind"] == "student":
            ax.text(i, min((b["high"] or b["value"] or 0) + 0.03, 1.04), _pgr_label(b), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [b["label"] for b in bars], fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("test accuracy")
    seeds = panel.get("seeds") or []
    ci = "95% CI over seeds" if len(seeds) > 1 else "95% bootstrap CI"
    ax.set_title(f"{panel['title']}\n({len(seeds)} seed{'s' if len(seeds) != 1 else ''}; bars: {ci})", fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def _pgr_label(bar: dict) -> str:
    if bar.get("pgr") is None:
        return "PGR n/a"
    if bar.get("flagged"):  # a flagged PGR is never drawn as a clean number
        return f"PGR ({bar['pgr']:.2f})!\nflagged"
    ci = f"\n[{bar['pgr_low']:.2f}, {bar['pgr_high']:.2f}]" if bar.get("pgr_low") is not None and bar.get("pgr_high") is not None else ""
    return f"PGR {bar['pgr']:.2f}{ci}"


def curves_figure(curves: list[dict], path: Path) -> Path:
    """One panel per fit stage: loss on the left axis, accuracies on the right, against the step."""
    return panel_grid(curves, _curve_panel, (5, 3.4), path)


def _curve_panel(ax, stage: dict) -> None:
    right = ax.twinx()
    lines = []
    for name, (steps, values) in sorted(stage["series"].items()):
        if name == "lr":
            continue
        target = ax if "loss" in name else right
        color = "#d62728" if "loss" in name else next(ACC_COLORS[k] for k in ACC_COLORS if k in name or k == "")
        if len(steps) == 1:
            lines += target.plot(steps, values, "o", label=f"{name} {values[0]:.3f}", color=color)
            ax.set_xticks(steps)
            continue
        window = max(1, len(values) // 15)
        if window > 1:  # raw steps faint, a moving average on top
            target.plot(steps, values, "-", lw=0.6, alpha=0.3, color=color)
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            lines += target.plot(steps[window - 1:], smooth, "-", lw=1.5, color=color, label=f"{name} (mean of {window})")
        else:
            lines += target.plot(steps, values, "-", lw=1.2, color=color, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if not any("loss" in name for name in stage["series"]):
        ax.set_yticks([])
        ax.set_ylabel("")
    right.set_ylabel("accuracy")
    right.set_ylim(0, 1.02)
    ax.set_title(stage["title"], fontsize=9)
    if lines:
        ax.legend(lines, [line.get_label() for line in lines], fontsize=7, loc="best", framealpha=0.6)


def grid_figure(rows: list[dict], path: Path) -> Path:
    """PGR against strong-model size (or strong models ordered by ceiling accuracy), one line per weak model and loss."""
    sized = all(r.get("size") for r in rows)
    if sized:
        position = {r["strong"]: r["size"] for r in rows}
        unit = rows[0].get("size_unit", "size")
    else:
        ceiling = {}
        for r in rows:
            ceiling.setdefault(r["strong"], []).append(r.get("ceiling_acc") or 0.0)
        order = sorted(ceiling, key=lambda s: (np.mean(ceiling[s]), str(s)))
        position = {s: i for i, s in enumerate(order)}
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for (weak, loss) in sorted({(r["weak"], r["loss"]) for r in rows}, key=lambda k: tuple(map(str, k))):
        line = sorted((r for r in rows if r["weak"] == weak and r["loss"] == loss and r.get("pgr") is not None), key=lambda r: position[r["strong"]])
        if not line:
            continue
        xs = [position[r["strong"]] for r in line]
        ys = [r["pgr"] for r in line]
        err = [[max(y - (r.get("pgr_ci_low") if r.get("pgr_ci_low") is not None else y), 0) for y, r in zip(ys, line)],
               [max((r.get("pgr_ci_high") if r.get("pgr_ci_high") is not None else y) - y, 0) for y, r in zip(ys, line)]]
        handle = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"weak {weak}, {loss}")
        hollow = [(x, y) for x, y, r in zip(xs, ys, line) if r.get("flagged")]
        if hollow:  # flagged PGRs drawn apart: hollow markers over the filled ones
            ax.plot(*zip(*hollow), "o", mfc="white", mec=handle[0].get_color(), ms=9, mew=1.5, linestyle="none")
    if any(r.get("flagged") for r in rows if r.get("pgr") is not None):
        ax.plot([], [], "o", mfc="white", mec="black", linestyle="none", label="hollow: flagged (PGR means little)")
    if sized:
        ax.set_xscale("log")
        ax.set_xlabel(f"strong model size ({unit})")
    else:
        ax.set_xticks(list(position.values()), list(position.keys()), fontsize=8)
        ax.set_xlabel("strong model (ordered by ceiling accuracy)")
    ax.axhline(0, color="black", lw=0.6)
    pgrs = [r["pgr"] for r in rows if r.get("pgr") is not None] or [0.0]
    ax.set_ylim(min(min(pgrs) - 0.5, -0.25), max(max(pgrs) + 0.5, 1.1))  # wide CIs are clipped, not the points
    ax.set_ylabel("performance gap recovered (PGR)")
    ax.set_title("PGR across the grid of weak and strong models", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def chain_figure(rows: list[dict], path: Path) -> Path:
    """Accuracy along each bootstrapping chain, with the direct M1 -> Mn transfer and each step's PGR."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for loss in sorted({r["loss"] for r in rows}, key=str):
        chain = sorted((r for r in rows if r["loss"] == loss and r["kind"] != "direct M1 -> Mn"), key=lambda r: r["position"])
        xs, ys = [r["position"] for r in chain], [r["accuracy"] for r in chain]
        err = _errors(chain)
        handle = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=f"chain ({loss})")
        for r in chain:
            if r.get("pgr") is not None:
                text = f"PGR ({r['pgr']:.2f})! flagged" if r.get("flagged") else f"PGR {r['pgr']:.2f}"
                ax.annotate(text, (r["position"], r["accuracy"]), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7)
        for r in (r for r in rows if r["loss"] == loss and r["kind"] == "direct M1 -> Mn"):
            x = r["position"] + 0.15  # beside the last chain step, not on top of it
            ax.errorbar([x], [r["accuracy"]], yerr=_errors([r]), marker="s", capsize=3, color=handle[0].get_color(),
                        mfc="white", linestyle="none", label=f"direct M1 -> Mn ({loss})")
            text = "direct"
            if r.get("pgr") is not None:
                text += f"\nPGR {r['pgr']:.2f}" + (" (flagged)" if r.get("flagged") else "")
            diff, low, high = r.get("chain_minus_direct") or (None, None, None)
            if diff is not None:
                text += f"\nchain - direct {diff:+.3f}"
            if diff is not None and low is not None and high is not None:
                text += f"\n[{low:+.3f}, {high:+.3f}]"
            ax.annotate(text, (x, r["accuracy"]), textcoords="offset points", xytext=(6, 0), ha="left", va="center", fontsize=7)
    ceilings = {r["position"]: r["ceiling"] for r in rows if r.get("ceiling") is not None}
    if ceilings:
        ax.plot(list(ceilings), list(ceilings.values()), "x", color="#2ca02c", label="ceiling (ground truth)")
    models = {r["position"]: r["model"] for r in rows}
    ax.set_xlim(-0.3, max(models) + 0.7)
    ax.set_xticks(sorted(models), [str(models[p]) for p in sorted(models)], fontsize=8)
    ax.set_xlabel("chain position")
    ax.set_ylabel("test accuracy")
    ax.set_title("Bootstrapping chain: accuracy at each step", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def _errors(rows: list[dict]):
    low = [max(r["accuracy"] - r["low"], 0) if r.get("low") is not None else 0 for r in rows]
    high = [max(r["high"] - r["accuracy"], 0) if r.get("high") is not None else 0 for r in rows]
    return [low, high]


def panel_grid(items: list, draw, panel_size: tuple[float, float], path: Path, columns: int = 3, note: str | None = None) -> Path:
    """Up to `columns` panels a row, one per item drawn by `draw(ax, item)`; unused cells hidden; `note` under the panels."""
    cols = max(1, min(len(items), columns))
    rows = math.ceil(len(items) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(panel_size[0] * cols, panel_size[1] * rows), squeeze=False)
    for ax, item in zip(axes.flat, items):
        draw(ax, item)
    for ax in list(axes.flat)[len(items):]:
        ax.axis("off")
    if note:
        fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize=8, color="#555")
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    return save_figure(fig, path)


def save_figure(fig, path: Path) -> Path:
    """Save as PNG; the titles of its panels go into the PNG's `Description` text, one per line, so tests and tools can read them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    titles = [ax.get_title() for ax in fig.axes if ax.axison and ax.get_title()]
    fig.savefig(path, dpi=120, metadata={"Description": "\n".join(titles)})
    plt.close(fig)
    return path
