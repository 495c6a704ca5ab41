"""A cloned fork is untrusted input: nothing it holds can make any verb touch a path outside it.

Each test plants what a fork's author could commit — a journal, lock or manifest whose records
name paths outside the tree or in .git/, links where rewardpatch keeps its lock, temporary files
or recovered copies, a huge or deeply nested source file — runs the verbs on it, and asserts
that a sentinel folder beside the tree is byte-identical (modes and links included), that the
read-only verbs left the tree unchanged, and that every refusal is one line with its exit code.
The last test does the same with journals and manifests hypothesis mutates.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, git_status, one_line_error, run_cli, start_cli
from forks import commit
from rewardpatch import faults, journal
from rewardpatch.errors import EXIT_REPORT_LOST
from rewardpatch.import_graph import MAX_NESTING
from rewardpatch.treefs import MAX_SOURCE_BYTES

HEADS = "mmseg/models/decode_heads"
LOSSES = "mmseg/models/losses"
READERS = (("list-heads",), ("list-heads", "--json"), ("check",), ("apply", "--dry-run"), ("revert", "--dry-run"))
WRITERS = (("apply",), ("revert",))


def state(folder: Path, skip_git: bool = False) -> dict[str, tuple]:
    """Every entry under `folder`, links not followed: (mode, bytes | link target | None)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        if skip_git:
            dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in dirnames + filenames:
            path = here / name
            info = path.lstat()
            content: str | bytes | None
            if stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                content = path.read_bytes()
            else:
                content = None
            found[path.relative_to(folder).as_posix()] = (stat.S_IMODE(info.st_mode), content)
    return found


def tree_state(tree: Path) -> dict[str, tuple]:
    """The work tree (git's own files left out: git status refreshes its index), plus .git/hooks."""
    return {**state(tree, skip_git=True), **{f".git/hooks/{k}": v for k, v in state(tree / ".git" / "hooks").items()}}


@pytest.fixture
def victim(tmp_path) -> Path:
    """A sentinel folder beside the tree, holding what a hostile record points at."""
    folder = tmp_path / "victim"
    (folder / "sub").mkdir(parents=True)
    (folder / "keep.txt").write_text("the user's own file\n")
    (folder / "delete-me.txt").write_text("do not delete\n")
    (folder / "temp.txt").write_text("not a temporary file of anybody's\n")
    (folder / "keep.txt").chmod(0o640)
    return folder


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def hostile_entries(victim: Path) -> list[dict]:
    """The journal entries of issue 28: outside the tree through `..`, an absolute path, a
    temporary file and a folder outside, a git hook, and a tracked file of the tree."""
    return [
        {"path": "../victim/keep.txt", "temp": None, "before": b64("OWNED"), "mode": 0o4755,
         "after_sha256": None, "dirs": []},
        {"path": str(victim / "delete-me.txt"), "temp": None, "before": None, "mode": None,
         "after_sha256": None, "dirs": []},
        {"path": "../victim/new/planted.sh", "temp": "../victim/temp.txt", "before": b64("#!/bin/sh\necho owned\n"),
         "mode": 0o755, "after_sha256": None, "dirs": ["../victim/new", "../victim/sub"]},
        {"path": ".git/hooks/pre-commit", "temp": None, "before": b64(f"#!/bin/sh\ntouch {victim}/hooked\n"),
         "mode": 0o755, "after_sha256": None, "dirs": []},
        {"path": "mmseg/version.py", "temp": None, "before": b64("__version__ = 'owned'\n"), "mode": 0o644,
         "after_sha256": None, "dirs": []},
    ]


def forged_journal(tree: Path, victim: Path, how: str) -> bytes:
    """A journal a fork's author writes: the earlier format, a signature of nobody's, or one
    signed with this user's key (as if the key had leaked, or rewardpatch had a bug)."""
    entries = hostile_entries(victim)
    if how == "schema 1":
        return json.dumps({"schema": 1, "tool": "rewardpatch", "verb": "apply", "pid": 1, "entries": entries}).encode()
    record = journal.Record("apply", 1, [journal.Entry(**e) for e in entries], str(tree.resolve()))
    if how == "signed":
        return record.to_bytes(journal.writer_key())
    data = {**record.body(), "mac": "0" * 64}
    return json.dumps(data).encode()


