"""The cross-task (`[[eval]]`) table: a row per model and split, a column per eval task, and the average."""

from __future__ import annotations

import json

import numpy as np
from tabulate import tabulate

from ..planning.evals import SPLIT_NAMES


def eval_rows(store, study_id: str) -> list[dict]:
    """One row per eval stage of a study: its output JSON, accuracy, n and status."""
    sql = """
        SELECT DISTINCT st.key, st.status, st.output_json, ss.seed,
            (SELECT value FROM metrics m WHERE m.stage_key = st.key AND m.name = 'accuracy') AS accuracy,
            (SELECT value FROM metrics m WHERE m.stage_key = st.key AND m.name = 'n') AS n
        FROM study_stages ss JOIN stages st ON st.key = ss.stage_key
        WHERE ss.study_id = ? AND ss.role = 'eval'
        ORDER BY st.created
    """
    out = []
    for r in store.db.query(sql, [study_id]):
        info = json.loads(r["output_json"] or "{}")
        out.append({**info, "key": r["key"], "status": r["status"], "seed": r["seed"], "accuracy": r["accuracy"], "n": r["n"]})
    return out


def model_name(row: dict) -> str:
    source = row.get("source")
    if source == "strong_pretrained":
        return f"{row['model']} (pretrained)"
    if source == "student":
        return f"student {row['loss']} ({row['weak']}->{row['strong']})"
    return f"{source} ({row['model']})"


def eval_table(store, study_id: str) -> str:
    """The Test / Hard Test table: a row per model and split, a column per eval task, plus the average."""
    rows = [r for r in eval_rows(store, study_id) if r.get("eval")]
    if not rows:
        return ""
    evals = list(dict.fromkeys(r["eval"] for r in rows))
    cells: dict = {}
    for r in rows:
        cells[(r["seed"], model_name(r), r["split"], r["eval"])] = r
    lines, notes = [], {}
    rank = {"strong_pretrained": 0, "weak": 1, "student": 2, "ceiling": 3}
    models = sorted(dict.fromkeys(k[1] for k in cells), key=lambda m: min(rank.get(r["source"], 9) for r in rows if model_name(r) == m))
    keys = sorted({k[:3] for k in cells}, key=lambda k: (k[0], models.index(k[1]), list(SPLIT_NAMES).index(k[2])))
    for seed, name, split in keys:
        row = [seed, name, SPLIT_NAMES.get(split, split)]
        present = [cells.get((seed, name, split, ev)) for ev in evals]
        row += [cell_text(c, notes) for c in present]
        accs = [c["accuracy"] for c in present if c and c.get("accuracy") is not None and not c.get("skipped")]
        row.append(f"{np.mean(accs):.3f} ({len(accs)}/{sum(c is not None for c in present)})" if accs else "-")
        lines.append(row)
    table = tabulate(lines, headers=["seed", "model", "split", *evals, "average"], tablefmt="simple")
    foot = [f"[{i}] skipped: {reason}" for reason, i in notes.items()]
    mappings = sorted({r["mapping"] for r in rows if r.get("warning") and r.get("mapping")})
    foot += [f"WARNING: classifier heads trained on another task's labels are read by label index ({m}), not asked the eval task's question"
             for m in mappings]
    title = "Cross-task evaluation (accuracy (n scored); average over the scored cells of the row, (scored/planned)):"
    return "\n".join([title, table, *foot])


def cell_text(cell: dict | None, notes: dict) -> str:
    if cell is None:
        return "-"
    if cell.get("skipped"):
        mark = notes.setdefault(cell["skipped"], len(notes) + 1)
        return f"skipped [{mark}]"
    if cell["status"] != "done" or cell.get("accuracy") is None:
        return cell["status"]
    return f"{cell['accuracy']:.3f} (n={int(cell['n'] or 0)})"
