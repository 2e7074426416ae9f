"""`w2s report`: the PNG figures of a study and one self-contained HTML page (figures inlined as base64)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from tabulate import tabulate

from ..storing.queries import stage_rows
from ..storing.store import Store
from . import plots, scaling
from .tables import accuracy_rows, ci, fmt, pgr_cell, results, results_table

STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0 1.5em; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 13px; }
.flag { color: #b00020; font-weight: bold; } .meta { color: #555; }
"""


def figures(store: Store, study_id: str, out_dir: Path) -> dict[str, Path]:
    """Write every figure the study has data for; returns name -> PNG path."""
    out = {}
    panels = plots.accuracy_panels(plots.evaluate_rows(store, study_id))
    if panels:
        out["accuracy"] = plots.accuracy_figure(panels, out_dir / "accuracy.png")
    curves = plots.curve_rows(store, study_id)
    if curves:
        out["curves"] = plots.curves_figure(curves, out_dir / "curves.png")
    sized = scaling.sized_rows(store, study_id)
    grid = plots.grid_rows(store, study_id)
    if grid and len({r["task"] for r in sized}) <= 1:  # its lines pool tasks; a [[task]] grid gets per-task panels below
        out["grid"] = plots.grid_figure(grid, out_dir / "grid_pgr.png")
    out.update(scaling.write_figures(sized, out_dir))  # accuracy and PGR against measured strong size, median PGR
    chain = plots.chain_rows(store, study_id)
    if chain:
        out["chain"] = plots.chain_figure(chain, out_dir / "chain.png")
    return out


def write_report(store: Store, ref: str, out_dir: str | Path) -> dict:
    """Write the figures and report.html for study REF into OUT_DIR; returns the paths written."""
    study = store.find_study(ref)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = figures(store, study["id"], out_dir)
    page = out_dir / "report.html"
    page.write_text(render_html(store, study, pngs), encoding="utf-8")
    return {"study_id": study["id"], "html": page, "figures": pngs}


def render_html(store: Store, study: dict, pngs: dict[str, Path]) -> str:
    """The whole report as one HTML string: study header, tables, flags, figures and the TOML."""
    sid = study["id"]
    res = results(store, sid)
    flags = sorted({f for r in res for f in json.loads(r["flags"] or "[]")})
    parts = [
        f"<h1>w2s study {_e(study['name'])}</h1>",
        f"<p class='meta'>id {_e(sid)} &middot; status {_e(study['status'])} &middot; created {_e(study['created'])}"
        + (f" &middot; file {_e(study['path'])}" if study["path"] else "") + "</p>",
    ]
    if study.get("notes"):
        parts.append(f"<p>{_e(study['notes'])}</p>")
    parts += ["<h2>Test accuracy</h2>", accuracy_table(store, sid), "<h2>Performance gap recovered</h2>", pgr_table(res)]
    parts += [f"<p class='flag'>FLAG: {_e(f)}</p>" for f in flags]
    parts.append("<p class='meta'>PGR = (student - weak) / (ceiling - weak); CI: paired bootstrap over test examples.</p>")
    chain = plots.chain_rows(store, sid)
    if chain:
        parts += ["<h2>Bootstrapping chain</h2>", chain_table(chain)]
    titles = {"accuracy": "Accuracy and PGR", "curves": "Training curves", "grid": "PGR across the grid", "chain": "Accuracy along the chain"}
    for name, path in pngs.items():
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        parts.append(f"<h2>{titles.get(name, name)}</h2><img alt='{_e(name)}' src='data:image/png;base64,{data}'>")
    parts += ["<details><summary>Every result table as text (as <code>w2s study show</code> prints it: seed means, PGR matrix, "
              "oracle and chain tables when present)</summary>", f"<pre>{_e(results_table(store, sid))}</pre></details>"]
    parts += ["<h2>Stages</h2>", stages_table(store, sid)]
    parts += ["<h2>Study definition</h2>", f"<p class='meta'>Rerun it (finished stages are cached): <code>w2s study rerun {_e(sid)}</code></p>",
              f"<pre>{_e(study['toml'])}</pre>"]
    versions = json.loads(study.get("versions_json") or "{}")
    if versions:
        parts += ["<h2>Versions</h2>", f"<pre>{_e(json.dumps(versions, indent=2))}</pre>"]
    body = "\n".join(parts)
    return f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>w2s report: {_e(study['name'])}</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"


def accuracy_table(store: Store, study_id: str) -> str:
    rows = [[r["seed"], r["model"], fmt(r.get("accuracy")), fmt(r.get("auroc")), fmt(r.get("f1")), int(r.get("n") or 0), r["status"]]
            for r in accuracy_rows(store, study_id)]
    return tabulate(rows, headers=["seed", "model", "test acc", "AUROC", "F1", "n", "status"], tablefmt="html", disable_numparse=True)


def pgr_table(res: list[dict]) -> str:
    rows = [[r["seed"], r["weak"], r["strong"], r["loss"], fmt(r["weak_acc"]), fmt(r["student_acc"]), fmt(r["ceiling_acc"]),
             pgr_cell(r), ci(r["pgr_ci_low"], r["pgr_ci_high"], 2), fmt(r["agreement"])] for r in res]
    headers = ["seed", "weak", "strong", "loss", "weak acc", "student acc", "ceiling acc", "PGR", "PGR 95% CI", "agreement"]
    return tabulate(rows, headers=headers, tablefmt="html", disable_numparse=True)


def stages_table(store: Store, study_id: str) -> str:

    rows = [[s["kind"], s["role"], s["model"], s["loss"] or "", s["seed"], s["status"], f"{s['seconds'] or 0:.1f}s", s["key"]]
            for s in stage_rows(store, study_id)]
    return tabulate(rows, headers=["kind", "role", "model", "loss", "seed", "status", "time", "stage key"], tablefmt="html", disable_numparse=True)


def chain_table(rows: list[dict]) -> str:
    table = [[r["loss"], r["position"], r["model"], r["kind"], fmt(r["accuracy"]), ci(r.get("low"), r.get("high")),
              f"({fmt(r.get('pgr'), 2)})!" if r.get("flagged") else fmt(r.get("pgr"), 2)] for r in rows]
    return tabulate(table, headers=["loss", "step", "model", "row", "test acc", "95% CI", "PGR"], tablefmt="html", disable_numparse=True)


def _e(value) -> str:
    return html.escape(str(value), quote=True)