def run_every_verb(capsys, tree: Path, victim: Path, writer_error: str) -> None:
    """Every verb on `tree`: the victim untouched; readers leave the tree as it was, writers
    refuse in one line holding `writer_error`, the tree untouched too."""
    victim_before, tree_before, status = state(victim), tree_state(tree), git_status(tree)
    for args in READERS:
        code, _, err = run_cli(capsys, args[0], tree, *args[1:])
        assert "Traceback" not in err
        assert code in (0, 1), (args, err)
        assert state(victim) == victim_before, args
        assert tree_state(tree) == tree_before, args
    for args in WRITERS:
        code, _, err = run_cli(capsys, args[0], tree, *args[1:])
        assert code == 1, (args, err)
        assert writer_error in one_line_error(err), args
        assert state(victim) == victim_before, args
        assert tree_state(tree) == tree_before, args
    assert git_status(tree) == status
    assert not (victim / "hooked").exists()


@pytest.mark.parametrize("how", ["schema 1", "unsigned"])
@pytest.mark.parametrize("committed", [True, False], ids=["committed", "untracked"])
def test_a_forged_journal_is_not_rolled_back_by_any_verb(capsys, tree, victim, how, committed):
    (tree / journal.JOURNAL_NAME).write_bytes(forged_journal(tree, victim, how))
    if committed:
        commit(tree, "a journal")
    run_every_verb(capsys, tree, victim, "is not an interrupted run of rewardpatch on this machine")
    code, _, err = run_cli(capsys, "list-heads", tree)
    assert code == 0 and f"ignored {journal.JOURNAL_NAME}" in err
    code, out, _ = run_cli(capsys, "check", tree, "--json")
    assert code == 1 and "foreign" in {p["kind"] for p in json.loads(out)["problems"]}


def test_a_journal_signed_with_this_users_key_is_still_checked_path_by_path(capsys, tree, victim):
    (tree / journal.JOURNAL_NAME).write_bytes(forged_journal(tree, victim, "signed"))
    run_every_verb(capsys, tree, victim, "is refused")


def crash_an_apply(tree: Path, *heads: str) -> None:
    """An apply of `heads` stopped among its renames, as by SIGKILL: its journal stays."""
    from rewardpatch.planning import ApplyOptions, plan_apply
    from rewardpatch.tree import MMSegTree

    plan = plan_apply(MMSegTree.open(tree), ApplyOptions(heads=heads))
    os.environ[faults.ENV] = f"write:{len(plan.changes) + 4}:crash"
    try:
        with pytest.raises(faults.Crash), journal.exclusive(tree):
            plan.execute()
    finally:
        del os.environ[faults.ENV]
    assert (tree / journal.JOURNAL_NAME).exists()


def test_a_journal_of_this_machine_that_git_tracks_is_not_an_interrupted_run(capsys, tree, victim):
    """A real interrupted run whose journal was then committed (`git add -A` after a crash)."""
    crash_an_apply(tree, "FCNHead")
    commit(tree, "everything, the journal included")
    run_every_verb(capsys, tree, victim, "git tracks it")


@pytest.mark.parametrize("field, value", [
    ("before", 123), ("before", "not base64!"), ("mode", "0o644"), ("mode", 0o4755), ("dirs", "mmseg"),
    ("path", None), ("temp", 7), ("path", ".GIT/config"), ("path", "mmseg/./version.py"),
])
def test_a_damaged_journal_is_refused_in_one_line_leaving_no_temporary_file(capsys, tree, victim, field, value):
    entry = {"path": "mmseg/models/losses/__init__.py", "temp": None, "before": b64("x = 1\n"), "mode": 0o644,
             "after_sha256": None, "dirs": []}
    entry[field] = value
    body = {"schema": journal.SCHEMA, "tool": "rewardpatch", "verb": "apply", "pid": 1, "entries": [entry],
            "root": str(tree.resolve())}
    body["mac"] = journal._mac(journal.writer_key(), body)
    (tree / journal.JOURNAL_NAME).write_text(json.dumps(body))
    run_every_verb(capsys, tree, victim, journal.JOURNAL_NAME)


@pytest.mark.parametrize("target", ["../victim/keep.txt", "../victim/created.txt"], ids=["link", "dangling"])
@pytest.mark.parametrize("committed", [True, False], ids=["committed", "untracked"])
def test_a_lock_that_is_a_link_is_never_followed(capsys, tree, victim, target, committed):
    (tree / journal.LOCK_NAME).symlink_to(target)
    if committed:
        commit(tree, "a lock")
    run_every_verb(capsys, tree, victim, journal.LOCK_NAME)
    assert not (victim / "created.txt").exists()


