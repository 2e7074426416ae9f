"""Chess puzzles: Lichess rows -> examples, illegal-move handling, the generator, engine supervisors, a study."""

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from w2s import plugins
from w2s.api import W2SError
from w2s.commands.cli import cli
from w2s.metrics import choice_accuracy
from w2s_plugins import chess_generator, chess_stockfish
from w2s_plugins.chess_puzzles import ChessPuzzlesTask

ROOT = Path(__file__).resolve().parents[1]
HEADER = "PuzzleId,FEN,Moves,Rating,RatingDeviation,Popularity,NbPlays,Themes,GameUrl,OpeningTags"
ROWS = [  # rows of the Lichess puzzle database (https://database.lichess.org/#puzzles)
    "00008,r6k/pp2r2p/4Rp1Q/3p4/8/1N1P2R1/PqP2bPP/7K b - - 0 24,f2g3 e6e7 b2b1 b3c1 b1c1 h6c1,1913,75,94,6230,crushing hangingPiece long middlegame,https://lichess.org/787zsVup/black#47,",
    "0000D,5rk1/1p3ppp/pq3b2/8/8/1P1Q1N2/P4PPP/3R2K1 w - - 2 27,d3d6 f8d8 d6d8 f6d8,1585,74,97,443,advantage endgame short,https://lichess.org/F8M8OS71#53,",
    "0009B,r2qr1k1/b1p2ppp/pp4n1/P1P1p3/4P1n1/B2P2Pb/3NBP1P/RN1QR1K1 b - - 1 16,b6c5 e2g4 h3g4 d1g4,1102,75,95,1091,advantage middlegame short,https://lichess.org/4MWQCxQ6/black#32,Kings_Pawn_Game",
]


def stockfish_or_skip() -> str:
    """Stockfish for the tests that need it; in CI (.ci/run installs it) a missing binary is a failure."""
    try:
        return chess_stockfish.find_stockfish()
    except W2SError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must install stockfish (apt-get install -y stockfish): {exc}")
        pytest.skip(f"stockfish is not installed (apt-get install stockfish): {exc}")


@pytest.fixture
def puzzle_file(tmp_path):
    path = tmp_path / "puzzles.csv"
    path.write_text("\n".join([HEADER, *ROWS]) + "\n")
    return path


def load_all(path, **options):
    task = ChessPuzzlesTask({"file": str(path), "test_frac": 0.01, **options})
    return task, {e.id: e for e in task.load("train") + task.load("test")}


def test_first_move_is_applied_and_target_is_the_second(puzzle_file):
    task, examples = load_all(puzzle_file)
    assert sorted(examples) == ["00008", "0000D", "0009B"]
    e = examples["00008"]
    assert e.meta["moves_san"] == "24...Bxg3"
    assert e.meta["board_fen"] == "r6k/pp2r2p/4Rp1Q/3p4/8/1N1P2b1/PqP3PP/7K w - - 0 25"
    assert e.choices[e.label] == "Rxe7" and e.meta["target"] == "Rxe7"
    assert e.choices == tuple(sorted(e.choices)) and "hxg3" in e.choices and "Bxg3" not in e.choices
    assert examples["0000D"].choices[examples["0000D"].label] == "Rd8"
    assert examples["0009B"].choices[examples["0009B"].label] == "Bxg4"
    assert task.render(e) == "FEN: r6k/pp2r2p/4Rp1Q/3p4/8/1N1P2R1/PqP2bPP/7K b - - 0 24\nMoves: 24...Bxg3\nBest move:"
    assert task.target_text(e) == " Rxe7"


def test_file_without_header_and_multiple_choice_framing(tmp_path):
    path = tmp_path / "noheader.csv"
    path.write_text("\n".join(r.rsplit(",", 1)[0] for r in ROWS) + "\n")  # old layout: 9 columns, no header
    task, examples = load_all(path, framing="multiple_choice")
    assert task.kind == "multiple_choice" and len(examples) == 3
    prompt = task.render(examples["0000D"])
    assert "\nLegal moves: " in prompt and " Rd8 " in prompt and prompt.endswith("Best move:")


def test_filters_rating_themes_count(puzzle_file):
    assert sorted(load_all(puzzle_file, min_rating=1500)[1]) == ["00008", "0000D"]
    assert sorted(load_all(puzzle_file, max_rating=1600)[1]) == ["0000D", "0009B"]
    assert sorted(load_all(puzzle_file, themes=["endgame", "hangingPiece"])[1]) == ["00008", "0000D"]
    assert sorted(load_all(puzzle_file, count=2)[1]) == ["00008", "0000D"]


