"""The `rewardpatch` command line.

Exit codes: 0 success; 1 a check failed or the tree's state refused the operation
(dirty file, conflict, hand-edited file, drift, a tree that is not patched given to revert,
config or verify: manifest.require_patched; a journal, lock or record rewardpatch will not
follow); 2 usage or input error; 74 a read-only command could not write its report (stdout
full or closed; streams.py); 130 interrupted (Ctrl-C; a half-written patch is rolled back).
Errors a user can cause print one line on stderr, never a traceback, however the CLI is run:
the console script, `main()`, or click's own `cli.main()` and `CliRunner().invoke(cli, ...)`.
"""

from __future__ import annotations

import functools
import json
import sys

import click

from . import __version__, streams
from .cli_options import mmseg_version_option, tree_or_installed
from .dependencies import require_stack
from .errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_REPORT_LOST,
    EXIT_USAGE,
    Interrupted,
    RewardpatchError,
)
from .mmseg_generations import supported_versions
from .signals import interrupt_behind, signum_of
from .signals import name as signal_name

TREE = click.argument("tree", type=click.Path(file_okay=True, dir_okay=True, path_type=str))


def _heads_option(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise click.BadParameter("expects head names separated by commas, e.g. ASPPHead,FCNHead")
    return names


def _print_out(message: str = "") -> None:
    click.echo(message)


def _write_diff(plan) -> None:
    diff = plan.diff()
    if diff:  # an empty write still fails on a full stdout: nothing to say is not a lost report
        sys.stdout.write(diff)


def _print_err(message: str) -> None:
    click.echo(message, err=True)


def _exit_code(run) -> int:
    """Run the CLI; every user-caused error becomes one line on stderr and its exit code."""
    try:
        result = run()
    except RewardpatchError as exc:
        _print_err(f"rewardpatch: error: {exc}")
        return exc.exit_code
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        _print_err(f"rewardpatch: error: {exc.format_message()}{hint}")
        return EXIT_USAGE
    except click.ClickException as exc:
        _print_err(f"rewardpatch: error: {exc.format_message()}")
        return exc.exit_code
    except click.Abort:  # Ctrl-C outside a verb (click turns it into Abort)
        _print_err("rewardpatch: error: interrupted")
        return EXIT_INTERRUPTED
    except OSError as exc:
        _print_err(f"rewardpatch: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return EXIT_USAGE
    return result if isinstance(result, int) else EXIT_OK


class Verbs(click.Group):
    """The verbs, ending the same way however they are run.

    click's own `main` drops a command's return value (a failed check would exit 0) and
    lets other exceptions through as tracebacks; this one routes every outcome through
    `_exit_code`, then exits (standalone mode, the default) or returns the code.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (KeyboardInterrupt, Exception) as exc:  # before click makes Ctrl-C an Abort: it has its own code
            interrupt = interrupt_behind(exc)  # itself, or the one Python wrapped in another error
            if interrupt is None:
                raise
            signum = signum_of(interrupt)
            raise Interrupted(f"interrupted ({signal_name(signum)})", signum=signum) from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        arguments = list(sys.argv[1:] if args is None else args)
        with streams.guarded() as lost:
            code = _exit_code(functools.partial(
                super().main, arguments, prog_name or "rewardpatch", complete_var, standalone_mode=False, **extra
            ))
        code = _report_lost(code, lost, _reads_only(arguments))
        if standalone_mode:
            sys.exit(code)
        return code


# The verbs that change nothing; with --dry-run, apply and revert are among them.
READ_ONLY = {"list-heads", "check"}


def _reads_only(arguments: list[str]) -> bool:
    verb = next((a for a in arguments if not a.startswith("-")), None)
    return verb in READ_ONLY or (verb in ("apply", "revert") and "--dry-run" in arguments)


def _report_lost(code: int, lost: streams.Lost, reads_only: bool) -> int:
    """The exit code once the report could not be written. A command that changed the tree or
    failed keeps its code: the code is the result, the report only its description; a read-only
    command whose report is its result exits EXIT_REPORT_LOST. One line says so where stderr
    still takes one (not for a closed pipe: whoever read it went away on purpose)."""
    if lost.stdout is None:
        return code
    why = lost.stdout.strerror or str(lost.stdout)
    lost_code = EXIT_REPORT_LOST if reads_only and code == EXIT_OK else code
    if not lost.quiet and lost.stderr is None:
        try:
            print(f"rewardpatch: error: could not write the report to stdout ({why})"
                  + ("" if lost_code == EXIT_REPORT_LOST else f"; the command's result stands (exit {code})"),
                  file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass
    return lost_code


# The help texts name the supported releases as patches/ states them, so they are built here
# rather than written in docstrings.
CLI_HELP = f"""Teach an MMSegmentation checkout ({supported_versions()}) to fine-tune decode heads with task rewards.

\b
Exit codes: 0 success; 1 a check failed or the tree's state refused the
operation; 2 usage or input error; 130 interrupted.
"""
LIST_HEADS_HELP = f"""List every registered decode head of TREE and whether it can get a reward version.

Supported MMSegmentation releases: {supported_versions()}, as patches/ describes them.
"""


@click.group(cls=Verbs, help=CLI_HELP,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="rewardpatch")
def cli() -> None:
    pass


@cli.command("list-heads", help=LIST_HEADS_HELP)
@click.argument("tree", required=False, type=click.Path(file_okay=True, dir_okay=True, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--installed", is_flag=True,
              help="The MMSegmentation this interpreter imports (plugin mode) instead of TREE.")
@click.option("--import", "imports", multiple=True, metavar="MODULE",
              help="With --installed: import this project module first, as a config's custom_imports "
              "would before rewardpatch.plugin, and list its heads too (repeatable).")
@mmseg_version_option
def list_heads_command(tree: str | None, as_json: bool, installed: bool, imports: tuple[str, ...],
                       mmseg_version: str | None) -> int:
    from . import engine
    from .head_index import COMPATIBLE, CONDITIONAL, INCOMPATIBLE, PATCHED

    tree_or_installed(tree, installed, imports)
    mmseg, heads = engine.heads(tree, installed, imports, mmseg_version)
    if as_json:
        _print_out(json.dumps([h.as_json() for h in heads], indent=2))
        return EXIT_OK
    counts = {s: sum(h.status == s for h in heads) for s in (COMPATIBLE, CONDITIONAL, PATCHED, INCOMPATIBLE)}
    where = "installed at" if installed else "at"
    _print_out(
        f"MMSegmentation {mmseg.version} {where} {mmseg.root}: {len(heads)} registered classes, "
        f"{counts[COMPATIBLE]} compatible, {counts[CONDITIONAL]} conditional, {counts[PATCHED]} patched, "
        f"{counts[INCOMPATIBLE]} incompatible"
    )
    _print_out(f"rewardpatch supports MMSegmentation {supported_versions()} ({mmseg.generation.name} for this tree)")
    if installed:
        _print_out("plugin mode (custom_imports = dict(imports=['rewardpatch.plugin'])) registers "
             + ("nothing: this MMSeg is patched, its own modules register the reward heads" if counts[PATCHED]
                else f"Reward<X> for the {counts[COMPATIBLE]} compatible heads"
                + (f" and the {counts[CONDITIONAL]} conditional ones" if counts[CONDITIONAL] else "")))
    _print_out()
    width = max(len(h.name) for h in heads) + 2 if heads else 6
    file_width = max(len(h.file.rsplit("/", 1)[-1]) for h in heads) + 2 if heads else 6
    _print_out(f"{'HEAD':<{width}}{'FILE':<{file_width}}{'STATUS':<14}BASE CHAIN")
    for head in heads:
        chain = " > ".join(head.chain)
        name = head.file.rsplit("/", 1)[-1]
        _print_out(f"{head.name:<{width}}{name:<{file_width}}{head.status:<14}{chain}")
        for line in (head.reason, *head.notes):
            if line:
                _print_out(f"{'':<{width}}  {line}")
    return EXIT_OK


def _print_changes(plan) -> None:
    for change in plan.changes:
        note = f"  ({change.note})" if change.note else ""
        _print_out(f"  {change.action:<7} {change.path}{note}")
    for line in plan.adopted:
        _print_out(f"  adopted {line}")
    for note in plan.notes:
        _print_out(f"  note: {note}")


@cli.command("apply")
@TREE
@click.option("--heads", "heads", metavar="A,B", help="Patch only these heads (default: every compatible head).")
@click.option("--dry-run", is_flag=True, help="Print the patch as a unified diff and write nothing.")
@click.option("--allow-dirty", is_flag=True, help="Patch even if target files have uncommitted changes.")
@click.option("--force", is_flag=True, help="Overwrite files rewardpatch does not own, or that were hand-edited.")
@click.option("--adopt", is_flag=True,
              help="Replace a patch made by hand with the old recipe by managed files (revert puts it back).")
@click.option("--commit", is_flag=True, help="Commit the patch with git, listing the heads.")
@mmseg_version_option
def apply_command(
    tree: str, heads: str | None, dry_run: bool, allow_dirty: bool, force: bool, adopt: bool, commit: bool,
    mmseg_version: str | None,
) -> int:
    """Insert the reward modules into TREE and generate reward_<head>.py for each head."""
    from . import engine
    from .planning import ApplyOptions, Purpose

    requested = _heads_option(heads)
    options = ApplyOptions(
        heads=tuple(requested) if requested is not None else None, force=force, allow_dirty=allow_dirty, adopt=adopt,
        purpose=Purpose.DRY_RUN if dry_run else Purpose.APPLY,
    )
    if dry_run:
        plan = engine.preview_apply(tree, mmseg_version, options)
        _write_diff(plan)
        _print_err(f"dry run: apply would change {len(plan.changes)} files; nothing was written")
        return EXIT_OK
    applied = engine.apply(tree, mmseg_version, options, commit)
    mmseg, plan, committed = applied.tree, applied.plan, applied.committed
    if plan.empty:
        _print_out(f"already patched: nothing to do ({mmseg.root})")
        return EXIT_OK
    _print_out(f"patched MMSegmentation {mmseg.version} at {mmseg.root}:")
    _print_changes(plan)
    _print_out(f"{len(plan.heads)} heads have a reward version: {', '.join(plan.heads)}")
    if committed:
        _print_out(f"committed {committed.sha}")
        if committed.forced:
            _print_out(f"note: git's ignore rules ({'; '.join(committed.rules)}) match {len(committed.forced)} of the "
                 "files apply wrote: committed with git add --force")
    return EXIT_OK


@cli.command("revert")
@TREE
@click.option(
    "--force",
    is_flag=True,
    help="Remove generated files even if they were hand-edited (a copy of each is kept in .rewardpatch-reverted/).",
)
@click.option("--dry-run", is_flag=True, help="Print what revert would change as a unified diff.")
@mmseg_version_option
def revert_command(tree: str, force: bool, dry_run: bool, mmseg_version: str | None) -> int:
    """Undo `apply`: remove the created files and take the added exports out again."""
    from . import engine

    if dry_run:
        plan = engine.preview_revert(tree, mmseg_version, force)
        _write_diff(plan)
        _print_err(f"dry run: revert would change {len(plan.changes)} files; nothing was written")
        return EXIT_OK
    mmseg, plan = engine.revert(tree, mmseg_version, force)
    _print_out(f"reverted the patch of {mmseg.root}:")
    _print_changes(plan)
    return EXIT_OK


@cli.command("check")
@TREE
@click.option("--json", "as_json", is_flag=True, help="Print a JSON report.")
@mmseg_version_option
def check_command(tree: str, as_json: bool, mmseg_version: str | None) -> int:
    """Exit 0 when TREE is patched and consistent, else 1 with every problem (for CI)."""
    from . import engine

    checked = engine.check(tree, mmseg_version)
    mmseg, manifest, problems = checked.tree, checked.manifest, checked.problems
    if as_json:
        report = {
            "ok": not problems,
            "tree": str(mmseg.root),
            "mmseg_version": mmseg.version,
            "heads": manifest.heads if manifest else [],
            "problems": [p.as_json() for p in problems],
        }
        _print_out(json.dumps(report, indent=2))
    elif problems:
        _print_err(f"{mmseg.root}: {len(problems)} problem{'s' if len(problems) != 1 else ''}")
        for problem in problems:
            _print_err(f"  {problem.message}")
    else:
        assert manifest is not None  # check_tree finds "not-patched" without one
        counts = f"{len(manifest.heads)} heads, {len(manifest.files)} files"
        _print_out(f"ok: {mmseg.root} is patched and consistent ({counts})")
    return EXIT_REFUSED if problems else EXIT_OK


# What a verb needs beyond click, libcst and gitpython, looked up before it starts. verify's
# worker checks the rest, which depends on the tree's generation (mmengine for 1.x only).
# "a|b": either will do (config reads 0.x configs with mmcv 1.x's Config where mmengine is missing).
STACK_NEEDS = {"config": ("mmengine|mmcv", "torch"), "verify": ("torch", "mmcv")}


def _needing_stack(command: click.Command) -> click.Command:
    run = command.callback
    assert run is not None  # every verb is a function of ours

    @functools.wraps(run)
    def checked(*args, **kwargs):
        require_stack(command.name, STACK_NEEDS[command.name])
        return run(*args, **kwargs)

    command.callback = checked
    return command


def _register_verbs() -> None:
    # Each verb below lives in its own module; heavy imports (torch, mmengine,
    # matplotlib) happen inside the commands, so `rewardpatch --help` stays fast.
    from .configs.command import config_command
    from .plot import plot_command
    from .stats import stats_command
    from .verify.command import verify_command

    for command in (verify_command, config_command, stats_command, plot_command):
        cli.add_command(_needing_stack(command) if command.name in STACK_NEEDS else command)


_register_verbs()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (see Verbs)."""
    return cli.main(args=argv, prog_name="rewardpatch", standalone_mode=False)
