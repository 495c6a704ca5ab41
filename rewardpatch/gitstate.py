"""What git knows about a tree: which target files carry uncommitted changes; commits.

Every git failure (dubious ownership, a corrupt repository, a full disk or an unwritable
`.git`) becomes a StateError of one line: the last meaningful line of git's message.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import StateError

# What git says about a repository owned by someone else (safe.directory)
_DUBIOUS = re.compile(r"detected dubious ownership in repository at '?([^'\n]*)'?")
# States in which `git commit -- paths` is refused or would commit more than the patch
_IN_PROGRESS = {
    "MERGE_HEAD": "a merge", "CHERRY_PICK_HEAD": "a cherry-pick", "REVERT_HEAD": "a revert",
    "rebase-merge": "a rebase", "rebase-apply": "a rebase or git am",
}


def git_message(exc: Exception) -> str:
    """The one line that says what went wrong in git's output (no gitpython quoting)."""
    stderr = getattr(exc, "stderr", None)
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    text = stderr or ""
    prefix = "\n  stderr: '"
    if text.startswith(prefix):  # gitpython's wrapping: "\n  stderr: '<git's stderr>'"
        text = text[len(prefix):]
        text = text[:-1] if text.endswith("'") else text
    dubious = _DUBIOUS.search(text)
    if dubious:
        where = dubious.group(1)
        return (
            f"detected dubious ownership in repository at '{where}' (if you trust it: "
            f"git config --global --add safe.directory {where})"
        )
    lines = [
        line.strip() for line in text.splitlines()
        if line.strip() and not line.strip().startswith("hint:") and line.strip() != "'"
    ]
    if lines:
        return lines[-1]
    status = getattr(exc, "status", None)
    if status not in (None, ""):
        return f"exit status {status}"
    return str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__


def _failure(exc: Exception, what: str = "") -> StateError:
    return StateError(f"{what or 'git failed'}: {git_message(exc)}")


def _git_errors():
    import git

    return (git.GitError, OSError, ValueError)


def _repo(root: Path):
    import git  # deferred: gitpython costs a noticeable part of a short command's start-up

    try:
        repo = git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    except _git_errors() as exc:
        raise _failure(exc, f"cannot read the git repository of {root}") from None
    if repo.bare:
        return None
    return repo


def _run(repo, command: str, *args: str, what: str = "") -> str:
    """`git <command> <args>` in `repo`; a StateError of one line when git fails."""
    try:
        return getattr(repo.git, command)(*args)
    except _git_errors() as exc:
        raise _failure(exc, what) from None


def _prefix(root: Path, repo) -> Path:
    return Path(root).resolve().relative_to(Path(repo.working_tree_dir).resolve())


def dirty_files(root: Path, paths: list[str]) -> set[str]:
    """Those of `paths` (relative to root) that git tracks and that differ from HEAD."""
    repo = _repo(root)
    if repo is None or not paths:
        return set()
    in_repo = {(_prefix(root, repo) / p).as_posix(): p for p in paths}
    output = _run(repo, "status", "--porcelain=v1", "--untracked-files=no", "-z", "--", *in_repo,
                  what="git status failed (--allow-dirty skips this check)")
    dirty = set()
    for entry in output.split("\0"):
        if len(entry) > 3:
            dirty.add(in_repo.get(entry[3:], entry[3:]))
    return dirty


def tracked(root: Path, paths: list[str]) -> set[str]:
    """Those of `paths` (relative to root) that git tracks: committed or staged files, not the
    tool's own. Outside a work tree: none."""
    repo = _repo(root)
    if repo is None or not paths:
        return set()
    in_repo = {(_prefix(root, repo) / p).as_posix(): p for p in paths}
    output = _run(repo, "ls-files", "-z", "--", *in_repo, what="git ls-files failed")
    return {in_repo.get(entry, entry) for entry in output.split("\0") if entry}


