"""keep_checkpoints = "needed": a fit whose weights only its own predict stages load predicts inside its stage.

    weak  = fit(W, A)  ->  weak_labels = predict(weak, B), weak_test = predict(weak, T)
    becomes one stage: fit(W, A) and predict on B and T, which keeps no weights

The folded stage is a new stage: its key hashes the fit's spec plus the splits it predicts on, so a
store can hold both forms side by side and switching the option never mixes them. Its predictions
are stored under its own key, split by split. A stage downstream names its inputs by key (a student's
`targets`, an evaluate stage's `weak`/`student`/`ceiling`), so those references follow to the folded
stage and such a stage's key is recomputed from its updated spec, and so on down the DAG: every key
still names exactly the stages it was computed from.

A fit is left alone when any other stage loads its weights (a cross-task eval, a later adapt) or when
its model estimates a cost: a paid model's predict stages stay separate, so the cost confirm sees
them and answers bought are resumed per stage.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from ..api import fingerprint
from .stage import CheckpointOf, PredictionsOf, Stage

Link = tuple[Stage, str, dict]


def fold_predictions(links: list[Link]) -> list[Link]:
    """The same links, each foldable fit and its predict stages replaced by one fit-and-predict stage."""
    stages = list({stage.key: stage for stage, _, _ in links}.values())  # plan order: upstream first
    loaders: dict[str, list[Stage]] = {}
    for stage in stages:
        for value in stage.inputs.values():
            if isinstance(value, CheckpointOf):
                loaders.setdefault(value.stage, []).append(stage)
    folds = {fit.key: loaders[fit.key] for fit in stages if foldable(fit, loaders.get(fit.key, []))}
    if not folds:
        return links
    folded_away = {p.key for predicts in folds.values() for p in predicts}
    renamed: dict[str, str] = {}  # old key -> the key that stands for it now (changed keys only)
    new: dict[str, Stage] = {}
    for stage in stages:
        if stage.key in folded_away:  # its fit came first and took it in
            continue
        now = following(stage, renamed)
        if stage.key in folds:
            now = folded_fit(now, folds[stage.key])
            renamed.update({p.key: now.key for p in folds[stage.key]})
            new.update({p.key: now for p in folds[stage.key]})
        if now.key != stage.key:
            renamed[stage.key] = now.key
        new[stage.key] = now
    return [(new[stage.key], role, labels) for stage, role, labels in links]


def foldable(fit: Stage, predicts: list[Stage]) -> bool:
    """Only predict stages load the fit's weights, each on its own split, and nothing here is paid for."""
    if fit.kind != "fit" or not predicts or any(p.kind != "predict" for p in predicts):
        return False
    if len({p.spec["split"] for p in predicts}) != len(predicts):
        return False
    return all(s.model is None or s.model.estimate_cost(s.examples, s.task, s.kind) is None for s in (fit, *predicts))


def folded_fit(fit: Stage, predicts: list[Stage]) -> Stage:
    """One stage that fits, then predicts on each predict stage's split."""
    keyed = {**json.loads(fit.row["spec_json"]), "predict": {p.spec["split"]: json.loads(p.row["spec_json"])["data"] for p in predicts}}
    splits = [p.spec["split"] for p in predicts]
    spec = {**fit.spec, "predict": splits}
    inputs = {**fit.inputs, "predict": {p.spec["split"]: p.inputs["examples"] for p in predicts}}
    row = {**fit.row, "spec_json": json.dumps(keyed, default=str)}
    title = f"{fit.title}, predict on {', '.join(splits)}"
    return replace(fit, key=fingerprint(keyed), title=title, row=row, spec=spec, inputs=inputs)


def following(stage: Stage, renamed: dict[str, str]) -> Stage:
    """`stage` with its references to renamed stages (deps, inputs, keys in its spec) updated, and a key recomputed
    from that spec; unchanged when it references none."""
    if not any(d in renamed for d in stage.deps):
        return stage
    keyed = _rename(json.loads(stage.row["spec_json"]), renamed)
    deps = list(dict.fromkeys(renamed.get(d, d) for d in stage.deps))
    inputs = {name: _rename_input(value, renamed) for name, value in stage.inputs.items()}
    row = {**stage.row, "spec_json": json.dumps(keyed, default=str), "upstream_json": json.dumps(deps)}
    return replace(stage, key=fingerprint(keyed), row=row, deps=deps, inputs=inputs)


def _rename(value: Any, renamed: dict[str, str]) -> Any:
    if isinstance(value, str):
        return renamed.get(value, value)
    if isinstance(value, list):
        return [_rename(v, renamed) for v in value]
    if isinstance(value, dict):
        return {k: _rename(v, renamed) for k, v in value.items()}
    return value


def _rename_input(value: Any, renamed: dict[str, str]) -> Any:
    if isinstance(value, PredictionsOf):
        return PredictionsOf(renamed.get(value.stage, value.stage), value.split)
    if isinstance(value, CheckpointOf):
        return CheckpointOf(renamed.get(value.stage, value.stage))
    return value
