"""Model chess_engine: a UCI engine (Stockfish) as a supervisor that needs no training."""

from __future__ import annotations

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


def _board(example):
    import chess

    fen = example.meta.get("board_fen")
    if not fen:
        raise W2SError(f"example {example.id}: meta.board_fen is missing; chess_engine needs a chess task such as chess_puzzles")
    return chess.Board(fen)


class EngineSupervisor(Trained):
    """A UCI engine under a fixed search limit; `predict` analyses each example's position."""

    def __init__(self, owner: "ChessEngineModel"):
        self.owner = owner

    def predict(self, examples, task, ctx=None):
        import chess.engine

        from w2s_plugins.chess_stockfish import find_stockfish, open_engine

        o = self.owner.options
        engine = open_engine(find_stockfish(o.path), threads=1, hash_mb=o.hash_mb)
        limit = chess.engine.Limit(depth=o.depth, nodes=o.nodes, time=o.time)
        out = []
        try:
            iterable = ctx.progress(examples, total=len(examples), desc="engine") if ctx else examples
            for example in iterable:
                board = _board(example)
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
    description = "UCI chess engine (Stockfish) with a depth/nodes/time limit; a supervisor that needs no training"
    capabilities = frozenset({"prompt"})

    class Options(Options):
        path: str | None = Field(default=None, description="engine binary (default: stockfish on PATH or /usr/games)")
        depth: int | None = Field(default=None, ge=1, le=60)
        nodes: int | None = Field(default=None, ge=1)
        time: float | None = Field(default=None, gt=0, description="seconds per position (not reproducible)")
        multipv: int = Field(default=1, ge=1, le=50, description="moves scored; >1 gives a softmax over their scores")
        temperature_cp: float = Field(default=100.0, gt=0, description="softmax temperature in centipawns")
        hash_mb: int = Field(default=16, ge=1)

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