def test_splits_are_disjoint_and_stable(puzzle_file):
    task = ChessPuzzlesTask({"file": str(puzzle_file), "test_frac": 0.5})
    train, test = {e.id for e in task.load("train")}, {e.id for e in task.load("test")}
    assert train | test == {"00008", "0000D", "0009B"} and not train & test
    assert {e.id for e in ChessPuzzlesTask({"file": str(puzzle_file), "test_frac": 0.5}).load("test")} == test


def test_bad_rows_and_missing_file_are_one_line_errors(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "\n" + ROWS[0].replace("f2g3 e6e7", "f2g3 e6e8") + "\n")
    with pytest.raises(W2SError, match=r"puzzle 00008: move 'e6e8' is not legal in its position; fix or drop that row"):
        load_all(path)
    with pytest.raises(W2SError, match="make-puzzles"):
        ChessPuzzlesTask({"file": str(tmp_path / "nope.csv")}).load("train")
    (tmp_path / "cols.csv").write_text("PuzzleId,Rating\nx,1\n")
    with pytest.raises(W2SError, match=r"cols\.csv: column\(s\) \['FEN', 'Moves'\] not found"):
        ChessPuzzlesTask({"file": str(tmp_path / "cols.csv")}).load("train")


def test_generated_moves_are_checked_for_legality(puzzle_file):
    task, examples = load_all(puzzle_file)
    e = examples["00008"]
    assert task.choice_index(e, " Rxe7 and wins") == e.label
    assert task.choice_index(e, "e6e7") == e.label  # UCI is understood too
    assert task.choice_index(e, "Qxh7") is not None  # legal, but wrong
    assert task.choice_index(e, "Bxg3") is None  # the opponent's move: not legal for white here
    assert task.choice_index(e, "Ke9") is None and task.choice_index(e, "") is None
    es = [examples["00008"], examples["0000D"], examples["0009B"]]
    right = np.eye(len(es[0].choices))[es[0].label]
    wrong = np.eye(len(es[1].choices))[(es[1].label + 1) % len(es[1].choices)]
    es[2] = dataclasses.replace(es[2], label=0)  # answer = choice 0, where argmax of an all-zero row lands
    illegal = np.zeros(len(es[2].choices))  # what a generation model returns for an illegal move: argmax alone would count it right
    m = task.metrics(es, [right, wrong, illegal])
    assert m == {"exact_match": pytest.approx(1 / 3), "illegal_moves": 1.0, "illegal_rate": pytest.approx(1 / 3)}
    assert choice_accuracy([right, wrong, np.zeros(3)], [es[0].label, 0, 0])["accuracy"] == pytest.approx(1 / 3)


