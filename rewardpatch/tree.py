"""An MMSegmentation checkout on disk: where it is, which version, safe paths."""

from __future__ import annotations

import ast
import codecs
import hashlib
import io
import json
import tokenize
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

from . import treefs
from .errors import InputError, StateError
from .mmseg_generations import (
    Generation,
    declared_generation,
    generation_for,
    shown,
    supported_versions,
    supporting_generation,
)
from .notice import warn

MANIFEST_NAME = ".rewardpatch.json"
# Beside the manifest: byte-for-byte copies of the files `apply --force` replaced.
APPLY_COPIES_DIR = ".rewardpatch"
VERSION_FILE = "mmseg/version.py"
# Lines git leaves in a file whose merge conflicted
CONFLICT_MARKERS = ("<<<<<<< ", "=======", ">>>>>>> ")
UTF8 = "utf-8"


class NotText(InputError):
    """A file whose bytes are not text in the encoding it declares (its BOM, its coding cookie, else UTF-8)."""

    def __init__(self, name: str, why: str):
        super().__init__(f"{name}: not text in its declared encoding ({why})")
        self.why = why


@dataclass(frozen=True)
class Encoding:
    """How a file's text is held on disk: a codec, and whether a UTF-8 byte-order mark comes first."""

    name: str = UTF8
    bom: bool = False


def decode_source(data: bytes, name: str) -> tuple[str, Encoding]:
    """The text of a Python source's bytes, in the encoding Python would read them with
    (PEP 263: a UTF-8 BOM, a coding cookie on line 1 or 2, else UTF-8; the stdlib's
    tokenize.detect_encoding), without the BOM; a NotText error naming `name` otherwise."""
    try:
        found, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as exc:  # a codec Python does not know, a BOM the cookie contradicts, lines 1-2 not UTF-8
        raise NotText(name, exc.msg) from None
    encoding = Encoding(UTF8, True) if found == "utf-8-sig" else Encoding(found)
    start = len(codecs.BOM_UTF8) if encoding.bom else 0
    try:
        return data[start:].decode(encoding.name), encoding
    except UnicodeDecodeError as exc:
        raise NotText(name, f"{encoding.name}: {exc.reason} at byte {start + exc.start}") from None


def declared_encoding(text: str) -> str:
    """The codec `text`'s own coding cookie names (tokenize.detect_encoding on its first two
    lines), else UTF-8: what the text says its bytes are."""
    try:
        found, _ = tokenize.detect_encoding(io.BytesIO(text.encode(UTF8, "surrogatepass")).readline)
    except SyntaxError:  # a cookie naming no codec: writing it as UTF-8 is all one can do
        return UTF8
    return UTF8 if found == "utf-8-sig" else found


