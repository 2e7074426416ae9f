"""The chess puzzle generator: seeded Stockfish games whose clear only-move positions become Lichess-layout rows.

Games mix shallow engine moves with random and lesser moves; from ply 8 on each position is checked
(Lichess-style winning-chance margin) for one clearly best move, rated by the shallowest search depth
that finds it, and tagged with Lichess themes. Same seed -> same rows; a shorter run is a prefix.
"""

from __future__ import annotations

import math
import random

from w2s_plugins.chess_stockfish import open_engine

MAX_PLIES, MAX_PER_GAME, OPENING_PLIES = 160, 4, 4  # generator: game length cap, puzzles per game, random opening plies
RANDOM_MOVE_RATE, LESSER_MOVE_RATE = 0.2, 0.2  # generator: share of random moves and of 2nd/3rd depth-1 choices
PREFILTER_MARGIN = 0.5  # generator: a depth-4 look must show this share of the margin before the full search


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
