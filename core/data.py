"""Reading local data files (CSV, TSV, JSONL, Parquet) through `datasets`, with one-line errors.

`read_table` checks a text file before `datasets` (and pandas under it) sees it: UTF-8, not empty,
a header with at least one row, every row with the header's field count, the columns a task needs
and the values of its label column. Each problem is one W2SError naming the file, the line and the
fix; whatever `datasets` still rejects is wrapped the same way. `datasets` caches its Arrow copies
under $W2S_HOME/datasets and shows no progress bars for local files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Callable, Collection, Sequence

from .api import W2SError
from .home import w2s_home
from .train import progress_disabled

FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def table_format(path: Path) -> str:
    """The `datasets` builder for a file, from its suffix."""
    builder = FORMATS.get(Path(path).suffix.lower())
    if builder is None:
        raise W2SError(f"data file {path}: unsupported type {Path(path).suffix!r}; use one of {', '.join(sorted(FORMATS))}")
    return builder


def datasets_cache() -> str:
    """Where `datasets` keeps its Arrow copies: under W2S_HOME, beside the store, not ~/.cache."""
    return str(w2s_home() / "datasets")


def label_key(value) -> str:
    """A raw label value as text: booleans as true/false, integral floats as integers, stripped."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def row_seed(*texts: str) -> int:
    """A seed derived from a row's text: the same on every run and machine (e.g. to show a pair in a stable random order)."""
    return int(hashlib.sha256("\x1f".join(texts).encode()).hexdigest()[:8], 16)


def read_table(path: Path, delimiter: str | None = None, *, columns: Sequence[str] = (), label_column: str | Sequence[str] | None = None,
               label_values: Collection[str] | Callable[[str], bool] | None = None, hint: str = "", label_fix: str = "fix that row",
               **csv_options):
    """Load one local data file as a `datasets.Dataset`, after checking it (see the module docstring).

    `columns`: columns the task needs; `label_column`: the label column, or alternatives (the first the
    file has); `label_values`: the accepted label texts (see `label_key`), or a predicate on them;
    `hint`: the fix for a missing column; `label_fix`: the fix for a bad label.
    """
    import datasets

    path = Path(path)
    if not path.is_file():
        raise W2SError(f"data file {path} not found; set task.data_dir (or W2S_DATA_DIR) to the folder that holds it")
    builder = table_format(path)
    datasets.disable_progress_bars()
    kwargs = dict(csv_options)
    if builder == "csv":
        kwargs["delimiter"] = delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")
    if builder != "parquet":
        header, rows = parse_text_table(path, builder, kwargs)
        check_rows(path, header, rows, columns, label_column, label_values, hint, label_fix)
    try:
        table = datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=datasets_cache(), **kwargs)
    except Exception as exc:  # whatever the checks above did not catch, still one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise W2SError(f"data file {path}: could not be read as {builder} ({first}); fix the file") from None
    if builder == "parquet":
        check_rows(path, table.column_names, [(i + 1, r) for i, r in enumerate(table)] if label_column else [], columns,
                   label_column, label_values, hint, label_fix, lines="row")
    return table