def test_missing_stockfish_says_how_to_install(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(chess_stockfish, "FALLBACK_STOCKFISH", str(tmp_path / "none"))
    result = runner.invoke(cli, ["chess", "make-puzzles", "--n", "2", "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: stockfish not found on PATH or in /usr/games: install it with `apt-get install stockfish` or pass --stockfish PATH"
    )
    result = runner.invoke(cli, ["chess", "make-puzzles", "--stockfish", str(tmp_path / "sf"), "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 1 and "no such executable" in result.output and "Traceback" not in result.output


def test_make_puzzles_is_valid_and_reproducible(runner, tmp_path):
    stockfish = stockfish_or_skip()
    outs = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for out in outs:
        result = runner.invoke(cli, ["chess", "make-puzzles", "--n", "4", "--seed", "3", "--depth", "6", "--stockfish", stockfish, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert "wrote 4 puzzles" in result.output
    assert outs[0].read_bytes() == outs[1].read_bytes()
    lines = outs[0].read_text().splitlines()
    assert lines[0] == HEADER and len(lines) == 5
    task, examples = load_all(outs[0])
    assert len(examples) == 4
    for e in examples.values():  # every target is a legal move of the solving position
        assert task.choice_index(e, e.meta["target"]) == e.label
    themes = [e.meta["themes"].split() for e in examples.values()]
    assert all(("mate" in t) == any(x.startswith("mateIn") for x in t) for t in themes)


def test_easy_share_cap_keeps_hard_puzzles_and_prefixes(tmp_path):
    """--max-easy-share: at most that share is solved by depth 1; a shorter run is a prefix of a longer one."""
    stockfish = stockfish_or_skip()
    rows = chess_generator.make_puzzles(4, 1, stockfish, depth=6, max_easy_share=0.5)
    ratings = [r["Rating"] for r in rows]
    assert len(rows) == 4 and sum(r == chess_generator.EASY_RATING for r in ratings) <= 2 and max(ratings) > chess_generator.EASY_RATING
    assert chess_generator.make_puzzles(2, 1, stockfish, depth=6, max_easy_share=0.5) == rows[:2]
    cap = chess_generator.EasyCap(0.5)
    kept = []
    for rating in (600, 600, 850, 600, 600, 1100, 600):
        if rating != 600 or cap.room():
            cap.add(rating)
            kept.append(rating)
    assert kept == [850, 600, 1100, 600]


def test_engine_supervisor_predicts_over_legal_moves(puzzle_file):
    stockfish = stockfish_or_skip()
    task, examples = load_all(puzzle_file)
    es = list(examples.values())
    model = plugins.make_model("chess_engine", {"path": stockfish, "depth": 6, "multipv": 3}, {}, "strong")
    trained = model.fit(es, None, None, task, None)
    probs = trained.predict(es, task)
    for e, p in zip(es, probs):
        assert p.shape == (len(e.choices),) and p.sum() == pytest.approx(1.0) and (p > 0).sum() <= 3
    one = plugins.make_model("chess_engine", {"path": stockfish, "depth": 6}, {}, "strong").fit(es, None, None, task, None).predict(es, task)
    assert [int(np.argmax(p)) for p in one] == [int(np.argmax(p)) for p in probs]
    assert all(sorted(p.tolist())[-1] == 1.0 for p in one)
    with pytest.raises(W2SError, match=r"strong.options: .*set a search limit"):
        plugins.make_model("chess_engine", {}, {}, "strong")


class SeedCtx:
    """The part of a predict stage's context the engine reads: the study seed and a progress wrapper."""

    def __init__(self, seed):
        self.seed = seed

    def progress(self, iterable, total=None, desc=""):
        return iterable


def engine_accuracy(options, task, examples, ctx=None):
    probs = plugins.make_model("chess_engine", options, {}, "weak").fit(examples, None, None, task, None).predict(examples, task, ctx)
    moves = [int(np.argmax(p)) for p in probs]
    return float(np.mean([m == e.label for m, e in zip(moves, examples)])), moves


def test_blunder_rate_weakens_the_engine_reproducibly():
    """On the first 40 committed puzzles: depth 6 finds 38; blunder_rate 1 plays random moves; 0.5 lies between."""
    stockfish = stockfish_or_skip()
    task = ChessPuzzlesTask({"file": "puzzles.csv", "count": 40}, ROOT / "studies" / "data" / "chess")
    es = task.examples()
    acc = {}
    moves = {}
    for rate in (0.0, 0.5, 1.0):
        acc[rate], moves[rate] = engine_accuracy({"path": stockfish, "depth": 6, "blunder_rate": rate}, task, es)
    assert acc[1.0] < acc[0.0]
    assert acc[0.0] - acc[1.0] > 0.5  # far apart: random legal moves against a depth-6 search
    assert min(acc[0.0], acc[1.0]) <= acc[0.5] <= max(acc[0.0], acc[1.0])
    assert acc[0.5] not in (acc[0.0], acc[1.0])  # about half the positions blunder, so it is strictly between here
    # the blunders at 0.5 are the same random moves as at 1.0, at a subset of the positions
    assert all(m in (moves[0.0][i], moves[1.0][i]) for i, m in enumerate(moves[0.5]))
    again = engine_accuracy({"path": stockfish, "depth": 6, "blunder_rate": 0.5}, task, es, SeedCtx(0))
    assert again == (acc[0.5], moves[0.5])  # same seed (no context = seed 0), same predictions
    other = engine_accuracy({"path": stockfish, "depth": 6, "blunder_rate": 0.5}, task, es, SeedCtx(1))[1]
    assert other != moves[0.5]  # another study seed draws other blunders


def test_nodes_1_is_a_search_limit_and_blunder_rate_is_validated():
    stockfish = stockfish_or_skip()
    task = ChessPuzzlesTask({"file": "puzzles.csv", "count": 20}, ROOT / "studies" / "data" / "chess")
    es = task.examples()
    probs = plugins.make_model("chess_engine", {"path": stockfish, "nodes": 1}, {}, "weak").fit(es, None, None, task, None).predict(es, task)
    assert all(p.shape == (len(e.choices),) and p.sum() == pytest.approx(1.0) for p, e in zip(probs, es))
    assert engine_accuracy({"path": stockfish, "nodes": 1}, task, es) == engine_accuracy({"path": stockfish, "nodes": 1}, task, es)
    for bad in (-0.1, 1.5):
        with pytest.raises(W2SError, match=r"weak.options.blunder_rate"):
            plugins.make_model("chess_engine", {"depth": 1, "blunder_rate": bad}, {}, "weak")
    plain = plugins.make_model("chess_engine", {"depth": 1, "blunder_rate": 0.0}, {}, "weak").spec()
    assert plain == plugins.make_model("chess_engine", {"depth": 1}, {}, "weak").spec()  # the default keeps every key
    assert plugins.make_model("chess_engine", {"depth": 1, "blunder_rate": 0.3}, {}, "weak").spec()["options"] == {"depth": 1, "blunder_rate": 0.3}


def test_engine_ladder_study_with_chain(runner, tmp_path):
    """Depth-1 supervises depth-6 directly and through depth 3: accuracy table, PGR rows, chain rows."""
    stockfish_or_skip()
    data = ROOT / "studies" / "data" / "chess"
    study = tmp_path / "chess.toml"
    study.write_text(f"""
[study]
name = "chess-ladder-test"
seeds = [0]
chain_transfer = "same"

[task]
name = "chess_puzzles"
data_dir = "{data}"
n_weak_train = 4
n_transfer = 8
n_test = 12
[task.options]
file = "puzzles.csv"

[[chain]]
model = "chess_engine"
label = "sf-d1"
options = {{ depth = 1 }}
[[chain]]
model = "chess_engine"
label = "sf-d3"
options = {{ depth = 3 }}
[[chain]]
model = "chess_engine"
label = "sf-d6"
options = {{ depth = 6 }}
""")
    db = tmp_path / "w2s.db"
    result = runner.invoke(cli, ["study", "run", str(study), "--db", str(db)])
    assert result.exit_code == 0, result.output
    import sqlite3

    con = sqlite3.connect(db)
    acc = dict(con.execute("""SELECT DISTINCT st.model || ':' || ss.role, m.value FROM metrics m JOIN stages st ON st.key = m.stage_key
                              JOIN study_stages ss ON ss.stage_key = st.key
                              WHERE m.name = 'accuracy' AND m.split = 'test' AND ss.role LIKE '%\\_test' ESCAPE '\\'""").fetchall())
    assert set(acc) >= {"sf-d1:weak_test", "sf-d3:student_test", "sf-d6:student_test", "sf-d6:ceiling_test"}
    # measured on the committed puzzles' 12 test puzzles: depth 1 finds 7, depth 3 finds 11, depth 6 all
    assert acc == pytest.approx({"sf-d1:weak_test": 7 / 12, "sf-d3:student_test": 11 / 12, "sf-d3:ceiling_test": 11 / 12,
                                 "sf-d6:student_test": 1.0, "sf-d6:ceiling_test": 1.0})
    assert acc["sf-d1:weak_test"] < acc["sf-d6:ceiling_test"]  # the committed puzzles are not all depth-1 easy
    illegal = con.execute("SELECT DISTINCT value FROM metrics WHERE name = 'illegal_moves'").fetchall()
    assert illegal == [(0.0,)]  # engines only ever answer legal moves
    roles = {r[0] for r in con.execute("SELECT role FROM stages WHERE kind = 'evaluate'")}
    assert roles == {"chain_step", "chain_direct"}
    assert "sf-d1" in result.output and "sf-d6" in result.output


class RecordingCtx:
    """The stage context an LM fit needs: a seed, and curves kept for inspection."""

    seed = 0
    split = None

    def __init__(self):
        self.curves = []

    def log_curve(self, step, name, value):
        self.curves.append((step, name, value))

    def log_metric(self, split, name, value):
        pass

    def echo(self, message):
        pass


@pytest.fixture(scope="module")
def tiny_char_lm(tmp_path_factory):
    """A 2-layer GPT-2 (n_embd 32) over characters, so any FEN or SAN move tokenizes offline."""
    import string

    import torch
    from tokenizers import Tokenizer, decoders, models
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-char-lm")
    chars = ["[PAD]", "[UNK]", "[EOS]", *dict.fromkeys(string.printable)]
    backend = Tokenizer(models.BPE({c: i for i, c in enumerate(chars)}, merges=[], unk_token="[UNK]"))
    backend.decoder = decoders.Fuse()  # characters decode back to the text, no spaces in between
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    config = GPT2Config(vocab_size=len(chars), n_embd=32, n_layer=2, n_head=2, n_positions=256, bos_token_id=2, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("objective,loss", [("generative", "xent"), ("choices", "xent"), ("choices", "logconf")])
def test_lm_student_scores_every_legal_move_and_learns(puzzle_file, tiny_char_lm, objective, loss):
    """hf head = "lm" on chess: multi-token SAN choices scored after the prompt; training moves the target up."""
    from w2s_plugins.lm_choices import generate_choices

    task, examples = load_all(puzzle_file)
    es = list(examples.values())
    train = {"epochs": 4, "batch_size": 3, "lr": 3e-3, "warmup_frac": 0.0}
    options = {"path": str(tiny_char_lm), "head": "lm", "max_length": 160, "choice_objective": objective}
    model = plugins.make_model("hf", options, train, "strong")
    before = model.pretrained(task).predict(es, task)
    for e, p in zip(es, before):
        assert p.shape == (len(e.choices),) and p.sum() == pytest.approx(1.0)
    targets = [np.eye(len(e.choices))[e.label] for e in es]
    ctx = RecordingCtx()
    trained = model.fit(es, targets, plugins.make_loss(loss, {}, "loss"), task, ctx)
    after = trained.predict(es, task)
    assert all(a[e.label] > b[e.label] for e, a, b in zip(es, after, before))
    losses = [v for _, name, v in ctx.curves if name == "train_loss"]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert any(name == "train_acc" for _, name, _ in ctx.curves) == (objective == "choices")
    generated, texts = generate_choices(trained, es, task)
    m = task.metrics(es, generated)
    assert len(texts) == 3 and m["illegal_moves"] == sum(p.sum() == 0 for p in generated)


@pytest.mark.parametrize("objective", ["generative", "choices"])
def test_bf16_autocasts_chess_fit_scoring_and_generation(puzzle_file, tiny_char_lm, objective, monkeypatch):
    """precision = "bf16" reaches the per-example-choices path (lm_choices): every linear layer of the fit, the move
    scoring and free generation runs under autocast; fp32 runs none; the scores stay close to fp32's."""
    import torch

    from w2s_plugins.lm_choices import generate_choices

    linear = torch.nn.Linear.forward
    conv1d = __import__("transformers.pytorch_utils", fromlist=["Conv1D"]).Conv1D
    conv1d_forward = conv1d.forward  # GPT-2's projections are Conv1D layers
    task, examples = load_all(puzzle_file)
    es = list(examples.values())
    targets = [np.eye(len(e.choices))[e.label] for e in es]
    train = {"epochs": 2, "batch_size": 3, "lr": 3e-3, "warmup_frac": 0.0}

    def run(precision):
        seen = []
        monkeypatch.setattr(torch.nn.Linear, "forward", lambda self, x: seen.append(torch.is_autocast_enabled("cpu")) or linear(self, x))
        monkeypatch.setattr(conv1d, "forward", lambda self, x: seen.append(torch.is_autocast_enabled("cpu")) or conv1d_forward(self, x))
        options = {"path": str(tiny_char_lm), "head": "lm", "max_length": 160, "choice_objective": objective, "precision": precision}
        model = plugins.make_model("hf", options, train, "strong")
        trained = model.fit(es, targets, plugins.make_loss("xent", {}, "loss"), task, RecordingCtx())
        fitting = len(seen)
        probs = trained.predict(es, task)
        scoring = len(seen)
        generate_choices(trained, es, task)
        return probs, seen[:fitting], seen[fitting:scoring], seen[scoring:]

    probs, *fp32_phases = run("fp32")
    bf_probs, *bf16_phases = run("bf16")
    assert all(phase and not any(phase) for phase in fp32_phases)
    assert all(phase and all(phase) for phase in bf16_phases)
    assert all(np.allclose(a, b, atol=0.05) for a, b in zip(probs, bf_probs))
    assert any(not np.array_equal(a, b) for a, b in zip(probs, bf_probs))  # bfloat16 matmuls: close, not equal


def test_generative_objective_weights_soft_targets_and_refuses_other_losses(tiny_char_lm, puzzle_file):
    from w2s_plugins.lm_choices import weighted_moves

    assert weighted_moves([[0.0, 0.75, 0.25], [0.2, 0.0, 0.0]]) == [[(1, 0.75), (2, 0.25)], [(0, 1.0)]]
    assert weighted_moves([[0.0005, 0.0, 0.0]]) == [[(0, 1.0)]]  # below the floor: the top move still trains
    task, examples = load_all(puzzle_file)
    model = plugins.make_model("hf", {"path": str(tiny_char_lm), "head": "lm"}, {}, "strong")
    with pytest.raises(W2SError) as err:
        model.fit(list(examples.values()), [], plugins.make_loss("logconf", {}, "loss"), task, None)
    assert str(err.value) == ('hf.options.choice_objective = "generative" trains with xent or xent_hard only (loss is \'logconf\'); '
                              'set choice_objective = "choices" to apply \'logconf\' over all legal moves, or use loss xent')


def test_generative_lm_with_logconf_fails_while_planning(runner, tmp_path, tiny_char_lm):
    """The objective/loss mismatch is a one-line error before any stage runs (a dry run catches it too)."""
    stockfish_or_skip()
    study = tmp_path / "lm.toml"
    study.write_text(f"""
[study]
name = "chess-lm"
[task]
name = "chess_puzzles"
data_dir = "{ROOT / 'studies' / 'data' / 'chess'}"
n_weak_train = 2
n_transfer = 2
n_test = 2
[task.options]
file = "puzzles.csv"
[weak]
model = "chess_engine"
options = {{ depth = 1 }}
[strong]
model = "hf"
label = "tiny"
options = {{ path = "{tiny_char_lm}", head = "lm" }}
[[losses]]
name = "logconf"
""")
    db = tmp_path / "w2s.db"
    for extra in (["--dry-run"], []):
        result = runner.invoke(cli, ["study", "run", str(study), "--db", str(db), *extra])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert result.output.strip() == (f'Error: {study}: tiny.options.choice_objective = "generative" trains with xent or xent_hard only '
                                         "(loss is 'logconf'); set choice_objective = \"choices\" to apply 'logconf' over all "
                                         "legal moves, or use loss xent")
    import sqlite3

    assert sqlite3.connect(db).execute("SELECT count(*) FROM stages").fetchone() == (0,)


def test_generative_training_teaches_the_move_and_where_it_ends(puzzle_file, tiny_char_lm):
    """Fit on (prompt -> move + EOS): greedy generation then says exactly the target move and stops."""
    from w2s_plugins.lm_choices import generate_choices

    task, examples = load_all(puzzle_file)
    es = list(examples.values())
    train = {"epochs": 60, "batch_size": 3, "lr": 1e-2, "warmup_frac": 0.0}
    model = plugins.make_model("hf", {"path": str(tiny_char_lm), "head": "lm", "max_length": 160}, train, "strong")
    trained = model.fit(es, [np.eye(len(e.choices))[e.label] for e in es], plugins.make_loss("xent", {}, "loss"), task, RecordingCtx())
    generated, texts = generate_choices(trained, es, task)
    assert [t.strip() for t in texts] == [e.meta["target"] for e in es]
    assert task.metrics(es, generated) == {"exact_match": 1.0, "illegal_moves": 0.0, "illegal_rate": 0.0}


def test_generation_metrics_are_asked_for_and_hand_checked(puzzle_file):
    """Option off: the model is never asked to generate. On: a fixed illegal string scores 0 and is illegal everywhere."""
    es = list(load_all(puzzle_file)[1].values())
    asked = []

    def illegal(examples):
        asked.append(len(examples))
        return ["Ke9"] * len(examples)

    assert ChessPuzzlesTask({"file": str(puzzle_file)}).generation_metrics(es, illegal) == {} and asked == []
    task = ChessPuzzlesTask({"file": str(puzzle_file), "generation_metrics": True})
    assert task.generation_metrics(es, illegal) == {"gen_exact_match": 0.0, "gen_illegal_moves": 3.0, "gen_illegal_rate": 1.0}
    targets = lambda examples: [f" {e.meta['target']}\n" for e in examples]  # noqa: E731
    assert task.generation_metrics(es, targets) == {"gen_exact_match": 1.0, "gen_illegal_moves": 0.0, "gen_illegal_rate": 0.0}
    assert ChessPuzzlesTask({"file": str(puzzle_file)}).identity() != task.identity()  # turning it on changes the keys


def load_benchmark():
    import importlib.util

    spec = importlib.util.spec_from_file_location("chess_smollm2_benchmark", ROOT / "benchmarks" / "chess_smollm2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generation_metrics_are_stored_shown_and_match_the_benchmark(runner, tmp_path, tiny_char_lm):
    """A tiny LM ladder on the committed puzzles with generation_metrics = true: every test prediction of an LM stores
    gen_* in [0, 1], equal to what benchmarks/chess_smollm2.py's generation_metrics computes for the same checkpoint;
    the weak LM's labels on the transfer split are not generated; study show and compare print them."""
    import sqlite3

    data = ROOT / "studies" / "data" / "chess"
    lm = lambda label, n: f'model = "hf"\nlabel = "{label}"\noptions = {{ path = "{tiny_char_lm}", head = "lm", max_length = {n} }}\n' \
        'train = { epochs = 20, batch_size = 4, lr = 1e-2, warmup_frac = 0.0 }\n'  # noqa: E731
    text = lambda name: f"""
[study]
name = "{name}"
seeds = [0]
baseline = "none"
keep_checkpoints = "all"
[task]
name = "chess_puzzles"
data_dir = "{data}"
n_weak_train = 4
n_transfer = 4
n_test = 6
[task.options]
file = "puzzles.csv"
generation_metrics = true
[weak]
{lm("tiny-weak", 150)}
[strong]
{lm("tiny-strong", 160)}
"""
    study = tmp_path / "gen.toml"
    study.write_text(text("gen"))
    db = tmp_path / "w2s.db"
    result = runner.invoke(cli, ["study", "run", str(study), "--db", str(db)])
    assert result.exit_code == 0, result.output
    con = sqlite3.connect(db)
    rows = con.execute("""SELECT DISTINCT ss.role, m.split, m.name, m.value FROM metrics m JOIN study_stages ss ON ss.stage_key = m.stage_key
                          WHERE m.name LIKE 'gen\\_%' ESCAPE '\\' AND ss.role LIKE '%\\_test' ESCAPE '\\'""").fetchall()
    stored = {(role, name): value for role, split, name, value in rows}
    assert {split for _, split, _, _ in rows} == {"test"}
    assert {role for role, _ in stored} == {"weak_test", "student_test", "ceiling_test"}  # not weak_labels (transfer)
    assert {name for _, name in stored} == {"gen_exact_match", "gen_illegal_rate", "gen_illegal_moves"}
    for (role, name), value in stored.items():
        assert (0 <= value <= 1) if name != "gen_illegal_moves" else value in range(7)

    from w2s.planning.study import load_study
    from w2s.running.driver import Driver
    from w2s.storing.store import Store

    spec = load_study(study)
    store = Store(db, readonly=True)
    stages, _ = Driver(store).plan(spec)
    test = next(s for s in stages if s.role == "student_test").examples
    benchmark = load_benchmark()
    for role in ("weak", "student", "ceiling"):
        fit = next(s for s in stages if s.role == role)
        trained = fit.model.load(store.artifact(fit.key), spec.task)
        expected = benchmark.generation_metrics(trained, test, spec.task)
        assert stored[(f"{role}_test", "gen_exact_match")] == pytest.approx(expected["exact_match"])
        assert stored[(f"{role}_test", "gen_illegal_rate")] == pytest.approx(expected["illegal_rate"])
        assert stored[(f"{role}_test", "gen_illegal_moves")] == expected["illegal_moves"]

    shown = runner.invoke(cli, ["study", "show", "gen", "--db", str(db)])
    assert shown.exit_code == 0 and "free generation" in shown.output and "gen illegal rate" in shown.output, shown.output
    table = shown.output.split("free generation")[1].splitlines()
    for role, label in (("weak", "weak (tiny-weak)"), ("student", "student xent (tiny-weak->tiny-strong)"), ("ceiling", "ceiling (tiny-strong)")):
        cells = next(x for x in table if label in x).split()[-3:]
        assert cells[:2] == [f"{stored[(f'{role}_test', n)]:.3f}" for n in ("gen_exact_match", "gen_illegal_rate")], table
    study.write_text(text("gen-again"))  # the same stages, cached: a second study to compare with
    assert runner.invoke(cli, ["study", "run", str(study), "--db", str(db)]).exit_code == 0
    compared = runner.invoke(cli, ["study", "compare", "gen", "gen-again", "--db", str(db)])
    assert compared.exit_code == 0 and "free generation" in compared.output and "gen exact match" in compared.output, compared.output


@pytest.mark.parametrize("name", ["chess_lm_ladder", "chess_lm_engine"])
def test_issue_17_studies_plan_on_a_small_puzzle_file(tmp_path, name):
    """The committed (not yet run) studies plan, given their puzzle file: here the first 40 committed puzzles, which are
    what `w2s chess make-puzzles --n 40 --seed 0 --max-easy-share 0.5` writes (a shorter run is a prefix)."""
    from w2s.planning.protocol import plan_study
    from w2s.planning.study import load_study

    lines = (ROOT / "studies" / "data" / "chess" / "puzzles.csv").read_text().splitlines()[:41]
    (tmp_path / "ladder_puzzles.csv").write_text("\n".join(lines) + "\n")
    study = load_study(ROOT / "studies" / f"{name}.toml", [f"task.data_dir={tmp_path}"], limit=8)
    stages, links, *_ = plan_study(study)
    roles = {role for _, role, _ in links}
    assert study.task.options.generation_metrics and study.task.options.file == "ladder_puzzles.csv"
    if name == "chess_lm_ladder":
        assert [m.options.num_layers for m in study.chain] == [8, 16, None]
        assert {"chain_step", "chain_direct"} <= roles
    else:
        assert [m.options.blunder_rate for m in study.weak] == [0.5, 0.75]
        assert roles >= {"weak_test", "student_test", "ceiling_test", "evaluate"}


@pytest.mark.parametrize("loss", ["xent", "xent_hard"])
def test_generative_forward_passes_stay_within_the_batch_size(puzzle_file, tiny_char_lm, loss, monkeypatch):
    """Soft targets train every move above the floor, in forward passes of at most batch_size sequences (one pass of
    all of them ran out of memory on real puzzles); xent_hard trains only each example's most probable move."""
    from w2s_plugins import lm_choices
    from w2s_plugins.hf_lm import choice_token_ids

    task, examples = load_all(puzzle_file)
    es = list(examples.values())
    targets = []
    for e in es:  # three moves with mass 0.5 / 0.3 / 0.2, the label's move first
        t = np.zeros(len(e.choices))
        t[e.label], t[(e.label + 1) % len(t)], t[(e.label + 2) % len(t)] = 0.5, 0.3, 0.2
        targets.append(t)
    calls = []
    real = lm_choices.sequence_logprobs
    monkeypatch.setattr(lm_choices, "sequence_logprobs", lambda lm, seqs, device: calls.append(seqs) or real(lm, seqs, device))
    train = {"epochs": 2, "batch_size": 3, "lr": 3e-3, "warmup_frac": 0.0}
    model = plugins.make_model("hf", {"path": str(tiny_char_lm), "head": "lm", "max_length": 160}, train, "strong")
    ctx = RecordingCtx()
    model.fit(es, targets, plugins.make_loss(loss, {}, "loss"), task, ctx)
    steps = sum(name == "train_loss" for _, name, _ in ctx.curves)
    assert len(es) == 3 and steps == 2  # one batch of all 3 examples per epoch
    moves_per_example = 1 if loss == "xent_hard" else 3
    assert [len(c) for c in calls] == [3] * (2 * moves_per_example)  # soft: 9 sequences a step, in 3 passes of 3
    if loss == "xent_hard":  # the continuation is the label's move (the targets' argmax) and the end token
        trained_moves = {tuple(cont) for c in calls for _, cont in c}
        tok = model.pretrained(task).tokenizer
        expected = {tuple(choice_token_ids(tok, [e.choices[e.label]])[0] + lm_choices.end_tokens(tok)) for e in es}
        assert trained_moves == expected


def test_xent_hard_is_cross_entropy_on_the_targets_argmax():
    import torch

    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    soft = torch.tensor([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]])
    hard = plugins.make_loss("xent_hard", {}, "loss")(logits, soft, 0.0)
    assert float(hard) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, torch.tensor([1, 0]))))
    assert float(hard) != pytest.approx(float(plugins.make_loss("xent", {}, "loss")(logits, soft, 0.0)))
