"""Task files: a task defined in the study TOML only, from CSV/TSV/JSONL/Parquet files or an HF dataset id.

    [task]
    name = "files"
    data_dir = "data"                       # relative paths below resolve against it
    [task.options]
    train = "train.jsonl"                   # or hub = "org/dataset" (+ revision, train_split, test_split)
    test = "test.jsonl"
    text_columns = ["premise", "hypothesis"]
    template = "Premise: {premise}\\nHypothesis: {hypothesis}\\nTrue or false?\\nAnswer:"
    label_column = "label"
    label_words = ["false", "true"]
    label_map = { contradiction = 0, entailment = 1 }   # raw value -> index in label_words

Without `label_map` the raw labels must already be 0..K-1. The template may use any text column
and {text} (the text columns joined by `separator`); it is the task's one prompt, versioned by
its content (part of the task options, so it is part of every stage key).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from w2s.api import Example, Options, Task, W2SError
from w2s.data import hub_dataset, label_key, read_table, require_columns, row_seed
from w2s.hookspecs import hookimpl


class FilesOptions(Options):
    train: str | None = Field(default=None, description="train file (csv, tsv, jsonl, json, parquet)")
    test: str | None = Field(default=None, description="test file")
    hub: str | None = Field(default=None, description="HF dataset id with plain data files, instead of train/test")
    revision: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    text_columns: list[str] = Field(default=[], description="the text columns (classification); pairs use pair_columns")
    separator: str = "\n"
    template: str = "{text}\nAnswer:"
    label_column: str = "label"
    label_words: list[str] | None = Field(default=None, min_length=2, description="required for classification")
    label_map: dict[str, int] | None = None
    pairs: Literal["chosen_rejected", "a_b"] | None = Field(
        default=None, description="a pairwise (preference) task: chosen_rejected = columns chosen and rejected (HH-RLHF); "
        "a_b = columns a and b plus label_column (0: a preferred, 1: b preferred)")
    pair_columns: list[str] | None = Field(default=None, min_length=2, max_length=2,
                                           description="the two text columns of a pair (default: chosen, rejected or a, b)")

    @model_validator(mode="after")
    def _consistent(self):
        if self.pairs is None and not self.text_columns:
            raise ValueError("set text_columns (the columns holding the text), or pairs for a preference task")
        if self.pairs is None and not self.label_words:
            raise ValueError("set label_words (one word per label index), or pairs for a preference task")
        if self.pairs is not None and self.text_columns:
            raise ValueError("a pairwise task reads pair_columns, not text_columns; remove text_columns")
        if self.hub is None and not (self.train and self.test):
            raise ValueError("set both train and test (file paths) or hub (an HF dataset id)")
        if self.hub is not None and (self.train or self.test):
            raise ValueError("set either train/test files or hub, not both")
        fields = {f for _, f, _, _ in string.Formatter().parse(self.template) if f}
        unknown = sorted(fields - set(self.text_columns) - {"text"})
        if unknown:
            raise ValueError(f"template uses {unknown}, which are not text_columns; add them to text_columns or fix the template")
        words = self.label_words or PAIR_WORDS
        bad = {k: v for k, v in (self.label_map or {}).items() if not 0 <= v < len(words)}
        if bad:
            raise ValueError(f"label_map values {bad} are outside 0..{len(words) - 1} (indexes into label_words)")
        return self

    @property
    def columns_of_pair(self) -> list[str]:
        return self.pair_columns or (["chosen", "rejected"] if self.pairs == "chosen_rejected" else ["a", "b"])


PAIR_WORDS = ["first", "second"]  # a pair's label: the index of the preferred side as shown


class FilesTask(Task):
    """A task defined only in the study TOML: files or a hub id, text columns, a template and a label mapping."""

    name = "files"
    version = "1"
    kind = "binary"
    description = "a task defined in the study TOML: CSV/JSONL/Parquet files or an HF id, text columns, template, label mapping"
    Options = FilesOptions
    location_options = ("train", "test")

    def __init__(self, options=None, data_dir=None):
        super().__init__(options, data_dir)
        self.label_words = tuple(self.options.label_words or PAIR_WORDS)
        self.prompt_template = self.options.template
        self.kind = "pairwise" if self.options.pairs else "binary" if len(self.label_words) == 2 else "multiple_choice"

    def path(self, name: str) -> Path:
        path = Path(name).expanduser()
        return path if path.is_absolute() or self.data_dir is None else self.data_dir / path

    def source_files(self):
        """The train and test files; None for a hub id."""
        return None if self.options.hub else [self.path(self.options.train), self.path(self.options.test)]

    def rows(self, split: str):
        o = self.options
        if split not in ("train", "test"):
            raise W2SError(f"task files: unknown split {split!r}; use train or test")
        if o.hub:
            hub_split = o.train_split if split == "train" else o.test_split
            return hub_dataset(o.hub, split=hub_split, revision=o.revision), f"{o.hub} ({hub_split})"
        path = self.path(o.train if split == "train" else o.test)
        fix = "add it to task.options.label_map or fix the row" if o.label_map is not None else \
            "add task.options.label_map = { raw = index, ... } or fix the row"
        if o.pairs == "chosen_rejected":
            return read_table(path, columns=o.columns_of_pair, hint="set task.options.pair_columns to the file's chosen and "
                              "rejected columns"), str(path)
        if o.pairs == "a_b":
            return read_table(path, columns=o.columns_of_pair, label_column=o.label_column, label_values=self.label_texts(),
                              hint="set task.options.pair_columns and label_column to columns of the file",
                              label_fix="a preference label is 0 (first column preferred) or 1 (second); " + fix), str(path)
        return read_table(path, columns=o.text_columns, label_column=o.label_column, label_values=self.label_texts(),
                          hint="set task.options.label_column and text_columns to columns of the file", label_fix=fix), str(path)

    def label_texts(self) -> set[str]:
        """The raw label values the files may hold: label_map's keys, else the indexes 0..K-1."""
        o = self.options
        return set(o.label_map) if o.label_map is not None else {str(k) for k in range(len(self.label_words))}

    def load(self, split: str) -> list[Example]:
        o = self.options
        rows, where = self.rows(split)
        if o.pairs:
            return self.load_pairs(split, rows, where)
        require_columns(rows, [o.label_column], f"task.options.label_column: {where}", "set label_column to one of them")
        require_columns(rows, o.text_columns, f"task.options.text_columns: {where}", "list only existing columns")
        out = []
        for i, r in enumerate(rows):
            fields = {c: str(r[c]).strip() for c in o.text_columns}
            text = o.separator.join(fields.values())
            out.append(Example(id=f"{split}-{i}", text=text, label=self.label_of(r[o.label_column], where, i), meta=fields))
        return out

    def load_pairs(self, split: str, rows, where: str) -> list[Example]:
        """Preference pairs. chosen/rejected rows are shown in a row-seeded random order (the label is where the
        chosen one landed), so neither side is always right; a/b rows keep their order and label."""
        o = self.options
        first, second = o.columns_of_pair
        require_columns(rows, [first, second], f"task.options.pair_columns: {where}", "set pair_columns to two columns of the file")
        if o.pairs == "a_b":
            require_columns(rows, [o.label_column], f"task.options.label_column: {where}", "set label_column to the preference column")
        out = []
        for i, r in enumerate(rows):
            a, b = str(r[first]).strip(), str(r[second]).strip()
            if o.pairs == "chosen_rejected":
                label = row_seed(a, b) % 2  # 1: the chosen text is shown second
                a, b = (b, a) if label else (a, b)
            else:
                label = self.label_of(r[o.label_column], where, i)
            out.append(Example(id=f"{split}-{i}", text=f"{a}{o.separator}{b}", label=label, meta={"first": a, "second": b}, pair=(a, b)))
        return out

    def label_of(self, value, where: str, index: int) -> int:
        """Map a raw label through label_map (or accept 0..K-1); anything else is a one-line error."""
        o = self.options
        if o.label_map is not None:
            key = label_key(value)
            if key not in o.label_map:
                raise W2SError(f"{where} row {index + 1}: label {value!r} is not in task.options.label_map "
                               f"(keys: {', '.join(o.label_map)}); add it to label_map or fix the row")
            return o.label_map[key]
        if label_key(value) not in {str(k) for k in range(len(self.label_words))}:
            raise W2SError(f"{where} row {index + 1}: label {value!r} is not an index 0..{len(self.label_words) - 1}; "
                           "add task.options.label_map = { raw = index, ... }")
        return int(label_key(value))


@hookimpl
def register_tasks(register):
    register(FilesTask)
