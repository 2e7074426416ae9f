"""The `w2s chess` CLI group: `w2s chess make-puzzles` writes a Lichess-format puzzle file with Stockfish.

Its `register_commands` hookimpl is registered through the chess_puzzles entry point, which imports it.
"""

from __future__ import annotations

from pathlib import Path

from w2s.hookspecs import hookimpl
from w2s_plugins.chess_generator import EASY_RATING, make_puzzles
from w2s_plugins.chess_lichess import write_puzzles
from w2s_plugins.chess_stockfish import find_stockfish


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
