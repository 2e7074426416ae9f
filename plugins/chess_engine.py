"""Model chess_engine: a UCI engine (Stockfish) as a supervisor that needs no training.

A weak supervisor needs more than a shallow search: Stockfish at depth 1 (or `nodes = 1`, which it
rounds up to a complete depth-1/2 iteration of ~50 nodes) still solves half of the generated
puzzles, more than a 135M-parameter LM learns to. `blunder_rate = p` makes it weaker by a known
amount: with probability p per position it plays a uniformly random legal move instead of the
engine's (accuracy ~ (1 - p) * engine + p / #legal moves). The coin and the move are drawn from
a generator seeded by (study seed, example id), so a run is reproducible, and the positions that
blunder at rate p are a subset of those at any higher rate.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from w2s.api import Model, Options, Trained, W2SError
from w2s.api import Options as BaseOptions
from w2s.hookspecs import hookimpl


def choice_distribution(example, task, infos: list[dict], temperature_cp: float) -> np.ndarray:
    """Softmax over the engine's multipv scores (centipawns / temperature), zero for unlisted moves."""
    board = _board(example)
    probs = np.zeros(len(example.choices), dtype=float)
    scored = []
    for info in infos:
        if not info.get("pv"):
            continue
        index = example.choices.index(board.san(info["pv"][0]))
        scored.append((index, info["score"].relative.score(mate_score=100_000)))
    if not scored:
        raise W2SError(f"example {example.id}: the engine returned no move; is the position (meta.board_fen) legal?")
    top = max(s for _, s in scored)
    for index, score in scored:
        probs[index] += math.exp((score - top) / temperature_cp)
    return probs / probs.sum()


def blunder_choice(example, seed: int, rate: float) -> int | None:
    """The index of the random legal move played instead of the engine's at this example, or None (no blunder).

    One generator per (seed, example id): a uniform coin u and a uniform choice index; blunder when u < rate.
    """
    if rate <= 0:
        return None
    digest = hashlib.sha256(f"chess_engine.blunder:{seed}:{example.id}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    coin, index = rng.random(), int(rng.integers(len(example.choices)))
    return index if coin < rate else None


def _board(example):
    import chess

    fen = example.meta.get("board_fen")
    if not fen:
        raise W2SError(f"example {example.id}: meta.board_fen is missing; chess_engine needs a chess task such as chess_puzzles")
    return chess.Board(fen)


class EngineSupervisor(Trained):
    """A UCI engine under a fixed search limit; `predict` analyses each example's position (or blunders, see the module
    docstring). The stage context's seed (the study seed) seeds the blunders; without a context it is 0."""

    def __init__(self, owner: "ChessEngineModel"):
        self.owner = owner

    def predict(self, examples, task, ctx=None):
        import chess.engine

        from w2s_plugins.chess_stockfish import find_stockfish, open_engine

        o = self.owner.options
        engine = open_engine(find_stockfish(o.path), threads=1, hash_mb=o.hash_mb)
        limit = chess.engine.Limit(depth=o.depth, nodes=o.nodes, time=o.time)
        out = []
        seed = ctx.seed if ctx is not None else 0
        try:
            iterable = ctx.progress(examples, total=len(examples), desc="engine") if ctx else examples
            for example in iterable:
                board = _board(example)
                blunder = blunder_choice(example, seed, o.blunder_rate)
                if blunder is not None:  # a random legal move, all the mass on it; the engine is not asked
                    out.append(np.eye(len(example.choices))[blunder])
                    continue
                infos = engine.analyse(board, limit, multipv=o.multipv, game=example.id)  # fresh hash per position
                out.append(choice_distribution(example, task, infos if isinstance(infos, list) else [infos], o.temperature_cp))
        finally:
            engine.quit()
        return out

    def save(self, path: Path):
        Path(path).write_text(json.dumps(self.owner.spec(), indent=2))

    def free(self):
        pass


class ChessEngineModel(Model):
    """A UCI chess engine (Stockfish) with a depth, node or time limit: a supervisor that needs no training."""

    name = "chess_engine"
    version = "1"
    description = "UCI chess engine (Stockfish) with a depth/nodes/time limit (and blunder_rate); a supervisor that needs no training"
    capabilities = frozenset({"prompt"})

    class Options(Options):
        path: str | None = Field(default=None, description="engine binary (default: stockfish on PATH or /usr/games)")
        depth: int | None = Field(default=None, ge=1, le=60)
        nodes: int | None = Field(default=None, ge=1)
        time: float | None = Field(default=None, gt=0, description="seconds per position (not reproducible)")
        multipv: int = Field(default=1, ge=1, le=50, description="moves scored; >1 gives a softmax over their scores")
        temperature_cp: float = Field(default=100.0, gt=0, description="softmax temperature in centipawns")
        hash_mb: int = Field(default=16, ge=1)
        blunder_rate: float = Field(default=0.0, ge=0, le=1, description="probability of playing a uniformly random legal "
                                    "move instead of the engine's, per position (seeded by study seed and example id)")

        @model_validator(mode="after")
        def _one_limit(self):
            if self.depth is None and self.nodes is None and self.time is None:
                raise ValueError("set a search limit: depth, nodes or time (e.g. depth = 1 for a weak supervisor)")
            return self

    class Train(BaseOptions):
        """Engines take no training hyperparameters."""

    def fit(self, examples, soft_targets, loss, task, ctx):
        """Engines do not learn: the supervisor is the engine itself."""
        return EngineSupervisor(self)

    def load(self, path, task):
        if not Path(path).is_file():
            raise W2SError(f"{path}: engine record missing; rerun the study to recreate it")
        return EngineSupervisor(self)


@hookimpl
def register_models(register):
    register(ChessEngineModel)
