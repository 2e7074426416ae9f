"""Free-generation metrics (gen_*) of a study's test predictions, as `w2s study show` and `compare` print them.

Predict stages on the test split store them when the task asks for them (Task.generation_metrics in
w2s.api; chess: option generation_metrics = true), beside the scored accuracy of the same stage.
"""

from __future__ import annotations

from tabulate import tabulate

from ..reporting.tables import accuracy_rows, fmt
from ..storing.store import Store

PREFIX = "gen_"
NOTE = "free generation: the model's greedy text, parsed by the task (chess: an illegal or unparseable move counts as wrong)"


def generation_rows(store: Store, study_id: str) -> list[dict]:
    """The accuracy rows (one per test prediction) that carry gen_* metrics."""
    return [r for r in accuracy_rows(store, study_id) if any(k.startswith(PREFIX) for k in r)]


def metric_names(rows: list[dict]) -> list[str]:
    names = {k for r in rows for k in r if k.startswith(PREFIX)}
    first = [n for n in ("gen_exact_match", "gen_illegal_rate", "gen_illegal_moves") if n in names]
    return first + sorted(names - set(first))


def generation_table(store: Store, study_id: str) -> str:
    """One row per test prediction with gen_* metrics (seed, model, its scored accuracy, each gen_* metric); '' if none."""
    rows = generation_rows(store, study_id)
    if not rows:
        return ""
    names = metric_names(rows)
    multi = len({r["task"] for r in rows}) > 1
    table = [[r["seed"], *([r["task"]] if multi else []), r["model"], fmt(r.get("accuracy")), *(cell(r.get(n), n) for n in names)]
             for r in rows]
    headers = ["seed", *(["task"] if multi else []), "model", "scored acc", *(n.replace("_", " ") for n in names)]
    return f"{NOTE}\n" + tabulate(table, headers=headers, disable_numparse=True)


def compare_generation(store: Store, studies: list[dict]) -> str:
    """gen_* metrics of several studies (dicts with id and label), per (task, model), mean over seeds; '' if none."""
    groups: dict[tuple, list[dict]] = {}
    for study in studies:
        for r in generation_rows(store, study["id"]):
            groups.setdefault((str(r["task"]), r["model"], study["label"]), []).append(r)
    if not groups:
        return ""
    names = metric_names([r for rows in groups.values() for r in rows])
    table = [[task, model, label, *(cell(mean([r.get(n) for r in rows]), n) for n in names), len(rows)]
             for (task, model, label), rows in sorted(groups.items())]
    return f"{NOTE}; means over seeds\n" + tabulate(table, headers=["task", "model", "study", *(n.replace("_", " ") for n in names), "seeds"],
                                                    disable_numparse=True)


def cell(value, name: str) -> str:
    if value is not None and name.endswith("_moves"):  # a count
        return f"{value:.1f}".removesuffix(".0")
    return fmt(value)


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None
