"""The Lichess puzzle CSV layout: its columns, reading rows (header line optional) and writing them.

The chess_puzzles task reads these files; `w2s chess make-puzzles` writes them.
"""

from __future__ import annotations

import csv
from pathlib import Path

from w2s.api import W2SError
from w2s.data import read_table

LICHESS_COLUMNS = ("PuzzleId", "FEN", "Moves", "Rating", "RatingDeviation", "Popularity", "NbPlays", "Themes", "GameUrl", "OpeningTags")
REQUIRED_COLUMNS = LICHESS_COLUMNS[:3]


def read_puzzle_rows(path: Path) -> list[dict]:
    """Rows of a Lichess puzzle CSV (with or without its header line), checked and read by `read_table`."""
    if not path.is_file():
        raise W2SError(
            f"puzzle file {path} not found; set task.data_dir (and task.options.file), "
            "or make one with `w2s chess make-puzzles --out FILE`"
        )
    with path.open("rb") as f:  # the first line says whether there is a header; read_table checks the whole file
        first = f.readline().decode("utf-8-sig", errors="replace").strip()
    header = first.startswith("PuzzleId")
    names = [n.strip() for n in first.split(",")] if header else list(LICHESS_COLUMNS[: len(first.split(","))])
    features = {"features": datasets_features(names)} if names and len(set(names)) == len(names) else {}
    options = {} if header else {"header": None, "column_names": names}
    hint = f"expected the Lichess layout {','.join(LICHESS_COLUMNS)}"
    rows = read_table(path, columns=REQUIRED_COLUMNS, hint=hint, keep_default_na=False, **features, **options)
    return list(rows)


def datasets_features(names: list[str]):
    """Every column as a string (puzzle ids such as 00008 must keep their zeros)."""
    import datasets

    return datasets.Features({c: datasets.Value("string") for c in names})


def write_puzzles(rows: list[dict], out: Path) -> None:
    """Write rows in the Lichess CSV layout (with its header line)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(LICHESS_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
