"""Methods beyond one weak/strong pair: grids of model pairs, bootstrapping chains, the strong
baseline and ground-truth early stopping. engine.Protocol calls these while it builds the DAG.

Grid rule ("weak < strong"): models are ordered by first appearance in `weak` then `strong`
(duplicates, by spec, keep their first position), and a pair runs when the weak model comes
before the strong one. Disjoint lists give every weak x strong pair; a ladder listed in both
(weak = [a, b], strong = [b, c]) gives a->b, a->c, b->c, as the reference sweep.py does for
increasing model sizes. A weak model's stages do not depend on the strong one, so each weak
model is fit once per seed and shared by all its pairs.

Chain M1 -> ... -> Mn: M1 is fit on ground truth on A; step j fits M(j+1) on the labels M(j)
gives on transfer split B_j (fresh B_1..B_(n-1), disjoint; or one shared B with
chain_transfer = "same") and its ceiling on B_j's ground truth. The direct transfer M1 -> Mn
is fit on B_(n-1), the same examples as the last chain step, against the same ceiling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .api import Example, Model, Trained, W2SError, fingerprint

if TYPE_CHECKING:
    from .engine import Protocol, Split, Stage


@dataclass
class Validation:
    """What a fit sees for oracle early stopping: ground-truth labelled V and how often to check."""

    examples: list[Example]
    labels: np.ndarray
    eval_every: int


def grid_pairs(weak: list[Model], strong: list[Model]) -> list[tuple[Model, list[Model]]]:
    """Each weak model with the strong models it runs against (see the module docstring)."""
    position: dict[str, int] = {}
    for model in weak + strong:
        position.setdefault(fingerprint(model.spec()), len(position))
    rank = {id(m): position[fingerprint(m.spec())] for m in weak + strong}
    return [(w, [s for s in strong if rank[id(w)] < rank[id(s)]]) for w in weak]


def baseline_model(strong: Model, kind: str, k_shot: int = 4) -> Model | None:
    """The strong model before fine-tuning, fit on A's ground truth (None when it has none).

    prompt: k-shot prompting (demonstrations drawn from A) for prompt-capable models, e.g. causal
    LMs with hf head = "lm" or openai; linear_probe: a linear head on frozen features (encoders),
    fit by logistic regression to convergence when the model has that mode;
    auto: prompt when the model can, else linear_probe when it can, else none.
    """
    from .evals import prompt_capable

    if kind == "none":
        return None
    if kind == "prompt" or (kind == "auto" and prompt_capable(strong)):
        if hasattr(strong, "prompted"):
            return strong.prompted(k_shot)
        if prompt_capable(strong) and hasattr(strong, "pretrained"):
            return PromptBaseline(strong, k_shot)
        raise W2SError(f"study.baseline = 'prompt': model {strong.label!r} cannot score prompts (hf: set head = \"lm\"); use 'linear_probe' or 'auto'")
    if "linear_probe" not in strong.capabilities:
        if kind == "auto":
            return None
        raise W2SError(f"study.baseline: model {strong.label!r} has no linear_probe mode; use baseline = 'auto' or 'none'")
    # a probe fit to convergence when the model offers one; the strong model's fine-tuning lr and
    # epochs leave a freshly initialised head near chance (0.52 on SST-2 with MiniLM, 500 examples)
    mode = "logistic_regression" if "logistic_regression" in strong.capabilities else "linear_probe"
    train = {**strong.train.model_dump(), "mode": mode}
    model = type(strong)(strong.options.model_dump(), train)
    model.label = f"{strong.label} (pretrained)"
    return model


class PromptBaseline(Model):
    """A prompt-capable strong model as released, shown k ground-truth demonstrations from its fit split."""

    name = "prompt-baseline"
    version = "1"
    capabilities = frozenset({"prompt"})

    def __init__(self, strong: Model, k_shot: int):
        self.strong, self.k_shot = strong, k_shot
        self.options, self.train = strong.options, strong.train
        self.label = f"{strong.label} (pretrained, {k_shot}-shot)"

    def spec(self) -> dict:
        return {"model": self.name, "version": self.version, "strong": self.strong.spec(), "k_shot": self.k_shot}

    def fit(self, examples, soft_targets, loss, task, ctx) -> "PromptedTrained":
        from .evals import balanced_shots

        shots = balanced_shots(list(examples), self.k_shot, task.num_labels, ctx.seed)
        return PromptedTrained(self.strong.pretrained(task), [s.id for s in shots], shots)

    def load(self, path, task) -> "PromptedTrained":
        meta = json.loads(Path(path).read_text())
        shots = [Example(s["id"], s["text"], s["label"], meta=s["meta"]) for s in meta["shots"]]
        return PromptedTrained(self.strong.pretrained(task), meta["ids"], shots)


class PromptedTrained(Trained):
    """Label-word scores of the pretrained model after a few-shot prefix."""

    def __init__(self, base: Trained, ids: list[str], shots: list[Example]):
        self.base, self.ids, self.shots = base, ids, shots

    def predict(self, examples, task, ctx=None) -> np.ndarray:
        from .evals import fewshot_prefix, softmax_rows

        prefix = fewshot_prefix(task, self.shots)
        scores = self.base.score_many([prefix + task.render(e) for e in examples], [task.label_words] * len(examples))
        return softmax_rows(scores) if scores else np.zeros((0, task.num_labels))

    def save(self, path: Path) -> None:
        shots = [{"id": s.id, "text": s.text, "label": s.label, "meta": s.meta} for s in self.shots]
        Path(path).write_text(json.dumps({"ids": self.ids, "shots": shots}, default=str))

    def free(self) -> None:
        self.base.free()


def plan_chain(p: "Protocol", seed: int, weak_train: "Split", test: "Split") -> list[tuple["Stage", str, dict]]:
    """Stages of the bootstrapping chain for one seed: every step, the ceilings and the direct transfer."""
    models = p.study.chain
    steps = len(models) - 1
    transfers = p.transfer_splits(seed, steps if p.study.spec.study.chain_transfer == "fresh" else 1)
    transfers = transfers if len(transfers) == steps else transfers * steps
    base = {"task": p.task.name, "seed": seed}
    first = p.fit_stage("weak", models[0], weak_train, p.ground_truth, None, seed, {**base, "weak": models[0].label, "strong": None, "loss": None})
    first_test = p.predict_stage("weak_test", first, test, seed, first.labels)
    links = [(first, "weak", first.labels), (first_test, "weak_test", first.labels)]
    for loss in p.study.losses:
        supervisor, supervisor_test = first, first_test
        for j, (model, split) in enumerate(zip(models[1:], transfers), 1):
            labels = {**base, "weak": models[j - 1].label, "strong": model.label, "loss": loss.name}
            student, student_test, ceiling_test, step_links = _chain_step(p, supervisor, supervisor_test, model, split, test, loss, seed, labels)
            links += step_links
            supervisor, supervisor_test = student, student_test
        labels = {**base, "weak": models[0].label, "strong": models[-1].label, "loss": loss.name}
        first_labels = p.predict_stage("weak_labels", first, transfers[-1], seed, labels)
        direct = p.fit_stage("student", models[-1], transfers[-1], loss, first_labels, seed, labels)
        direct_test = p.predict_stage("student_test", direct, test, seed, labels)
        evaluate = p.evaluate_stage(first_test, direct_test, ceiling_test, seed, labels, role="chain_direct")
        links += [(first_labels, "weak_labels", labels), (direct, "student", labels), (direct_test, "student_test", labels),
                  (evaluate, "chain_direct", labels)]
    return links


def _chain_step(p: "Protocol", supervisor, supervisor_test, model, split, test, loss, seed, labels):
    """One chain step: the supervisor labels `split`, `model` learns them; its ceiling learns ground truth."""
    weak_labels = p.predict_stage("weak_labels", supervisor, split, seed, labels)
    student = p.fit_stage("student", model, split, loss, weak_labels, seed, labels)
    student_test = p.predict_stage("student_test", student, test, seed, labels)
    ceiling = p.fit_stage("ceiling", model, split, p.ground_truth, None, seed, {**labels, "loss": None})
    ceiling_test = p.predict_stage("ceiling_test", ceiling, test, seed, ceiling.labels)
    evaluate = p.evaluate_stage(supervisor_test, student_test, ceiling_test, seed, labels, role="chain_step")
    links = [(weak_labels, "weak_labels", labels), (student, "student", labels), (student_test, "student_test", labels),
             (ceiling, "ceiling", labels), (ceiling_test, "ceiling_test", labels), (evaluate, "chain_step", labels)]
    return student, student_test, ceiling_test, links
