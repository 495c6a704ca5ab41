"""Reach: how many public MMSegmentation trees rewardpatch accepts, patches byte-exactly and
verifies, by release range.

    .venv/bin/python benchmarks/bench_reach.py TREES [--pypi 0.6.0,1.0.0rc6,...] [--no-verify]
    .venv/bin/python benchmarks/bench_reach.py export GIT_DIR DEST --repository OWNER/NAME

TREES is a folder of public trees fetched by hand, one folder each (never committed here):
a clone, or an `export` of a repository's commit. A tree's repository and commit are read
from `git config rewardpatch-reach.repository` / `.commit` (which `export` writes), else
from its origin and HEAD, so that a run can be repeated. `--pypi` adds the reference
checkouts of those releases (rewardpatch/checkout.py), named by the sdist's sha256.

Every `mmseg/` with a decode-head package (`mmseg/models/decode_heads/__init__.py`) in a
tree is one MMSeg tree (a repository may hold several). On a copy of each, as a user
would, in fresh processes:

1. `list-heads --json`: accepted = exit 0 with at least one compatible head;
2. `import mmseg.models` in the stack of the tree's generation (.venv for 1.x,
   .venv-mmseg0 for 0.x), with the tree's mmcv assert relaxed as verify's worker relaxes it;
3. `apply`, `check`, the same import again (a patch that breaks it is the failure this
   benchmark exists to find), `verify --skip-finetune` where the patched tree imports;
4. `revert`: byte-exact = every file and git's index as before.

Writes results/reach.json (machine, date, each tree's repository, commit, root and
outcomes, the summary by release range) and the table between the bench_reach markers in
benchmarks/README.md. Goal: >= 95 % of the trees with a decode-head package accepted; 0 patches that
break an import.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TypedDict

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))  # this checkout's rewardpatch, not an installed one

from machine import describe, one_line  # noqa: E402

from rewardpatch.checkout import cache_dir, pristine  # noqa: E402
from rewardpatch.errors import RewardpatchError  # noqa: E402
from rewardpatch.tree import MMSegTree, read_version  # noqa: E402

HEADS_INIT = Path("mmseg/models/decode_heads/__init__.py")
STACKS = {"mmseg-1.x": REPO / ".venv/bin/python", "mmseg-0.x": REPO / ".venv-mmseg0/bin/python"}
TIMEOUT_S = {"static": 300, "import": 300, "verify": 600}
GOAL_ACCEPTED = 0.95
# release ranges of the table, lowest release of each first
RANGES = [("0.6.0", "0.6 to 0.10"), ("0.11.0", "0.11 to 0.16"), ("0.17.0", "0.17 to 0.23"),
          ("0.24.0", "0.24 to 0.30"), ("1.0.0rc0", "1.0.0rc0 to rc6"), ("1.0.0", "1.0 to 1.2")]
README_BEGIN, README_END = "<!-- bench_reach: begin -->", "<!-- bench_reach: end -->"

# verify's worker relaxes the tree's own mmcv assert for its import; the probe imports the same way
IMPORT_PROBE = """
import sys
from pathlib import Path
import mmcv
from rewardpatch.errors import RewardpatchError
from rewardpatch.tree import MMSegTree
from rewardpatch.verify.worker import assert_bound, relaxed_mmcv_assert
tree = Path(sys.argv[1]).resolve()
try:
    bound = assert_bound(MMSegTree.open(tree), mmcv.__version__)
except RewardpatchError:  # a tree rewardpatch refuses: imported as it is
    bound = None
with relaxed_mmcv_assert(bound[0] if bound else None):
    import mmseg
    import mmseg.models
origin = Path(mmseg.__file__).resolve()
if tree not in origin.parents:
    sys.exit(f"mmseg imported from {origin.parent}, not from the tree")
"""


class ReachResult(TypedDict):
    """results/reach.json: the machine, the stacks, each tree's row and the summary over them."""

    benchmark: str
    machine: dict
    stacks: dict[str, str]
    verify: str
    summary: dict
    trees: list[dict]
    without_decode_head_package: list[dict[str, str]]


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else ""


