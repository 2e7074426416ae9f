"""Install and uninstall third-party plugins with pip in w2s's own interpreter (like `llm install`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution, entry_points
from pathlib import Path

from .. import plugins
from ..api import W2SError, WeightsPackage
from ..plugins import ENTRY_POINT_GROUP

REGISTRY = Path(__file__).resolve().parents[2] / "registry.toml"

# Printed by a fresh interpreter after an install: what a new `w2s` process would load.
PROBE = """
import json, contextlib, io
from w2s import plugins
with contextlib.redirect_stderr(io.StringIO()):
    plugins.load_plugins()
    found = [{"name": r.name, "kind": r.kind, "plugin": r.plugin} for r in plugins.everything()]
print(json.dumps({"registered": found, "warnings": plugins.load_warnings}))
"""


def registry_entries(path: Path = REGISTRY) -> list[dict]:
    """The [[plugin]] entries of registry.toml (empty when w2s runs from a wheel without it)."""
    if not path.is_file():
        return []
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")).get("plugin", [])
    except tomllib.TOMLDecodeError as exc:
        raise W2SError(f"{path}: invalid TOML: {exc}; fix that line") from None


def installed_entry_points() -> list[dict]:
    """Every `w2s` entry point from package metadata, without importing any plugin."""
    return [
        {"name": ep.name, "value": ep.value, "distribution": ep.dist.name if ep.dist else None,
         "version": ep.dist.version if ep.dist else None}
        for ep in entry_points(group=ENTRY_POINT_GROUP)
    ]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def install_target(target: str) -> tuple[str, str | None]:
    """(pip argument, registry entry name) for a registry name, a local path or a pip requirement."""
    for entry in registry_entries():
        if target == entry["name"] and entry.get("module"):
            raise W2SError(f"plugin {target!r} is built into w2s and already installed; see `w2s plugins list`")
        if target == entry["name"] and (entry.get("requirement") or entry.get("path")):
            if entry.get("path"):
                return str((REGISTRY.parent / entry["path"]).resolve()), entry["name"]
            return entry["requirement"], entry["name"]
    path = Path(target).expanduser()
    if path.exists():
        if not (path / "pyproject.toml").is_file() and not (path / "setup.py").is_file() and path.is_dir():
            raise W2SError(f"{path}: no pyproject.toml or setup.py here; point at a plugin package folder")
        return str(path.resolve()), None
    return target, None


def pip(*args: str) -> int:
    """Run pip in this interpreter; its output goes straight to the terminal."""
    return subprocess.call([sys.executable, "-m", "pip", *args])


def probe() -> dict:
    """What a fresh w2s process loads: registered names and plugin load warnings."""
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise W2SError(f"w2s itself no longer imports after the install: {last}; run `w2s plugins uninstall NAME` for the new package")
    return json.loads(done.stdout.strip().splitlines()[-1])


def new_plugins(before: list[dict], after: list[dict], target: str) -> list[dict]:
    """Entry points the install added; for a reinstall, those of the distribution named by TARGET."""
    seen = {(e["name"], e["value"]) for e in before}
    added = [e for e in after if (e["name"], e["value"]) not in seen]
    if added:
        return added
    wanted = canonical(re.split(r"[<>=!~\[; ]", Path(target).name, maxsplit=1)[0])
    return [e for e in after if e["distribution"] and canonical(e["distribution"]) == wanted]


def loaded_report(added: list[dict], probed: dict) -> tuple[dict[str, list[str]], list[str]]:
    """(entry-point name -> 'kind name' it registered, load warnings of those entry points)."""
    names = {e["name"] for e in added}
    registered = {name: [] for name in names}
    for r in probed["registered"]:
        if r["plugin"] in names:
            registered[r["plugin"]].append(f"{r['kind']} {r['name']}")
    warnings = [w for w in probed["warnings"] if any(f"plugin {n!r}" in w for n in names)]
    return registered, warnings


def uninstall_target(name: str) -> str:
    """The distribution to uninstall for an entry-point name, a registry name or a distribution name."""
    eps = installed_entry_points()
    dist = next((e["distribution"] for e in eps if e["name"] == name and e["distribution"]), None)
    if dist is None:
        entry = next((e for e in registry_entries() if e["name"] == name and e.get("distribution")), None)
        dist = entry["distribution"] if entry else name
    if canonical(dist) == "w2s":
        raise W2SError(f"{name!r} is built into w2s and cannot be uninstalled; load a subset with W2S_LOAD_PLUGINS=name,name")
    try:
        distribution(dist)
    except PackageNotFoundError:
        valid = sorted({e["name"] for e in eps if e["distribution"] and canonical(e["distribution"]) != "w2s"})
        raise W2SError(f"no installed plugin or package {name!r}; third-party plugins installed: {', '.join(valid) or 'none'}") from None
    return dist


def available() -> list[dict]:
    """registry.toml entries plus any installed third-party entry point, each marked installed or not."""
    eps = installed_entry_points()
    by_name = {e["name"]: e for e in eps}
    rows = []
    for entry in registry_entries():
        ep = by_name.get(entry["name"])
        rows.append({
            "name": entry["name"], "kind": entry.get("kind", ""), "provides": entry.get("provides", []),
            "source": "built-in" if entry.get("module") else "third-party",
            "install": "" if entry.get("module") else f"w2s plugins install {entry['name']}",
            "installed": ep is not None, "version": ep["version"] if ep else None, "summary": entry.get("summary", ""),
        })
    known = {r["name"] for r in rows}
    for ep in eps:
        if ep["name"] not in known:
            builtin = ep["distribution"] and canonical(ep["distribution"]) == "w2s"
            rows.append({"name": ep["name"], "kind": "", "provides": [], "source": "built-in" if builtin else f"installed ({ep['distribution']})",
                         "install": "", "installed": True, "version": ep["version"], "summary": "not in registry.toml"})
    return rows


# -- model weights ---------------------------------------------------------------------------------
def weights_packages() -> dict[str, WeightsPackage]:
    """Every model alias whose weights a pip package ships (Model.packages of the registered models)."""
    out: dict[str, WeightsPackage] = {}
    for registered in plugins.models().values():
        out.update(getattr(registered.obj, "packages", {}))
    return out


def weights_command(alias: str) -> list[str]:
    """The pip arguments that install an alias's weights; an unknown alias lists the known ones."""
    packages = weights_packages()
    if alias not in packages:
        known = ", ".join(sorted(packages)) or "none"
        raise W2SError(f"models install {alias!r}: no weights package for that alias; installable: {known}")
    package = packages[alias]
    return ["install", *package.pip_args, package.requirement]
