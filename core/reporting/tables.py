"""Result tables of a stored study (plots come later, through matplotlib)."""

from __future__ import annotations

import json
import math

from tabulate import tabulate

from ..metrics import mean_ci
from ..storing.store import Store
from .cross_task import eval_table

ROLE_ORDER = {"weak_test": 0, "baseline_test": 1, "student_test": 2, "student_oracle_test": 3, "ceiling_test": 4}


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def ci(low, high, digits: int = 3) -> str:
    if low is None or high is None:
        return "-"
    return f"[{fmt(low, digits)}, {fmt(high, digits)}]"


def flagged(row: dict) -> bool:
    return bool(json.loads(row.get("flags") or "[]"))


def pgr_cell(row: dict) -> str:
    """PGR as a number, or in parentheses with a `!` when a FLAG says it means little."""
    return f"({fmt(row['pgr'], 2)})!" if flagged(row) else fmt(row["pgr"], 2)


def results(store: Store, study_id: str) -> list[dict]:
    return list(store.db.query("SELECT * FROM results WHERE study_id = ? ORDER BY task, weak, strong, seed, loss", [study_id]))


def accuracy_rows(store: Store, study_id: str) -> list[dict]:
    """One row per model evaluated on test: weak, each student, ceiling (per pair and seed)."""
    sql = """
        SELECT DISTINCT ss.role, ss.task, ss.weak, ss.strong, ss.loss, ss.seed, st.model, st.key, st.status
        FROM study_stages ss JOIN stages st ON st.key = ss.stage_key
        WHERE ss.study_id = ? AND ss.role IN ('weak_test', 'student_test', 'ceiling_test', 'baseline_test', 'student_oracle_test')
    """
    rows = {}
    for r in store.db.query(sql, [study_id]):
        label = {
            "weak_test": f"weak ({r['weak']})",
            "ceiling_test": f"ceiling ({r['strong']})",
            "baseline_test": f"Strong Model (pretrained) ({r['strong']})",
            "student_oracle_test": f"oracle, GT early stopping: student {r['loss']} ({r['weak']}->{r['strong']})",
        }.get(r["role"], f"student {r['loss']} ({r['weak']}->{r['strong']})")
        rows.setdefault((r["seed"], r["key"]), {**r, "label": label})
    out = []
    for (seed, key), r in sorted(rows.items(), key=lambda kv: (kv[0][0], str(kv[1]["task"]), ROLE_ORDER[kv[1]["role"]], kv[1]["label"])):
        m = {x["name"]: x["value"] for x in store.db.query("SELECT name, value FROM metrics WHERE stage_key = ? AND split = 'test'", [key])}
        out.append({"seed": seed, "task": r["task"], "model": r["label"], "status": r["status"], **m})
    return out


def results_table(store: Store, study_id: str) -> str:
    """The accuracy table (weak, students, ceiling) and the PGR table, as text; a [[task]] grid gains a task column."""
    acc = accuracy_rows(store, study_id)
    res = results(store, study_id)
    multi = len({r["task"] for r in acc}) > 1
    lead = (lambda r: [r["seed"], r["task"]]) if multi else (lambda r: [r["seed"]])
    acc_table = tabulate(
        [[*lead(r), r["model"], fmt(r.get("accuracy")), fmt(r.get("auroc")), fmt(r.get("f1")), int(r.get("n") or 0), r["status"]]
         for r in acc] + accuracy_means(acc, multi),
        headers=["seed", *(["task"] if multi else []), "model", "test acc", "AUROC", "F1", "n", "status"],
        tablefmt="simple",
        disable_numparse=True,
    )
    pgr_table = tabulate(
        [
            [*lead(r), r["weak"], r["strong"], r["loss"], fmt(r["weak_acc"]), fmt(r["student_acc"]), fmt(r["ceiling_acc"]),
             pgr_cell(r), ci(r["pgr_ci_low"], r["pgr_ci_high"], 2), fmt(r["agreement"])]
            for r in res
        ]
        + pgr_means(res, multi),
        headers=["seed", *(["task"] if multi else []), "weak", "strong", "loss", "weak acc", "student acc", "ceiling acc", "PGR",
                 "PGR 95% CI", "agree"],
        tablefmt="simple",
        disable_numparse=True,
    )
    several = len({(r["task"], r["weak"], r["strong"]) for r in res}) > 1  # then each flag names its pair
    where = (lambda r: f"{r['task']}: ") if multi else (lambda r: "")
    flag_lines = sorted({f"FLAG ({where(r)}{r['weak']} -> {r['strong']}): {f}" if several else f"FLAG: {f}"
                         for r in res for f in json.loads(r["flags"] or "[]")})
    chain_only = not res and bool(evaluations(store, study_id, "chain_step"))  # chains have their own table below
    lines = [acc_table] if chain_only else [acc_table, "", pgr_table]
    lines += flag_lines
    if flag_lines:
        lines.append("(PGR)!: flagged above; not a clean result.")
    lines.append("PGR = (student - weak) / (ceiling - weak); CI: paired bootstrap over test examples (1000 resamples).")
    if len({r["seed"] for r in res}) > 1:
        lines.append("mean rows: mean over seeds, with a t-based 95% CI across seeds.")
    lines += methods_tables(store, study_id, res)
    evals = eval_table(store, study_id)
    lines += ["", evals] if evals else []
    return "\n".join(lines)


