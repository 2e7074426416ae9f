"""Result tables of a stored study (plots come later, through matplotlib)."""

from __future__ import annotations

import json
import math

from tabulate import tabulate

from .evals import eval_table
from .store import Store

ROLE_ORDER = {"weak_test": 0, "student_test": 1, "ceiling_test": 2}


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def ci(low, high, digits: int = 3) -> str:
    if low is None or high is None:
        return "-"
    return f"[{fmt(low, digits)}, {fmt(high, digits)}]"


def results(store: Store, study_id: str) -> list[dict]:
    return list(store.db.query("SELECT * FROM results WHERE study_id = ? ORDER BY task, weak, strong, seed, loss", [study_id]))


def accuracy_rows(store: Store, study_id: str) -> list[dict]:
    """One row per model evaluated on test: weak, each student, ceiling (per pair and seed)."""
    sql = """
        SELECT DISTINCT ss.role, ss.weak, ss.strong, ss.loss, ss.seed, st.model, st.key, st.status
        FROM study_stages ss JOIN stages st ON st.key = ss.stage_key
        WHERE ss.study_id = ? AND ss.role IN ('weak_test', 'student_test', 'ceiling_test')
    """
    rows = {}
    for r in store.db.query(sql, [study_id]):
        label = {"weak_test": f"weak ({r['weak']})", "ceiling_test": f"ceiling ({r['strong']})"}.get(
            r["role"], f"student {r['loss']} ({r['weak']}->{r['strong']})"
        )
        rows.setdefault((r["seed"], r["key"]), {**r, "label": label})
    out = []
    for (seed, key), r in sorted(rows.items(), key=lambda kv: (kv[0][0], ROLE_ORDER[kv[1]["role"]], kv[1]["label"])):
        m = {x["name"]: x["value"] for x in store.db.query("SELECT name, value FROM metrics WHERE stage_key = ? AND split = 'test'", [key])}
        out.append({"seed": seed, "model": r["label"], "status": r["status"], **m})
    return out


def results_table(store: Store, study_id: str) -> str:
    """The accuracy table (weak, students, ceiling) and the PGR table, as text."""
    acc = accuracy_rows(store, study_id)
    acc_table = tabulate(
        [[r["seed"], r["model"], fmt(r.get("accuracy")), fmt(r.get("auroc")), fmt(r.get("f1")), int(r.get("n") or 0), r["status"]] for r in acc],
        headers=["seed", "model", "test acc", "AUROC", "F1", "n", "status"],
        tablefmt="simple",
        disable_numparse=True,
    )
    res = results(store, study_id)
    pgr_table = tabulate(
        [
            [r["seed"], r["weak"], r["strong"], r["loss"], fmt(r["weak_acc"]), fmt(r["student_acc"]), fmt(r["ceiling_acc"]),
             fmt(r["pgr"], 2), ci(r["pgr_ci_low"], r["pgr_ci_high"], 2), fmt(r["agreement"])]
            for r in res
        ],
        headers=["seed", "weak", "strong", "loss", "weak acc", "student acc", "ceiling acc", "PGR", "PGR 95% CI", "agree"],
        tablefmt="simple",
        disable_numparse=True,
    )
    flags = sorted({f for r in res for f in json.loads(r["flags"] or "[]")})
    lines = [acc_table, "", pgr_table]
    lines += [f"FLAG: {f}" for f in flags]
    lines.append("PGR = (student - weak) / (ceiling - weak); CI: paired bootstrap over test examples (1000 resamples).")
    evals = eval_table(store, study_id)
    lines += ["", evals] if evals else []
    return "\n".join(lines)
