"""Task sst2: Stanford Sentiment Treebank, binary (GLUE SST-2)."""

from w2s.api import Example, Task
from w2s.data import hub_dataset, read_table, require_columns
from w2s.hookspecs import hookimpl

HUB_ID = "stanfordnlp/sst2"  # parquet files, no loading script; its `validation` split is the usual "test"
FILES = {"train": "train.tsv", "test": "test.tsv"}  # local GLUE TSVs in data_dir


class SST2Task(Task):
    """Movie-review sentence sentiment (GLUE SST-2): local TSVs or the HF hub."""

    name = "sst2"
    version = "1"
    kind = "binary"
    description = "SST-2 movie-review sentiment; GLUE TSVs via data_dir or stanfordnlp/sst2 from the hub"
    label_words = ("negative", "positive")
    prompt_template = "Review: {text}\nSentiment:"

    def source_files(self):
        """train.tsv and test.tsv in data_dir; None for the hub."""
        return None if self.data_dir is None else [self.data_dir / name for name in FILES.values()]

    def load(self, split: str) -> list[Example]:
        if self.data_dir is not None:
            rows = read_table(self.data_dir / FILES[split], "\t", quoting=3,  # QUOTE_NONE: quotes are text
                              columns=["sentence", "label"], label_column="label", label_values={"0", "1"},
                              hint="expected the GLUE layout: sentence<TAB>label")
        else:
            rows = hub_dataset(HUB_ID, split={"train": "train", "test": "validation"}[split])
        require_columns(rows, ["sentence", "label"], f"{self.data_dir or HUB_ID} ({split})", "expected sentence<TAB>label")
        return [
            Example(id=f"{split}-{i}", text=str(r["sentence"]).strip(), label=int(r["label"]))
            for i, r in enumerate(rows)
        ]


@hookimpl
def register_tasks(register):
    register(SST2Task)
