"""Task chess_puzzles: the first move of a Lichess-format puzzle; and `w2s chess make-puzzles`.

A Lichess row's FEN is the position *before* the opponent's move: Moves[0] is applied first and
Moves[1] is the move to find. Choices are the legal moves of the solving position in SAN, sorted.
"""

from __future__ import annotations

import csv
import hashlib
import math
import random
import shutil
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from pydantic import Field

from w2s.api import Example, Options, Task, W2SError
from w2s.hookspecs import hookimpl

LICHESS_COLUMNS = ("PuzzleId", "FEN", "Moves", "Rating", "RatingDeviation", "Popularity", "NbPlays", "Themes", "GameUrl", "OpeningTags")
REQUIRED_COLUMNS = LICHESS_COLUMNS[:3]
DEFAULT_FILE = "lichess_db_puzzle.csv"
FALLBACK_STOCKFISH = "/usr/games/stockfish"  # where Debian's `apt-get install stockfish` puts it (not on PATH)
MAX_PLIES, MAX_PER_GAME, OPENING_PLIES = 160, 4, 4  # generator: game length cap, puzzles per game, random opening plies
RANDOM_MOVE_RATE, LESSER_MOVE_RATE = 0.2, 0.2  # generator: share of random moves and of 2nd/3rd depth-1 choices
PREFILTER_MARGIN = 0.5  # generator: a depth-4 look must show this share of the margin before the full search


def _chess():
    import chess

    return chess


# -- puzzles -------------------------------------------------------------------
def legal_sans(board) -> tuple[str, ...]:
    """Every legal move of `board` in SAN, in a stable (sorted) order."""
    return tuple(sorted(board.san(m) for m in board.legal_moves))


def parse_move(board, text: str):
    """The legal move `text` names (SAN, or UCI as a fallback) on `board`, else None."""
    words = text.strip().split()
    if not words:
        return None
    word = words[0].rstrip(".,;:!?")
    for parse in (board.parse_san, board.parse_uci):
        try:
            move = parse(word)
        except (ValueError, AssertionError):
            continue
        if move in board.legal_moves:
            return move
    return None


def puzzle_example(row: dict, where: str) -> Example:
    """One Lichess row -> Example: apply Moves[0] to the FEN; the label is Moves[1]'s index."""
    chess = _chess()
    pid = str(row["PuzzleId"]).strip()
    try:
        board = chess.Board(str(row["FEN"]).strip())
    except ValueError:
        raise W2SError(f"{where}: puzzle {pid}: FEN {row['FEN']!r} is invalid; fix or drop that row") from None
    moves = str(row["Moves"]).split()
    if len(moves) < 2:
        raise W2SError(f"{where}: puzzle {pid}: Moves needs the opponent's move and the answer (got {row['Moves']!r}); fix or drop that row")
    played = []
    for uci in moves[:2]:
        try:
            move = chess.Move.from_uci(uci)
        except ValueError:
            move = None
        if move is None or move not in board.legal_moves:
            raise W2SError(f"{where}: puzzle {pid}: move {uci!r} is not legal in its position; fix or drop that row")
        played.append(move)
        if len(played) == 1:
            history = board.variation_san([move])
            opponent_san = board.san(move)
            board.push(move)
    target = board.san(played[1])
    choices = legal_sans(board)
    meta = {
        "fen": str(row["FEN"]).strip(),
        "board_fen": board.fen(),
        "moves_san": history,
        "opponent_move": opponent_san,
        "target": target,
        "solution": " ".join(moves[1:]),
        "rating": _int(row.get("Rating")),
        "themes": str(row.get("Themes") or ""),
    }
    text = f"FEN: {meta['fen']}\nMoves: {history}"
    return Example(id=pid, text=text, label=choices.index(target), choices=choices, meta=meta)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def read_puzzle_rows(path: Path) -> list[dict]:
    """Rows of a Lichess puzzle CSV (with or without its header line), through `datasets`."""
    if not path.is_file():
        raise W2SError(
            f"puzzle file {path} not found; set task.data_dir (and task.options.file), "
            "or make one with `w2s chess make-puzzles --out FILE`"
        )
    with path.open(encoding="utf-8") as f:
        first = f.readline().rstrip("\n")
    names = None if first.startswith("PuzzleId") else list(LICHESS_COLUMNS[: len(first.split(","))])
    rows = _load_csv(path, names)
    missing = set(REQUIRED_COLUMNS) - set(rows.column_names)
    if missing:
        raise W2SError(f"{path}: missing column(s) {sorted(missing)}; expected the Lichess layout {','.join(LICHESS_COLUMNS)}")
    return list(rows)


