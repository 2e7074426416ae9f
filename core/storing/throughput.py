"""Measured throughput per model: examples per second of the done stages in this store, and the
wall-time estimate of pending stages that it gives (`w2s study run --dry-run`).

A stage's work is the number of examples it goes through: a fit's examples times its epochs (the
model's `train.epochs`; a model without that option counts one epoch), a predict or eval stage's
examples (its stored predictions). evaluate stages are instant: 0 s.

Matching is by stage kind and model spec (`model_json`: the model, its version, its non-default
options such as max_length or num_layers, and its non-default train hyperparameters), compared as
canonical JSON. The loss, the seed, the task and the data do not enter the match: a fit's
throughput depends on the model and its training settings, not on what it is fit to. Rates pool
every done stage with a measured time (stored seconds > 0): sum of work / sum of seconds, so a
model's load time is spread over its examples.

Fallback: a pending stage whose exact spec was never run takes the rate of stages with the same
kind and the same model, version and options but other train hyperparameters, measured in
example-epochs per second and scaled by the pending stage's epochs (a stored spec without
`train.epochs` ran the model's default epochs). Without either, a stage has no estimate yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .store import Store

TIMED_KINDS = ("fit", "predict", "eval")  # evaluate stages are instant

MEASURED_SQL = """
SELECT s.kind, s.model_json, s.seconds,
       CASE s.kind
           WHEN 'fit' THEN (SELECT sp.n FROM splits sp WHERE sp.key = json_extract(s.spec_json, '$.data'))
           ELSE (SELECT count(*) FROM predictions p WHERE p.stage_key = s.key)
       END AS n
FROM stages s
WHERE s.status = 'done' AND s.seconds > 0 AND s.model_json IS NOT NULL AND s.kind IN ('fit', 'predict', 'eval')
"""
# Only the stages of some models (json_extract(model_json, '$.model') in a JSON list): a rate is keyed by
# the model spec, which holds the model's name, so the other models' stages can never match.
OF_MODELS = " AND json_extract(s.model_json, '$.model') IN (SELECT value FROM json_each(:models))"
# measured_rates' sums, per stored model spec string: one row per (kind, model_json) instead of per stage.
GROUPED_SQL = "SELECT kind, model_json, sum(seconds) AS seconds, sum(n) AS n FROM ({stages}) WHERE n > 0 GROUP BY kind, model_json"


def canonical(model_json: str) -> str:
    """A model spec as canonical JSON (sorted keys, no spaces): equal specs give equal strings."""
    return json.dumps(json.loads(model_json), sort_keys=True, separators=(",", ":"), default=str)


def without_train(model_json: str) -> str:
    """The canonical model spec minus its train hyperparameters: the fallback's match."""
    spec = json.loads(model_json)
    spec.pop("train", None)
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)


def stated_epochs(model_json: str) -> float | None:
    """The spec's `train.epochs`, or None when it is the model's default (specs keep non-default values only)."""
    epochs = (json.loads(model_json).get("train") or {}).get("epochs")
    return None if epochs is None else float(epochs)


@dataclass
class Pool:
    """Done stages of one (kind, model without train): example-epochs with stated epochs, examples
    run at the default epochs, and seconds; the rate needs the default epochs to add them up."""

    stated_work: float = 0.0
    default_examples: float = 0.0
    seconds: float = 0.0

    def rate(self, default_epochs: float) -> float:
        """Example-epochs per second, a spec without `train.epochs` counted at `default_epochs`."""
        return (self.stated_work + default_epochs * self.default_examples) / self.seconds


@dataclass
class Rates:
    """Measured throughput: `exact` (kind, canonical model spec) -> examples per second (fit: examples
    times stated epochs, 1 when the spec leaves epochs at the default; one spec, one unit); `pools`
    (kind, model spec without train) -> the fallback's Pool."""

    exact: dict[tuple[str, str], float] = field(default_factory=dict)
    pools: dict[tuple[str, str], Pool] = field(default_factory=dict)


def measured_stages(store: Store) -> list[dict]:
    """Done fit, predict and eval stages with a stored time and a known example count: kind, model_json, n, seconds."""
    return [r for r in store.db.query(MEASURED_SQL) if r["n"]]