def read_text(path: Path) -> str:
    """The file as UTF-8 text (a BOM is dropped); anything else is one line naming the offending byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise W2SError(f"{path}: line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8") from None


def parse_text_table(path: Path, builder: str, kwargs: dict) -> tuple[list[str], list[tuple[int, dict]]]:
    """(header, [(line number, row)]) of a CSV/TSV or JSON(L) file; a malformed file is one line."""
    text = read_text(path)
    if "\x00" in text:
        raise W2SError(f"{path}: line {text[: text.index(chr(0))].count(chr(10)) + 1} holds a NUL byte; this is not a text table")
    if not text.strip():
        what = "a header line and at least one row" if builder == "csv" else "one JSON object per line"
        raise W2SError(f"{path}: the file is empty; it needs {what}")
    return parse_csv(path, text, kwargs) if builder == "csv" else parse_json(path, text)


def parse_csv(path: Path, text: str, kwargs: dict) -> tuple[list[str], list[tuple[int, dict]]]:
    quoting = kwargs.get("quoting", csv.QUOTE_MINIMAL)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=kwargs["delimiter"], quoting=quoting, strict=True)
    records = []
    try:
        for fields in reader:
            if fields and any(f.strip() for f in fields):  # pandas skips blank lines too
                records.append((reader.line_num, fields))
    except csv.Error as exc:
        raise W2SError(f"{path}: line {reader.line_num}: {exc}; fix the quoting on that line") from None
    if kwargs.get("header", "infer") is None:
        header = list(kwargs.get("column_names") or [])
    else:
        if not records:
            raise W2SError(f"{path}: the file has no header line; add one")
        header = [h.strip() for h in records[0][1]]
        records = records[1:]
        names = list(kwargs.get("column_names") or header)
        if len(header) != len(names):
            raise W2SError(f"{path}: line 1 has {len(header)} field(s), expected {len(names)} ({', '.join(names)}); fix the header")
        header = names
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes or "" in header:
            raise W2SError(f"{path}: line 1: the header has {'duplicate column(s) ' + str(dupes) if dupes else 'an empty column name'}; "
                           "give every column its own name")
    rows = []
    for line, fields in records:
        if header and len(fields) != len(header):
            raise W2SError(f"{path}: line {line} has {len(fields)} field(s), the header has {len(header)} ({', '.join(header)}); "
                           "fix that line (quote fields that hold the delimiter)")
        rows.append((line, dict(zip(header, fields))))
    return header, rows


def parse_json(path: Path, text: str) -> tuple[list[str], list[tuple[int, dict]]]:
    stripped = text.lstrip()
    if stripped.startswith("["):  # one JSON array of records
        try:
            records = [(1, r) for r in json.loads(text)]
        except json.JSONDecodeError as exc:
            raise W2SError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg}); fix that line") from None
    else:
        records = []
        for line, raw in enumerate(text.splitlines(), 1):
            if raw.strip():
                try:
                    records.append((line, json.loads(raw)))
                except json.JSONDecodeError as exc:
                    raise W2SError(f"{path}: line {line}: invalid JSON ({exc.msg}); each line must be one JSON object") from None
    header: dict[str, type] = {}
    for line, record in records:
        if not isinstance(record, dict):
            raise W2SError(f"{path}: line {line}: expected a JSON object {{...}}, got {type(record).__name__}; fix that line")
        for key, value in record.items():
            kind = json_kind(value)
            seen = header.setdefault(key, kind)
            if kind is not None and seen is not None and seen != kind:
                raise W2SError(f"{path}: line {line}: field {key!r} is {kind.__name__} here but {seen.__name__} on earlier lines; "
                               "give it one type in every line")
            if seen is None:
                header[key] = kind
    if not records:
        raise W2SError(f"{path}: no JSON objects in the file; it needs one object per line")
    return list(header), records


def json_kind(value) -> type | None:
    """The type `datasets` would give a JSON value (int and float count as one number type; null as none)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return bool
    if isinstance(value, (int, float)):
        return float
    return type(value)


def check_rows(path: Path, header: list[str], rows: list[tuple[int, dict]], columns: Sequence[str], label_column: str | None,
               label_values, hint: str, label_fix: str = "fix that row", lines: str = "line") -> None:
    """Required columns present, at least one row, label values accepted (bad ones named with their line)."""
    if label_column is not None:
        options = [label_column] if isinstance(label_column, str) else list(label_column)
        found = [c for c in options if c in header]
        if not found:
            raise W2SError(f"{path}: label column {' or '.join(map(repr, options))} not found (columns: {header}){'; ' + hint if hint else ''}")
        label_column = found[0]
    missing = [c for c in columns if c not in header]
    if missing:
        raise W2SError(f"{path}: column(s) {missing} not found (columns: {header}){'; ' + hint if hint else ''}")
    if not rows and lines == "line":
        raise W2SError(f"{path}: the file has a header but no rows; add at least one row")
    if label_column is None or label_values is None:
        return
    accepts = label_values if callable(label_values) else (lambda key, ok=set(label_values): key in ok)
    bad = [(line, r.get(label_column)) for line, r in rows if r.get(label_column) is None or not accepts(label_key(r[label_column]))]
    if bad:
        line, value = bad[0]
        valid = "" if callable(label_values) else f" (valid: {', '.join(sorted(label_values))})"
        more = f"; {len(bad) - 1} more row(s) like it" if len(bad) > 1 else ""
        raise W2SError(f"{path} {lines} {line}: {label_column} {value!r} is not a label{valid}{more}; {label_fix}")


def require_columns(rows, needed, where: str, hint: str = "") -> None:
    """Raise a one-line W2SError when `rows` lacks any of the `needed` columns."""
    missing = [c for c in needed if c not in rows.column_names]
    if missing:
        raise W2SError(f"{where}: column(s) {missing} not found (columns: {rows.column_names}){'; ' + hint if hint else ''}")


def hub_dataset(name: str, **kwargs):
    """`datasets.load_dataset` for a hub id, cached under W2S_HOME; a failure is one line naming the id."""
    import datasets

    if progress_disabled():
        datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(name, cache_dir=datasets_cache(), **kwargs)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise W2SError(f"dataset {name!r} ({', '.join(f'{k}={v}' for k, v in kwargs.items())}): could not load ({first}); "
                       "set task.data_dir (or W2S_DATA_DIR) to local files, or check the id and the network") from None