def export(git_dir: Path, dest: Path, repository: str) -> list[str]:
    """HEAD of `git_dir` as a one-commit repository at `dest`, naming `repository` and the
    commit; blobs the snapshot lacks (its largest files) are left out and returned."""
    commit = git(git_dir, "rev-parse", "HEAD")
    dest.mkdir(parents=True)
    listing = subprocess.run(["git", "ls-tree", "-r", "-z", "HEAD"], cwd=git_dir, capture_output=True, check=True)
    entries = []
    for entry in listing.stdout.split(b"\0"):
        if entry:
            meta, path = entry.split(b"\t", 1)
            mode, kind, blob = meta.decode().split()
            if kind == "blob":  # not a submodule: its files are another repository's
                entries.append((mode, blob, os.fsdecode(path)))
    batch = subprocess.run(["git", "cat-file", "--batch"], cwd=git_dir, capture_output=True, check=True,
                           input="".join(f"{blob}\n" for _, blob, _ in entries).encode())
    stream, missing = batch.stdout, []
    for mode, blob, name in entries:
        header_end = stream.index(b"\n")
        header, stream = stream[:header_end].split(), stream[header_end + 1:]
        if header[-1] == b"missing":
            missing.append(name)
            continue
        size = int(header[2])
        data, stream = stream[:size], stream[size + 1:]
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if mode == "120000":
            os.symlink(os.fsdecode(data), target)
        else:
            target.write_bytes(data)
            if mode == "100755":
                target.chmod(0o755)
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench_reach", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench_reach", "GIT_COMMITTER_EMAIL": "bench@localhost"}
    for args in (["init", "-q", "-b", "main"], ["config", "rewardpatch-reach.repository", repository],
                 ["config", "rewardpatch-reach.commit", commit],
                 ["config", "rewardpatch-reach.missing", str(len(missing))], ["add", "-A", "-f"],
                 ["commit", "-q", "-m", f"{repository}@{commit}"]):
        subprocess.run(["git", *args], cwd=dest, env=env, check=True, capture_output=True)
    return missing


def mmseg_roots(folder: Path) -> list[Path]:
    """Every folder of `folder` that holds mmseg/ with a decode-head package, shallowest first."""
    found = []
    for current, dirs, _ in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != ".git" and d != "node_modules")
        if (Path(current) / HEADS_INIT).is_file():
            found.append(Path(current))
    return found


def snapshot(folder: Path) -> str:
    """A digest of every file under `folder` outside .git, and of what git's index stages (not of
    the index's bytes: git refreshes its stat cache whenever it looks)."""
    digest = hashlib.sha256(git(folder, "ls-files", "--stage").encode())
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not (Path(current) == folder and d == ".git"))
        for name in sorted(files):
            path = Path(current) / name
            digest.update(str(path.relative_to(folder)).encode("utf-8", "surrogateescape"))
            digest.update(os.readlink(path).encode() if path.is_symlink() else path.read_bytes())
    return digest.hexdigest()


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def run(command: list, cwd: Path, timeout: int, env: dict | None = None) -> tuple[int, str, str]:
    try:
        result = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True,
                                timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {timeout} s"
    return result.returncode, result.stdout, result.stderr


def stack_env(root: Path) -> dict:
    # the tree first, then this checkout's rewardpatch; no .pyc files written into the tree
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(REPO)]), "PYTHONDONTWRITEBYTECODE": "1"}


def rewardpatch(python: Path, *args, cwd: Path, timeout: int) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    return run([python, "-m", "rewardpatch", *args], cwd, timeout, env)


def imports(python: Path, root: Path) -> dict:
    start = time.perf_counter()
    code, _, err = run([python, "-P", "-c", IMPORT_PROBE, root], root, TIMEOUT_S["import"], stack_env(root))
    return {
        "ok": code == 0,
        "error": None if code == 0 else last_line(err),
        "seconds": round(time.perf_counter() - start, 1),
    }


def release_range(version: str | None) -> str:
    from packaging.version import InvalidVersion, Version

    try:
        parsed = Version(version or "")
    except InvalidVersion:
        return "other"
    label = "other"
    for lowest, name in RANGES:
        if parsed >= Version(lowest):
            label = name
    return label if parsed <= Version("1.2.2") else "other"


