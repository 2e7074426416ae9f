"""The stage functions: (spec, resolved inputs, context) -> StageResult, one per stage kind.

They are module-level so any executor can ship them to a worker process or a Ray node. A stage
function reads only its arguments; it never opens the store or reaches into the driver.
"""

from __future__ import annotations

import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np

from ..api import Example, Task, Validation, fingerprint, has_own_choices
from ..metrics import (agreement, bootstrap_accuracy, bootstrap_gap, bootstrap_pgr, bootstrap_pgr_difference, choice_accuracy,
                       classification_metrics, pgr, pgr_flags, prediction_flags)
from ..prompting import fewshot_prefix, softmax_rows
from .rebuild import keep, loaded, loss_from, model_from, publish, save_checkpoint, task_from
from .work import Event, Outcome, StageResult, Work, WorkerContext, worker_identity


def one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(labels), k), dtype=np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def ground_truth_targets(task: Task, examples: list[Example]):
    """One-hot targets: an (n, num_labels) array, or one array per example over its own choices."""
    if has_own_choices(task, examples):
        return [one_hot(np.array([e.label]), len(e.choices))[0] for e in examples]
    return one_hot(np.array([e.label for e in examples]), task.num_labels)


def as_targets(task: Task, examples: list[Example], rows):
    """Predictions or stored probabilities as fit targets: an (n, K) array, or a list of 1-D arrays."""
    if has_own_choices(task, examples):
        return [np.asarray(r, dtype=np.float32) for r in rows]
    return np.asarray(rows, dtype=np.float32)


def prediction_metrics(task: Task, examples: list[Example], probs, labels: np.ndarray) -> dict[str, float]:
    """classification_metrics, or for per-example choices accuracy plus the task's own `metrics`."""
    if not has_own_choices(task, examples):
        return classification_metrics(probs, labels)
    return {**choice_accuracy(probs, labels), **task.metrics(examples, probs)}


def prompt_tables(stage_key: str, split: str, examples: list[Example], task: Task, scores_prompts: bool) -> dict:
    """The rendered prompts a prompt-capable model scored (table eval_prompts)."""
    if not scores_prompts:
        return {}
    return {"eval_prompts": [{"stage_key": stage_key, "split": split, "example_id": e.id, "prompt": task.render(e)} for e in examples]}


# -- the stage kinds -----------------------------------------------------------------------------
def run_fit(spec: dict, inputs: dict, ctx: WorkerContext) -> StageResult:
    """Fit the model on ground truth or on an upstream stage's predictions; then publish its checkpoint, or,
    when the plan folded its predict stages in (planning/folding.py), predict on their splits and keep no weights."""
    task, model, loss = task_from(spec["task"]), model_from(spec["model"]), loss_from(spec["loss"])
    examples, targets = inputs["examples"], inputs["targets"]
    if targets is None:
        soft = ground_truth_targets(task, examples)
    else:
        soft = as_targets(task, examples, [targets[e.id]["probs"] for e in examples])
    if inputs.get("init"):  # the adapt stage's weights (unsupervised task adaptation), not the pretrained ones
        model = model.adapted(inputs["init"])
    if inputs.get("validation"):
        ctx.validation = Validation(inputs["validation"], np.array([e.label for e in inputs["validation"]]), spec["eval_every"])
    trained = model.fit(examples, soft, loss, task, ctx)
    ctx.metrics.update({("model", name): float(n) for name, n in trained.parameter_counts().items()})  # measured size
    if spec.get("predict"):
        result = StageResult(curves=ctx.curves, metrics=ctx.metrics, output=ctx.output)
        for split in spec["predict"]:
            ctx.split = split
            add_predictions(result, predictions_on(split, inputs["predict"][split], task, model, trained, ctx))
        trained.free()
        return result
    path = save_checkpoint(trained, ctx.artifact_dir)
    keep(str(path), trained)  # the predict stages that follow in this process skip the reload
    return StageResult(curves=ctx.curves, metrics=ctx.metrics, output=ctx.output, artifacts={"checkpoint": str(path)})


def run_adapt(spec: dict, inputs: dict, ctx: WorkerContext) -> StageResult:
    """Unsupervised task adaptation: the model's LM loss on unlabelled task text; publishes the adapted weights."""
    model = model_from(spec["model"])
    final = publish(ctx.artifact_dir, lambda staged: model.adapt(inputs["texts"], spec["adapt"], ctx, staged))
    return StageResult(curves=ctx.curves, metrics=ctx.metrics, output=ctx.output, artifacts={"checkpoint": str(final)})


