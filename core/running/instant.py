"""Instant reruns: a finished study answered from the store, without planning it.

Planning a study loads every task's data (and `datasets` with it), fingerprints and splits it, and
hashes every stage; for a study whose stages are all done that is seconds spent to learn nothing. So
when a run ends with every stage done, the driver records what the plan was made from
(`studies.rerun_json`): the data files (path, size, mtime_ns, SHA-256), a fingerprint of the code,
the study's links and the stage titles and keys in plan order. `w2s study run` (and its --dry-run)
answers from the store, before planning, when all of this holds:

- a study with the same definition hash is in the store and its status is `done`;
- its recorded versions (w2s, python, key libraries, every plugin) equal the current ones, and so
  does the code: the size and mtime of every module of w2s and of the plugins' packages, and the
  option fields and defaults of the study's task and model classes (an edit without a new version);
- every task of the study, and of its `[[eval]]` tables, names its local files (`Task.source_files`;
  None, e.g. a hub data set, means no fast path) and they are the recorded files, unchanged: the same
  size and mtime match without reading; the same size with another mtime matches when the SHA-256 is
  the same (the new mtime is then stored); a file recorded as missing must still be missing;
- its links to stages are the ones the finished run left, every linked stage is `done`, and none
  still has a scheme-1 key (those are rekeyed by planning, planning/legacy.py).

It then prints what a fully cached run prints: every stage as cached, and the result tables; a dry run
prints the plan a planning dry run would (every stage cached, with its key).
Nothing here imports torch, transformers or datasets; tests/test_instant_rerun.py checks it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .. import __version__, plugins
from ..api import fingerprint
from ..storing.store import Store

PACKAGE = Path(__file__).resolve().parents[1]  # the w2s package folder


def versions() -> dict:
    """Versions that can change a result: w2s, python, key libraries and every plugin."""
    out = {"w2s": __version__, "python": platform.python_version()}
    for lib in ("torch", "transformers", "datasets", "scikit-learn", "numpy"):
        try:
            out[lib] = md.version(lib)
        except md.PackageNotFoundError:
            pass
    out["plugins"] = {r.name: r.version for r in plugins.everything()}
    return out


def source_files(study) -> list[Path] | None:
    """Every local file the study's tasks (and its evals' tasks) read, absolute and sorted; None when a task can't say."""
    files: list[Path] = []
    for task in study_tasks(study):
        listed = task.source_files()
        if listed is None:
            return None
        files += [Path(f).expanduser().absolute() for f in listed]
    return sorted(set(files))


def study_tasks(study) -> list:
    return [t.task for t in study.tasks] + [task for target in study.evals for task in target.tasks.values()]


def code_fingerprint(study) -> str:
    """The code a plan comes from: each module file of w2s and of the plugins' packages (path, size, mtime_ns), and
    the version and option fields (with defaults) of the study's task and model classes."""
    roots = {PACKAGE}
    for _, plugin in plugins.pm.list_name_plugin():
        if plugin is None:  # a blocked plugin
            continue
        name = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
        top = sys.modules.get(name.partition(".")[0])
        file = getattr(top, "__file__", None)
        if file:
            roots.add(Path(file).resolve().parent if Path(file).name == "__init__.py" else Path(file).resolve())
    files = sorted({f for root in roots for f in (root.rglob("*.py") if root.is_dir() else [root])})
    code = [[entry["path"], entry["size"], entry["mtime_ns"]] for entry in map(stat, files)]
    classes = sorted({type(x) for x in [*study_tasks(study), *study.weak, *study.strong, *study.chain]},
                     key=lambda cls: (cls.__module__, cls.__qualname__))
    options = [[cls.__module__, cls.__qualname__, getattr(cls, "version", None),
                {part: {k: repr(f.default) for k, f in getattr(cls, part).model_fields.items()}
                 for part in ("Options", "Train") if hasattr(cls, part)}] for cls in classes]
    return fingerprint([code, options])


