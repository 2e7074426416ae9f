"""The dry run's wall time: the run's own walk over the DAG (core/running/schedule.py: plan order, a stage
once its deps are done, up to N stages at once) replayed on estimated stage durations instead of run."""

from __future__ import annotations

import heapq

from ..planning.stage import Stage


def wall_seconds(stages: list[Stage], seconds: dict[str, float | None], workers: int) -> float:
    """When the last pending stage would finish on `workers` workers, starting now.

    `seconds` holds the pending stages (key -> estimated seconds); a stage without an estimate counts
    as 0 s, so the result is then a lower bound. A dep that is not pending (cached, or outside the
    plan) is done already.
    """
    pending = [stage for stage in stages if stage.key in seconds]
    finished: set[str] = set()
    running: list[tuple[float, str]] = []  # heap of (end, key)
    now = 0.0
    while pending or running:
        for stage in list(pending):
            if len(running) >= workers:
                break
            if all(dep in finished or dep not in seconds for dep in stage.deps):
                pending.remove(stage)
                heapq.heappush(running, (now + (seconds[stage.key] or 0.0), stage.key))
        if not running:  # what is left waits on itself; a planned DAG has no cycles
            break
        now, key = heapq.heappop(running)
        finished.add(key)
    return now
