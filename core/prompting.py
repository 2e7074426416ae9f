"""Prompted scoring: k-shot demonstrations, and the generic k-shot baseline of a prompt-capable model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .api import Example, Model, Trained


def balanced_shots(pool: list[Example], k: int, num_labels: int, seed: int) -> list[Example]:
    """k examples with labels as balanced as the pool allows, drawn and ordered with `seed`."""
    if k == 0 or not pool:
        return []
    rng = np.random.default_rng(seed)
    by_label = [[pool[i] for i in rng.permutation(len(pool)) if pool[i].label == y] for y in range(num_labels)]
    chosen: list[Example] = []
    while len(chosen) < min(k, len(pool)):
        for group in by_label:
            if group and len(chosen) < k:
                chosen.append(group.pop())
    return [chosen[i] for i in rng.permutation(len(chosen))]


def fewshot_prefix(task, shots: list[Example]) -> str:
    """The k demonstrations: each rendered with the task's template and followed by its label word."""
    return "".join(f"{task.render(s)} {task.label_words[s.label]}\n\n" for s in shots)


def softmax_rows(scores: list[np.ndarray]) -> np.ndarray:
    rows = [np.exp(s - s.max()) for s in scores]
    return np.stack([r / r.sum() for r in rows])


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

    def recipe(self) -> dict:
        return {"prompted": self.strong.recipe(), "k_shot": self.k_shot, "label": self.label}

    def check_available(self) -> None:
        self.strong.check_available()

    def fit(self, examples, soft_targets, loss, task, ctx) -> "PromptedTrained":
        shots = balanced_shots(list(examples), self.k_shot, task.num_labels, ctx.seed)
        return PromptedTrained(self.strong.pretrained(task), [s.id for s in shots], shots)

    def load(self, path, task) -> "PromptedTrained":
        meta = json.loads(Path(path).read_text())
        shots = [Example(s["id"], s["text"], s["label"], meta=s["meta"]) for s in meta["shots"]]
        return PromptedTrained(self.strong.pretrained(task), meta["ids"], shots)

    def resources(self, kind: str):
        return self.strong.resources(kind)


class PromptedTrained(Trained):
    """Label-word scores of the pretrained model after a few-shot prefix."""

    def __init__(self, base: Trained, ids: list[str], shots: list[Example]):
        self.base, self.ids, self.shots = base, ids, shots

    def predict(self, examples, task, ctx=None) -> np.ndarray:
        prefix = fewshot_prefix(task, self.shots)
        scores = self.base.score_many([prefix + task.render(e) for e in examples], [task.label_words] * len(examples))
        return softmax_rows(scores) if scores else np.zeros((0, task.num_labels))

    def save(self, path: Path) -> None:
        shots = [{"id": s.id, "text": s.text, "label": s.label, "meta": s.meta} for s in self.shots]
        Path(path).write_text(json.dumps({"ids": self.ids, "shots": shots}, default=str))

    def free(self) -> None:
        self.base.free()
