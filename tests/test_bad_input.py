"""Bad input never gives a traceback: every study or data file ends in a valid plan or in one `Error:` line.

The corpus (tests/corpus/<case>/: study.toml, its data, expected.txt) keeps every case that ever
failed; the property tests mutate study files and the data files of files, boolq, ethics and
chess_puzzles with hypothesis (bounded example counts), and save a case that fails to the corpus.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from w2s.commands.cli import cli

HERE = Path(__file__).parent
CORPUS = HERE / "corpus"
FIXTURES = HERE / "fixtures"
PUZZLES = HERE.parent / "studies" / "data" / "chess" / "puzzles.csv"
EXAMPLES = int(os.environ.get("W2S_PROPERTY_EXAMPLES", "25"))  # bounded in the default suite; raise it to search harder
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 25, suppress_health_check=list(HealthCheck))


def dry_run(runner, case: Path, db: Path) -> tuple[int, str]:
    result = runner.invoke(cli, ["study", "run", str(case / "study.toml"), "--dry-run", "--db", str(db)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def assert_plan_or_one_error(code: int, output: str, case: Path) -> None:
    """A valid plan (exit 0), or exactly one `Error:` line that names a file of the case."""
    if code == 0:
        assert output.startswith("study "), output
        return
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), output
    assert str(case) in lines[0], lines[0]


class Keeper:
    """Remembers the last failing case of a property test and saves it to the corpus (the shrunk one: hypothesis replays it last)."""

    def __init__(self):
        self.last: Path | None = None

    def check(self, runner, case: Path, db: Path) -> None:
        try:
            assert_plan_or_one_error(*dry_run(runner, case, db), case)
        except BaseException:
            self.last = case
            raise

    def save(self) -> Path | None:
        if self.last is None:
            return None
        digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(self.last.iterdir()) if p.is_file())).hexdigest()[:10]
        target = CORPUS / f"found-{digest}"
        shutil.copytree(self.last, target, dirs_exist_ok=True)
        return target


def run_property(test, *args):
    keeper = Keeper()
    try:
        test(keeper, *args)
    except BaseException:
        saved = keeper.save()
        print(f"failing case saved to {saved}")
        raise


# -- the corpus -----------------------------------------------------------------------------------
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "study.toml").is_file())


@pytest.mark.parametrize("name", CASES)
def test_corpus_case_is_one_error_line(name, runner, tmp_path):
    case = tmp_path / name
    shutil.copytree(CORPUS / name, case)
    code, output = dry_run(runner, case, tmp_path / "w2s.db")
    assert_plan_or_one_error(code, output, case)
    expected = case / "expected.txt"
    if expected.is_file():
        assert code == 1 and expected.read_text().strip() in output, output


def test_corpus_has_the_issue_cases():
    assert {"study-random-bytes", "files-empty-jsonl", "files-empty-csv", "files-header-only-csv", "chess-header-only",
            "files-extra-fields-csv", "files-missing-field-csv"} <= set(CASES)


# -- mutated study files --------------------------------------------------------------------------
def base_study() -> dict:
    return {
        "study": {"name": "prop", "seeds": [0]},
        "task": {"name": "files", "data_dir": ".", "n_weak_train": 20, "n_transfer": 30, "n_test": 10,
                 "options": {"train": "train.jsonl", "test": "test.jsonl", "text_columns": ["premise", "hypothesis"],
                             "label_words": ["false", "true"], "label_map": {"contradiction": 0, "entailment": 1}}},
        "weak": {"model": "bow"},
        "strong": {"model": "bow", "options": {"ngram_max": 2}},
        "losses": [{"name": "xent"}, {"name": "logconf", "options": {"alpha_max": 0.5}}],
    }


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{ " + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + " }"


def to_toml(data: dict) -> str:
    """Top-level scalars first, then one [table] (or [[array of tables]]) per dict; nested values inline."""
    lines = [f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict) and not _tables(v)]
    for key, value in data.items():
        if isinstance(value, dict):
            lines += [f"[{json.dumps(str(key))}]", *(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())]
        elif _tables(value):
            for item in value:
                lines += [f"[[{json.dumps(str(key))}]]", *(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in item.items())]
    return "\n".join(lines) + "\n"


def _tables(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def paths(data, prefix=()):
    """Every (path) into nested dicts and lists."""
    if isinstance(data, dict):
        for k, v in data.items():
            yield prefix + (k,)
            yield from paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield prefix + (i,)
            yield from paths(v, prefix + (i,))


scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([0, -1, 1, 2, 10**9, 2**63 - 1, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.text(max_size=20),
    st.sampled_from(["", "bow", "hf", "xent", "sst2", "files", "ß∂ƒ©", "\u202e", "train.jsonl", "../..", "/"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


@st.composite
def mutated_studies(draw):
    data = base_study()
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(list(paths(data))))
        parent = data
        for part in where[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["drop", "rename", "retype", "nest"]))
        if action == "drop":
            parent.pop(where[-1]) if isinstance(parent, dict) else parent.pop(where[-1])
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = parent.pop(where[-1])
        elif action == "nest":
            deep = draw(st.integers(1, 60))
            value = 1
            for _ in range(deep):
                value = [value] if deep % 2 else {"x": value}
            parent[where[-1]] = value
        else:
            parent[where[-1]] = draw(values)
    return to_toml(data).encode()


@st.composite
def damaged_bytes(draw, text: bytes):
    """The bytes of a file, with random bytes inserted, a cut, or replaced entirely."""
    action = draw(st.sampled_from(["insert", "cut", "replace"]))
    if action == "replace":
        return draw(st.binary(max_size=300))
    at = draw(st.integers(0, len(text)))
    if action == "cut":
        return text[:at]
    return text[:at] + draw(st.binary(min_size=1, max_size=8)) + text[at:]


def files_case(folder: Path, study: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train.jsonl", "test.jsonl"):
        shutil.copy(FIXTURES / "files" / name, folder / name)
    (folder / "study.toml").write_bytes(study)
    return folder


@pytest.mark.parametrize("damage", [False, True], ids=["mutated-fields", "damaged-bytes"])
def test_mutated_study_files(damage, runner, tmp_path):
    base = to_toml(base_study()).encode()
    counter = iter(range(10**6))

    @PROPERTY
    @given(st.data())
    def check(keeper, data):
        study = data.draw(damaged_bytes(base) if damage else mutated_studies())
        case = files_case(tmp_path / f"case{next(counter)}", study)
        keeper.check(runner, case, tmp_path / "w2s.db")

    run_property(check)


def test_base_study_plans(runner, tmp_path):
    case = files_case(tmp_path / "case", to_toml(base_study()).encode())
    code, output = dry_run(runner, case, tmp_path / "w2s.db")
    assert code == 0 and "study prop: 6 stages" in output, output  # weak, ceiling and two students (each predicting in its fit), two evaluates


# -- mutated data files ---------------------------------------------------------------------------
def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@st.composite
def mutated_lines(draw, lines: list[bytes], delimiter: bytes):
    """Lines deleted, duplicated, emptied or damaged; fields dropped, added or replaced; or the whole file cut."""
    lines = list(lines)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["delete", "duplicate", "field", "extra", "drop", "bytes", "cut", "only_header", "empty"]))
        i = draw(st.integers(0, max(len(lines) - 1, 0))) if lines else 0
        if not lines or action == "empty":
            return b""
        if action == "delete":
            del lines[i]
        elif action == "duplicate":
            lines.insert(i, lines[i])
        elif action == "only_header":
            lines = lines[:1]
        elif action == "cut":
            return b"".join(lines)[: draw(st.integers(0, sum(map(len, lines))))]
        elif action == "bytes":
            lines[i] = draw(st.binary(max_size=30)) + b"\n"
        else:
            fields = lines[i].rstrip(b"\r\n").split(delimiter)
            j = draw(st.integers(0, len(fields) - 1))
            if action == "field":
                fields[j] = draw(st.sampled_from([b"", b"2", b"-1", b"0.0", b"nan", b"true", b"maybe", b'"', b"\xff", b"null", b"{}", b"[1]"]))
            elif action == "extra":
                fields.insert(j, b"extra")
            elif len(fields) > 1:
                del fields[j]
            lines[i] = delimiter.join(fields) + b"\n"
    return b"".join(lines)


def data_study(task_table: str, models: str) -> bytes:
    return f"""[study]
