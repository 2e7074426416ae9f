"""Cross-task evaluation: `[[eval]]` tables score the study's models on other tasks (e.g. ETHICS).

Which models: "strong_pretrained" (each strong model before training), "students", "ceiling" and
"weak". An eval stage is content-addressed like every other stage: its key hashes the eval task's
spec and data, the scored model (its fit stage key, or its spec when pretrained), k and the seed.

How a model is scored:
- Prompt-capable models (capability "prompt", e.g. hf with head = "lm") compare the summed
  log-probabilities of the eval task's label words after the prompt. With k_shot = k, k
  label-balanced examples, drawn with the seed from the eval task's train split, are prepended,
  each rendered with the same template and followed by its label word. When the eval task has no
  train file (ETHICS commonsense in ../shared/data) the shots come from the rows of the scored
  file that are not scored; the stage output records the shot source and ids.
- Classifier-head models are scored only when the eval task has as many labels as the task they
  were trained on. The mapping is by index: class i of the training task is read as label word i
  of the eval task (sst2 negative/positive -> justice unreasonable/reasonable); the stage output
  states it. Otherwise, and for classifier heads before training, a "skipped" stage with the
  reason is stored and printed in the table, never dropped silently.

Every scored example's rendered prompt is stored in the `eval_prompts` table (so are the prompts a
prompt-capable model scores in the protocol's own predict stages).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import plugins
from ..api import Model, Task, W2SError, fingerprint
from ..prompting import balanced_shots
from .stage import CheckpointOf, Stage

ROLE_OF = {"students": "student", "ceiling": "ceiling", "weak": "weak"}
SPLIT_NAMES = {"test": "Test", "test_hard": "Hard Test"}


@dataclass
class EvalTarget:
    """One `[[eval]]` table, validated: its label and one built task per split."""

    index: int
    label: str
    spec: object  # study.EvalSpec
    tasks: dict[str, Task]


def build_evals(specs, study_path: Path | None) -> list[EvalTarget]:
    """Validate the `[[eval]]` tables and build their tasks (errors name eval[i] and the fix)."""
    out = []
    for i, spec in enumerate(specs):
        where = f"eval[{i}]"
        data_dir = spec.data_dir
        if data_dir and study_path is not None and not Path(data_dir).expanduser().is_absolute():
            data_dir = str((study_path.parent / data_dir).resolve())
        if data_dir and not Path(data_dir).expanduser().is_dir():
            raise W2SError(f"{where}.data_dir: directory {data_dir} does not exist; point it at the folder holding the data files")
        if "split" in spec.options:
            raise W2SError(f"{where}.options.split: choose splits with {where}.splits = [\"test\", \"test_hard\"] instead")
        tasks = {split: make_eval_task(spec, split, data_dir, where) for split in dict.fromkeys(spec.splits)}
        subset = spec.options.get("subset")
        out.append(EvalTarget(i, spec.label or (f"{spec.task}/{subset}" if subset else spec.task), spec, tasks))
    labels = [t.label for t in out]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise W2SError(f"eval: label(s) {dupes} used twice; give each [[eval]] a distinct label")
    return out


def make_eval_task(spec, split: str, data_dir, where: str) -> Task:
    options = dict(spec.options)
    if split == "test_hard":
        entry = plugins.lookup("task", spec.task, where)
        if "split" not in entry.obj.Options.model_fields:
            raise W2SError(f"{where}.splits: task {spec.task!r} has no Hard Test (no `split` option); use splits = [\"test\"]")
        options["split"] = "test_hard"
    return plugins.make_task(spec.task, options, data_dir, where)


class EvalPlanner:
    """Adds the eval stages of a study to a Protocol's links."""

    def __init__(self, protocol):
        self.protocol = protocol
        self.study = protocol.study
        self._data: dict = {}

    def sample(self, target: EvalTarget, split: str, seed: int):
        """(scored examples, shot pool, shot source), or a W2SError when the split's file is missing."""
        key = (target.index, split, seed)
        if key not in self._data:
            task, spec = target.tasks[split], target.spec
            examples = task.load("test")
            n = min(spec.n or len(examples), len(examples))
            idx = np.sort(np.random.default_rng(seed + 20_000).permutation(len(examples))[:n])
            scored = [examples[i] for i in idx]
            pool, source = [], "none (k_shot = 0)"
            if spec.k_shot:
                try:
                    pool, source = task.load("train"), "train split"
                except W2SError:
                    chosen = {e.id for e in scored}
                    pool, source = [e for e in examples if e.id not in chosen], "unscored rows of the test file (no train file)"
            self._data[key] = (scored, pool, source)
        return self._data[key]

    def links(self, links: list) -> list:
        """`links` with each fit's eval stages right after it, then the pretrained strong models' evals."""
        targets = self.study.evals
        if not targets:
            return links
        out, seen = [], set()
        for stage, role, labels in links:
            out.append((stage, role, labels))
            if stage.kind != "fit" or (stage.key, role) in seen:
                continue
            seen.add((stage.key, role))
            for target in targets:
                if role in {ROLE_OF[m] for m in target.spec.models if m in ROLE_OF}:
                    out += self.for_model(target, stage.model, labels, fit=stage, source=role)
        for seed in self.study.seeds:
            for strong in self.study.strong:
                base = {"task": self.protocol.label, "weak": None, "strong": strong.label, "loss": None, "seed": seed}
                for target in targets:
                    if "strong_pretrained" in target.spec.models:
                        out += self.for_model(target, strong, base, fit=None, source="strong_pretrained")
        return out

    def for_model(self, target: EvalTarget, model: Model, labels: dict, fit, source: str) -> list:
        stages = []
        for split in target.tasks:
            stage = self.stage(target, split, model, labels, fit, source)
            stages.append((stage, "eval", {**labels, "task": target.label}))
        return stages

    def stage(self, target: EvalTarget, split: str, model: Model, labels: dict, fit, source: str) -> Stage:
        seed, task = labels["seed"], target.tasks[split]
        model_key = fit.key if fit is not None else {"pretrained": model.spec()}
        info = {"eval": target.label, "split": split, "source": source, "model": model.label,
                "weak": labels.get("weak"), "strong": labels.get("strong"), "loss": labels.get("loss")}
        reason = self.skip_reason(target, split, model, fit, seed)
        keyed = {"kind": "eval", "task": task.identity(), "model": model_key, "seed": seed, "k": target.spec.k_shot, "v": 1}
        spec = {"task": task.spec(), "model": model.recipe(), "seed": seed, "split": split, "info": info, "skipped": reason,
                "own_label_words": list(self.protocol.task.label_words)}
        inputs = {"examples": [], "shots": [], "checkpoint": CheckpointOf(fit.key) if fit is not None else None}
        if reason is None:
            scored, pool, source_of_shots = self.sample(target, split, seed)
            keyed["data"] = fingerprint([[e.id, e.text, e.label] for e in scored])
            prompted = target.spec.k_shot and model.scores_prompts()
            keyed["shots"] = fingerprint([e.id for e in pool]) if prompted else None
            shots = balanced_shots(pool, target.spec.k_shot, task.num_labels, seed) if prompted else []
            inputs.update(examples=scored, shots=shots)
            spec["shot_source"] = source_of_shots
        else:
            keyed["skipped"] = reason
        key = fingerprint(keyed)
        who = {"strong_pretrained": f"{model.label} (pretrained)", "student": f"student {labels.get('loss')} {model.label}"}.get(source, f"{source} {model.label}")
        title = f"eval {who} on {target.label} {SPLIT_NAMES[split]}" + (" (skipped)" if reason else "")
        deps = [fit.key] if fit is not None else []
        row = {"kind": "eval", "role": "eval", "task": target.label, "model": model.label, "model_json": json.dumps(model.spec(), default=str),
               "loss": labels.get("loss"), "seed": seed, "spec_json": json.dumps(keyed, default=str), "upstream_json": json.dumps(deps)}
        return self.protocol.add(Stage(key, "eval", "eval", title, {**labels, "task": target.label}, row, deps, spec, inputs, model, task))

    def skip_reason(self, target: EvalTarget, split: str, model: Model, fit, seed: int) -> str | None:
        """Why this model cannot be scored on this eval split, or None."""
        try:
            self.sample(target, split, seed)
        except W2SError as exc:
            if split != "test_hard":
                raise W2SError(f"eval[{target.index}] ({target.label}): {exc}") from None
            return f"no Hard Test data ({str(exc).split('; ')[0]})"  # the missing file, without the data_dir hint
        if model.scores_prompts():
            return None
        if fit is None:
            return f"{model.label} has no prompt scoring and its classifier head is untrained before fine-tuning (hf: set head = \"lm\")"
        own, other = self.protocol.task, target.tasks[split]
        if own.num_labels != other.num_labels:
            return f"label spaces differ: {own.name} has {own.num_labels} labels, {target.label} has {other.num_labels}"
        return None


def plan_evals(protocol, links: list) -> list:
    """The protocol's links plus its `[[eval]]` stages."""
    return EvalPlanner(protocol).links(links)


