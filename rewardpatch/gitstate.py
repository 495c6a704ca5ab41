"""What git knows about a tree: which target files carry uncommitted changes; commits."""

from __future__ import annotations

from pathlib import Path

from .errors import StateError


def _repo(root: Path):
    import git  # deferred: gitpython costs a noticeable part of a short command's start-up

    try:
        repo = git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    if repo.bare:
        return None
    return repo


def is_repository(root: Path) -> bool:
    return _repo(root) is not None


def dirty_files(root: Path, paths: list[str]) -> set[str]:
    """Those of `paths` (relative to root) that git tracks and that differ from HEAD."""
    repo = _repo(root)
    if repo is None or not paths:
        return set()
    prefix = Path(root).resolve().relative_to(Path(repo.working_tree_dir).resolve())
    in_repo = {(prefix / p).as_posix(): p for p in paths}
    output = repo.git.status("--porcelain=v1", "--untracked-files=no", "-z", "--", *in_repo)
    dirty = set()
    for entry in output.split("\0"):
        if len(entry) > 3:
            dirty.add(in_repo.get(entry[3:], entry[3:]))
    return dirty


def commit(root: Path, paths: list[str], message: str) -> str:
    """Stage `paths` (created, changed or removed) and commit them; returns the short hash."""
    import git

    repo = _repo(root)
    if repo is None:
        raise StateError(f"{root} is not a git repository: cannot --commit")
    prefix = Path(root).resolve().relative_to(Path(repo.working_tree_dir).resolve())
    full = [(prefix / p).as_posix() for p in paths]
    try:
        repo.git.add("--all", "--", *full)
        repo.git.commit("--quiet", "-m", message, "--", *full)
    except git.GitCommandError as exc:
        detail = (exc.stderr or str(exc)).strip().splitlines()
        raise StateError(f"git commit failed: {detail[-1] if detail else exc}") from None
    return repo.head.commit.hexsha[:10]
