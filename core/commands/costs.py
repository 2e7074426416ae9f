"""What the planned, not-yet-done stages would spend on paid APIs, before anything is launched.

A model opts in by overriding `Model.estimate_cost` (a Cost: tokens, usd, what) and, to fail fast on
missing credentials, `Model.preflight` (both declared in w2s.api).
"""

from __future__ import annotations

import json

from tabulate import tabulate

from ..planning.stage import pending_models


def pending_costs(stages, status: dict) -> list[dict]:
    """One row per pending stage whose model can estimate its cost."""
    rows = []
    for stage in stages:
        if status.get(stage.key) == "done" or stage.model is None:
            continue
        k_shot = (json.loads(stage.row.get("spec_json") or "{}").get("k") or 0) if stage.kind == "eval" else 0
        cost = stage.model.estimate_cost(stage.examples, stage.task, stage.kind, k_shot=k_shot)
        if cost is None or (not cost["tokens"] and stage.kind != "fit"):  # e.g. a skipped eval: nothing to ask
            continue
        rows.append({"stage": stage.title, "tokens": int(cost["tokens"]), "usd": float(cost["usd"]), "what": cost.get("what", "")})
    return rows


def preflight(stages, status: dict) -> None:
    """Let each model with pending stages check its setup (e.g. an API key) once, before the run."""
    for model in pending_models(stages, status):
        model.preflight()


def cost_table(rows: list[dict]) -> str:
    """The estimate as text: a line per stage and the total tokens and USD."""
    body = tabulate([[r["stage"], f"{r['tokens']:,}", f"${r['usd']:.2f}", r["what"]] for r in rows],
                    headers=["pending API stage", "tokens", "est. USD", "how"], tablefmt="simple")
    tokens, usd = sum(r["tokens"] for r in rows), sum(r["usd"] for r in rows)
    return f"{body}\ntotal: {tokens:,} tokens (tiktoken), estimated cost ${usd:.2f} at list prices"
