"""The dry run's wall-time estimates as text: a note per pending stage and a total line (numbers: w2s.storing.throughput)."""

from __future__ import annotations

NO_ESTIMATE = "no estimate yet"


def duration(seconds: float) -> str:
    """Seconds as a short wall time: < 0.01 s, 0.43 s, 4.3 s, 42 s, 3 min 5 s, 1 h 12 min."""
    if seconds < 0.01:
        return "< 0.01 s"
    if seconds < 9.95:
        return f"{seconds:.2g} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes} min"


def stage_note(seconds: float | None) -> str:
    """What a pending stage's plan line adds: `~ 42 s`, `instant` (evaluate, skipped evals) or `no estimate yet`."""
    if seconds is None:
        return NO_ESTIMATE
    if seconds == 0:
        return "instant"
    return duration(seconds) if seconds < 0.01 else f"~ {duration(seconds)}"


def total_line(count: int, seconds: float | None, missing: int, wall: float | None = None, workers: int | None = 1) -> str:
    """The line after the plan: the estimated wall time of the pending stages on `workers` stages at once
    (`wall`, from w2s.running.forecast; None workers: the executor knows only once it connects), their
    summed stage time when that differs, and how many stages have no estimate."""
    head = f"estimated wall time of the {count} pending stage{'s' * (count != 1)}: "
    if seconds is None:
        return head + f"{NO_ESTIMATE} (no stage of these models has a measured time in this store)"
    source = "on the throughput measured in this store"
    if missing:
        source += f"; {missing} stage{'s have' if missing != 1 else ' has'} {NO_ESTIMATE}"
    least = "at least " if missing else ""
    if workers is None:
        return head + (f"{least}{duration(seconds)} one stage at a time ({source}; how many run at once is known only "
                       "when the executor connects: --jobs N estimates it)")
    if workers == 1 or wall is None:
        return head + f"{least}{duration(seconds)} ({source})"
    return head + f"{least}{duration(wall)} on {workers} workers ({duration(seconds)} of stage time, {source})"
