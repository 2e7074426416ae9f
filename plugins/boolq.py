"""Task boolq: BoolQ yes/no questions about a Wikipedia passage (Clark et al. 2019).

Hub default: `google/boolq` (revision option, default main). The repo holds plain parquet files
(`data/train-*.parquet`, `data/validation-*.parquet`, columns question/answer/passage) and no
loading script, so datasets 4+ reads it directly; it is the canonical upload by the authors' org.
BoolQ's test labels are hidden, so "test" is the validation split, as in every paper.

Local (`data_dir` or W2S_DATA_DIR), either layout is accepted:
- the original release: `train.jsonl`, `dev.jsonl` with question, passage, answer (true/false);
- SuperGLUE: `train.jsonl`, `val.jsonl` with question, passage, label (true/false or 1/0);
- the Hugging Face export (`google/boolq` saved with `to_json`): `train.jsonl`, `validation.jsonl`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from w2s.api import Example, Options, Task, W2SError
from w2s.data import hub_dataset, read_table, require_columns
from w2s.hookspecs import hookimpl

HUB_ID = "google/boolq"
TEST_FILES = ("dev.jsonl", "val.jsonl", "validation.jsonl")  # original release, SuperGLUE, the Hugging Face export


def truth(value, where: str, index: int) -> int:
    """A BoolQ answer (bool, 'true'/'false', 0/1) as 0/1."""
    text = str(value).strip().lower()
    if text in {"true", "1"}:
        return 1
    if text in {"false", "0"}:
        return 0
    raise W2SError(f"{where} row {index + 1}: answer {value!r} is not true/false; fix that row")


class BoolQTask(Task):
    """BoolQ: answer a yes/no question about a passage (original or SuperGLUE JSONL, or google/boolq)."""

    name = "boolq"
    version = "1"
    kind = "binary"
    description = "BoolQ yes/no questions on a passage; original or SuperGLUE JSONL via data_dir, or google/boolq"
    label_words = ("no", "yes")
    prompt_template = "Passage: {passage}\nQuestion: {question}?\nAnswer:"

    class Options(Options):
        revision: str = "main"
        question_first: bool = Field(default=False, description="put the question before the passage: a long passage cut "
                                     "at max_length then loses its end, not the question (hf truncation = 'right')")

    def __init__(self, options=None, data_dir=None):
        super().__init__(options, data_dir)
        if self.options.question_first:
            self.prompt_template = "Question: {question}?\nPassage: {passage}\nAnswer:"

    def test_file(self) -> tuple[Path, bool]:
        """The local test file: the first of TEST_FILES that exists (found = True), else the first name."""
        found = [self.data_dir / n for n in TEST_FILES if (self.data_dir / n).is_file()]
        return (found[0], True) if found else (self.data_dir / TEST_FILES[0], False)

    def source_files(self):
        """train.jsonl and the test file in use; None for the hub."""
        return None if self.data_dir is None else [self.data_dir / "train.jsonl", self.test_file()[0]]

    def rows(self, split: str):
        if split not in ("train", "test"):
            raise W2SError(f"task boolq: unknown split {split!r}; use train or test")
        if self.data_dir is None:
            return hub_dataset(HUB_ID, split={"train": "train", "test": "validation"}[split], revision=self.options.revision), HUB_ID
        if split == "train":
            path = self.data_dir / "train.jsonl"
        else:
            path, found = self.test_file()
            if not found:
                raise W2SError(f"data file {path} not found (nor val.jsonl, validation.jsonl); set task.data_dir to the BoolQ folder "
                               "with one of them")
        return read_table(path, columns=["question", "passage"], label_column=("answer", "label"),
                          label_values=lambda v: v.lower() in {"true", "false", "1", "0"}, label_fix="use true/false (or 1/0) and fix that row",
                          hint="expected BoolQ JSONL with question, passage and answer (or label)"), str(path)

    def load(self, split: str) -> list[Example]:
        rows, where = self.rows(split)
        answer = "answer" if "answer" in rows.column_names else "label"
        require_columns(rows, ["question", "passage", answer], where, "expected BoolQ JSONL with question, passage and answer (or label)")
        out = []
        for i, r in enumerate(rows):
            question, passage = str(r["question"]).strip().rstrip("?"), str(r["passage"]).strip()
            text = f"{question}?\n{passage}" if self.options.question_first else f"{passage}\n{question}?"
            out.append(Example(id=f"{split}-{i}", text=text, label=truth(r[answer], where, i),
                               meta={"question": question, "passage": passage}))
        return out


@hookimpl
def register_tasks(register):
    register(BoolQTask)