name = "data-prop"

{task_table}

{models}
""".encode()


BOW = '[weak]\nmodel = "bow"\n\n[strong]\nmodel = "bow"\noptions = { ngram_max = 2 }\n'
ENGINES = '[[chain]]\nmodel = "chess_engine"\noptions = { depth = 1 }\n\n[[chain]]\nmodel = "chess_engine"\nlabel = "d2"\noptions = { depth = 2 }\n'
DATA_TASKS = {
    "files-jsonl": (FIXTURES / "files", "train.jsonl", b", ", """[task]
name = "files"
data_dir = "."
n_weak_train = 10
n_transfer = 10
[task.options]
train = "train.jsonl"
test = "test.jsonl"
text_columns = ["premise", "hypothesis"]
label_words = ["false", "true"]
label_map = { contradiction = 0, entailment = 1 }""", BOW),
    "boolq": (FIXTURES / "boolq" / "original", "train.jsonl", b", ", """[task]
name = "boolq"
data_dir = "."
n_weak_train = 10
n_transfer = 10""", BOW),
    "ethics": (FIXTURES / "ethics" / "justice", "justice_train.csv", b",", """[task]
name = "ethics"
data_dir = ".."
n_weak_train = 4
n_transfer = 4
options = { subset = "justice" }""", BOW),
    "chess_puzzles": (PUZZLES.parent, "puzzles.csv", b",", """[task]