def by_group(rows: list[dict], key) -> dict:
    groups: dict = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    return groups


def mean_cell(values, digits: int = 3) -> str:
    """'mean [low, high]' across seeds."""
    m, low, high = mean_ci(values)
    return f"{fmt(m, digits)} {ci(low, high, digits)}" if not math.isnan(low) else fmt(m, digits)


def accuracy_means(acc: list[dict], multi: bool = False) -> list[list]:
    """One 'mean' row per (task and) model that ran with more than one seed."""
    out = []
    for (task, label), rows in by_group(acc, lambda r: (r["task"], r["model"])).items():
        if len({r["seed"] for r in rows}) > 1:
            out.append(["mean", *([task] if multi else []), label, mean_cell([r.get("accuracy") for r in rows]), mean_cell([r.get("auroc") for r in rows]),
                        mean_cell([r.get("f1") for r in rows]), int(rows[0].get("n") or 0), f"{len(rows)} seeds"])
    return out


def pgr_means(res: list[dict], multi: bool = False) -> list[list]:
    """One 'mean' row per (task,) weak, strong and loss that ran with more than one seed."""
    out = []
    for (task, weak, strong, loss), rows in by_group(res, lambda r: (r["task"], r["weak"], r["strong"], r["loss"])).items():
        if len(rows) > 1:
            m, low, high = mean_ci([r["pgr"] for r in rows])
            accs = [fmt(mean_ci([r[k] for r in rows])[0]) for k in ("weak_acc", "student_acc", "ceiling_acc")]
            cell = f"({fmt(m, 2)})!" if any(flagged(r) for r in rows) else fmt(m, 2)
            out.append(["mean", *([task] if multi else []), weak, strong, loss, *accs, cell, ci(low, high, 2) + " (seeds)", fmt(mean_ci([r["agreement"] for r in rows])[0])])
    return out


def evaluations(store: Store, study_id: str, role: str) -> list[dict]:
    return list(store.db.query("SELECT * FROM evaluations WHERE study_id = ? AND role = ? ORDER BY seed, loss", [study_id, role]))


def methods_tables(store: Store, study_id: str, res: list[dict]) -> list[str]:
    """The PGR matrix for grids, the oracle (GT early stopping) rows and the chain table, when present."""
    lines = []
    weak, strong = sorted({r["weak"] for r in res}), sorted({r["strong"] for r in res})
    if len(weak) > 1 or len(strong) > 1:
        lines += ["", pgr_matrix(res, weak, strong)]
    oracle = evaluations(store, study_id, "oracle_evaluate")
    if oracle:
        table = tabulate([[r["seed"], r["weak"], r["strong"], r["loss"], fmt(r["student_acc"]), fmt(r["pgr"], 2)] for r in oracle],
                         headers=["seed", "weak", "strong", "loss", "oracle student acc", "oracle PGR"], disable_numparse=True)
        lines += ["", "ORACLE diagnostic (Burns et al. 5.1.1): checkpoint picked by ground-truth accuracy on V; not the headline PGR.", table]
    steps = evaluations(store, study_id, "chain_step")
    if steps:
        lines += ["", chain_table(store, study_id, steps)]
    return lines