@pytest.mark.parametrize("name", [journal.LOCK_NAME, journal.JOURNAL_TEMP])
def test_a_committed_lock_or_journal_temp_is_refused_by_writers_and_left_by_readers(capsys, tree, victim, name):
    (tree / name).write_text("12345\n")
    commit(tree, "a leftover")
    run_every_verb(capsys, tree, victim, "git tracks it")
    assert (tree / name).read_text() == "12345\n"


def test_committed_links_at_temporary_names_are_never_written_through(capsys, tree, victim):
    """The names the previous release used for temporary files, linked outside: apply writes
    its temporary files under fresh names (O_EXCL), so the links stay links, untouched."""
    links = {
        f"{LOSSES}/.iou_metric_loss.py.rewardpatch": "../../../../victim/keep.txt",
        f"{LOSSES}/.__init__.py.rewardpatch": "../../../../victim/delete-me.txt",
        f"{HEADS}/.__init__.py.rewardpatch": "../../../../victim/temp.txt",
        "..rewardpatch.json.rewardpatch": "../victim/keep.txt",
    }
    for name, target in links.items():
        (tree / name).symlink_to(target)
    commit(tree, "links at temporary names")
    before = state(victim)
    code, _, err = run_cli(capsys, "apply", tree)
    assert code == 0, err
    assert state(victim) == before
    for name, target in links.items():
        assert os.readlink(tree / name) == target
    for name in (f"{LOSSES}/iou_metric_loss.py", f"{LOSSES}/__init__.py", ".rewardpatch.json"):
        assert not (tree / name).is_symlink() and (tree / name).is_file()
    assert run_cli(capsys, "check", tree)[0] == 0
    assert run_cli(capsys, "revert", tree)[0] == 0
    assert git_status(tree) == "" and state(victim) == before


def test_a_recovered_folder_that_links_outside_stops_the_recovery_before_it_starts(capsys, tree, victim):
    """A genuine interrupted run (this user's key) over a file edited since, so that the
    recovery must keep the edit aside: `.rewardpatch-recovered` links outside."""
    init = tree / LOSSES / "__init__.py"
    original = init.read_text()
    written = original + "from .iou_metric_loss import IoUMetricLoss\n"
    entry = journal.Entry(f"{LOSSES}/__init__.py", None, b64(original), 0o644,
                          hashlib.sha256(written.encode()).hexdigest())
    record = journal.Record("apply", 1, [entry], str(tree.resolve()))
    (tree / journal.JOURNAL_NAME).write_bytes(record.to_bytes(journal.writer_key()))
    init.write_text(original + "# edited after the crash\n")
    (tree / journal.RECOVERY_COPIES_DIR).symlink_to("../victim")
    victim_before, tree_before = state(victim), tree_state(tree)
    for args in READERS:
        code, _, err = run_cli(capsys, args[0], tree, *args[1:])
        assert "an interrupted apply (pid 1)" in err, args
        assert tree_state(tree) == tree_before and state(victim) == victim_before, args
    for args in WRITERS:
        code, _, err = run_cli(capsys, args[0], tree, *args[1:])
        assert code == 1
        assert f"{journal.RECOVERY_COPIES_DIR} is a symlink" in one_line_error(err)
        assert tree_state(tree) == tree_before and state(victim) == victim_before, args
    (tree / journal.RECOVERY_COPIES_DIR).unlink()  # the user removes the link: the recovery goes through
    code, _, err = run_cli(capsys, "revert", tree)
    assert "rolled back 1 file" in err and f"kept at {journal.RECOVERY_COPIES_DIR}/{LOSSES}/__init__.py" in err
    assert init.read_text() == original
    assert state(victim) == victim_before


@pytest.fixture
def patched(tree, capsys) -> Path:
    assert run_cli(capsys, "apply", tree, "--heads", "FCNHead")[0] == 0
    commit(tree, "patched")
    return tree


def edit_manifest(tree: Path, change) -> None:
    path = tree / ".rewardpatch.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


