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

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import plugins
from .api import Example, Model, Task, W2SError, fingerprint
from .metrics import classification_metrics

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


def prompt_capable(model: Model) -> bool:
    """True when the model scores label words itself (capability "prompt", enabled in its options)."""
    return "prompt" in model.capabilities and getattr(model, "scores_prompts", lambda: True)()


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


def fewshot_prefix(task: Task, shots: list[Example]) -> str:
    """The k demonstrations: each rendered with the task's template and followed by its label word."""
    return "".join(f"{task.render(s)} {task.label_words[s.label]}\n\n" for s in shots)


def softmax_rows(scores: list[np.ndarray]) -> np.ndarray:
    rows = [np.exp(s - s.max()) for s in scores]
    return np.stack([r / r.sum() for r in rows])


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
                base = {"task": self.protocol.task.name, "weak": None, "strong": strong.label, "loss": None, "seed": seed}
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

    def stage(self, target: EvalTarget, split: str, model: Model, labels: dict, fit, source: str):
        from .engine import Stage

        seed, task = labels["seed"], target.tasks[split]
        model_key = fit.key if fit is not None else {"pretrained": model.spec()}
        info = {"eval": target.label, "split": split, "source": source, "model": model.label,
                "weak": labels.get("weak"), "strong": labels.get("strong"), "loss": labels.get("loss")}
        reason = self.skip_reason(target, split, model, fit, seed)
        spec = {"kind": "eval", "task": task.spec(), "model": model_key, "seed": seed, "k": target.spec.k_shot, "v": 1}
        if reason is None:
            scored, pool, _ = self.sample(target, split, seed)
            spec["data"] = fingerprint([[e.id, e.text, e.label] for e in scored])
            spec["shots"] = fingerprint([e.id for e in pool]) if target.spec.k_shot and prompt_capable(model) else None
            run = lambda rc: self.score(rc, target, split, model, fit, info)  # noqa: E731
        else:
            spec["skipped"] = reason
            run = lambda rc: skipped_result(info, reason)  # noqa: E731
        key = fingerprint(spec)
        who = {"strong_pretrained": f"{model.label} (pretrained)", "student": f"student {labels.get('loss')} {model.label}"}.get(source, f"{source} {model.label}")
        title = f"eval {who} on {target.label} {SPLIT_NAMES[split]}" + (" (skipped)" if reason else "")
        row = {"kind": "eval", "role": "eval", "task": target.label, "model": model.label, "model_json": _json(model.spec()),
               "loss": labels.get("loss"), "seed": seed, "spec_json": _json(spec), "upstream_json": _json([fit.key] if fit else [])}
        deps = [fit.key] if fit is not None else [pretrained_key(model)]
        scored = self.sample(target, split, seed)[0] if reason is None else []  # for API cost estimates
        return self.protocol.add(Stage(key, "eval", "eval", title, {**labels, "task": target.label}, row, deps, run, model, task,
                                       examples=scored))

    def skip_reason(self, target: EvalTarget, split: str, model: Model, fit, seed: int) -> str | None:
        """Why this model cannot be scored on this eval split, or None."""
        try:
            self.sample(target, split, seed)
        except W2SError as exc:
            if split != "test_hard":
                raise W2SError(f"eval[{target.index}] ({target.label}): {exc}") from None
            return f"no Hard Test data ({str(exc).split('; ')[0]})"  # the missing file, without the data_dir hint
        if prompt_capable(model):
            return None
        if fit is None:
            return f"{model.label} has no prompt scoring and its classifier head is untrained before fine-tuning (hf: set head = \"lm\")"
        own, other = self.protocol.task, target.tasks[split]
        if own.num_labels != other.num_labels:
            return f"label spaces differ: {own.name} has {own.num_labels} labels, {target.label} has {other.num_labels}"
        return None

    def score(self, rc, target: EvalTarget, split: str, model: Model, fit, info: dict):
        """Score the sampled examples; store probabilities, metrics and every rendered prompt."""
        from .engine import StageResult

        task = target.tasks[split]
        scored, pool, shot_source = self.sample(target, split, rc.seed)
        trained = rc.engine.trained(fit) if fit is not None else pretrained(rc, model, task)
        output = dict(info)
        if prompt_capable(model):
            shots = balanced_shots(pool, target.spec.k_shot, task.num_labels, rc.seed)
            prefix = fewshot_prefix(task, shots)
            prompts = [prefix + task.render(e) for e in scored]
            rc.split = split  # a remote scorer stores each answer under it as it arrives (resumable, never asked twice)
            resumable = {"ctx": rc} if "ctx" in inspect.signature(trained.score_many).parameters else {}
            probs = softmax_rows(trained.score_many(prompts, [task.label_words] * len(scored), **resumable))
            output.update(scoring="label-word log-probabilities", k_shot=len(shots), shot_source=shot_source, shots=[s.id for s in shots])
        else:
            prompts = [task.render(e) for e in scored]
            probs = np.asarray(trained.predict(scored, task, rc), dtype=float)
            own = self.protocol.task
            output.update(scoring="classifier head, class i read as label i",
                          mapping=", ".join(f"{a}->{b}" for a, b in zip(own.label_words, task.label_words)))
        labels = np.array([e.label for e in scored])
        metrics = {(split, k): v for k, v in classification_metrics(probs, labels).items()}
        rows = [{"stage_key": rc.stage_key, "split": split, "example_id": e.id, "prompt": p} for e, p in zip(scored, prompts)]
        return StageResult(predictions={split: ([e.id for e in scored], probs, labels)}, metrics=metrics,
                           output=output, tables={"eval_prompts": rows})


