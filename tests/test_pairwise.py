"""Pairwise (preference) tasks: reward models scored on each side, P(b preferred) = sigmoid(r(b) - r(a)) (Bradley-Terry)."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import WORDS
from scipy.stats import spearmanr

from w2s.api import W2SError
from w2s.commands.cli import cli
from w2s.plugins import make_model, make_task
from w2s.storing.store import Store

REWARD = {w: (i - len(WORDS) / 2) / 4 for i, w in enumerate(WORDS)}  # the true reward of each word


def true_reward(text: str) -> float:
    return sum(REWARD[w] for w in text.split())


def write_preferences(folder: Path, n_train=300, n_test=80, seed=0) -> Path:
    """chosen/rejected JSONL: each text is 3 words, the chosen one has the larger true reward."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        while len(rows) < n:
            a, b = (" ".join(rng.choice(WORDS) for _ in range(3)) for _ in range(2))
            if abs(true_reward(a) - true_reward(b)) < 0.5:
                continue
            chosen, rejected = (a, b) if true_reward(a) > true_reward(b) else (b, a)
            rows.append(json.dumps({"chosen": chosen, "rejected": rejected}))
        (folder / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    return folder


def pairs_task(folder, **options):
    return make_task("files", {"train": "train.jsonl", "test": "test.jsonl", "pairs": "chosen_rejected", **options}, folder, "task")


def targets(examples):
    return np.eye(2)[[e.label for e in examples]]


class Ctx:
    seed = 0
    split = None
    validation = None

    def log_curve(self, *a): pass

    def log_metric(self, *a): pass

    def echo(self, *a): pass


def test_chosen_rejected_files_load_as_pairs_in_a_row_seeded_order(tmp_path):
    task = pairs_task(write_preferences(tmp_path))
    examples = task.load("train")
    assert task.kind == "pairwise" and len(examples) == 300
    for e in examples:  # the label is the side the chosen text landed on
        assert true_reward(e.pair[e.label]) > true_reward(e.pair[1 - e.label])
    share = np.mean([e.label for e in examples])
    assert 0.4 < share < 0.6  # neither side is always the chosen one
    assert [e.pair for e in pairs_task(tmp_path).load("train")] == [e.pair for e in examples]  # stable across loads


def test_a_linear_bag_of_words_reward_recovers_the_true_word_rewards(tmp_path):
    task = pairs_task(write_preferences(tmp_path))
    train, test = task.load("train"), task.load("test")
    bow = make_model("bow", {}, {"C": 10.0}, "weak")
    trained = bow.fit(train, targets(train), None, task, Ctx())
    seen = sorted({w for e in train for text in e.pair for w in text.split()})
    learned = trained.rewards(seen)
    assert spearmanr(learned, [REWARD[w] for w in seen]).statistic > 0.9
    assert (trained.predict(test, task).argmax(1) == [e.label for e in test]).mean() > 0.9


def test_a_tiny_bert_reward_model_orders_held_out_pairs(tmp_path, tiny_bert):
    task = pairs_task(write_preferences(tmp_path))
    train, test = task.load("train"), task.load("test")
    model = make_model("hf", {"path": str(tiny_bert), "max_length": 16}, {"epochs": 8, "batch_size": 16, "lr": 3e-3}, "strong")
    loss = make_loss_xent()
    trained = model.fit(train, targets(train), loss, task, Ctx())
    accuracy = (trained.predict(test, task).argmax(1) == [e.label for e in test]).mean()
    assert accuracy > 0.8
    best, worst = max(REWARD, key=REWARD.get), min(REWARD, key=REWARD.get)
    r = trained.rewards([f"{best} {best} {best}", f"{worst} {worst} {worst}"])
    assert r[0] > r[1]


def make_loss_xent():
    from w2s.plugins import make_loss

    return make_loss("xent", {}, "loss")


def study(folder, strong) -> str:
    return f"""
[study]
name = "prefs"
seeds = [0]
keep_checkpoints = "all"  # the test reloads the student's weights

[task]
name = "files"
data_dir = "{folder}"
n_weak_train = 60
n_transfer = 200
n_test = 80
[task.options]
train = "train.jsonl"
test = "test.jsonl"
pairs = "chosen_rejected"

[weak]
model = "bow"
train = {{ C = 0.05 }}

[strong]
{strong}

[[losses]]
name = "xent"
[[losses]]
name = "logconf"
"""


def test_a_preference_study_stores_sigmoid_of_the_reward_difference(runner, tmp_path, tiny_bert):
    folder = write_preferences(tmp_path / "data")
    path = tmp_path / "prefs.toml"
    path.write_text(study(folder, f'model = "hf"\noptions = {{ path = "{tiny_bert}", max_length = 16 }}\n'
                                  'train = { epochs = 6, batch_size = 16, lr = 3e-3 }'))
    result = runner.invoke(cli, ["study", "run", str(path), "--db", str(tmp_path / "s.db")])
    assert result.exit_code == 0, result.output
    store = Store(tmp_path / "s.db")
    student = next(store.db.query("SELECT key FROM stages WHERE role = 'student' AND loss = 'xent'"))["key"]
    predict = next(store.db.query("SELECT stage_key FROM study_stages WHERE role = 'student_test' AND loss = 'xent'"))["stage_key"]
    stored = store.predictions(predict, "test")
    task = pairs_task(folder)
    model = make_model("hf", {"path": str(tiny_bert), "max_length": 16}, {}, "strong")
    trained = model.load(store.artifact(student), task)
    test = [e for e in task.load("test") if e.id in stored]
    assert len(test) == 80
    r_a, r_b = trained.rewards([e.pair[0] for e in test]), trained.rewards([e.pair[1] for e in test])
    expected = 1 / (1 + np.exp(-(r_b - r_a)))
    assert np.allclose([stored[e.id]["probs"][1] for e in test], expected, atol=1e-5)
    accuracies = dict(store.db.execute("SELECT role, value FROM metrics JOIN stages ON key = stage_key "
                                       "WHERE name = 'accuracy' AND role IN ('weak_test', 'ceiling_test')").fetchall())
    assert accuracies["ceiling_test"] > 0.75 and accuracies["weak_test"] > 0.6  # pairwise accuracy, both above chance


def test_a_model_that_cannot_score_one_text_is_a_plan_time_error(runner, tmp_path):
    folder = write_preferences(tmp_path / "data", n_train=80, n_test=20)
    path = tmp_path / "prefs.toml"
    path.write_text(study(folder, 'model = "chess_engine"\noptions = { depth = 1 }').replace("n_transfer = 200", "n_transfer = 10").replace("n_weak_train = 60", "n_weak_train = 10"))
    result = runner.invoke(cli, ["study", "run", str(path), "--db", str(tmp_path / "s.db"), "--dry-run"])
    assert result.exit_code != 0
    assert "cannot score a single text, so it cannot be a reward model for the pairwise task files" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "s.db").exists() or not Store(tmp_path / "s.db").db["stages"].exists() or \
        Store(tmp_path / "s.db").db.execute("SELECT count(*) FROM stages").fetchone()[0] == 0