def stat(path: Path) -> dict:
    """{path, size, mtime_ns}; size and mtime_ns are None for a missing file."""
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return {"path": str(path), "size": None, "mtime_ns": None}
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass(frozen=True)
class Snapshot:
    """Taken when a run starts, before planning reads the data: the files' size and mtime, and the code."""

    files: list[dict] | None
    code: str


def snapshot(study) -> Snapshot:
    files = source_files(study)
    return Snapshot(None if files is None else [stat(f) for f in files], code_fingerprint(study))


def fingerprints(before: list[dict]) -> list[dict] | None:
    """The files of a snapshot with their SHA-256, or None when one changed since (its results may mix both versions)."""
    out = []
    for entry in before:
        path = Path(entry["path"])
        if stat(path) != entry:
            return None
        out.append({**entry, "sha256": sha256(path) if entry["size"] is not None else None})
        if stat(path) != entry:  # written while it was hashed
            return None
    return out


def links_fingerprint(links: list[dict]) -> str:
    return fingerprint(sorted([r["stage_key"], r["role"]] for r in links))


def study_links(store: Store, study_id: str) -> list[dict]:
    return list(store.db.query(
        "SELECT ss.stage_key, ss.role, st.status, st.legacy_key = st.key AS unrekeyed "
        "FROM study_stages ss LEFT JOIN stages st ON st.key = ss.stage_key WHERE ss.study_id = ?", [study_id]))


def record(store: Store, study_id: str, before: Snapshot, titles: list[str], keys: list[str]) -> None:
    """After a run with every stage done: what lets a rerun be answered from the store (NULL when a task can't name
    its files or one changed during the run)."""
    files = None if before.files is None else fingerprints(before.files)
    if files is None:
        store.record_rerun(study_id, None)
        return
    links = links_fingerprint(study_links(store, study_id))
    store.record_rerun(study_id, {"files": files, "code": before.code, "links": links, "titles": titles, "keys": keys})


def matching_files(recorded: list[dict], files: list[Path]) -> list[dict] | None:
    """The recorded fingerprints, with any new mtime of a file whose content is unchanged, when `files` are the
    recorded files and unchanged; else None. A file is read only when its size matches and its mtime does not."""
    if [r["path"] for r in recorded] != [str(f) for f in files]:
        return None
    out = []
    for entry in recorded:
        path = Path(entry["path"])
        now = stat(path)
        if now["size"] != entry["size"]:
            return None
        if now["mtime_ns"] != entry["mtime_ns"]:
            if sha256(path) != entry["sha256"]:
                return None
            entry = {**entry, "mtime_ns": now["mtime_ns"]}
        out.append(entry)
    return out


@dataclass(frozen=True)
class Answer:
    """A study answered from the store: its id and its stage titles and keys in plan order (all done; keys are None
    when recorded before they were)."""

    study_id: str
    titles: list[str]
    keys: list[str] | None = None


def answer_from_store(store: Store, study) -> Answer | None:
    """The stored, finished study with this definition, when it can stand for a run now (module docstring); else None."""
    row = next(store.db.query("SELECT id, status, versions_json, rerun_json FROM studies WHERE hash = ? ORDER BY created DESC LIMIT 1",
                              [study.hash()]), None)
    if row is None or row["status"] != "done" or not row["rerun_json"]:
        return None
    rerun = json.loads(row["rerun_json"])
    links = study_links(store, row["id"])
    if not links or any(r["status"] != "done" or r["unrekeyed"] for r in links) or links_fingerprint(links) != rerun["links"]:
        return None
    files = source_files(study)
    if files is None or json.loads(row["versions_json"] or "{}") != versions() or code_fingerprint(study) != rerun["code"]:
        return None
    matched = matching_files(rerun["files"], files)
    if matched is None:
        return None
    if matched != rerun["files"]:
        store.record_rerun(row["id"], {**rerun, "files": matched})
    return Answer(row["id"], rerun["titles"], rerun.get("keys"))
