"""`w2s study rerun`: a stored study parsed again into the same spec (resolved data_dir, --set/--limit overrides)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from ..api import W2SError, fingerprint
from ..storing.store import Store
from .study import Study, parse_study


def rerun_study(store: Store, ref: str) -> Study:
    """Parse a stored study again, reproducing the stored spec (resolved data_dir, --set/--limit overrides)."""
    row = store.find_study(ref)
    stored = json.loads(row["spec_json"])
    path = Path(row["path"]) if row["path"] else None
    overrides = [f"{key}={json.dumps(value)}" for key, value in leaf_differences(stored, _raw_spec(row["toml"]))]
    study = parse_study(row["toml"], path, overrides)
    if row["hash"] not in (study.hash(), fingerprint(without_added_fields(study.spec_json(), stored))):
        diff = ", ".join(k for k, _ in leaf_differences(stored, study.spec_json())) or "defaults of an updated w2s"
        raise W2SError(f"study {row['name']} ({row['id']}): the stored definition no longer parses to the same spec ({diff}); "
                       f"run the TOML file with `w2s study run` instead")
    return study


def without_added_fields(spec, stored, top: bool = True):
    """`spec` without the fields a newer w2s added at their None default where `stored` lacks them (task.label,
    strong.adapt, study.only_tasks, ...), and without the executor table: the spec an older w2s hashed."""
    if isinstance(spec, dict) and isinstance(stored, dict):
        return {k: without_added_fields(v, stored.get(k), False) for k, v in spec.items()
                if (k in stored or v is not None) and not (top and k == "executor")}
    if isinstance(spec, list) and isinstance(stored, list) and len(spec) == len(stored):
        return [without_added_fields(a, b, False) for a, b in zip(spec, stored)]
    return spec


def _raw_spec(toml_text: str) -> dict:
    return tomllib.loads(toml_text)


def leaf_differences(stored: dict, raw: dict, prefix: str = ""):
    """(dotted.key, stored value) for every stored scalar/list leaf the raw TOML lacks or sets differently."""
    for key, value in stored.items():
        dotted = f"{prefix}{key}"
        here = raw.get(key) if isinstance(raw, dict) else None
        if isinstance(value, dict):
            yield from leaf_differences(value, here if isinstance(here, dict) else {}, dotted + ".")
        elif value is not None and value != here and not _is_list_of_tables(value):
            yield dotted, value


def _is_list_of_tables(value) -> bool:
    return isinstance(value, list) and any(isinstance(v, dict) for v in value)
