"""The `w2s` command line (click)."""

from __future__ import annotations

import csv
import functools
import json
import sqlite3
import sys

import click
from tabulate import tabulate

from . import __version__, plugins
from .api import W2SError
from .store import Store, default_db_path


def db_option(f):
    return click.option("--db", "db_path", type=click.Path(dir_okay=False), help="SQLite store (default: $W2S_HOME/w2s.db)")(f)


def user_errors(f):
    """Print a W2SError as one line (exit 1); Ctrl-C as one line (exit 130); never a traceback."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except W2SError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("\nw2s: interrupted; finished stages are kept, rerun the same command to resume", err=True)
            sys.exit(130)

    return wrapper


@click.group()
@click.version_option(__version__, prog_name="w2s")
def cli():
    """w2s: weak-to-strong generalization studies, stored in SQLite."""


@cli.group()
def study():
    """Run, list and show studies."""


@study.command("run")
@click.argument("file", type=click.Path())
@db_option
@click.option("--dry-run", is_flag=True, help="Print the stage plan (cached stages marked) and exit.")
@click.option("--limit", type=int, help="Cap every split at N examples (quick smoke runs).")
@click.option("--seed", "seeds", type=int, multiple=True, help="Override the study's seeds.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a field, e.g. --set task.n_test=100")
@user_errors
def study_run(file, db_path, dry_run, limit, seeds, overrides):
    """Run (or resume) the study in FILE and print its results table."""
    from .engine import Engine
    from .report import results_table
    from .study import load_study

    overrides = list(overrides) + ([f"study.seeds=[{','.join(map(str, seeds))}]"] if seeds else [])
    spec = load_study(file, overrides, limit)
    store = Store(db_path)
    engine = Engine(store)
    if dry_run:
        stages, _ = engine.plan(spec)
        status = engine.status(stages)
        click.echo(f"study {spec.name}: {len(stages)} stages ({sum(s == 'done' for s in status.values())} cached)")
        for i, stage in enumerate(stages, 1):
            mark = "cached" if status[stage.key] == "done" else (status[stage.key] or "to run")
            click.echo(f"  [{i}/{len(stages)}] {stage.title}  ({mark}, key {stage.key[:10]})")
        return
    study_id = engine.run(spec)
    click.echo(f"study {spec.name} ({study_id}) done; stored in {store.path}\n")
    click.echo(results_table(store, study_id))


@study.command("list")
@db_option
@click.option("-n", "limit", type=int, default=20, show_default=True, help="How many studies to show.")
@click.option("--json", "as_json", is_flag=True)
@user_errors
def study_list(db_path, limit, as_json):
    """List past studies, newest first."""
    store = Store(db_path, readonly=True)
    rows = list(store.db.query("SELECT id, name, status, created, updated, path FROM studies ORDER BY created DESC LIMIT ?", [limit]))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(tabulate([list(r.values()) for r in rows], headers=["id", "name", "status", "created", "updated", "file"]) if rows else "no studies yet")


@study.command("show")
@click.argument("ref")
@db_option
@user_errors
def study_show(ref, db_path):
    """Show a study's stages and results table (REF: id, id prefix or name)."""
    from .report import results_table

    store = Store(db_path, readonly=True)
    row = store.find_study(ref)
    click.echo(f"study {row['name']} ({row['id']}), status {row['status']}, created {row['created']}")
    stages = store.db.query(
        "SELECT DISTINCT st.kind, st.role, st.model, st.loss, st.seed, st.status, st.seconds, st.error "
        "FROM study_stages ss JOIN stages st ON st.key = ss.stage_key WHERE ss.study_id = ? ORDER BY st.created",
        [row["id"]],
    )
    table = [[s["kind"], s["role"], s["model"], s["loss"] or "", s["seed"], s["status"], f"{s['seconds'] or 0:.1f}s",
              (s["error"] or "").splitlines()[0][:80] if s["error"] else ""] for s in stages]
    click.echo(tabulate(table, headers=["kind", "role", "model", "loss", "seed", "status", "time", "error"]))
    click.echo("")
    click.echo(results_table(store, row["id"]))


@cli.command()
@click.argument("sql")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print rows as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print rows as CSV.")
@user_errors
def query(sql, db_path, as_json, as_csv):
    """Run read-only SQL against the store, e.g. w2s query "select * from results"."""
    store = Store(db_path, readonly=True)
    try:
        cursor = store.db.execute(sql)
    except sqlite3.Error as exc:
        raise W2SError(f"query failed: {exc} (the store is opened read-only)") from None
    headers = [d[0] for d in cursor.description or []]
    rows = cursor.fetchall()
    if as_json:
        click.echo(json.dumps([dict(zip(headers, r)) for r in rows], indent=2, default=str))
    elif as_csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(headers)
        writer.writerows(rows)
    else:
        click.echo(tabulate(rows, headers=headers))


@cli.group(name="plugins", invoke_without_command=True)
@click.pass_context
def plugins_group(ctx):
    """List installed plugins (tasks, models, losses)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(plugins_list)


@plugins_group.command("list")
@click.option("--json", "as_json", is_flag=True)
def plugins_list(as_json):
    """Show every registered task, model and loss with its version and origin."""
    rows = [
        {"name": r.name, "kind": r.kind, "version": r.version, "plugin": r.plugin, "source": r.source, "description": r.description}
        for r in plugins.everything()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(tabulate([[r["name"], r["kind"], r["version"], r["plugin"], r["description"]] for r in rows],
                            headers=["name", "kind", "version", "plugin", "description"]))


def _register_plugin_commands():
    plugins.load_plugins()
    plugins.pm.hook.register_commands(cli=cli)


_register_plugin_commands()
