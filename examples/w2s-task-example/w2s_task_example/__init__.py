"""A w2s task plugin: SMS spam detection from JSON-lines files (sample data included)."""

from pathlib import Path

from w2s.api import Example, Task, W2SError
from w2s.hookspecs import hookimpl

SAMPLE_DATA = Path(__file__).parent / "data"


class SpamTask(Task):
    """Is this text message spam? Reads {split}.jsonl with "text" and "label" (0 ham, 1 spam)."""

    name = "example-spam"
    version = "1"  # bump whenever loading or the prompt changes: it is part of every stage key
    kind = "binary"
    description = "SMS spam detection from JSON lines (text, label); sample data built in"
    label_words = ("ham", "spam")
    prompt_template = "Message: {text}\nSpam or ham?"

    def load(self, split: str) -> list[Example]:
        import datasets

        path = (self.data_dir or SAMPLE_DATA) / f"{split}.jsonl"
        if not path.is_file():
            raise W2SError(f"{path}: not found; set task.data_dir to a folder with train.jsonl and test.jsonl")
        datasets.disable_progress_bars()
        rows = datasets.load_dataset("json", data_files=str(path), split="train")
        missing = {"text", "label"} - set(rows.column_names)
        if missing:
            raise W2SError(f"{path}: lacks field(s) {sorted(missing)}; each line needs \"text\" and \"label\"")
        return [Example(id=f"{split}-{i}", text=str(r["text"]), label=int(r["label"])) for i, r in enumerate(rows)]


@hookimpl
def register_tasks(register):
    register(SpamTask)