def check_can_commit(root: Path) -> None:
    """Refuse (StateError) unless `git commit` can record a patch of `root`: a work tree,
    an identity git can resolve (env or config), no merge or rebase in progress."""
    repo = _repo(root)
    if repo is None:
        raise StateError(f"{root} is not in a git work tree: cannot --commit; nothing was changed")
    _run(repo, "status", "--porcelain=v1", "--untracked-files=no", what="cannot --commit, nothing was changed")
    for variable in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT"):
        try:
            repo.git.var(variable)
        except _git_errors() as exc:
            raise StateError(
                f"cannot --commit, nothing was changed: git has no identity ({git_message(exc)}); set user.name "
                "and user.email with git config, or GIT_AUTHOR_NAME and GIT_AUTHOR_EMAIL"
            ) from None
    git_dir = Path(repo.git_dir)
    for name, state in _IN_PROGRESS.items():
        if (git_dir / name).exists():
            raise StateError(f"cannot --commit during {state} ({git_dir / name}); finish it first; nothing was changed")


@dataclass(frozen=True)
class Commit:
    """A commit of the patch: its short hash, and the paths it added although git ignores them
    (relative to root), with the ignore rules that matched ("<file>:<line>: <pattern>")."""

    sha: str
    forced: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()


def ignored(root: Path, paths: list[str]) -> dict[str, str]:
    """Those of `paths` (relative to root) that an ignore rule matches (.gitignore, info/exclude,
    core.excludesFile), each with the rule ("<file>:<line>: <pattern>"). Tracked files are matched
    too (--no-index): a tracked file under an ignored folder stops a plain `git add` as well.
    Outside a work tree: none."""
    import tempfile

    repo = _repo(root)
    if repo is None or not paths:
        return {}
    in_repo = {(_prefix(root, repo) / p).as_posix(): p for p in paths}
    with tempfile.TemporaryFile() as names:  # -z needs --stdin: a path may hold any byte but NUL
        names.write(b"".join(os.fsencode(name) + b"\0" for name in in_repo))
        names.seek(0)
        try:
            output = repo.git.check_ignore("--verbose", "--no-index", "-z", "--stdin", istream=names)
        except _git_errors() as exc:
            if getattr(exc, "status", None) == 1:  # none of them is ignored
                return {}
            raise _failure(exc, "git check-ignore failed") from None
    # --verbose -z: source, line, pattern and path of each path that matches a pattern, a
    # negated one (!pattern: not ignored) included
    fields = output.split("\0")
    matched = zip(fields[0::4], fields[1::4], fields[2::4], fields[3::4])
    return {in_repo.get(name, name): f"{source}:{line}: {pattern}"
            for source, line, pattern, name in matched if name and not pattern.startswith("!")}


def commit(root: Path, paths: list[str], message: str) -> Commit:
    """Stage `paths` (created, changed or removed) and commit them; the commit's short hash.

    Where an ignore rule matches one of them (`ignored`), every path is added with `git add
    --force`: they are the files apply wrote, which the user asked to commit, and each is named
    exactly, so nothing else is added. When git fails, those paths are unstaged again before the
    StateError is raised.
    """
    repo = _repo(root)
    if repo is None:
        raise StateError(f"{root} is not a git repository: cannot --commit")
    forced = ignored(root, paths)
    full = [(_prefix(root, repo) / p).as_posix() for p in paths]
    try:
        if forced:
            _run(repo, "add", "--all", "--force", "--", *full, what="git add --force failed")
        else:
            _run(repo, "add", "--all", "--", *full, what="git add failed")
        _run(repo, "commit", "--quiet", "-m", message, "--", *full, what="git commit failed")
    except StateError:
        unstage(root, paths)
        raise
    sha = _run(repo, "rev-parse", "--short=10", "HEAD", what="committed, but git rev-parse failed")
    return Commit(sha, tuple(p for p in paths if p in forced), tuple(dict.fromkeys(forced.values())))


def unstage(root: Path, paths: list[str]) -> None:
    """Put the index entries of `paths` back as HEAD has them (none on an unborn branch)."""
    repo = _repo(root)
    if repo is None:
        return
    full = [(_prefix(root, repo) / p).as_posix() for p in paths]
    try:
        repo.git.reset("-q", "--", *full)
    except _git_errors():
        try:  # an unborn branch, on an old git: nothing is committed, so nothing stays staged
            repo.git.rm("-q", "--cached", "--ignore-unmatch", "-r", "--", *full)
        except _git_errors():
            pass