def run_predict(spec: dict, inputs: dict, ctx: WorkerContext) -> StageResult:
    """Label a split with a fitted model: probabilities, metrics and (prompted models) the prompts."""
    task, model = task_from(spec["task"]), model_from(spec["model"])
    path = inputs["checkpoint"]
    trained = loaded(path, lambda: model.load(Path(path), task))
    result = StageResult(metrics=ctx.metrics, curves=ctx.curves, output=ctx.output)  # what the model logs while predicting too
    return add_predictions(result, predictions_on(spec["split"], inputs["examples"], task, model, trained, ctx))


def predictions_on(split: str, examples: list[Example], task: Task, model, trained, ctx: WorkerContext) -> StageResult:
    """A fitted model's probabilities on one split, their metrics, the free-generation metrics on test (when
    the task asks for them, see the w2s.api module docstring) and, for prompted models, the prompts scored."""
    probs = as_targets(task, examples, trained.predict(examples, task, ctx))
    labels = np.array([e.label for e in examples])
    metrics = {(split, k): v for k, v in prediction_metrics(task, examples, probs, labels).items()}
    if split == "test" and model.generates():
        generated = task.generation_metrics(examples, lambda some: trained.generate(some, task, ctx))
        metrics.update({(split, k): v for k, v in generated.items()})
    return StageResult(predictions={split: ([e.id for e in examples], probs, labels)}, metrics=metrics,
                       tables=prompt_tables(ctx.stage_key, split, examples, task, model.scores_prompts()))


def add_predictions(result: StageResult, more: StageResult) -> StageResult:
    """`more`'s predictions, metrics and table rows added to `result` (one split at a time)."""
    result.predictions.update(more.predictions)
    result.metrics.update(more.metrics)
    for table, rows in more.tables.items():
        result.tables.setdefault(table, []).extend(rows)
    return result


def run_evaluate(spec: dict, inputs: dict, ctx: WorkerContext) -> StageResult:
    """PGR with a paired bootstrap CI over test examples, the gap's CI, agreement and sanity flags."""
    seed = spec["seed"]
    preds = dict(inputs)  # test predictions by role, in the plan's order (Protocol.evaluate_stage): weak, student, ceiling, ...
    ids = sorted(preds["weak"])
    labels = np.array([preds["weak"][i]["label"] for i in ids])
    pred = {name: np.array([rows[i]["pred"] for i in ids]) for name, rows in preds.items()}
    correct = {name: (pred[name] == labels) for name in pred}
    acc = {name: float(correct[name].mean()) for name in correct}
    acc_ci = {name: bootstrap_accuracy(correct[name], seed=seed) for name in acc}
    metrics = {("test", f"{name}_acc"): acc[name] for name in acc}
    for name in acc:
        metrics[("test", f"{name}_acc_ci_low")], metrics[("test", f"{name}_acc_ci_high")] = acc_ci[name]
    metrics[("test", "pgr")] = pgr(acc["weak"], acc["student"], acc["ceiling"])
    metrics[("test", "pgr_ci_low")], metrics[("test", "pgr_ci_high")] = bootstrap_pgr(correct["weak"], correct["student"], correct["ceiling"], seed=seed)
    gap_ci = bootstrap_gap(correct["weak"], correct["ceiling"], seed=seed)
    metrics[("test", "gap")], (metrics[("test", "gap_ci_low")], metrics[("test", "gap_ci_high")]) = acc["ceiling"] - acc["weak"], gap_ci
    metrics[("test", "n_test")] = float(len(ids))
    metrics.update({("test", k): v for k, v in agreement(pred["student"], pred["weak"], labels).items()})
    if "chain" in correct:  # a chain's direct transfer: did bootstrapping beat it, on the same test examples?
        metrics.update(chain_against_direct(correct, seed))
    metrics = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in metrics.items()}
    flags = pgr_flags(acc["weak"], acc["ceiling"], acc.get("baseline"), gap_ci)
    if len({len(rows[i]["probs"]) for rows in preds.values() for i in ids}) == 1:  # one label space (not per-example choices)
        flags += prediction_flags({k: v for k, v in pred.items() if k != "chain"}, labels, acc_ci)  # the chain's own step flags it
    return StageResult(metrics=metrics, output={"flags": flags})


