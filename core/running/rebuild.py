"""A worker's side of a stage: rebuild the task, model and loss from their JSON recipes, keep recently
used fitted models in this process's memory, and publish checkpoints atomically."""

from __future__ import annotations

import os
import shutil
import uuid
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Callable

from .. import plugins
from ..api import Loss, Model, Task, Trained
from ..prompting import PromptBaseline

KEEP_LOADED = 2  # fitted models kept in a worker's memory for the stages that follow their fit
_loaded: OrderedDict[str, Trained] = OrderedDict()


def task_from(recipe: dict) -> Task:
    return plugins.make_task(recipe["name"], recipe["options"], recipe["data_dir"], "task")


def model_from(recipe: dict) -> Model:
    if "prompted" in recipe:  # the generic k-shot baseline around a prompt-capable model
        model = PromptBaseline(model_from(recipe["prompted"]), recipe["k_shot"])
    else:
        model = plugins.make_model(recipe["model"], recipe["options"], recipe["train"], "model")
    model.label = recipe["label"]
    return model


def loss_from(recipe: dict) -> Loss:
    loss = plugins.make_loss(recipe["name"], recipe["options"], "loss")
    return replace(loss, name=recipe["label"]) if recipe["label"] != loss.name else loss


def loaded(key: str, load: Callable[[], Trained]) -> Trained:
    """A fitted (or pretrained) model from this process's memory, else loaded and kept (least recently used go)."""
    if key in _loaded:
        _loaded.move_to_end(key)
        return _loaded[key]
    return keep(key, load())


def keep(key: str, trained: Trained) -> Trained:
    _loaded[key] = trained
    _loaded.move_to_end(key)
    while len(_loaded) > KEEP_LOADED:
        _loaded.popitem(last=False)[1].free()
    return trained


def save_checkpoint(trained: Trained, folder: Path) -> Path:
    """A fitted model published as the stage's checkpoint (see `publish`)."""
    return publish(folder, trained.save)


def publish(folder: Path, write: Callable[[Path], None]) -> Path:
    """`write(path)` aside, then rename into place as `folder/checkpoint`: a reader never sees half a checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(".checkpoint-*"):  # what a killed attempt of this stage left (the claim is ours)
        _remove(leftover)
    final, token = folder / "checkpoint", uuid.uuid4().hex[:12]
    staged = folder / f".checkpoint-{token}.tmp"
    write(staged)
    if final.exists():
        old = folder / f".checkpoint-{token}.old"
        os.replace(final, old)
        os.replace(staged, final)
        _remove(old)
    else:
        os.replace(staged, final)
    return final


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
