"""Task sst2: Stanford Sentiment Treebank, binary (GLUE SST-2)."""

from pathlib import Path

from w2s.api import Example, Task, W2SError
from w2s.hookspecs import hookimpl

HUB_ID = "stanfordnlp/sst2"  # parquet files, no loading script; its `validation` split is the usual "test"


def read_table(path: Path, delimiter: str):
    """Load a local CSV/TSV through `datasets`, with a one-line error when it is missing."""
    import datasets

    if not path.is_file():
        raise W2SError(f"data file {path} not found; set task.data_dir (or W2S_DATA_DIR) to the folder that holds it")
    datasets.disable_progress_bars()
    return datasets.load_dataset("csv", data_files=str(path), delimiter=delimiter, split="train", quoting=3)


class SST2Task(Task):
    """Movie-review sentence sentiment (GLUE SST-2): local TSVs or the HF hub."""

    name = "sst2"
    version = "1"
    kind = "binary"
    description = "SST-2 movie-review sentiment; GLUE TSVs via data_dir or stanfordnlp/sst2 from the hub"
    label_words = ("negative", "positive")
    prompt_template = "Review: {text}\nSentiment:"

    def load(self, split: str) -> list[Example]:
        if self.data_dir is not None:
            files = {"train": "train.tsv", "test": "test.tsv"}
            rows = read_table(self.data_dir / files[split], "\t")
        else:
            import datasets

            rows = datasets.load_dataset(HUB_ID, split={"train": "train", "test": "validation"}[split])
        missing = {"sentence", "label"} - set(rows.column_names)
        if missing:
            raise W2SError(f"{self.data_dir or HUB_ID}: {split} data lacks column(s) {sorted(missing)}; expected sentence<TAB>label")
        return [
            Example(id=f"{split}-{i}", text=str(r["sentence"]).strip(), label=int(r["label"]))
            for i, r in enumerate(rows)
        ]


@hookimpl
def register_tasks(register):
    register(SST2Task)
