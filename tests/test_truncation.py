"""Truncation: the share of inputs cut at max_length is a stored metric, shown by `w2s study show`, warned about above 10%."""

from w2s.api import Example
from w2s.commands.cli import cli
from w2s.plugins import make_model, make_task
from w2s.storing.store import Store
from conftest import sst2_study


def strong(tiny_bert, max_length, truncation="auto"):
    return f'model = "hf"\n[strong.options]\npath = "{tiny_bert}"\nmax_length = {max_length}\ntruncation = "{truncation}"\n[strong.train]\nepochs = 1\nbatch_size = 16\n'


def test_truncated_share_is_stored_shown_and_warned(tmp_path, runner, sentiment_dir, tiny_bert):
    study = tmp_path / "t.toml"
    study.write_text(sst2_study(sentiment_dir, strong(tiny_bert, 8), n=(20, 30, 20), name="cut"))
    db = tmp_path / "w2s.db"
    run = runner.invoke(cli, ["study", "run", str(study), "--db", str(db)])
    assert run.exit_code == 0, run.output
    assert "warning: 100% of 30 train inputs are longer than 8 tokens and lose their end (truncation = 'right')" in run.output
    store = Store(db, readonly=True)
    shares = {(r["role"], r["split"]): r["value"] for r in store.db.query(
        "SELECT st.role, m.split, m.value FROM metrics m JOIN stages st ON st.key = m.stage_key WHERE m.name = 'truncated_share'")}
    assert shares == {("ceiling", "train"): 1.0, ("student", "train"): 1.0, ("ceiling", "test"): 1.0, ("student", "test"): 1.0}  # each fit predicts in its stage
    shown = runner.invoke(cli, ["study", "show", "cut", "--db", str(db)])
    assert shown.exit_code == 0 and "truncated" in shown.output and "100%!" in shown.output
    assert "more than 10% of the stage's inputs were cut" in shown.output
    # bag-of-words stages never truncate: no metric, an empty cell
    assert all(role not in {r for r, _ in shares} for role in ("weak", "weak_test"))


def test_no_warning_and_zero_share_when_inputs_fit(tmp_path, runner, sentiment_dir, tiny_bert):
    study = tmp_path / "t.toml"
    study.write_text(sst2_study(sentiment_dir, strong(tiny_bert, 64), n=(20, 30, 20), name="fits"))
    run = runner.invoke(cli, ["study", "run", str(study), "--db", str(tmp_path / "w2s.db")])
    assert run.exit_code == 0 and "warning:" not in run.output, run.output
    shown = runner.invoke(cli, ["study", "show", "fits", "--db", str(tmp_path / "w2s.db")])
    assert "    0%" in shown.output and "more than 10%" not in shown.output, shown.output


def test_truncation_side_keeps_the_end_or_the_start(tiny_bert):
    task = make_task("sst2", {}, None, "task")
    example = Example("x", "the film was very good", 1)
    ids = {}
    for side in ("right", "left"):
        model = make_model("hf", {"path": str(tiny_bert), "max_length": 8, "truncation": side}, {}, "strong")
        tokenizer, _ = model.build(2)
        ids[side] = tokenizer.convert_ids_to_tokens(model.encode(tokenizer, [example], task)[0]["input_ids"])
    assert ids["right"][:4] == ["[CLS]", "review", ":", "the"] and ids["right"][-1] == "[SEP]"
    assert ids["left"][-3:] == ["sentiment", ":", "[SEP]"] and "review" not in ids["left"]
    assert make_model("hf", {"path": "x", "head": "lm"}, {}, "s").truncation_side() == "left"  # auto: an LM keeps the prompt's end


def test_boolq_can_put_the_question_first():
    passage_first, question_first = (make_task("boolq", {"question_first": q}, None, "task") for q in (False, True))
    example = Example("b", "p", 1, meta={"question": "is it", "passage": "a long passage"})
    assert passage_first.render(example) == "Passage: a long passage\nQuestion: is it?\nAnswer:"
    assert question_first.render(example) == "Question: is it?\nPassage: a long passage\nAnswer:"