@pytest.mark.parametrize("where", ["backup copy", "backup path", "file record", "head source"])
def test_manifest_records_naming_files_outside_are_refused_without_reading_them(capsys, patched, victim, where):
    keep = victim / "keep.txt"
    digest = hashlib.sha256(keep.read_bytes()).hexdigest()

    def change(data):
        if where == "backup copy":
            data["backups"] = [{"path": f"{LOSSES}/x.py", "copy": "../victim/keep.txt", "sha256": digest,
                                "kind": "original"}]
        elif where == "backup path":
            data["backups"] = [{"path": str(keep), "copy": ".rewardpatch/original/x.py", "sha256": digest,
                                "kind": "original"}]
        elif where == "file record":
            data["files"]["../victim/keep.txt"] = {"action": "create", "sha256": digest, "kind": "template",
                                                   "source": "iou_metric_loss.py"}
        else:
            record = data["files"][f"{HEADS}/reward_fcn_head.py"]
            record["source"] = "../../victim/keep.txt"

    edit_manifest(patched, change)
    before = state(victim)
    for args in (("check",), ("revert",), ("apply",), ("apply", "--dry-run"), ("list-heads",)):
        code, out, err = run_cli(capsys, args[0], patched, *args[1:])
        assert code == 1, (args, out, err)
        assert ".rewardpatch.json is refused" in one_line_error(err)
        assert not out.startswith("ok")
    assert state(victim) == before


def test_a_backup_copy_that_links_outside_is_not_read(capsys, patched, victim):
    copy = patched / ".rewardpatch" / "original" / f"{LOSSES}/x.py"
    copy.parent.mkdir(parents=True)
    copy.symlink_to(victim / "keep.txt")
    digest = hashlib.sha256((victim / "keep.txt").read_bytes()).hexdigest()
    edit_manifest(patched, lambda data: data.update(backups=[
        {"path": f"{LOSSES}/x.py", "copy": f".rewardpatch/original/{LOSSES}/x.py", "sha256": digest, "kind": "original"}
    ]))
    before = state(victim)
    for verb in ("check", "revert"):
        code, _, err = run_cli(capsys, verb, patched)
        assert code == 1 and "symlink pointing outside the tree" in one_line_error(err)
    assert state(victim) == before


def stray(tree: Path, name: str, imported: bool) -> None:
    if imported:
        init = tree / HEADS / "__init__.py"
        init.write_text(init.read_text() + f"from .{name} import Scratch  # noqa\n")
    commit(tree, f"{name}, imported" if imported else name)


@pytest.mark.parametrize("imported", [False, True], ids=["stray", "imported"])
def test_a_huge_source_file_is_skipped_when_stray_and_refused_when_imported(capsys, tree, victim, imported):
    with open(tree / HEADS / "huge_scratch.py", "wb") as handle:  # 50 MB, sparse: never read
        handle.truncate(50 * 1024 * 1024)
    stray(tree, "huge_scratch", imported)
    before = tree_state(tree)
    for args in (("list-heads",), ("apply", "--dry-run"), ("apply",)):
        started = time.perf_counter()
        code, out, err = run_cli(capsys, args[0], tree, *args[1:])
        assert time.perf_counter() - started < 60, args  # unbounded: 11 minutes and 21 GB
        message = f"{HEADS}/huge_scratch.py: 52428800 bytes, over the {MAX_SOURCE_BYTES} bytes"
        if imported:
            assert code == 2 and message in one_line_error(err), args
            assert tree_state(tree) == before
        else:
            assert code == 0 and f"skipped {message}" in err, args


@pytest.mark.parametrize("imported", [False, True], ids=["stray", "imported"])
def test_a_deeply_nested_source_file_is_skipped_when_stray_and_refused_when_imported(capsys, tree, imported):
    (tree / HEADS / "deep_scratch.py").write_text("x = " + " + ".join(["1"] * 3000) + "\n")
    stray(tree, "deep_scratch", imported)
    before = tree_state(tree)
    code, _, err = run_cli(capsys, "check", tree)
    assert code == 1 and "Traceback" not in err and "RecursionError" not in err
    for args in (("list-heads",), ("apply", "--dry-run"), ("apply",)):
        code, out, err = run_cli(capsys, args[0], tree, *args[1:])
        message = f"{HEADS}/deep_scratch.py: nested more than {MAX_NESTING} levels deep"
        if imported:
            assert code == 2 and message in one_line_error(err), args
            assert tree_state(tree) == before
        else:
            assert code == 0 and f"skipped {message}" in err, args


