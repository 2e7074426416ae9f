"""The types plugins build on: Example, Task, Model, Trained, Loss and the StageContext."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict


class W2SError(Exception):
    """An error meant for the user: one line that names the field or file and the fix."""


class Options(BaseModel):
    """Base for every plugin's options: unknown keys are an error listing the valid ones."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


BaseOptions = Options  # for nested classes that must not pick up a sibling named Options


@dataclass(frozen=True)
class Example:
    """One labelled example; `id` is stable across runs and machines."""

    id: str
    text: str
    label: int
    choices: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def fingerprint(obj: Any) -> str:
    """A short content hash of any JSON-serialisable object."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Task:
    """A data set and its formatting. Subclasses set the class attributes and implement `load`.

    `prompt_template` is the one template used for fine-tuning prompt models and for
    inference; bump `version` whenever data handling or the template changes.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    kind: ClassVar[str] = "binary"  # "binary" | "multiple_choice" | "generation"
    description: ClassVar[str] = ""
    label_words: ClassVar[tuple[str, ...]] = ("no", "yes")
    prompt_template: ClassVar[str] = "{text}\nAnswer:"

    class Options(Options):
        pass

    def __init__(self, options: dict | None = None, data_dir: str | Path | None = None):
        self.options = self.Options(**(options or {}))
        env_dir = os.environ.get("W2S_DATA_DIR")
        self.data_dir = Path(data_dir).expanduser() if data_dir else (Path(env_dir) if env_dir else None)

    def load(self, split: str) -> list[Example]:
        """Return the examples of `split` ("train" or "test"), in a stable order."""
        raise NotImplementedError(f"task {self.name} does not implement load()")

    @property
    def num_labels(self) -> int:
        return len(self.label_words)

    def render(self, example: Example) -> str:
        """The prompt for one example: the task's single template filled in."""
        return self.prompt_template.format(text=example.text, **example.meta)

    def spec(self) -> dict:
        """What identifies this task's data and formatting, for stage keys."""
        return {
            "name": self.name,
            "version": self.version,
            "options": self.options.model_dump(mode="json"),
            "data_dir": str(self.data_dir) if self.data_dir else None,
        }


class StageContext(Protocol):
    """What a running stage may ask of the engine; only the driver writes the store."""

    stage_key: str
    seed: int
    artifact_dir: Path

    def log_curve(self, step: int, name: str, value: float) -> None:
        """Record a training-curve point (kept with the stage's outputs)."""

    def partial_predictions(self, split: str) -> dict[str, list[float]]:
        """Predictions saved by an earlier, interrupted attempt of this stage: example id -> probs."""

    def save_partial_prediction(self, split: str, example_id: str, probs: Sequence[float]) -> None:
        """Persist one prediction as soon as it arrives (for remote, paid inference)."""

    def find_job(self, provider: str) -> dict | None:
        """The remote job this stage launched before, if any (never launch a second)."""

    def remember_job(self, provider: str, job_id: str, info: dict) -> None:
        """Store a remote job's id before polling it."""

    def progress(self, iterable, total: int | None = None, desc: str = ""):
        """Wrap an iterable in the run's progress bar."""


class Trained:
    """A fitted model. `predict` returns class probabilities, shape (n, num_labels)."""

    def predict(self, examples: Sequence[Example], task: Task, ctx: StageContext | None = None) -> np.ndarray:
        raise NotImplementedError

    def save(self, path: Path) -> None:
        raise NotImplementedError

    def free(self) -> None:
        """Release memory (GPU/CPU) held by the model."""


LossFn = Callable[..., Any]  # (logits, soft_targets, step_frac, options) -> scalar tensor


class Model:
    """A learner plugin. `Options` build the model; `Train` holds the training hyperparameters.

    Capabilities: "finetune" (fit on soft labels), "linear_probe", "prompt" (score label words
    without a classifier head).
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[str]] = frozenset({"finetune"})
    aliases: ClassVar[dict[str, dict]] = {}  # alias -> default options, e.g. {"bert": {"path": "bert-base-uncased"}}

    class Options(Options):
        pass

    class Train(BaseOptions):  # not Model.Options: a class body sees its own earlier names
        pass

    def __init__(self, options: dict | None = None, train: dict | None = None):
        self.options = self.Options(**(options or {}))
        self.train = self.Train(**(train or {}))

    def spec(self) -> dict:
        """What identifies this model and its hyperparameters, for stage keys."""
        return {
            "model": self.name,
            "version": self.version,
            "options": self.options.model_dump(mode="json"),
            "train": self.train.model_dump(mode="json"),
        }

    def fit(
        self,
        examples: Sequence[Example],
        soft_targets: np.ndarray,
        loss: "Loss",
        task: Task,
        ctx: StageContext,
    ) -> Trained:
        """Train on `examples` against `soft_targets` (n, num_labels) with `loss`."""
        raise NotImplementedError

    def check_fit(self, examples: Sequence[Example], loss: "Loss", task: Task) -> None:
        """Called while planning, before anything runs: raise a W2SError if fit() with these cannot work."""

    def load(self, path: Path, task: Task) -> Trained:
        """Reload a model saved by `Trained.save`."""
        raise NotImplementedError


@dataclass(frozen=True)
class Loss:
    """A registered loss with its validated options."""

    name: str
    fn: LossFn
    options: dict

    def __call__(self, logits, soft_targets, step_frac: float):
        return self.fn(logits, soft_targets, step_frac, self.options)

    def spec(self) -> dict:
        return {"name": self.name, "options": self.options}
