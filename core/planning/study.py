"""TOML -> validated study spec. Every error names the file, the field and the fix."""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from .. import plugins
from ..api import Loss, Model, Options, Task, W2SError, fingerprint
from ..train import AdaptConfig
from ..validation import options_error
from .evals import build_evals


class StudyHeader(Options):
    name: str = Field(min_length=1)
    seeds: list[Annotated[int, Field(ge=0, le=2**32 - 1)]] = Field(default=[0], min_length=1)
    notes: str = ""
    chain_transfer: Literal["fresh", "same"] = "fresh"  # chains: a fresh transfer split per step, or one shared split
    baseline: Literal["none", "auto", "linear_probe", "prompt"] = "none"  # the strong model before fine-tuning
    baseline_k_shot: int = Field(default=4, ge=0)  # demonstrations for a prompt baseline, drawn from A
    keep_checkpoints: Literal["needed", "all"] = "needed"  # needed: a fit only its own predictions use keeps no weights
    only_tasks: list[str] | None = Field(
        default=None, min_length=1, description="with [[task]] tables: plan only these task labels (w2s study run --task)")


class GTEarlyStopping(Options):
    """Oracle diagnostic (Burns et al. 5.1.1): pick the student checkpoint by ground-truth accuracy on V."""

    n_val: int = Field(ge=2, description="validation examples carved from the end of the transfer split")
    eval_every: int = Field(default=10, ge=1, description="optimizer steps between validation checks")


class TaskSpec(Options):
    name: str
    label: str | None = None  # how results name the task; a [[task]] grid defaults to name, or name/subset
    options: dict[str, Any] = {}
    data_dir: str | None = None
    n_weak_train: int = Field(ge=2)
    n_transfer: int = Field(ge=2)
    n_test: int | None = Field(default=None, ge=1)


class ModelSpec(Options):
    model: str
    label: str | None = None
    options: dict[str, Any] = {}
    train: dict[str, Any] = {}
    adapt: dict[str, Any] | None = None  # strong models: unsupervised task adaptation first (w2s.train.AdaptConfig)


class LossSpec(Options):
    name: str
    label: str | None = None
    options: dict[str, Any] = {}


class EvalSpec(Options):
    """One `[[eval]]` table: score the study's models on another task (see core/evals.py)."""

    task: str
    label: str | None = None
    options: dict[str, Any] = {}
    data_dir: str | None = None
    splits: list[Literal["test", "test_hard"]] = Field(default=["test"], min_length=1)
    n: int | None = Field(default=None, ge=1)
    k_shot: int = Field(default=0, ge=0)
    models: list[Literal["strong_pretrained", "students", "ceiling", "weak"]] = Field(
        default=["strong_pretrained", "students", "ceiling"], min_length=1)


class ExecutorSpec(Options):
    """`[executor]`: where the stages run. How a study runs never changes what it computes: not hashed."""

    name: str = Field(default="local", description="local, processes, ray, or an executor plugin")
    jobs: int | None = Field(default=None, ge=1, description="stages at once (processes: worker processes)")
    threads: int | None = Field(default=None, ge=1, description="torch threads per stage (default: cores / jobs)")
    ray_address: str | None = Field(default=None, description="a running Ray cluster (default: RAY_ADDRESS, else a local runtime)")
    artifact_root: str | None = Field(default=None, description="checkpoint folder every worker can reach (default: beside the store)")
    gpus_per_stage: float | None = Field(default=None, ge=0, description="GPUs for each torch stage (default: 1 when the cluster has GPUs)")


class StudySpec(Options):
    study: StudyHeader
    task: TaskSpec | list[TaskSpec]  # [task], or [[task]] tables: the same protocol on every task
    weak: ModelSpec | list[ModelSpec] = []
    strong: ModelSpec | list[ModelSpec] = []
    chain: list[ModelSpec] = []  # bootstrapping M1 -> M2 -> ... -> Mn (instead of weak/strong)
    losses: list[LossSpec] = [LossSpec(name="xent")]
    gt_early_stopping: GTEarlyStopping | None = None
    eval: list[EvalSpec] = []
    executor: ExecutorSpec | None = None

    @model_validator(mode="after")
    def _lists(self):
        self.weak = self.weak if isinstance(self.weak, list) else [self.weak]
        self.strong = self.strong if isinstance(self.strong, list) else [self.strong]
        return self


