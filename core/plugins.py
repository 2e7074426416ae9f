"""PluginManager("w2s"): entry points load one by one; a broken plugin warns and never kills."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import entry_points

import click
import pluggy

from . import hookspecs
from .api import Loss, Model, Task, W2SError
from .validation import did_you_mean, options_error

pm = pluggy.PluginManager("w2s")
pm.add_hookspecs(hookspecs)

ENTRY_POINT_GROUP = "w2s"
_sources: dict[str, dict] = {}  # plugin name -> {"source": ..., "version": ...}
_loaded = False
load_warnings: list[str] = []


def load_plugins() -> None:
    """Load every `w2s` entry point (or only those in W2S_LOAD_PLUGINS), each on its own."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    wanted = os.environ.get("W2S_LOAD_PLUGINS")
    only = {n.strip() for n in wanted.split(",") if n.strip()} if wanted is not None else None
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if only is not None and ep.name not in only:
            continue
        if pm.has_plugin(ep.name):
            continue
        try:
            module = ep.load()
        except Exception as exc:  # a broken third-party plugin must not break w2s
            message = f"w2s: plugin {ep.name!r} ({ep.value}) failed to load and was skipped: {type(exc).__name__}: {exc}"
            load_warnings.append(message)
            click.echo(message.splitlines()[0], err=True)
            continue
        pm.register(module, name=ep.name)
        dist = ep.dist
        _sources[ep.name] = {
            "source": f"entry point {ep.value}" + (f" in {dist.name}" if dist else ""),
            "version": dist.version if dist else None,
            "distribution": dist.name if dist else None,
        }


@dataclass(frozen=True)
class Registered:
    name: str
    kind: str  # task | model | loss | executor
    plugin: str
    obj: object
    defaults: dict | None = None  # model aliases: default options
    options: type | None = None  # loss options model

    @property
    def version(self) -> str | None:
        return getattr(self.obj, "version", None) or _sources.get(self.plugin, {}).get("version")

    @property
    def source(self) -> str:
        return _sources.get(self.plugin, {}).get("source", f"registered at runtime ({self.plugin})")

    @property
    def description(self) -> str:
        doc = getattr(self.obj, "description", "") or (getattr(self.obj, "__doc__", "") or "")
        return doc.strip().splitlines()[0] if doc.strip() else ""


def _collect(hook_name: str, kind: str) -> dict[str, Registered]:
    load_plugins()
    found: dict[str, Registered] = {}
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():

        def register(obj, *args, _plugin=impl.plugin_name, **kwargs):
            for entry in _entries(kind, _plugin, obj, *args, **kwargs):
                found[entry.name] = entry

        impl.function(register)
    return found


def _entries(kind, plugin, obj, *args, **kwargs):
    if kind == "task":
        yield Registered(obj.name, "task", plugin, obj)
    elif kind == "model":
        yield Registered(obj.name, "model", plugin, obj, defaults={})
        for alias, defaults in getattr(obj, "aliases", {}).items():
            yield Registered(alias, "model", plugin, obj, defaults=dict(defaults))
    elif kind == "loss":
        name, fn = obj, args[0]
        yield Registered(name, "loss", plugin, fn, options=kwargs.get("options"))
    elif kind == "executor":
        yield Registered(obj.name, "executor", plugin, obj)


def tasks() -> dict[str, Registered]:
    return _collect("register_tasks", "task")


def models() -> dict[str, Registered]:
    return _collect("register_models", "model")


def losses() -> dict[str, Registered]:
    return _collect("register_losses", "loss")


def executors() -> dict[str, Registered]:
    return _collect("register_executors", "executor")


def everything() -> list[Registered]:
    return [*tasks().values(), *models().values(), *losses().values(), *executors().values()]


def lookup(kind: str, name: str, where: str) -> Registered:
    """Find a registered task/model/loss or raise a one-line error naming `where`."""
    table = {"task": tasks, "model": models, "loss": losses}[kind]()
    if name in table:
        return table[name]
    hint = did_you_mean(name, table)
    valid = ", ".join(sorted(table)) or "none installed"
    raise W2SError(f"{where}: unknown {kind} {name!r}{hint}; valid: {valid}")


def make_task(name: str, options: dict | None, data_dir, where: str) -> Task:
    entry = lookup("task", name, where)
    try:
        return entry.obj(options or {}, data_dir=data_dir)
    except Exception as exc:
        raise options_error(exc, f"{where}.options", entry.obj.Options) from None


def make_model(name: str, options: dict | None, train: dict | None, where: str) -> Model:
    entry = lookup("model", name, where)
    cls = entry.obj
    merged = {**(entry.defaults or {}), **(options or {})}
    for part, model_cls, values in (("options", cls.Options, merged), ("train", cls.Train, train or {})):
        try:
            model_cls(**values)
        except Exception as exc:
            raise options_error(exc, f"{where}.{part}", model_cls) from None
    model = cls(merged, train or {})
    model.label = name
    return model


def make_loss(name: str, options: dict | None, where: str) -> Loss:
    entry = lookup("loss", name, where)
    opts = options or {}
    if entry.options is not None:
        try:
            opts = entry.options(**opts).model_dump(mode="json")
        except Exception as exc:
            raise options_error(exc, f"{where}.options", entry.options) from None
    elif opts:
        raise W2SError(f"{where}.options: loss {name!r} takes no options; remove {sorted(opts)}")
    return Loss(name, entry.obj, opts, registered=name)


def register_inline(module, name: str):
    """Register an object with hookimpls (tests and notebooks); returns a callable that unregisters."""
    load_plugins()
    pm.register(module, name=name)
    return lambda: pm.unregister(name=name)
