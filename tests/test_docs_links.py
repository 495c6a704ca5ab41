"""The documentation's shape: README.md is a short front door that opens with the two
commands that do all set-up, and every relative link of README.md, CONTRIBUTING.md,
docs/*.md and benchmarks/README.md leads to a file that exists and, with a `#fragment`,
to a heading of that file (anchors as GitHub makes them). Pure Python, no MMSeg.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted(
    [REPO / "README.md", REPO / "CONTRIBUTING.md", REPO / "benchmarks" / "README.md", *(REPO / "docs").glob("*.md")]
)
README_MAX_LINES = 250
LINK = re.compile(r"(?<!!)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, ...


def prose(text: str) -> str:
    """`text` without its fenced code blocks (a `# comment` there is no heading, `[x](y)` no link)."""
    kept, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(line)
    return "\n".join(kept)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation but `-` and `_` dropped, blanks to `-`."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose(path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"^#{1,6} +(.*?) *#* *$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    return [target for _, target in LINK.findall(prose(path.read_text(encoding="utf-8")))]


def test_the_documents_exist():
    assert {p.relative_to(REPO).as_posix() for p in DOCS} >= {
        "README.md", "CONTRIBUTING.md", "benchmarks/README.md", "docs/verbs.md", "docs/safety.md",
        "docs/training.md", "docs/domain-adaptation.md", "docs/stacks.md",
    }


def test_the_readme_is_short_and_opens_with_the_two_commands_that_do_all_set_up():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES
    assert lines[0] == "# rewardpatch"
    assert lines[2] == "```sh"
    assert lines[3].startswith("make demo ") and lines[4].startswith("make test ")
    assert lines[5] == "```"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(path):
    broken = []
    for target in links(path):
        if EXTERNAL.match(target):
            continue
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: no heading #{fragment} in {linked.relative_to(REPO).as_posix()}")
    assert broken == []


def test_the_link_checker_sees_links_and_headings():
    """The checks above would pass vacuously if nothing were found."""
    assert len(links(REPO / "README.md")) >= 10
    assert {"exit-codes", "set-up", "development"} <= anchors(REPO / "README.md")
    assert "supported-releases-and---mmseg-version" in anchors(REPO / "docs" / "stacks.md")
