"""The Lichess puzzle CSV layout: its columns, reading rows (header line optional) and writing them.

The chess_puzzles task reads these files; `w2s chess make-puzzles` writes them.
"""

from __future__ import annotations

import csv
from pathlib import Path

from w2s.api import W2SError

LICHESS_COLUMNS = ("PuzzleId", "FEN", "Moves", "Rating", "RatingDeviation", "Popularity", "NbPlays", "Themes", "GameUrl", "OpeningTags")
REQUIRED_COLUMNS = LICHESS_COLUMNS[:3]


def read_puzzle_rows(path: Path) -> list[dict]:
    """Rows of a Lichess puzzle CSV (with or without its header line), through `datasets`."""
    if not path.is_file():
        raise W2SError(
            f"puzzle file {path} not found; set task.data_dir (and task.options.file), "
            "or make one with `w2s chess make-puzzles --out FILE`"
        )
    with path.open(encoding="utf-8") as f:
        first = f.readline().rstrip("\n")
    names = None if first.startswith("PuzzleId") else list(LICHESS_COLUMNS[: len(first.split(","))])
    rows = _load_csv(path, names)
    missing = set(REQUIRED_COLUMNS) - set(rows.column_names)
    if missing:
        raise W2SError(f"{path}: missing column(s) {sorted(missing)}; expected the Lichess layout {','.join(LICHESS_COLUMNS)}")
    return list(rows)


def _load_csv(path: Path, names: list[str] | None):
    import datasets

    kwargs = {"column_names": names} if names else {}
    with path.open(encoding="utf-8") as f:
        header = names or f.readline().rstrip("\n").split(",")
    features = datasets.Features({c: datasets.Value("string") for c in header})
    return datasets.load_dataset("csv", data_files=str(path), split="train", keep_default_na=False, features=features, **kwargs)


def write_puzzles(rows: list[dict], out: Path) -> None:
    """Write rows in the Lichess CSV layout (with its header line)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(LICHESS_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
