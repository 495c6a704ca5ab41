"""`rewardpatch verify TREE`: check every patched head, then run a short reward fine-tune."""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .. import journal
from ..cli_options import mmseg_version_option, tree_or_installed
from ..dependencies import python_without_cwd
from ..errors import EXIT_OK, EXIT_REFUSED, InputError
from ..manifest import Manifest, require_patched
from ..naming import unrewarded_name
from ..notice import deferred_warnings
from ..tree import MMSegTree
from .events import EventReader

if TYPE_CHECKING:  # what click.progressbar returns; click names the class in a private module
    from click._termui_impl import ProgressBar

WORKDIR_MARK = ".rewardpatch-verify"
DEFAULT_WORKDIR = Path("work_dirs") / "rewardpatch-verify"


class WorkerFailed(Exception):
    """The worker stopped before it could report (device, import, mmseg origin, crash)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class Progress:
    """Turns worker events into a progress bar per stage and into the report."""

    def __init__(self, report: dict):
        self.report = report
        self.bar: ProgressBar[str] | None = None  # the current stage's

    def __call__(self, event: dict) -> None:
        kind = event.pop("event")
        if kind == "error":
            raise WorkerFailed(event["kind"], event["message"])
        if kind == "device":
            self.report["device"] = event["device"]
            self.report["gpu"] = event.get("gpu")
        elif kind == "stage":
            self.close()
            label = "stage 1: reward heads" if event["stage"] == "heads" else f"stage 2: fine-tune {event['head']}"
            bar: ProgressBar[str] = click.progressbar(length=event["total"], label=label, file=sys.stderr,
                                                     show_pos=True, item_show_func=lambda item: item)
            self.bar = bar
            bar.__enter__()
        elif kind == "head":
            self.report["heads"].append(event)
            assert self.bar is not None  # the worker starts a stage before its first head
            self.bar.update(1, event["name"])
        elif kind == "iter":
            assert self.bar is not None  # the worker starts a stage before its first iteration
            self.bar.update(event["iter"] - self.bar.pos, f"{event['phase']} iteration")
        elif kind == "finetune":
            self.report["finetune"] = event
        elif kind == "note":
            # how this run differs from the tree's own expectations (a relaxed mmcv assert)
            if event["message"] not in self.report["notes"]:
                self.report["notes"].append(event["message"])
                self.close()
                click.echo(f"rewardpatch: {event['message']}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _patched_heads(tree: MMSegTree, reward_classes: set[str], requested: str | None,
                   plugin_reasons: dict[str, str] | None = None) -> list[str]:
    """Head names (without the Reward prefix) to check, all with a reward version by default
    (patched, or in plugin mode registered)."""
    patched = sorted(unrewarded_name(name) for name in reward_classes)
    if not requested:
        return patched
    names = list(dict.fromkeys(unrewarded_name(n.strip()) for n in requested.split(",") if n.strip()))
    unknown = [n for n in names if n not in patched]
    if unknown and plugin_reasons is not None:
        raise InputError("; ".join(f"{name} gets no reward version in plugin mode: {plugin_reasons[name]}"
                                   for name in unknown))
    if unknown:
        raise InputError(
            f"{', '.join(unknown)} not patched in {tree.root}: "
            f"run `rewardpatch apply {tree.root} --heads {','.join(unknown)}` first"
        )
    return names


def _plugin_heads(tree: MMSegTree, imports: list[str]) -> tuple[set[str], dict[str, str]]:
    """The reward classes plugin mode registers on the installed `tree` with the project's
    `imports` first (a probe when there are any), and why every other name gets none."""
    from ..head_index import COMPATIBLE, CONDITIONAL
    from ..installed import list_heads_hint, plugin_verdicts

    if Manifest.load(tree) is not None:
        raise InputError(f"the installed MMSegmentation at {tree.root} is patched: verify it as a tree "
                         f"(`rewardpatch verify {tree.root}`)")
    with deferred_warnings() as notices:
        heads = plugin_verdicts(tree, imports, notices)
    command = list_heads_hint(imports)
    reasons = collections.defaultdict(
        lambda: f"no decode head of that name in the installed MMSeg or the --import modules (`{command}` lists them)",
        {h.name: h.reason for h in heads if h.status not in (COMPATIBLE, CONDITIONAL)},
    )
    return {h.reward_name for h in heads if h.status in (COMPATIBLE, CONDITIONAL)}, reasons


# A head name, then `=` and its arguments as JSON: RewardASPPHead={"dilations": [1, 6, 12, 18]}
_HEAD_ARGS = re.compile(r"(?s)([A-Za-z_]\w*)=(.*)")
# Arguments verify itself sets: the head's type, and the classes of its synthetic labels
_SET_BY_VERIFY = ("type", "num_classes")


def _head_args(values: tuple[str, ...], available: set[str]) -> dict[str, dict]:
    """{head name without Reward: constructor arguments} from --head-args values, each
    HEAD=JSON or the path of a JSON file mapping head names to arguments; later ones win."""
    merged: dict[str, dict] = {}
    for value in values:
        inline = _HEAD_ARGS.fullmatch(value)
        if inline:
            what = f"--head-args {inline.group(1)}"
            try:
                given = {inline.group(1): json.loads(inline.group(2))}
            except json.JSONDecodeError as exc:
                raise InputError(f"{what}: not JSON ({exc})") from None
        else:
            what = f"--head-args {value}"
            try:
                given = json.loads(Path(value).read_text(encoding="utf-8"))
            except OSError as exc:
                raise InputError(f"{what}: neither HEAD=JSON nor a readable JSON file ({exc.strerror})") from None
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InputError(f"{what}: not a JSON file ({exc})") from None
            if not isinstance(given, dict):
                raise InputError(f"{what}: the file must hold an object mapping head names to arguments")
        for name, arguments in given.items():
            head = unrewarded_name(name)
            if head not in available:
                known = ", ".join(sorted(available)) or "none"
                raise InputError(f"{what}: {name} has no reward version here (heads: {known})")
            if not isinstance(arguments, dict):
                raise InputError(f"{what}: the arguments of {name} must be a JSON object, not {json.dumps(arguments)}")
            taken = [key for key in _SET_BY_VERIFY if key in arguments]
            if taken:
                raise InputError(f"{what}: verify sets {', '.join(taken)} of {name} itself")
            merged.setdefault(head, {}).update(arguments)
    return merged


def _finetune_head(tree: MMSegTree, patched: list[str]) -> str:
    """FCNHead when patched, else the first patched head that reads one feature map."""
    heads = tree.generation.verify.heads

    def single_input(name: str) -> bool:
        spec = heads.get(name)
        if spec is None or spec.get("cascade") or spec.get("tokens"):
            return False
        return not isinstance(spec.get("args", {}).get("in_channels", 0), list)

    for name in ["FCNHead", *patched]:
        if name in patched and single_input(name):
            return name
    raise InputError("the fine-tune needs a patched head that reads one feature map "
                     "(FCNHead, ASPPHead, PSPHead, ...): apply one, or pass --skip-finetune")


def _prepare_workdir(path: Path) -> Path:
    """An empty work dir: ours from an earlier run is cleared, anything else must be empty."""
    path = path.resolve()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"--workdir {path} is not a directory")
        if (path / WORKDIR_MARK).exists():
            shutil.rmtree(path)
        elif any(path.iterdir()):
            raise InputError(f"--workdir {path} is not empty and was not made by rewardpatch verify")
    path.mkdir(parents=True, exist_ok=True)
    (path / WORKDIR_MARK).write_text("made by rewardpatch verify; the next run clears it\n")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker_env(tree: MMSegTree, plugin: bool) -> dict[str, str]:
    """A tree's worker imports the tree first, then this command's rewardpatch (not another
    checkout's that an editable install points to); plugin mode's imports the installed MMSeg as
    training would, with the user's PYTHONPATH (their project's modules)."""
    from ..installed import child_env, package_path

    if plugin:
        return child_env()
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree.root), *package_path()]), "PYTHONUNBUFFERED": "1"}


def _run_worker(tree: MMSegTree, workdir: Path, stages: str, options: list[str], device: str, nproc: int,
                on_event, plugin: bool = False) -> None:
    """Run the worker (nproc of them under torchrun) and feed its events to `on_event`."""
    name = stages.replace(",", "-")
    events = workdir / f"{name}.events.jsonl"
    launcher = python_without_cwd()  # the worker starts in the workdir, which verify made
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={_free_port()}"]
    # --mmseg-version: the worker treats the tree as the release this command settled on, which
    # a fork's own version.py may not name
    command = [*launcher, "-m", "rewardpatch.verify.worker", "--tree", str(tree.root), "--workdir", str(workdir),
               "--events", str(events), "--device", device, "--stages", stages,
               "--mmseg-version", tree.version, *options]
    env = _worker_env(tree, plugin)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    if nproc > 1 and device != "cuda":
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // nproc)))
    reader = EventReader(events)
    log = workdir / f"{name}.log"
    with log.open("w") as handle:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=handle, stderr=subprocess.STDOUT)
        try:
            while True:
                finished = process.poll() is not None
                for event in reader.read():
                    on_event(event)
                if finished:
                    break
                time.sleep(0.1)
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait()
    if process.returncode != 0:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        last = lines[-1] if lines else "no output"
        raise WorkerFailed("crash", f"the {name} worker exited with code {process.returncode}: {last} (log: {log})")


@click.command("verify")
@click.argument("tree", required=False, type=click.Path(path_type=str))
@click.option("--installed", is_flag=True,
              help="Verify plugin mode on the MMSegmentation this interpreter imports, instead of a TREE.")
@click.option("--import", "imports", multiple=True, metavar="MODULE",
              help="With --installed: a project module to import before rewardpatch.plugin, as a config's "
              "custom_imports would (its heads are checked too; repeatable).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where to run: auto is cuda when torch sees a GPU, else cpu.")
@click.option("--heads", metavar="A,B", help="Check only these patched heads (default: every patched head).")
@click.option("--iters", type=click.IntRange(min=1), default=40, show_default=True,
              help="Reward iterations of the fine-tune.")
@click.option("--ce-iters", type=click.IntRange(min=1), default=150, show_default=True,
              help="Cross-entropy iterations before them; they save the checkpoint the reward phase starts from.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes for the fine-tune, under torchrun (gloo on CPU, nccl on GPU).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the JSON report to this file.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_WORKDIR,
              show_default=True, help="Dataset, checkpoints, logs, report and plot.")
@click.option("--skip-finetune", is_flag=True, help="Run stage 1, the per-head checks, only.")
@click.option("--head-args", "head_args", multiple=True, metavar="HEAD=JSON|FILE",
              help="Constructor arguments for a head, merged over those verify guesses: "
              "'RewardASPPHead={\"dilations\": [1, 6, 12, 18]}', or a JSON file mapping head names to "
              "arguments (repeatable; later ones win).")
@mmseg_version_option
def verify_command(
    tree: str | None,
    installed: bool,
    imports: tuple[str, ...],
    device: str,
    heads: str | None,
    iters: int,
    ce_iters: int,
    nproc: int,
    report_path: Path | None,
    workdir: Path,
    skip_finetune: bool,
    head_args: tuple[str, ...],
    mmseg_version: str | None,
) -> int:
    """Prove that a patched TREE trains: each reward head, then a short reward fine-tune.

    With --installed, the same for plugin mode: the worker loads a config whose custom_imports
    are the --import modules and rewardpatch.plugin, and checks the heads that registers."""
    from .report import print_summary, write_plot

    tree_or_installed(tree, installed, imports)
    if installed:
        from ..installed import installed_tree

        mmseg = installed_tree(mmseg_version)
        reward_classes, reasons = _plugin_heads(mmseg, list(imports))
        names = _patched_heads(mmseg, reward_classes, heads, reasons)
    else:
        assert tree is not None  # tree_or_installed: a TREE without --installed
        mmseg = MMSegTree.open(tree, mmseg_version)
        journal.settled(mmseg.root, "verify")  # an interrupted apply or revert: refused
        manifest = require_patched(mmseg, f"run `rewardpatch apply {tree}` first")
        reward_classes = manifest.reward_classes
        names = _patched_heads(mmseg, reward_classes, heads)
    given = _head_args(head_args, {unrewarded_name(name) for name in reward_classes})
    finetune_head = None if skip_finetune else _finetune_head(mmseg, names)
    workdir = _prepare_workdir(workdir)
    report: dict = {"ok": False, "device": None, "tree": str(mmseg.root), "mmseg_version": mmseg.version,
                    "mode": "plugin" if installed else "patched tree",
                    "workdir": str(workdir), "notes": [], "heads": [], "finetune": None}
    options = ["--heads", ",".join(names), "--iters", str(iters), "--ce-iters", str(ce_iters),
               "--finetune-head", finetune_head or ""]
    if given:
        options += ["--head-args", json.dumps(given)]
    if installed:
        options += ["--plugin-imports", ",".join(imports)]
    progress = Progress(report)
    started = time.perf_counter()
    try:
        if skip_finetune:
            _run_worker(mmseg, workdir, "heads", options, device, 1, progress, installed)
        elif nproc == 1:  # one process for both stages: mmseg is imported once
            _run_worker(mmseg, workdir, "heads,finetune", options, device, 1, progress, installed)
        else:
            _run_worker(mmseg, workdir, "heads", options, device, 1, progress, installed)
            _run_worker(mmseg, workdir, "finetune", options, device, nproc, progress, installed)
    except WorkerFailed as failure:
        progress.close()
        complete = len(report["heads"]) == len(names) and (skip_finetune or report["finetune"] is not None)
        if failure.kind == "crash" and complete:
            # everything was checked and reported; only the process's exit went wrong
            report["worker_exit"] = str(failure)
            click.echo(f"rewardpatch: warning: {failure}", err=True)
        else:
            report["error"] = str(failure)
            _write_reports(report, workdir, report_path)
            if failure.kind in ("device", "origin", "stack"):
                raise InputError(str(failure)) from None
            click.echo(f"rewardpatch: verify failed: {failure}", err=True)
            return EXIT_REFUSED
    progress.close()

    report["seconds"] = round(time.perf_counter() - started, 1)
    fine = report["finetune"]
    if not skip_finetune and fine is None:
        fine = report["finetune"] = {"ok": False, "error": "the fine-tune reported no result"}
    # a head whose own operations have no kernel on this device is skipped, not failed; one
    # head at least must have been checked
    checked = [h for h in report["heads"] if not h.get("skipped")]
    report["ok"] = bool(checked) and all(h["ok"] for h in checked) and (fine is None or bool(fine.get("ok")))
    if fine and fine.get("reward_mean"):
        report["plot"] = str(write_plot(fine, workdir / "verify_curves.png"))
    _write_reports(report, workdir, report_path)
    print_summary(report)
    return EXIT_OK if report["ok"] else EXIT_REFUSED


def _write_reports(report: dict, workdir: Path, extra: Path | None) -> None:
    text = json.dumps(report, indent=2) + "\n"
    (workdir / "report.json").write_text(text)
    if extra is not None:
        extra.parent.mkdir(parents=True, exist_ok=True)
        extra.write_text(text)