def measure(root: Path, scratch: Path, verify: bool) -> dict:
    """The outcomes on a copy of the repository that holds `root`."""
    root = root.resolve()
    top = Path(git(root, "rev-parse", "--show-toplevel") or root)
    copy = scratch / "tree"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(top, copy, symlinks=True)
    tree = copy / root.relative_to(top)
    row: dict = {"root": str(root.relative_to(top)) if root != top else "."}
    try:
        row["version"] = read_version(tree / "mmseg/version.py")
    except RewardpatchError as exc:
        row["version"] = None
        row["version_error"] = str(exc)
    row["range"] = release_range(row["version"])
    try:
        generation = MMSegTree.open(tree).generation.name
    except RewardpatchError:
        generation = None
    row["generation"] = generation
    tool = STACKS["mmseg-1.x"]
    before = snapshot(copy)
    code, out, err = rewardpatch(tool, "list-heads", tree, "--json", cwd=scratch, timeout=TIMEOUT_S["static"])
    heads = json.loads(out) if code == 0 else []
    row["heads"] = len(heads)
    row["compatible"] = sum(h["status"] == "compatible" for h in heads)
    row["accepted"] = code == 0 and row["compatible"] > 0
    reasons = sorted({h["reason"] for h in heads if h["status"] != "compatible" and h.get("reason")})
    row["refusal"] = None if row["accepted"] else (last_line(err) or "no compatible head: " + " / ".join(reasons[:3]))
    if not row["accepted"]:
        return row
    assert generation is not None  # list-heads accepted the tree: MMSegTree.open did too
    python = STACKS[generation]
    row["import_before"] = imports(python, tree)
    code, _, err = rewardpatch(tool, "apply", tree, cwd=scratch, timeout=TIMEOUT_S["static"])
    row["apply"] = {"ok": code == 0, "error": None if code == 0 else last_line(err)}
    if code == 0:
        code, _, err = rewardpatch(tool, "check", tree, cwd=scratch, timeout=TIMEOUT_S["static"])
        row["check"] = {"ok": code == 0, "error": None if code == 0 else last_line(err)}
        row["import_after"] = imports(python, tree)
        row["breaks_import"] = row["import_before"]["ok"] and not row["import_after"]["ok"]
        if verify and row["import_after"]["ok"]:
            workdir, report = scratch / "verify", scratch / "verify-report.json"
            shutil.rmtree(workdir, ignore_errors=True)
            report.unlink(missing_ok=True)
            start = time.perf_counter()
            code, _, err = rewardpatch(
                python,
                "verify",
                tree,
                "--device",
                "cpu",
                "--skip-finetune",
                "--workdir",
                workdir,
                "--report",
                report,
                cwd=scratch,
                timeout=TIMEOUT_S["verify"],
            )
            found = json.loads(report.read_text()) if report.is_file() else {}
            checked = found.get("heads") or []
            row["verify"] = {
                "ok": code == 0, "exit": code, "heads_ok": sum(bool(h.get("ok")) for h in checked),
                "heads": len(checked), "failed": {h["name"]: h.get("error") for h in checked if not h.get("ok")},
                "error": None if code == 0 else last_line(err), "seconds": round(time.perf_counter() - start, 1),
            }
        code, _, err = rewardpatch(tool, "revert", tree, cwd=scratch, timeout=TIMEOUT_S["static"])
        row["revert"] = {"ok": code == 0, "error": None if code == 0 else last_line(err)}
    row["byte_exact"] = snapshot(copy) == before
    return row


def identity(folder: Path) -> tuple[str, str, int]:
    """(repository, commit, files of that commit the export lacks)."""
    repository = git(folder, "config", "rewardpatch-reach.repository") or git(folder, "remote", "get-url", "origin")
    commit = git(folder, "config", "rewardpatch-reach.commit") or git(folder, "rev-parse", "HEAD")
    return repository, commit, int(git(folder, "config", "rewardpatch-reach.missing") or 0)


def summary(rows: list[dict]) -> dict:
    """Counts over the trees with a decode-head package, by release range and in all."""
    def counts(group: list[dict]) -> dict:
        accepted = [r for r in group if r["accepted"]]
        imported = [r for r in accepted if r.get("import_before", {}).get("ok")]
        verified = [r for r in accepted if "verify" in r]
        return {
            "trees": len(group),
            "accepted": len(accepted),
            "byte_exact": sum(bool(r.get("byte_exact")) and r.get("revert", {}).get("ok", False) for r in accepted),
            "imports_before": len(imported),
            "imports_after": sum(bool(r.get("import_after", {}).get("ok")) for r in imported),
            "breaks_import": sum(bool(r.get("breaks_import")) for r in accepted),
            "verify_run": len(verified),
            "verify_ok": sum(r["verify"]["ok"] for r in verified),
        }

    by_range = {name: counts([r for r in rows if r["range"] == name]) for _, name in RANGES + [("", "other")]}
    total = counts(rows)
    share = total["accepted"] / total["trees"] if total["trees"] else 0.0
    forks = counts([r for r in rows if not r["repository"].startswith("pypi:")])
    return {"by_range": {k: v for k, v in by_range.items() if v["trees"]}, "all": total, "forks": forks,
            "accepted_share": round(share, 3),
            "goal": {"accepted_share": GOAL_ACCEPTED, "met": share >= GOAL_ACCEPTED and total["breaks_import"] == 0}}