def _load_csv(path: Path, names: list[str] | None):
    import datasets

    kwargs = {"column_names": names} if names else {}
    with path.open(encoding="utf-8") as f:
        header = names or f.readline().rstrip("\n").split(",")
    features = datasets.Features({c: datasets.Value("string") for c in header})
    return datasets.load_dataset("csv", data_files=str(path), split="train", keep_default_na=False, features=features, **kwargs)


def is_test(puzzle_id: str, test_frac: float) -> bool:
    """Deterministic split by a hash of the puzzle id (stable across files and machines)."""
    digest = int(hashlib.sha256(puzzle_id.encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < test_frac


class ChessPuzzlesTask(Task):
    """Find the first move of a chess puzzle (Lichess puzzle CSV layout, from a local file)."""

    name = "chess_puzzles"
    version = "1"
    kind = "generation"
    description = "chess puzzles in the Lichess CSV layout (local file): find the first move, exact match in SAN"

    class Options(Options):
        file: str = Field(default=DEFAULT_FILE, description="CSV file name in data_dir, or an absolute path")
        framing: Literal["generation", "multiple_choice"] = "generation"
        min_rating: int | None = None
        max_rating: int | None = None
        themes: list[str] = Field(default_factory=list, description="keep puzzles tagged with any of these themes")
        count: int | None = Field(default=None, ge=1, description="keep the first N puzzles that pass the filters")
        test_frac: float = Field(default=0.2, gt=0, lt=1)

    def __init__(self, options: dict | None = None, data_dir=None):
        super().__init__(options, data_dir)
        self.kind = self.options.framing
        self._examples: list[Example] | None = None

    @property
    def path(self) -> Path:
        file = Path(self.options.file).expanduser()
        if file.is_absolute() or self.data_dir is None:
            return file
        return self.data_dir / file

    @property
    def num_labels(self) -> int:
        return 0  # variable: one label per legal move of each example

    def keep(self, row: dict) -> bool:
        """The rating and theme filters."""
        o = self.options
        rating = _int(row.get("Rating"))
        if o.min_rating is not None and (rating is None or rating < o.min_rating):
            return False
        if o.max_rating is not None and (rating is None or rating > o.max_rating):
            return False
        return not o.themes or bool(set(o.themes) & set(str(row.get("Themes") or "").split()))

    def examples(self) -> list[Example]:
        if self._examples is None:
            rows = [r for r in read_puzzle_rows(self.path) if self.keep(r)]
            rows = rows[: self.options.count] if self.options.count else rows
            self._examples = [puzzle_example(r, str(self.path)) for r in rows]
        return self._examples

    def load(self, split: str) -> list[Example]:
        want_test = split == "test"
        return [e for e in self.examples() if is_test(e.id, self.options.test_frac) == want_test]

    def render(self, example: Example) -> str:
        """FEN + SAN move list, then (multiple choice) the legal moves, then `Best move:`."""
        options = f"\nLegal moves: {' '.join(example.choices)}" if self.kind == "multiple_choice" else ""
        return f"{example.text}{options}\nBest move:"

    def target_text(self, example: Example, choice: int | None = None) -> str:
        """The completion for a choice (the target move by default), as the model should generate it."""
        return " " + example.choices[example.label if choice is None else choice]

    def choice_index(self, example: Example, text: str) -> int | None:
        """Index of the legal move a generated `text` names; None when it is not a legal move."""
        chess = _chess()
        board = chess.Board(example.meta["board_fen"])
        move = parse_move(board, text)
        return None if move is None else example.choices.index(board.san(move))

    def metrics(self, examples: Sequence[Example], predictions: Sequence[np.ndarray]) -> dict[str, float]:
        """Exact-match accuracy; a prediction with no mass on any legal move is an illegal move (wrong)."""
        illegal = [float(np.sum(p)) <= 0 for p in predictions]
        correct = [not bad and int(np.argmax(p)) == e.label for e, p, bad in zip(examples, predictions, illegal)]
        n = max(1, len(examples))
        return {"exact_match": sum(correct) / n, "illegal_moves": float(sum(illegal)), "illegal_rate": sum(illegal) / n}


# -- puzzle generator ------------------------------------------------------------
def find_stockfish(path: str | None = None) -> str:
    """The Stockfish binary: `path`, else on PATH, else /usr/games/stockfish; one-line error if missing."""
    if path:
        found = shutil.which(path) or (path if Path(path).is_file() else None)
        if not found:
            raise W2SError(f"--stockfish {path}: no such executable; pass the path of a Stockfish binary")
        return found
    found = shutil.which("stockfish") or (FALLBACK_STOCKFISH if Path(FALLBACK_STOCKFISH).is_file() else None)
    if not found:
        raise W2SError("stockfish not found on PATH or in /usr/games: install it with `apt-get install stockfish` or pass --stockfish PATH")
    return found


def open_engine(path: str, threads: int = 1, hash_mb: int = 16):
    """A UCI engine with fixed threads and hash, so that depth-limited searches are reproducible."""
    import chess.engine

    try:
        engine = chess.engine.SimpleEngine.popen_uci(path)
    except (OSError, chess.engine.EngineError) as exc:
        raise W2SError(f"could not start the chess engine {path}: {exc}; pass a working UCI engine binary") from None
    engine.configure({"Threads": threads, "Hash": hash_mb})
    return engine


def win_chances(score) -> float:
    """Lichess winning chances in [-1, 1] from the side to move's score."""
    mate = score.mate()
    if mate is not None:
        return 1.0 if mate > 0 else -1.0
    return 2 / (1 + math.exp(-0.00368208 * score.score())) - 1


def clearly_best(best, second, margin: float) -> bool:
    """Lichess-style only-move test: the best move's winning chances beat the second's by `margin`."""
    import chess.engine

    if second is None:
        return False  # a forced move is no puzzle
    if best == chess.engine.Mate(1):
        return second < chess.engine.Mate(2)
    return win_chances(best) > win_chances(second) + margin


def puzzle_themes(board, best, solution_len: int) -> str:
    """Lichess theme tags: mate/mateInN or advantage/crushing, length and game phase."""
    mate = best.mate()
    if mate is not None and mate > 0:
        tags = ["mate", f"mateIn{mate}", "oneMove" if mate == 1 else ("short" if mate == 2 else "long")]
    else:
        tags = ["crushing" if best.score() >= 600 else "advantage", "oneMove" if solution_len == 1 else "short"]
    heavy = sum(len(board.pieces(p, c)) for p in (2, 3, 4, 5) for c in (True, False))
    tags.append("endgame" if heavy <= 6 else ("opening" if board.fullmove_number <= 10 else "middlegame"))
    return " ".join(sorted(tags))


RATING_DEPTHS = (1, 2, 3, 4, 6)  # difficulty proxy: rating 600 + 250 per depth step that misses the target
EASY_RATING = 600  # a depth-1 search already finds the move


def fresh_best(engine, board, depth: int, key):
    """The best move of a depth-`depth` search on an empty hash (what a supervisor of that depth plays)."""
    import chess.engine

    info = engine.analyse(board, chess.engine.Limit(depth=depth), game=(*key, depth))
    return (info.get("pv") or [None])[0]


def difficulty_rating(engine, board, target, key) -> int:
    """A rating proxy: the shallowest search depth whose best move is the target (deeper = harder)."""
    for i, depth in enumerate(RATING_DEPTHS):
        if fresh_best(engine, board, depth, key) == target:
            return EASY_RATING + 250 * i
    return EASY_RATING + 250 * len(RATING_DEPTHS)


class EasyCap:
    """A running cap on the share of easy puzzles (rating 600: depth 1 finds them); None = no cap.

    The rule looks only at the puzzles kept so far, so a shorter run is a prefix of a longer one.
    """

    def __init__(self, share: float | None):
        self.share, self.easy, self.total = share, 0, 0

    def room(self) -> bool:
        return self.share is None or self.easy + 1 <= self.share * (self.total + 1) + 1e-9

    def add(self, rating: int) -> None:
        self.easy += rating == EASY_RATING
        self.total += 1


def solution_moves(best_info, target) -> list:
    """The solver's first move, plus the forced line to mate when the engine sees mate in N."""
    mate = best_info["score"].relative.mate()
    pv = best_info.get("pv") or [target]
    if mate is not None and mate > 1 and len(pv) >= 2 * mate - 1:
        return pv[: 2 * mate - 1]
    return [target]


def make_puzzles(n: int, seed: int, stockfish: str, depth: int = 10, margin: float = 0.5,
                 max_easy_share: float | None = None, progress=None) -> list[dict]:
    """Play seeded games (shallow engine moves mixed with mistakes) and keep clear only-move positions.

    `max_easy_share` caps the share of puzzles a depth-1 search solves; the rest are harder (slower to find).
    """
    rows: list[dict] = []
    cap = EasyCap(max_easy_share)
    engine = open_engine(stockfish)
    try:
        game = 0
        while len(rows) < n:
            rows += game_puzzles(engine, seed, game, depth, margin, n - len(rows), cap)
            game += 1
            if progress:
                progress(len(rows))
    finally:
        engine.quit()
    for i, row in enumerate(rows):
        row["PuzzleId"] = f"w{seed}x{i:05d}"
    return rows


def playout_move(rng: random.Random, board, shallow: list[dict]):
    """The next move of a seeded game: a random move, a lesser depth-1 choice, or the depth-1 best."""
    roll = rng.random()
    if roll < RANDOM_MOVE_RATE:
        return rng.choice(sorted(board.legal_moves, key=lambda m: m.uci()))
    if roll < RANDOM_MOVE_RATE + LESSER_MOVE_RATE and len(shallow) > 1:
        return rng.choice(shallow[1:])["pv"][0]
    return shallow[0]["pv"][0]


def clear_best_move(engine, board, depth: int, margin: float, key, ply: int, hard_only: bool = False) -> dict | None:
    """The depth-`depth` analysis of the best move when it is clearly best; a depth-4 look first saves time.

    `key` names the game (its hash is kept between positions). With `hard_only`, a position whose
    depth-4 best move a fresh depth-1 search also plays is skipped before the deep search (it would
    almost surely be an easy puzzle).
    """
    import chess.engine

    for d, need in ((min(4, depth), PREFILTER_MARGIN * margin), (depth, margin)):
        infos = [i for i in engine.analyse(board, chess.engine.Limit(depth=d), multipv=2, game=key) if i.get("pv")]
        if len(infos) < 2 or not clearly_best(infos[0]["score"].relative, infos[1]["score"].relative, need):
            return None
        if hard_only and d < depth and fresh_best(engine, board, 1, (*key, ply)) == infos[0]["pv"][0]:
            return None
    return infos[0]


def game_puzzles(engine, seed: int, game: int, depth: int, margin: float, limit: int, cap: EasyCap | None = None) -> list[dict]:
    """The puzzles of one seeded game: every position from ply 8 on is checked for a clear best move."""
    import chess
    import chess.engine

    cap = cap or EasyCap(None)
    rng = random.Random(seed * 1_000_003 + game)
    board = chess.Board()
    found: list[dict] = []
    for ply in range(MAX_PLIES):
        if board.is_game_over() or len(found) >= min(MAX_PER_GAME, limit):
            break
        key = (seed, game)  # one engine game per playout: hash kept within it, cleared between games
        if ply < OPENING_PLIES:
            board.push(rng.choice(sorted(board.legal_moves, key=lambda m: m.uci())))
            continue
        if ply >= 8:
            best = clear_best_move(engine, board, depth, margin, key, ply, hard_only=not cap.room())
            if best is not None:
                rating = difficulty_rating(engine, board, best["pv"][0], (*key, ply, "rating"))
                if rating != EASY_RATING or cap.room():
                    cap.add(rating)
                    found.append(puzzle_row(board, best, rating, seed, game, ply))
        shallow = [i for i in engine.analyse(board, chess.engine.Limit(depth=1), multipv=3, game=key) if i.get("pv")]
        if not shallow:
            break
        board.push(playout_move(rng, board, shallow))
    return found


def puzzle_row(board, best_info, rating: int, seed: int, game: int, ply: int) -> dict:
    """A Lichess-layout row: FEN before the opponent's move, Moves = that move + the solution."""
    before = board.copy()
    last = before.pop()
    target = best_info["pv"][0]
    solution = solution_moves(best_info, target)
    return {
        "PuzzleId": "",
        "FEN": before.fen(),
        "Moves": " ".join(m.uci() for m in [last, *solution]),
        "Rating": rating,
        "RatingDeviation": 0,
        "Popularity": 0,
        "NbPlays": 0,
        "Themes": puzzle_themes(board, best_info["score"].relative, len(solution)),
        "GameUrl": f"w2s:make-puzzles?seed={seed}&game={game}#{ply}",
        "OpeningTags": "",
    }


def write_puzzles(rows: list[dict], out: Path) -> None:
    """Write rows in the Lichess CSV layout (with its header line)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(LICHESS_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


@hookimpl
def register_tasks(register):
    register(ChessPuzzlesTask)


@hookimpl
def register_commands(cli):
    import click

    from w2s.commands.cli import user_errors

    @cli.group(name="chess")
    def chess_group():
        """Chess puzzles: make a Lichess-format puzzle file with Stockfish."""

    @chess_group.command("make-puzzles")
    @click.option("--n", "n", type=click.IntRange(min=1), default=500, show_default=True, help="How many puzzles.")
    @click.option("--seed", type=int, default=0, show_default=True, help="Seed of the games (same seed -> same file).")
    @click.option("--out", type=click.Path(dir_okay=False), default="puzzles.csv", show_default=True, help="CSV file to write.")
    @click.option("--stockfish", "stockfish", help="Stockfish binary (default: on PATH or /usr/games/stockfish).")
    @click.option("--depth", type=click.IntRange(min=2, max=30), default=10, show_default=True, help="Analysis depth.")
    @click.option("--margin", type=click.FloatRange(0, 2), default=0.5, show_default=True,
                  help="Winning-chance margin of the best move over the second best (Lichess: 0.5).")
    @click.option("--max-easy-share", type=click.FloatRange(0, 1), default=None,
                  help="Cap on the share of puzzles a depth-1 search solves (rating 600); e.g. 0.5 for an engine "
                       "ladder with a gap. Harder puzzles are rare: expect minutes per hundred.  [default: no cap]")
    @user_errors
    def make_puzzles_command(n, seed, out, stockfish, depth, margin, max_easy_share):
        """Play seeded games and write positions with one clearly best move, in the Lichess CSV layout."""
        from tqdm.auto import tqdm

        binary = find_stockfish(stockfish)
        bar = tqdm(total=n, desc="puzzles", unit="puzzle", leave=False)

        def progress(done):
            bar.update(done - bar.n)

        rows = make_puzzles(n, seed, binary, depth, margin, max_easy_share, progress=progress)
        bar.close()
        write_puzzles(rows, Path(out))
        mates = sum("mate" in r["Themes"].split() for r in rows)
        easy = sum(r["Rating"] == EASY_RATING for r in rows)
        click.echo(f"wrote {len(rows)} puzzles ({mates} mates, {easy} solved by a depth-1 search) to {out}")