def test_a_module_nested_just_within_the_bound_is_patched(capsys, tree):
    head = tree / HEADS / "fcn_head.py"
    deep = "    DEEP = " + " + ".join(["1"] * (MAX_NESTING - 5)) + "\n\n    def __init__(self,"
    head.write_text(head.read_text().replace("    def __init__(self,", deep, 1))
    commit(tree, "a deep but allowed expression in a head module")
    code, _, err = run_cli(capsys, "apply", tree, "--heads", "FCNHead")
    assert code == 0, err
    assert "DEEP = 1 + 1" in (tree / HEADS / "reward_fcn_head.py").read_text()


def test_a_signal_while_sources_are_parsed_is_honoured_at_once(tree):
    """Files just within the bound, which take seconds to read in all: SIGTERM ends the run
    with 143 and one line within a second or two, not after the last file."""
    line = "VALUE = [" + ", ".join(f"({i}, 'x{i}')" for i in range(60)) + "]\n"
    body = line * (MAX_SOURCE_BYTES // len(line) - 1)
    for n in range(12):
        (tree / HEADS / f"scratch_{n}.py").write_text(body)
    process = start_cli("list-heads", tree)
    time.sleep(1.5)  # the interpreter and its imports first
    sent = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert time.perf_counter() - sent < 5
    assert one_line_error(err) == "rewardpatch: error: interrupted (SIGTERM)"


def run_into(stdout, stderr, *args) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter whose stdout and stderr are the given files."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "rewardpatch", *map(str, args)], env=env, stdout=stdout,
                          stderr=stderr, text=True, timeout=600)


def test_a_full_stdout_keeps_a_writers_code_and_gives_a_readers_the_report_lost_code(tree):
    with open("/dev/full", "w") as full:
        applied = run_into(full, subprocess.PIPE, "apply", tree)
        assert applied.returncode == 0, applied.stderr
        assert "could not write the report to stdout (No space left on device)" in one_line_error(applied.stderr)
        assert "the command's result stands (exit 0)" in applied.stderr
        for args in (("list-heads",), ("check",), ("revert", "--dry-run"), ("list-heads", "--json")):
            read = run_into(full, subprocess.PIPE, args[0], tree, *args[1:])
            assert read.returncode == EXIT_REPORT_LOST, (args, read.stderr)
            assert "rewardpatch: error: could not write the report" in read.stderr.splitlines()[-1]
            assert "Traceback" not in read.stderr
        both = run_into(full, full, "revert", tree)  # no stderr either: still the result's code
        assert both.returncode == 0
    assert git_status(tree) == ""


def test_a_closed_stdout_is_a_lost_report_not_a_traceback(tree):
    command = [sys.executable, "-m", "rewardpatch", "list-heads", str(tree)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    closed = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *command], env=env, capture_output=True, text=True)
    assert closed.returncode == EXIT_REPORT_LOST, closed.stderr
    assert "Traceback" not in closed.stderr and "Exception ignored" not in closed.stderr
    applied = subprocess.run(["sh", "-c", 'exec "$@" >&- 2>&-', "sh", *command[:3], "apply", str(tree)],
                             env=env, capture_output=True, text=True)
    assert applied.returncode == 0
    assert not (tree / journal.LOCK_NAME).exists()
    assert run_cli(None, "check", tree)[0] == 0


def test_a_lock_whose_removal_failed_is_said_and_cleared_by_the_next_writer(
    capsys, tree, monkeypatch, terminal_signals,
):
    monkeypatch.setenv(faults.ENV, "unlock:1:enospc")
    code, _, err = run_cli(capsys, "apply", tree, "--heads", "FCNHead")
    monkeypatch.delenv(faults.ENV)
    assert code == 0 and f"could not remove {journal.LOCK_NAME}" in err
    assert (tree / journal.LOCK_NAME).exists()
    code, _, err = run_cli(capsys, "list-heads", tree)
    assert code == 0 and "no longer running; the next apply or revert clears it" in err
    assert (tree / journal.LOCK_NAME).exists()  # a reader writes nothing
    code, _, err = run_cli(capsys, "revert", tree)
    assert code == 0 and f"took over {journal.LOCK_NAME}, left by pid {os.getpid()}" in err
    assert not (tree / journal.LOCK_NAME).exists()
    assert git_status(tree) == ""


# -- a bounded property test: journals and manifests mutated, every verb, nothing outside --------