name = "chess_puzzles"
data_dir = "."
n_weak_train = 4
n_transfer = 4
[task.options]
file = "puzzles.csv"
count = 20""", ENGINES),
}


def data_case(folder: Path, name: str, content: bytes) -> Path:
    source, file, _, task_table, models = DATA_TASKS[name]
    data = folder / "justice" if name == "ethics" else folder
    data.mkdir(parents=True, exist_ok=True)
    if name == "chess_puzzles":
        (data / file).write_bytes(b"".join(lines_of(source / file)[:21]))
    else:
        for f in source.iterdir():
            shutil.copy(f, data / f.name)
    (data / file).write_bytes(content)
    (data / "study.toml").write_bytes(data_study(task_table, models))
    return data


@pytest.mark.parametrize("name", list(DATA_TASKS))
def test_mutated_data_files(name, runner, tmp_path):
    source, file, delimiter, _, _ = DATA_TASKS[name]
    lines = lines_of(source / file)[:21]
    counter = iter(range(10**6))

    @PROPERTY
    @given(st.data())
    def check(keeper, data):
        content = data.draw(st.one_of(mutated_lines(lines, delimiter), damaged_bytes(b"".join(lines))))
        case = data_case(tmp_path / f"case{next(counter)}", name, content)
        keeper.check(runner, case, tmp_path / "w2s.db")

    run_property(check)


@pytest.mark.parametrize("name", list(DATA_TASKS))
def test_unmutated_data_plans(name, runner, tmp_path):
    source, file, _, _, _ = DATA_TASKS[name]
    case = data_case(tmp_path / "case", name, b"".join(lines_of(source / file)[:21]) if name == "chess_puzzles" else (source / file).read_bytes())
    code, output = dry_run(runner, case, tmp_path / "w2s.db")
    assert code == 0, output