def measured_rates(store: Store, models: set[str] | None = None) -> Rates:
    """Examples per second per (kind, model spec) over every done, timed stage in the store (see the module doc);
    with `models`, over the stages of those models only (the rates of those models are the same).

    The sums are taken in SQL per stored model spec (a store of 20,000 stages has a few dozen), so
    the Python below canonicalizes each spec once, not once per stage."""
    work: dict[tuple[str, str], float] = {}
    seconds: dict[tuple[str, str], float] = {}
    pools: dict[tuple[str, str], Pool] = {}
    sql = GROUPED_SQL.format(stages=MEASURED_SQL + (OF_MODELS if models is not None else ""))
    for row in store.db.query(sql, {"models": json.dumps(sorted(models))} if models is not None else {}):
        kind, spec, n = row["kind"], row["model_json"], float(row["n"])
        epochs = stated_epochs(spec) if kind == "fit" else 1.0
        key = (kind, canonical(spec))
        work[key] = work.get(key, 0.0) + n * (epochs or 1.0)  # one spec: the same epochs in every row
        seconds[key] = seconds.get(key, 0.0) + row["seconds"]
        pool = pools.setdefault((kind, without_train(spec)), Pool())
        pool.seconds += row["seconds"]
        if epochs is None:
            pool.default_examples += n
        else:
            pool.stated_work += n * epochs
    return Rates({key: work[key] / seconds[key] for key in work}, pools)


def pending_rates(store: Store, stages: list, status: dict) -> Rates:
    """measured_rates for what `estimate` will ask: the models of the timed stages not yet done. A fully
    cached plan asks nothing, so it reads nothing (counting stored predictions is the costly part)."""
    models = {json.loads(stage.row["model_json"]).get("model") or "" for stage in stages
              if status.get(stage.key) != "done" and stage.kind in TIMED_KINDS and stage.row.get("model_json")}
    return measured_rates(store, models) if models else Rates()


def epochs_of(model: Any, model_json: str) -> tuple[float, float]:
    """A pending fit's (epochs, the model's default epochs); 1 and 1 for a model without `train.epochs`."""
    fields = getattr(type(getattr(model, "train", None)), "model_fields", {})
    default = float(fields["epochs"].default) if "epochs" in fields else 1.0
    stated = stated_epochs(model_json)
    return (default if stated is None else stated), default


def stage_seconds(stage: Any, rates: Rates) -> float | None:
    """The estimated wall time of one stage (a planning Stage: kind, row, examples, model), or None without a measurement."""
    if stage.kind == "evaluate":
        return 0.0
    if stage.kind not in TIMED_KINDS:  # e.g. adapt: not measured by example here
        return None
    n = len(stage.examples)
    if n == 0:  # e.g. a skipped eval: nothing to go through
        return 0.0
    spec = stage.row.get("model_json")
    if not spec:
        return None
    exact = rates.exact.get((stage.kind, canonical(spec)))
    if stage.kind != "fit":
        if exact is not None:
            return n / exact
        pool = rates.pools.get((stage.kind, without_train(spec)))
        return None if pool is None else n / pool.rate(1.0)
    if exact is not None:
        return n * (stated_epochs(spec) or 1.0) / exact  # the unit measured_rates used for this spec
    pool = rates.pools.get((stage.kind, without_train(spec)))
    if pool is None:
        return None
    epochs, default = epochs_of(stage.model, spec)
    return n * epochs / pool.rate(default)


def estimate(stages: list, status: dict, rates: Rates) -> list[tuple[Any, float | None]]:
    """(stage, estimated seconds or None) for every stage not yet done, in plan order."""
    return [(stage, stage_seconds(stage, rates)) for stage in stages if status.get(stage.key) != "done"]


def total(estimates: list[tuple[Any, float | None]]) -> tuple[float | None, int]:
    """The summed estimate of the stages that have one (None if no stage with work has one) and how many have none."""
    missing = sum(seconds is None for _, seconds in estimates)
    known = sum(seconds for _, seconds in estimates if seconds is not None)
    if missing and not known:  # only instant stages (evaluate, skipped evals) have a number: nothing measured
        return None, missing
    return known, missing
