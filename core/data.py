"""Reading local data files (CSV, TSV, JSONL, Parquet) through `datasets`, with one-line errors."""

from __future__ import annotations

from pathlib import Path

from .api import W2SError

FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def table_format(path: Path) -> str:
    """The `datasets` builder for a file, from its suffix."""
    builder = FORMATS.get(Path(path).suffix.lower())
    if builder is None:
        raise W2SError(f"data file {path}: unsupported type {Path(path).suffix!r}; use one of {', '.join(sorted(FORMATS))}")
    return builder


def read_table(path: Path, delimiter: str | None = None, **csv_options):
    """Load one local data file as a `datasets.Dataset`; a missing file is a one-line W2SError."""
    import datasets

    path = Path(path)
    if not path.is_file():
        raise W2SError(f"data file {path} not found; set task.data_dir (or W2S_DATA_DIR) to the folder that holds it")
    builder = table_format(path)
    datasets.disable_progress_bars()
    kwargs = dict(csv_options)
    if builder == "csv":
        kwargs["delimiter"] = delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")
    return datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)


def require_columns(rows, needed, where: str, hint: str = "") -> None:
    """Raise a one-line W2SError when `rows` lacks any of the `needed` columns."""
    missing = [c for c in needed if c not in rows.column_names]
    if missing:
        raise W2SError(f"{where}: column(s) {missing} not found (columns: {rows.column_names}){'; ' + hint if hint else ''}")
