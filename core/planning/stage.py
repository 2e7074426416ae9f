"""A stage as a description: key, kind, JSON-able spec, deps, and inputs the driver resolves.

The function that runs a stage is chosen by its kind (w2s.running.stages). It gets the spec and
the resolved inputs, nothing else: example lists and arrays travel as they are, and the two
reference types below are replaced by the driver with what the store holds, right before the
stage is submitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..api import Example, Model, Task


@dataclass(frozen=True)
class PredictionsOf:
    """An input the driver resolves: an upstream stage's stored predictions on one split."""

    stage: str
    split: str


@dataclass(frozen=True)
class CheckpointOf:
    """An input the driver resolves: the location of an upstream fit stage's checkpoint."""

    stage: str


@dataclass
class Stage:
    key: str  # content hash of everything that determines the outputs
    kind: str  # fit | predict | evaluate | eval: names the stage function
    role: str  # weak | weak_labels | student | ceiling | weak_test | ... | evaluate | eval
    title: str
    labels: dict  # task, weak, strong, loss, seed: how the stage appears in results
    row: dict  # descriptive columns of the stages table
    deps: list[str]
    spec: dict  # JSON: recipes of the task, model and loss, the seed, and what else the function needs
    inputs: dict = field(default_factory=dict, repr=False)  # examples, arrays, PredictionsOf / CheckpointOf
    model: Model | None = None  # planning only: cost estimates, preflight, resources
    task: Task | None = None

    @property
    def examples(self) -> list[Example]:
        """The examples the stage fits on, labels or scores (API cost estimates)."""
        return self.inputs.get("examples") or []


def pending_models(stages: list[Stage], status: dict) -> list[Model]:
    """Each distinct model (by object) that has a stage not yet done: the ones to check before a run."""
    models: dict[int, Model] = {}
    for stage in stages:
        if stage.model is not None and status.get(stage.key) != "done":
            models.setdefault(id(stage.model), stage.model)
    return list(models.values())


@dataclass
class Split:
    name: str
    key: str
    examples: list[Example]

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.examples]

    @property
    def labels(self) -> np.ndarray:
        return np.array([e.label for e in self.examples])