@pytest.mark.parametrize("content, message", [
    ("a,b\nx,y\n", "label"),
    ("a,b,label\nx y,y z,1\nx,z,2\n", "2"),
    ("first,b,label\nx,y,0\n", "a"),
])
def test_a_missing_or_non_binary_preference_column_is_one_line_naming_the_file_and_column(tmp_path, content, message):
    (tmp_path / "train.csv").write_text(content)
    (tmp_path / "test.csv").write_text(content)
    task = make_task("files", {"train": "train.csv", "test": "test.csv", "pairs": "a_b"}, tmp_path, "task")
    with pytest.raises(W2SError) as err:
        task.load("train")
    text = str(err.value)
    assert "train.csv" in text and message in text and "\n" not in text


def test_utilitarianism_preference_framing_is_pairwise_and_keeps_the_old_framing_by_default():
    ethics = Path(__file__).parent / "fixtures" / "ethics"
    old = make_task("ethics", {"subset": "utilitarianism"}, ethics, "task")
    new = make_task("ethics", {"subset": "utilitarianism", "framing": "preference"}, ethics, "task")
    assert old.kind == "binary" and new.kind == "pairwise"
    assert old.identity() == make_task("ethics", {"subset": "utilitarianism", "framing": "first_or_second"}, ethics, "t").identity()
    for e_old, e_new in zip(old.load("test"), new.load("test")):
        assert e_new.pair == (e_old.meta["first"], e_old.meta["second"]) and e_new.label == e_old.label
    with pytest.raises(W2SError, match="framing = 'preference' applies to subset utilitarianism"):
        make_task("ethics", {"subset": "justice", "framing": "preference"}, ethics, "task")


def test_a_causal_lm_reward_model_pools_the_last_real_token(tmp_path, tiny_gpt2):
    task = pairs_task(write_preferences(tmp_path, n_train=40, n_test=10))
    train = task.load("train")
    model = make_model("hf", {"path": str(tiny_gpt2), "max_length": 16}, {"epochs": 1, "batch_size": 8}, "strong")
    trained = model.fit(train, targets(train), make_loss_xent(), task, Ctx())
    assert trained.module.pooling == "last"
    r = trained.rewards(["good great fun", "awful bad"])
    assert r.shape == (2,) and np.isfinite(r).all()
    probs = trained.predict(task.load("test"), task)
    assert probs.shape == (10, 2) and np.allclose(probs.sum(1), 1)