def chain_against_direct(correct: dict[str, np.ndarray], seed: int) -> dict:
    """The chain's last student minus the direct student: accuracy and PGR against M1, each with a paired bootstrap CI."""
    diff = float(correct["chain"].mean() - correct["student"].mean())
    low, high = bootstrap_gap(correct["student"], correct["chain"], seed=seed)
    point, pgr_low, pgr_high = bootstrap_pgr_difference(correct["weak"], correct["chain"], correct["ceiling"], correct["student"],
                                                        correct["ceiling"], seed=seed)
    return {("test", "chain_minus_direct"): diff, ("test", "chain_minus_direct_ci_low"): low, ("test", "chain_minus_direct_ci_high"): high,
            ("test", "chain_minus_direct_pgr"): point, ("test", "chain_minus_direct_pgr_ci_low"): pgr_low,
            ("test", "chain_minus_direct_pgr_ci_high"): pgr_high}


def run_eval(spec: dict, inputs: dict, ctx: WorkerContext) -> StageResult:
    """Cross-task eval: score the sampled examples by label words (prompted) or the classifier head."""
    output = dict(spec["info"])
    if spec["skipped"]:
        return StageResult(output={**output, "skipped": spec["skipped"]})
    task, model = task_from(spec["task"]), model_from(spec["model"])
    scored, shots, split = inputs["examples"], inputs["shots"], spec["split"]
    path = inputs["checkpoint"]
    if path is not None:
        trained = loaded(path, lambda: model.load(Path(path), task))
    else:
        trained = loaded("pretrained:" + fingerprint(model.spec()), lambda: model.pretrained(task))
    if model.scores_prompts():
        prefix = fewshot_prefix(task, shots)
        prompts = [prefix + task.render(e) for e in scored]
        probs = softmax_rows(trained.score_many(prompts, [task.label_words] * len(scored), ctx=ctx))
        output.update(scoring="label-word log-probabilities", k_shot=len(shots), shot_source=spec["shot_source"], shots=[s.id for s in shots])
    else:
        prompts = [task.render(e) for e in scored]
        probs = np.asarray(trained.predict(scored, task, ctx), dtype=float)
        mapping = ", ".join(f"{a}->{b}" for a, b in zip(spec["own_label_words"], task.label_words))
        warning = (f"{output['model']}'s classifier head was trained on another task's labels; it is read by label index ({mapping}), "
                   "not asked this task's question")
        ctx.echo(f"warning: {warning}")
        output.update(scoring="classifier head, class i read as label i", mapping=mapping, warning=warning)
    labels = np.array([e.label for e in scored])
    metrics = {(split, k): v for k, v in classification_metrics(probs, labels).items()}
    rows = [{"stage_key": ctx.stage_key, "split": split, "example_id": e.id, "prompt": p} for e, p in zip(scored, prompts)]
    return StageResult(predictions={split: ([e.id for e in scored], probs, labels)}, metrics=metrics, output=output,
                       tables={"eval_prompts": rows})


STAGE_FUNCTIONS: dict[str, Callable[[dict, dict, WorkerContext], StageResult]] = {
    "fit": run_fit, "adapt": run_adapt, "predict": run_predict, "evaluate": run_evaluate, "eval": run_eval}


@contextmanager
def thread_budget(threads: int | None):
    """Torch and the BLAS/OpenMP pools (numpy, scikit-learn) use `threads` during the stage, then what they had."""
    if not threads:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


def execute(work: Work, emit: Callable[[Event], None]) -> Outcome:
    """Run one Work item in this process; every executor's worker calls this. Errors come back as one line."""
    identity = worker_identity()
    with thread_budget(work.threads):  # the CPUs given to this stage, so stages side by side don't oversubscribe the cores
        if "torch" in sys.modules:  # recorded with the stage: the thread count decides float summation order
            identity["threads"] = sys.modules["torch"].get_num_threads()
        emit(Event(work.key, "started", identity))
        started = time.time()
        ctx = WorkerContext(work, emit)
        try:
            result = STAGE_FUNCTIONS[work.kind](work.spec, work.inputs, ctx)
        except Exception as exc:  # KeyboardInterrupt and SystemExit propagate: the driver handles them
            first = str(exc).splitlines()[0] if str(exc) else ""
            return Outcome(work.key, None, f"{type(exc).__name__}: {first}".rstrip(": "), traceback.format_exc(), started, time.time(), identity)
    return Outcome(work.key, result, started=started, finished=time.time(), worker=identity)