def sha256(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def read_version(version_file: Path, name: str | None = None) -> str:
    """The __version__ string mmseg/version.py assigns, else an InputError saying why there is
    none. `name` is how the message names the file (default: the path)."""
    from .import_graph import TooDeep, bounded_parse

    name = name or str(version_file)
    data = treefs.read(version_file.resolve().parent, version_file.name)
    if data is None:
        raise InputError(f"{name}: missing")
    text, _ = decode_source(data, name)
    try:
        module = bounded_parse(text, name)
    except TooDeep as exc:
        raise InputError(str(exc)) from None
    except SyntaxError as exc:
        markers = [n for n, line in enumerate(text.splitlines(), 1) if line.startswith(CONFLICT_MARKERS)]
        if markers:
            raise InputError(f"{name}:{markers[0]}: cannot parse: merge-conflict marker") from None
        raise InputError(f"{name}:{exc.lineno}: cannot parse: {exc.msg}") from None
    for node in module.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    raise InputError(f"{name}: no __version__ string found (computed, or missing)")


def _recorded_version(root: Path) -> str | None:
    """The release a manifest says the tree was patched as, when it names a supported one."""
    try:
        recorded = json.loads((treefs.read(root, MANIFEST_NAME) or b"").decode("utf-8"))["mmseg_version"]
    except (OSError, StateError, InputError, ValueError, KeyError, TypeError):
        return None
    return recorded if isinstance(recorded, str) and supporting_generation(recorded) else None


def _refused(problem: InputError, root: Path, hint: str) -> InputError:
    """`problem` with the way out: --mmseg-version with the release a manifest records, else `hint`."""
    recorded = _recorded_version(root)
    if recorded:
        hint = f"{MANIFEST_NAME} records MMSegmentation {recorded}: rerun with --mmseg-version {recorded}"
    return InputError(f"{problem}; {hint}" if hint else str(problem))


@dataclass(frozen=True)
class MMSegTree:
    root: Path
    version: str  # the release the tree is treated as: version.py's, or --mmseg-version's
    generation: Generation
    # how each file read was encoded (by relative path), and the bytes each text read came
    # from (None: two files read hold that text in different bytes); see `encode`
    _encodings: dict[str, Encoding] = field(default_factory=dict, init=False, repr=False, compare=False)
    _bytes_of_text: dict[str, bytes | None] = field(default_factory=dict, init=False, repr=False, compare=False)
    # {path: bytes or None (absent)}: how an interrupted run's rollback will leave these files
    # (journal.Leftovers.restores); a reader reads the tree through it, as the next writer will find it
    overlay: dict[str, bytes | None] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def open(cls, path: str | Path, mmseg_version: str | None = None) -> "MMSegTree":
        """The tree at `path`, of the release its mmseg/version.py names.

        `mmseg_version` (--mmseg-version) is the release the user says the tree is based on:
        a fork's version.py may name an unreleased version, compute it or hold a conflict.
        It wins, with one warning when version.py says something else or cannot be read.
        """
        declared = declared_generation(mmseg_version) if mmseg_version is not None else None
        root = Path(path)
        if not root.exists():
            raise InputError(f"{path}: no such directory")
        if not root.is_dir():
            raise InputError(f"{path}: not a directory")
        version_file = root / VERSION_FILE
        if not version_file.is_file():
            raise InputError(f"{path}: not an MMSegmentation tree (no mmseg/version.py)")
        if root.resolve() not in version_file.resolve().parents:
            raise treefs.Unsafe(f"{VERSION_FILE} is a symlink pointing outside the tree ({version_file.resolve()})")
        if declared is None:
            try:
                found = read_version(version_file)
            except InputError as problem:
                raise _refused(problem, root, f"if the tree is based on a release of MMSegmentation "
                                              f"({supported_versions()}), state it with --mmseg-version") from None
            try:
                generation = generation_for(found)
            except InputError as problem:  # its message names --mmseg-version already
                raise _refused(problem, root, "") from None
            return cls(root=root.resolve(), version=found, generation=generation)
        try:
            found = read_version(version_file, VERSION_FILE)
        except InputError as problem:
            warn(f"{problem}; treated as MMSegmentation {mmseg_version} (--mmseg-version)")
        else:
            if found != mmseg_version:
                warn(f"{VERSION_FILE} says {shown(found)}; treated as MMSegmentation {mmseg_version} (--mmseg-version)")
        assert mmseg_version is not None  # `declared` is the generation of it
        return cls(root=root.resolve(), version=mmseg_version, generation=declared)

    def path(self, relative: str) -> Path:
        """The absolute path of `relative`, refusing anything that leaves the tree or enters .git/.

        A symlink whose target lies outside the tree is refused too: writing through
        it would change files the user never pointed us at.
        """
        candidate = self.root / treefs.relative(relative, "a path")
        resolved = candidate.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            if candidate.is_symlink() or any(p.is_symlink() for p in candidate.parents):
                raise treefs.Unsafe(f"{relative} is a symlink pointing outside the tree ({resolved})")
            raise treefs.Unsafe(f"{relative} lies outside the tree")
        if resolved != self.root:
            treefs.relative(resolved.relative_to(self.root).as_posix(), f"{relative}, a symlink to")
        return candidate

    def resolved(self, relative: str) -> str:
        """`relative` with every symlink inside the tree followed (tree.path refuses one that leaves
        it or enters .git/): the file a read or a write of `relative` reaches."""
        return self.path(relative).resolve().relative_to(self.root).as_posix()

    def read_bytes(self, relative: str) -> bytes | None:
        """The bytes of the file at `relative`, or None when there is none: read without following
        any link once `relative` is resolved inside the tree (treefs.read: a regular file, at most
        treefs.MAX_SOURCE_BYTES, else a TooLarge error), through the overlay of an interrupted run."""
        rel = self.resolved(relative)
        if rel in self.overlay:
            return self.overlay[rel]
        return treefs.read(self.root, rel)

    def read(self, relative: str) -> str | None:
        """The file's text with its line endings untouched, or None when it is absent.

        Decoded as Python reads a source (`decode_source`: BOM, coding cookie, else UTF-8),
        the BOM left out so that the text parses; `encode` puts both back. A file that is
        not text in that encoding is a NotText error (an InputError) naming it. A symlink is
        followed only while it stays inside the tree, out of .git/ (`path`); a file over
        treefs.MAX_SOURCE_BYTES is a treefs.TooLarge error.
        """
        data = self.read_bytes(relative)
        if data is None:
            return None
        text, encoding = decode_source(data, relative)
        self._encodings[relative] = encoding
        self._bytes_of_text[text] = data if self._bytes_of_text.get(text, data) == data else None
        return text

    def files(self, folder: str, pattern: str) -> list[str]:
        """The relative paths of the files in `folder` whose names match `pattern`, sorted, as
        the tree holds them once an interrupted run is rolled back (the overlay)."""
        base = self.path(folder)
        found = {self.rel(p) for p in base.glob(pattern)} if base.is_dir() else set()
        prefix = PurePosixPath(self.resolved(folder))
        for path, data in self.overlay.items():
            where = PurePosixPath(path)
            if where.parent == prefix and fnmatchcase(where.name, pattern):
                rel = f"{folder}/{where.name}"
                found.add(rel) if data is not None else found.discard(rel)
        return sorted(found)

    def encode(self, relative: str, text: str) -> bytes:
        """The bytes that hold `text` at `relative`, in the encoding the file declares (its BOM
        or coding cookie) and otherwise UTF-8: what the writer puts on disk.

        A text read from the tree is given back as the very bytes it was read from (a file
        as it was, a byte-for-byte copy, a file put back). Any other text is encoded in the
        codec its own coding cookie names, else UTF-8, with a BOM when `relative` had one.
        """
        data = self._bytes_of_text.get(text)
        if data is not None:
            return data
        codec = declared_encoding(text)
        try:
            data = text.encode(codec)
        except UnicodeEncodeError as exc:
            line = text.count("\n", 0, exc.start) + 1
            raise InputError(
                f"{relative}:{line}: {exc.object[exc.start]!r} cannot be written in {codec}, "
                "the encoding its coding line declares"
            ) from None
        bom = codec == UTF8 and self._encodings.get(relative, Encoding()).bom
        return codecs.BOM_UTF8 + data if bom else data

    def rel(self, path: Path) -> str:
        """`path`, a path under the root (not resolved), relative to the root."""
        return Path(path).relative_to(self.root).as_posix()
