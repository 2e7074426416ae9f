"""Task chess_puzzles: the first move of a Lichess-format puzzle.

A Lichess row's FEN is the position *before* the opponent's move: Moves[0] is applied first and
Moves[1] is the move to find. Choices are the legal moves of the solving position in SAN, sorted.
With the option generation_metrics = true, predict stages on the test split of models that generate
(hf head = "lm") also let the model write its move freely (greedy) and store gen_exact_match,
gen_illegal_rate and gen_illegal_moves beside the scored exact_match (w2s.api: Task.generation_metrics).
Like every non-default task option it enters the stage keys: turning it on reruns a study's stages once.
This entry point module also carries the `w2s chess make-puzzles` hook (see chess_commands).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from pydantic import Field

from w2s.api import Example, Options, Task, W2SError
from w2s.hookspecs import hookimpl
from w2s_plugins.chess_commands import register_commands  # noqa: F401  (the `w2s chess` hook, registered with this entry point)
from w2s_plugins.chess_lichess import read_puzzle_rows

DEFAULT_FILE = "lichess_db_puzzle.csv"


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
    location_options = ("file",)

    class Options(Options):
        file: str = Field(default=DEFAULT_FILE, description="CSV file name in data_dir, or an absolute path")
        framing: Literal["generation", "multiple_choice"] = "generation"
        min_rating: int | None = None
        max_rating: int | None = None
        themes: list[str] = Field(default_factory=list, description="keep puzzles tagged with any of these themes")
        count: int | None = Field(default=None, ge=1, description="keep the first N puzzles that pass the filters")
        test_frac: float = Field(default=0.2, gt=0, lt=1)
        generation_metrics: bool = Field(
            default=False, description="test predict stages of generating models (hf head = lm) also generate each move "
            "greedily and store gen_exact_match, gen_illegal_rate, gen_illegal_moves (costs one generation per test puzzle)")

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

    def source_files(self):
        """The puzzle CSV (a relative `file` without data_dir is relative to the working folder)."""
        return [self.path]

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

    def generation_metrics(self, examples: Sequence[Example], generate) -> dict[str, float]:
        """With option generation_metrics: the model's greedy free text, parsed as a move by python-chess (SAN or UCI,
        choice_index); exact match and the illegal-move rate (an illegal or unparseable move counts as wrong). Else {}."""
        if not self.options.generation_metrics or not examples:
            return {}
        rows = []
        for example, text in zip(examples, generate(examples)):
            index = self.choice_index(example, text)
            rows.append(np.zeros(len(example.choices)) if index is None else np.eye(len(example.choices))[index])
        return {f"gen_{name}": value for name, value in self.metrics(examples, rows).items()}


@hookimpl
def register_tasks(register):
    register(ChessPuzzlesTask)