def _apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise W2SError(f"--set {item!r}: expected key=value, e.g. --set task.n_test=100")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise W2SError(f"--set {key}: {part!r} is not a table")
        node[parts[-1]] = value
    return data


@dataclass
class StudyTask:
    """One task of a study: the label results use, its `[task]` table, and the built task."""

    label: str
    spec: TaskSpec
    task: Task


@dataclass
class Study:
    """A validated study: its spec plus the built tasks, models and losses."""

    path: Path | None
    toml_text: str
    spec: StudySpec
    tasks: list[StudyTask]  # the tasks to plan (study.only_tasks applied)
    weak: list[Model]
    strong: list[Model]
    losses: list[Loss]
    extra: dict = field(default_factory=dict)
    chain: list[Model] = field(default_factory=list)
    evals: list = field(default_factory=list)  # evals.EvalTarget per [[eval]] table

    @property
    def name(self) -> str:
        return self.spec.study.name

    @property
    def task(self) -> Task:
        """The study's task; a [[task]] grid has several (see `tasks`)."""
        if len(self.tasks) != 1:
            raise W2SError(f"study {self.name} has {len(self.tasks)} tasks; use study.tasks")
        return self.tasks[0].task

    @property
    def seeds(self) -> list[int]:
        return self.spec.study.seeds

    def spec_json(self) -> dict:
        return self.spec.model_dump(mode="json")

    def hash(self) -> str:
        """Identifies the definition; the executor table is left out (it changes where stages run, not results)."""
        return fingerprint({k: v for k, v in self.spec_json().items() if k != "executor"})


def parse_study(text: str, path: Path | None = None, overrides: list[str] = (), limit: int | None = None) -> Study:
    """Parse and validate a study; errors are W2SError prefixed with the file name."""
    where = str(path) if path else "<study>"
    try:
        return _parse(text, path, list(overrides), limit)
    except W2SError as exc:
        raise W2SError(f"{where}: {exc}") from None


def load_study(path: str | Path, overrides: list[str] = (), limit: int | None = None) -> Study:
    path = Path(path)
    if not path.is_file():
        raise W2SError(f"{path}: study file not found; pass the path of a .toml file, e.g. studies/quickstart.toml")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise W2SError(f"{path}: line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}); a study file is UTF-8 TOML, "
                       "e.g. studies/quickstart.toml") from None
    return parse_study(text, path, overrides, limit)


def _parse(text: str, path: Path | None, overrides: list[str], limit: int | None) -> Study:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise W2SError(f"invalid TOML: {exc}; fix the syntax at that line") from None
    except RecursionError:
        raise W2SError("invalid TOML: arrays or tables nested too deeply; flatten them") from None
    raw = _apply_overrides(raw, overrides)
    try:
        spec = StudySpec(**raw)
    except ValidationError as exc:
        raise options_error(exc, "", StudySpec) from None
    task_specs = spec.task if isinstance(spec.task, list) else [spec.task]
    if not task_specs:
        raise W2SError("task: [[task]] needs at least one table; add one per task")
    if limit:
        for tspec in task_specs:
            tspec.n_weak_train = min(tspec.n_weak_train, limit)
            tspec.n_transfer = min(tspec.n_transfer, limit)
            tspec.n_test = min(tspec.n_test or limit, limit)
        for ev in spec.eval:  # cross-task evals too: a smoke run must not pay for full eval sets
            ev.n = min(ev.n or limit, limit)
    tasks = _tasks(task_specs, path, grid=isinstance(spec.task, list))
    tasks = _selected(tasks, spec.study.only_tasks)
    weak = [_model(m, f"weak[{i}]" if len(spec.weak) > 1 else "weak") for i, m in enumerate(spec.weak)]
    strong = [_model(m, f"strong[{i}]" if len(spec.strong) > 1 else "strong") for i, m in enumerate(spec.strong)]
    losses = [plugins.make_loss(lspec.name, lspec.options, f"losses[{i}]") for i, lspec in enumerate(spec.losses)]
    for lspec, loss in zip(spec.losses, losses):
        object.__setattr__(loss, "name", lspec.label or lspec.name)
    chain = [_model(m, f"chain[{i}]") for i, m in enumerate(spec.chain)]
    _check_models(spec, chain)
    return Study(path, text, spec, tasks, weak, strong, losses, chain=chain, evals=build_evals(spec.eval, path))