def table(result: ReachResult) -> str:
    lines = ["| release range | trees | accepted | byte-exact | imports (before -> after the patch) "
             "| verify stage 1 passed / run |", "| --- | --- | --- | --- | --- | --- |"]
    rows = [*result["summary"]["by_range"].items(), ("all", result["summary"]["all"]),
            ("of them, repositories (not sdists)", result["summary"]["forks"])]
    for name, c in rows:
        lines.append(f"| {name} | {c['trees']} | {c['accepted']} | {c['byte_exact']} | "
                     f"{c['imports_before']} -> {c['imports_after']} | {c['verify_ok']} / {c['verify_run']} |")
    return "\n".join(lines)


def write_readme_table(text: str) -> bool:
    readme = HERE / "README.md"
    content = readme.read_text(encoding="utf-8")
    if README_BEGIN not in content or README_END not in content:
        return False
    head, rest = content.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_BEGIN}\n{text}\n{README_END}{tail}", encoding="utf-8")
    return True


def bench(trees: Path, releases: list[str], verify: bool, out: Path) -> int:
    sources = []  # (folder, repository, commit, files missing)
    for folder in (sorted(p for p in trees.iterdir() if p.is_dir()) if trees else []):
        sources.append((folder, *identity(folder)))
    for version in releases:
        folder = pristine(version)
        sdist = cache_dir() / "pypi" / f"mmsegmentation-{version}.tar.gz"
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        sources.append((folder, f"pypi:mmsegmentation=={version}", f"sha256:{digest}", 0))
    rows, without = [], []
    with tempfile.TemporaryDirectory(prefix="bench_reach.") as scratch:
        for folder, repository, commit, missing in sources:
            roots = mmseg_roots(folder)
            if not roots:
                without.append({"repository": repository, "commit": commit})
                print(f"{repository}: no mmseg/models/decode_heads package", flush=True)
                continue
            for root in roots:
                start = time.perf_counter()
                row = {"repository": repository, "commit": commit, "files_missing": missing,
                       **measure(root, Path(scratch), verify)}
                row["seconds"] = round(time.perf_counter() - start, 1)
                rows.append(row)
                print(f"{repository} [{row['root']}] {row['version']}: accepted={row['accepted']} "
                      f"byte_exact={row.get('byte_exact')} import={row.get('import_before', {}).get('ok')}->"
                      f"{row.get('import_after', {}).get('ok')} verify={row.get('verify', {}).get('ok')}", flush=True)
    result: ReachResult = {
        "benchmark": "reach: public MMSeg trees accepted, patched byte-exactly, importing and verifying",
        "machine": describe(),
        "stacks": {name: str(python) for name, python in STACKS.items()},
        "verify": "stage 1 (--skip-finetune) where the patched tree imports" if verify else "not run",
        "summary": summary(rows),
        "trees": rows,
        "without_decode_head_package": without,
    }
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    text = table(result)
    print(f"\nreach over {len(rows)} trees ({one_line(result['machine'])})\n{text}")
    if not write_readme_table(text):
        print("benchmarks/README.md has no bench_reach markers: table not written there")
    goal = result["summary"]["goal"]
    print(
        f"accepted {result['summary']['accepted_share']:.1%} (goal >= {GOAL_ACCEPTED:.0%}), "
        f"{result['summary']['all']['breaks_import']} patches that break an import: "
        f"goal {'met' if goal['met'] else 'MISSED'}"
    )
    return 0


def main() -> int:
    if sys.argv[1:2] == ["export"]:
        parser = argparse.ArgumentParser(prog="bench_reach.py export")
        parser.add_argument("git_dir", type=Path)
        parser.add_argument("dest", type=Path)
        parser.add_argument("--repository", required=True, help="owner/name, as the results name it")
        args = parser.parse_args(sys.argv[2:])
        missing = export(args.git_dir, args.dest, args.repository)
        print(f"exported {args.repository} to {args.dest}; {len(missing)} files the snapshot lacks left out")
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("trees", type=Path, nargs="?", help="a folder of trees, one folder each")
    parser.add_argument("--pypi", default="", help="reference checkouts of these releases too (comma-separated)")
    parser.add_argument("--no-verify", action="store_true", help="skip verify")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "reach.json")
    parser.add_argument("--python-1x", type=Path, default=STACKS["mmseg-1.x"], help="the 1.x stack's interpreter")
    parser.add_argument("--python-0x", type=Path, default=STACKS["mmseg-0.x"], help="the 0.x stack's interpreter")
    args = parser.parse_args()
    STACKS.update({"mmseg-1.x": args.python_1x.absolute(), "mmseg-0.x": args.python_0x.absolute()})
    return bench(args.trees, [v for v in args.pypi.split(",") if v], not args.no_verify, args.out)


if __name__ == "__main__":
    sys.exit(main())