def prompt_tables(stage_key: str, split: str, examples: list[Example], task: Task, model: Model) -> dict:
    """The rendered prompts a prompt-capable model scored in a protocol predict stage (table eval_prompts)."""
    if not prompt_capable(model):
        return {}
    return {"eval_prompts": [{"stage_key": stage_key, "split": split, "example_id": e.id, "prompt": task.render(e)} for e in examples]}


def pretrained_key(model: Model) -> str:
    """The engine's in-memory slot for a pretrained model, shared by its eval stages."""
    return "pretrained:" + fingerprint(model.spec())


def pretrained(rc, model: Model, task: Task):
    """The model before training, loaded once and kept while eval stages still need it."""
    cache = rc.engine._trained
    key = pretrained_key(model)
    if key not in cache:
        cache[key] = model.pretrained(task)
    return cache[key]


def skipped_result(info: dict, reason: str):
    from .engine import StageResult

    return StageResult(output={**info, "skipped": reason})


def _json(obj) -> str:
    import json

    return json.dumps(obj, default=str)


def plan_evals(protocol, links: list) -> list:
    """The protocol's links plus its `[[eval]]` stages."""
    return EvalPlanner(protocol).links(links)


# -- the Test / Hard Test table -------------------------------------------------------------------

def eval_rows(store, study_id: str) -> list[dict]:
    """One row per eval stage of a study: its output JSON, accuracy, n and status."""
    import json

    sql = """
        SELECT DISTINCT st.key, st.status, st.output_json, ss.seed,
            (SELECT value FROM metrics m WHERE m.stage_key = st.key AND m.name = 'accuracy') AS accuracy,
            (SELECT value FROM metrics m WHERE m.stage_key = st.key AND m.name = 'n') AS n
        FROM study_stages ss JOIN stages st ON st.key = ss.stage_key
        WHERE ss.study_id = ? AND ss.role = 'eval'
        ORDER BY st.created
    """
    out = []
    for r in store.db.query(sql, [study_id]):
        info = json.loads(r["output_json"] or "{}")
        out.append({**info, "key": r["key"], "status": r["status"], "seed": r["seed"], "accuracy": r["accuracy"], "n": r["n"]})
    return out


def model_name(row: dict) -> str:
    source = row.get("source")
    if source == "strong_pretrained":
        return f"{row['model']} (pretrained)"
    if source == "student":
        return f"student {row['loss']} ({row['weak']}->{row['strong']})"
    return f"{source} ({row['model']})"


def eval_table(store, study_id: str) -> str:
    """The Test / Hard Test table: a row per model and split, a column per eval task, plus the average."""
    from tabulate import tabulate

    rows = [r for r in eval_rows(store, study_id) if r.get("eval")]
    if not rows:
        return ""
    evals = list(dict.fromkeys(r["eval"] for r in rows))
    cells: dict = {}
    for r in rows:
        cells[(r["seed"], model_name(r), r["split"], r["eval"])] = r
    lines, notes = [], {}
    rank = {"strong_pretrained": 0, "weak": 1, "student": 2, "ceiling": 3}
    models = sorted(dict.fromkeys(k[1] for k in cells), key=lambda m: min(rank.get(r["source"], 9) for r in rows if model_name(r) == m))
    keys = sorted({k[:3] for k in cells}, key=lambda k: (k[0], models.index(k[1]), list(SPLIT_NAMES).index(k[2])))
    for seed, name, split in keys:
        row = [seed, name, SPLIT_NAMES.get(split, split)]
        present = [cells.get((seed, name, split, ev)) for ev in evals]
        row += [cell_text(c, notes) for c in present]
        accs = [c["accuracy"] for c in present if c and c.get("accuracy") is not None and not c.get("skipped")]
        row.append(f"{np.mean(accs):.3f} ({len(accs)}/{sum(c is not None for c in present)})" if accs else "-")
        lines.append(row)
    table = tabulate(lines, headers=["seed", "model", "split", *evals, "average"], tablefmt="simple")
    foot = [f"[{i}] skipped: {reason}" for reason, i in notes.items()]
    title = "Cross-task evaluation (accuracy (n scored); average over the scored cells of the row, (scored/planned)):"
    return "\n".join([title, table, *foot])


def cell_text(cell: dict | None, notes: dict) -> str:
    if cell is None:
        return "-"
    if cell.get("skipped"):
        mark = notes.setdefault(cell["skipped"], len(notes) + 1)
        return f"skipped [{mark}]"
    if cell["status"] != "done" or cell.get("accuracy") is None:
        return cell["status"]
    return f"{cell['accuracy']:.3f} (n={int(cell['n'] or 0)})"