def pgr_matrix(res: list[dict], weak: list[str], strong: list[str]) -> str:
    """Mean PGR over seeds: one row per weak model, one column per strong model, per loss."""
    tables = []
    multi = len({r["task"] for r in res}) > 1
    for (task, loss), rows in by_group(res, lambda r: (r["task"], r["loss"])).items():
        cells = by_group(rows, lambda r: (r["weak"], r["strong"]))
        table = [[w, *(fmt(mean_ci([r["pgr"] for r in cells[(w, s)]])[0], 2) if (w, s) in cells else "" for s in strong)] for w in weak]
        header = f"PGR matrix [{task + ', ' if multi else ''}{loss}] (rows: weak, columns: strong; mean over seeds)"
        tables.append(header + "\n" + tabulate(table, headers=["weak \\ strong", *strong], disable_numparse=True))
    return "\n\n".join(tables)


def chain_table(store: Store, study_id: str, steps: list[dict]) -> str:
    """Per chain step: supervisor and student accuracy, step PGR and PGR vs M1, beside the direct M1 -> Mn."""
    spec = json.loads(next(store.db.query("SELECT spec_json FROM studies WHERE id = ?", [study_id]))["spec_json"])
    chain = [m.get("label") or m["model"] for m in spec["chain"]]
    direct = by_group(evaluations(store, study_id, "chain_direct"), lambda r: (r["seed"], r["loss"]))
    rows = []
    for (seed, loss), group in by_group(steps, lambda r: (r["seed"], r["loss"])).items():
        group = sorted(group, key=lambda r: chain.index(r["strong"]) if r["strong"] in chain else 0)
        first = group[0]["weak_acc"]
        for r in group:
            vs_first = (r["student_acc"] - first) / (r["ceiling_acc"] - first) if None not in (r["student_acc"], r["ceiling_acc"], first) and r["ceiling_acc"] > first else None
            rows.append([seed, loss, f"{r['weak']} -> {r['strong']}", fmt(r["weak_acc"]), fmt(r["student_acc"]), fmt(r["ceiling_acc"]),
                         fmt(r["pgr"], 2), fmt(vs_first, 2)])
        for r in direct.get((seed, loss), []):
            rows.append([seed, loss, f"direct {r['weak']} -> {r['strong']}", fmt(r["weak_acc"]), fmt(r["student_acc"]),
                         fmt(r["ceiling_acc"]), fmt(r["pgr"], 2), fmt(r["pgr"], 2)])
    title = "Bootstrapping chain " + " -> ".join(chain) + " (step PGR: against the step's supervisor; PGR vs M1: against M1's accuracy)"
    table = tabulate(rows, headers=["seed", "loss", "step", "supervisor acc", "student acc", "ceiling acc", "step PGR", "PGR vs M1"],
                     disable_numparse=True)
    every = steps + [r for group in direct.values() for r in group]
    flags = sorted({f"FLAG ({r['weak']} -> {r['strong']}): {f}" for r in every for f in json.loads(r["flags"] or "[]")})
    return "\n".join([title, table, *chain_against_direct_lines(store, study_id), *flags])


def chain_against_direct_lines(store: Store, study_id: str) -> list[str]:
    """One line per seed and loss: the chain's last student minus the direct student, with paired bootstrap CIs."""
    rows = store.db.query("SELECT ss.seed, ss.loss, m.name, m.value FROM study_stages ss JOIN metrics m ON m.stage_key = ss.stage_key "
                          "WHERE ss.study_id = ? AND ss.role = 'chain_direct' AND m.name LIKE 'chain_minus_direct%' ORDER BY ss.seed, ss.loss",
                          [study_id])
    values: dict[tuple, dict] = {}
    for r in rows:
        values.setdefault((r["seed"], r["loss"]), {})[r["name"]] = r["value"]
    lines = []
    for (seed, loss), v in values.items():
        low, high = v.get("chain_minus_direct_ci_low"), v.get("chain_minus_direct_ci_high")
        verdict = ("the chain beat direct transfer" if low > 0 else "direct transfer beat the chain" if high < 0
                   else "no difference resolved (the CI includes 0)")
        pgr_part = "" if v.get("chain_minus_direct_pgr") is None else (
            f", PGR vs M1 {v['chain_minus_direct_pgr']:+.2f} {ci(v.get('chain_minus_direct_pgr_ci_low'), v.get('chain_minus_direct_pgr_ci_high'), 2)}")
        lines.append(f"chain - direct [seed {seed}, {loss}]: student accuracy {v['chain_minus_direct']:+.3f} [{low:+.3f}, {high:+.3f}]{pgr_part}"
                     " (paired bootstrap over test examples): " + verdict)
    return lines
