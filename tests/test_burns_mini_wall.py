"""benchmarks/burns_mini.py's task wall time: the time any stage ran, so a task resumed in a later sitting is not charged the gap."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("burns_mini", Path(__file__).resolve().parents[1] / "benchmarks" / "burns_mini.py")
burns_mini = importlib.util.module_from_spec(spec)
spec.loader.exec_module(burns_mini)


def stage(start: str, end: str | None) -> dict:
    return {"started": f"2026-12-07T{start}+00:00", "finished": end and f"2026-12-07T{end}+00:00"}


def test_overlapping_stages_count_once_and_the_gap_between_sittings_not_at_all():
    stages = [stage("10:00:00", "10:02:00"), stage("10:01:00", "10:03:00"),  # two workers overlap: 3 min
              stage("10:03:00", "10:03:30"),                                  # touches the last one: +30 s
              stage("12:00:00", "12:01:00"),                                  # resumed two hours later: +1 min
              stage("12:00:10", "12:00:20")]                                  # inside the previous one: +0
    assert burns_mini.busy_wall_seconds(stages) == 3 * 60 + 30 + 60


def test_unfinished_stages_are_left_out_and_none_means_no_stage_ran():
    assert burns_mini.busy_wall_seconds([stage("10:00:00", "10:00:05"), stage("10:00:10", None)]) == 5
    assert burns_mini.busy_wall_seconds([]) is None
