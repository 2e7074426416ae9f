"""Stockfish for the chess plugins: find the binary (a path, PATH, or Debian's /usr/games) and open it.

Both the puzzle generator (`w2s chess make-puzzles`) and the chess_engine supervisor start their
engine here, with fixed threads and hash so that depth-limited searches are reproducible.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from w2s.api import W2SError

FALLBACK_STOCKFISH = "/usr/games/stockfish"  # where Debian's `apt-get install stockfish` puts it (not on PATH)


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