HOSTILE_PATHS = st.sampled_from([
    "../victim/keep.txt", "../../victim/keep.txt", "mmseg/../../victim/keep.txt", "/tmp/rewardpatch-absolute",
    ".git/hooks/pre-commit", ".git/config", ".GIT/hooks/post-checkout", "mmseg//models", "./mmseg/version.py",
    "", "evil/keep.txt", "evil", "mmseg/version.py", journal.LOCK_NAME, ".rewardpatch/original/../../x",
])
ODD_VALUES = st.one_of(
    HOSTILE_PATHS, st.none(), st.integers(-2, 2**40), st.booleans(), st.just([]), st.just({}),
    st.just("%%% not base64"), st.lists(HOSTILE_PATHS, max_size=3),
)


@pytest.fixture
def hostile_base(make_tree, tmp_path) -> tuple[Path, Path, dict, dict]:
    """A patched tree committed with a link `evil` -> the victim; the manifest, and the journal
    a crash in the middle of a second apply left (a real one, this user's)."""
    tree = make_tree("1.2.2")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("the user's own file\n")
    (tree / "evil").symlink_to("../victim")
    assert run_cli(None, "apply", tree, "--heads", "FCNHead")[0] == 0
    commit(tree, "patched, and a link")
    manifest = json.loads((tree / ".rewardpatch.json").read_text())
    crash_an_apply(tree, "FCNHead", "ASPPHead")
    record = json.loads((tree / journal.JOURNAL_NAME).read_text())
    subprocess.run(["git", "reset", "-q", "--hard"], cwd=tree, check=True)
    subprocess.run(["git", "clean", "-qfdx"], cwd=tree, check=True)
    return tree, victim, manifest, record


def mutate(draw, data: dict, key_path: list[str]) -> None:
    """Replace one field somewhere in `data` by a hostile value."""
    target = data
    for key in key_path[:-1]:
        target = target[key]
    target[key_path[-1]] = draw(ODD_VALUES)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_journals_and_manifests_touch_nothing_outside_under_any_verb(hostile_base, data):
    tree, victim, manifest, record = hostile_base
    subprocess.run(["git", "clean", "-qfdx"], cwd=tree, check=True)
    subprocess.run(["git", "checkout", "-q", "--", "."], cwd=tree, check=True)
    record = json.loads(json.dumps(record))
    manifest = json.loads(json.dumps(manifest))
    which = data.draw(st.sampled_from(["journal", "manifest", "both"]))
    if which in ("journal", "both"):
        record.pop("mac")
        index = data.draw(st.integers(0, len(record["entries"]) - 1))
        field = data.draw(st.sampled_from(["path", "temp", "before", "mode", "after_sha256", "dirs"]))
        where = data.draw(st.sampled_from([["entries", index, field], ["root"], ["pid"], ["entries"]]))
        mutate(data.draw, record, where)
        if data.draw(st.booleans()):  # signed with this user's key: the checks past the signature
            record["mac"] = journal._mac(journal.writer_key(), record)
        (tree / journal.JOURNAL_NAME).write_text(json.dumps(record))
    if which in ("manifest", "both"):
        path = data.draw(st.sampled_from(sorted(manifest["files"])))
        where = data.draw(st.sampled_from([["files", path, "source"], ["files", path, "sha256"], ["backups"]]))
        if where == ["backups"]:
            kind = data.draw(st.sampled_from(["original", "hand-edited"]))
            manifest["backups"] = [{"path": data.draw(HOSTILE_PATHS), "copy": data.draw(HOSTILE_PATHS),
                                    "sha256": "0" * 64, "kind": kind}]
        else:
            mutate(data.draw, manifest, where)
        if data.draw(st.booleans()):
            manifest["files"][data.draw(HOSTILE_PATHS)] = manifest["files"].pop(path)
        (tree / ".rewardpatch.json").write_text(json.dumps(manifest))
    args = data.draw(st.sampled_from(READERS + WRITERS))
    victim_before, hooks_before = state(victim), state(tree / ".git" / "hooks")
    tree_before = tree_state(tree)
    code, _, err = run_cli(None, args[0], tree, *args[1:])
    assert code in (0, 1, 2), err
    assert "Traceback" not in err
    assert state(victim) == victim_before
    assert state(tree / ".git" / "hooks") == hooks_before
    assert not Path("/tmp/rewardpatch-absolute").exists()
    if args in READERS:
        assert tree_state(tree) == tree_before, args
