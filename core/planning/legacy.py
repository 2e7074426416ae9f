"""Rekeying stores made before stage keys became content-addressed (migration m006_legacy_keys).

Scheme-1 keys hashed the absolute data_dir and every option of a model or task. They cannot be
recomputed from the store alone (the data's fingerprint needs the data), so the first run of a
study on such a store plans it twice, with scheme 2 and scheme 1, and maps each stage's new key to
its old one; the driver then renames every done stage stored under an old key (Store.rekey).
Evaluate stages are left to rerun: they take milliseconds and gained new flags with scheme 2.
"""

from __future__ import annotations

from ..api import KEY_SCHEME
from .protocol import Protocol, folded
from .study import Study


def legacy_keys(study: Study, links: list, pools: list) -> dict[str, str]:
    """New key -> scheme-1 key for each stage of the study's `links` (planned again with scheme 1, on each task's same `pools`)."""
    old_links = []
    token = KEY_SCHEME.set(1)
    try:
        for task, task_pools in zip(study.tasks, pools):
            legacy = Protocol(study, task)
            legacy._pools = task_pools
            old_links += legacy.plan()
    finally:
        KEY_SCHEME.reset(token)
    old_links = folded(study, old_links)  # the same shape as `links`, so the two line up
    return {new.key: old.key for (new, _, _), (old, _, _) in zip(links, old_links) if new.kind != "evaluate" and new.key != old.key}


def adoptable(store, study: Study, links: list, pools) -> dict[str, str]:
    """New key -> scheme-1 key of each stage that is done under its old key only (nothing is written)."""
    if not store.has_legacy_stages():
        return {}
    return {new: old for new, old in legacy_keys(study, links, pools).items()
            if store.stage_status(new) is None and store.stage_status(old) == "done"}


def adopt_legacy_stages(store, study: Study, links: list, pools) -> int:
    """Rename each done scheme-1 stage of this study to its new key; returns how many were renamed."""
    found = adoptable(store, study, links, pools)
    for new, old in found.items():
        store.rekey(old, new)
    return len(found)