def _tasks(task_specs: list[TaskSpec], path: Path | None, grid: bool) -> list[StudyTask]:
    """Build each task (data_dir resolved against the study file); labels must be unique."""
    out: list[StudyTask] = []
    for i, tspec in enumerate(task_specs):
        where = f"task[{i}]" if grid else "task"
        if tspec.data_dir and path is not None and not Path(tspec.data_dir).expanduser().is_absolute():
            tspec.data_dir = str((path.parent / tspec.data_dir).resolve())
        if tspec.data_dir and not Path(tspec.data_dir).is_dir():
            raise W2SError(f"{where}.data_dir: directory {tspec.data_dir} does not exist; point it at the folder holding the data files")
        task = plugins.make_task(tspec.name, tspec.options, tspec.data_dir, where)
        label = task_label(tspec.model_dump(), grid)
        taken = [t.label for t in out]
        if label in taken:
            raise W2SError(f"{where}: label {label!r} is already used by task[{taken.index(label)}]; give it a distinct label")
        out.append(StudyTask(label, tspec, task))
    return out


def task_label(table: dict, grid: bool) -> str:
    """How results name a task table (as stored in a spec): its label, else name/subset in a [[task]] grid, else name."""
    subset = (table.get("options") or {}).get("subset")
    return table.get("label") or (f"{table['name']}/{subset}" if grid and subset else table["name"])


def _selected(tasks: list[StudyTask], only: list[str] | None) -> list[StudyTask]:
    """The tasks named by study.only_tasks (all when unset); an unknown label is an error listing the known ones."""
    if not only:
        return tasks
    labels = [t.label for t in tasks]
    unknown = [name for name in only if name not in labels]
    if unknown:
        raise W2SError(f"study.only_tasks: no task labelled {unknown[0]!r}; the study's tasks are {', '.join(labels)}")
    return [t for t in tasks if t.label in only]


def _check_models(spec: StudySpec, chain: list[Model]) -> None:
    """A study needs weak and strong models, or a chain of at least two; chain labels must be unique."""
    if spec.chain and len(spec.chain) < 2:
        raise W2SError("chain: a chain needs at least two models (M1 fit on ground truth, M2 fit on M1's labels); add one")
    if spec.chain and (spec.weak or spec.strong):
        raise W2SError("chain: a study has either [[chain]] models or weak/strong models; move them into one study each")
    if spec.chain and (spec.gt_early_stopping or spec.study.baseline != "none"):
        raise W2SError("chain: gt_early_stopping and study.baseline apply to weak/strong pairs, not to chains; remove them")
    if not spec.chain and not (spec.weak and spec.strong):
        missing = "weak" if not spec.weak else "strong"
        raise W2SError(f"{missing}: required field is missing; add a [{missing}] table (or a [[chain]] of models)")
    labels = [m.label for m in chain]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise W2SError(f"chain[{i}]: label {label!r} is already used by chain[{labels.index(label)}]; give it a distinct label")


def _model(mspec: ModelSpec, where: str) -> Model:
    model = plugins.make_model(mspec.model, mspec.options, mspec.train, where)
    model.label = mspec.label or mspec.model
    if mspec.adapt is not None:
        if not where.startswith("strong"):
            raise W2SError(f"{where}.adapt: unsupervised task adaptation applies to strong models (the student and the "
                           "ceiling start from the adapted weights); move it to a [[strong]] table")
        if "adapt" not in model.capabilities:
            raise W2SError(f"{where}.adapt: model {mspec.model!r} has no unsupervised task adaptation; remove adapt, or use hf")
        try:
            model.adaptation = AdaptConfig(**mspec.adapt).model_dump(mode="json")
        except ValidationError as exc:
            raise options_error(exc, f"{where}.adapt", AdaptConfig) from None
    return model
