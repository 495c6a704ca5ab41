"""Materialise a reference MMSegmentation checkout from PyPI.

The sdist holds mmseg/, tests/, setup.py and requirements/ but no configs/; the wheel
holds the configs under mmseg/.mim/configs. Together, as a one-commit git repository,
they make a realistic checkout: `make demo` patches one, the tests patch several.
Downloads and the assembled checkout are cached, so only the first use needs the network.

    python -m rewardpatch.checkout 1.2.2 ./mmsegmentation
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from .errors import InputError, RewardpatchError, StateError
from .tree import read_version

PACKAGE = "mmsegmentation"
# A fixed identity and date make the commit, and so its hash, the same on every machine.
COMMIT_ENV = {
    "GIT_AUTHOR_NAME": "rewardpatch",
    "GIT_AUTHOR_EMAIL": "rewardpatch@localhost",
    "GIT_COMMITTER_NAME": "rewardpatch",
    "GIT_COMMITTER_EMAIL": "rewardpatch@localhost",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+0000",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+0000",
}


def cache_dir() -> Path:
    root = (
        os.environ.get("REWARDPATCH_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rewardpatch"
    )
    return Path(root)


def _download(version: str, kind: str, into: Path) -> Path:
    pattern = f"{PACKAGE}-{version}.tar.gz" if kind == "sdist" else f"{PACKAGE}-{version}-py3-none-any.whl"
    found = into / pattern
    if found.is_file():
        return found
    into.mkdir(parents=True, exist_ok=True)
    only = ["--no-binary", ":all:", "--no-build-isolation"] if kind == "sdist" else ["--only-binary", ":all:"]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        *only,
        "-d",
        str(into),
        f"{PACKAGE}=={version}",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not found.is_file():
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise StateError(f"could not download {PACKAGE} {version} ({kind}) from the package index: {last}")
    return found


def _assemble(version: str, into: Path, downloads: Path) -> None:
    sdist = _download(version, "sdist", downloads)
    wheel = _download(version, "wheel", downloads)
    with tempfile.TemporaryDirectory() as scratch:
        with tarfile.open(sdist) as archive:
            archive.extractall(scratch, filter="data")
        shutil.move(str(Path(scratch) / f"{PACKAGE}-{version}"), into)
    shutil.rmtree(into / f"{PACKAGE}.egg-info", ignore_errors=True)
    prefix = "mmseg/.mim/configs/"
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.startswith(prefix) and not member.endswith("/"):
                target = into / "configs" / member[len(prefix) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(member))
    env = {**os.environ, **COMMIT_ENV}
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["commit", "-q", "-m", f"MMSegmentation {version} (PyPI sdist + configs)"],
    ):
        subprocess.run(["git", *args], cwd=into, env=env, check=True, capture_output=True)


def pristine(version: str, cache: Path | None = None) -> Path:
    """The cached, never-modified checkout of `version`, assembled on first use."""
    cache = cache or cache_dir()
    target = cache / "checkouts" / f"{PACKAGE}-{version}"
    if (target / ".git").is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _assemble(version, staging / "tree", cache / "pypi")
        try:
            os.replace(staging / "tree", target)
        except OSError:
            if not (target / ".git").is_dir():  # lost a race to another process: fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def materialise(version: str, dest: Path, cache: Path | None = None) -> Path:
    """A fresh copy of the `version` checkout at `dest`, unless `dest` exists already."""
    dest = Path(dest)
    if dest.exists():
        if not (dest / "mmseg" / "version.py").is_file():
            raise InputError(f"{dest} exists and is not an MMSegmentation checkout")
        found = read_version(dest / "mmseg" / "version.py")
        if found != version:
            raise InputError(
                f"{dest} exists and holds MMSegmentation {found}, not {version}: move it, or pick another destination"
            )
        return dest
    shutil.copytree(pristine(version, cache), dest, symlinks=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Materialise an MMSegmentation checkout from PyPI.")
    parser.add_argument("version", help="MMSegmentation version, e.g. 1.2.2")
    parser.add_argument("dest", type=Path, help="where the checkout goes (left alone if it exists)")
    args = parser.parse_args(argv)
    try:
        existed = args.dest.exists()
        path = materialise(args.version, args.dest)
    except (RewardpatchError, subprocess.CalledProcessError, OSError) as exc:
        print(f"rewardpatch: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    print(f"{'kept the existing' if existed else 'materialised'} MMSegmentation checkout at {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
