"""Sources in any encoding Python reads: a UTF-8 BOM, a PEP 263 coding line, CRLF.

apply reads each file as Python would and writes it back in the encoding it came in;
revert gives back the very bytes; a file that is not text in its declared encoding is
skipped with a warning when nothing imports it, else one line naming it (exit 2).
"""

import codecs
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import git_status, one_line_error, run_cli
from forks import commit

HEADS = "mmseg/models/decode_heads"
LOSSES = "mmseg/models/losses"
ASPP = f"{HEADS}/aspp_head.py"
REWARD_ASPP = f"{HEADS}/reward_aspp_head.py"
DOCSTRING = '    """Rethinking Atrous Convolution for Semantic Image Segmentation.\n'


def snapshot(tree: Path) -> dict[str, bytes]:
    """Every file of the tree but git's own, byte for byte."""
    return {
        p.relative_to(tree).as_posix(): p.read_bytes()
        for p in sorted(tree.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(tree).parts
    }


def rewrite(tree: Path, relative: str, edit, encoding: str = "utf-8") -> None:
    path = tree / relative
    path.write_bytes(edit(path.read_bytes().decode("utf-8")).encode(encoding))


def with_literal(text: str, literal: str, coding: str = "") -> str:
    """aspp_head.py with a coding line on top and `literal` in ASPPHead, the class apply copies."""
    text = text.replace(DOCSTRING, f"    greeting = {literal!r}\n\n{DOCSTRING}")
    return coding + text


def apply_check_revert(capsys, tree: Path, *options: str) -> None:
    """apply, check and revert all succeed, and revert gives back every byte."""
    before = snapshot(tree)
    code, _, err = run_cli(capsys, "apply", tree, "--heads", "ASPPHead", *options)
    assert code == 0, err
    code, out, err = run_cli(capsys, "check", tree)
    assert code == 0, out + err
    code, _, err = run_cli(capsys, "revert", tree)
    assert code == 0, err
    assert snapshot(tree) == before
    assert git_status(tree) == ""


def test_a_bom_on_the_heads_init_and_on_a_head_is_kept_and_revert_gives_back_every_byte(capsys, tree):
    for relative in (f"{HEADS}/__init__.py", ASPP):
        path = tree / relative
        path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())
    commit(tree, "BOMs")
    code, _, err = run_cli(capsys, "apply", tree, "--heads", "ASPPHead")
    assert code == 0, err
    init = (tree / HEADS / "__init__.py").read_bytes()
    assert init.startswith(codecs.BOM_UTF8) and b"RewardASPPHead" in init
    assert not init[3:].startswith(codecs.BOM_UTF8)
    code, out, err = run_cli(capsys, "check", tree)
    assert code == 0, out + err
    run_cli(capsys, "revert", tree)
    assert git_status(tree) == ""
    apply_check_revert(capsys, tree)


@pytest.mark.parametrize(
    "encoding, coding, literal",
    [
        ("latin-1", "# -*- coding: latin-1 -*-\n", "Grüße, café"),
        ("gbk", "# coding: gbk\n", "语义分割"),
    ],
)
def test_a_head_with_a_coding_line_gives_a_reward_head_that_compiles_and_keeps_its_literal(
    capsys, tree, encoding, coding, literal
):
    rewrite(tree, ASPP, lambda text: with_literal(text, literal, coding), encoding)
    commit(tree, f"aspp_head.py in {encoding}")
    source = (tree / ASPP).read_bytes()
    with pytest.raises(UnicodeDecodeError):
        source.decode("utf-8")

    code, _, err = run_cli(capsys, "apply", tree, "--heads", "ASPPHead")
    assert code == 0, err
    generated = (tree / REWARD_ASPP).read_bytes()
    assert generated.splitlines(keepends=True)[0] == coding.encode("ascii")  # PEP 263: line 1 or 2
    module = compile(generated, REWARD_ASPP, "exec")  # as Python reads it from disk
    assert literal in module.co_consts or any(
        literal in getattr(c, "co_consts", ()) for c in module.co_consts
    )
    assert literal.encode(encoding) in generated
    assert (tree / ASPP).read_bytes() == source
    code, out, err = run_cli(capsys, "check", tree)
    assert code == 0, out + err
    run_cli(capsys, "revert", tree)
    assert git_status(tree) == ""
    apply_check_revert(capsys, tree)


def test_an_init_with_a_coding_line_is_written_back_in_its_encoding(capsys, tree):
    rewrite(tree, f"{LOSSES}/__init__.py", lambda t: "# -*- coding: latin-1 -*-\n# Ünïcode\n" + t, "latin-1")
    commit(tree, "losses/__init__.py in latin-1")
    code, _, err = run_cli(capsys, "apply", tree, "--heads", "ASPPHead")
    assert code == 0, err
    init = (tree / LOSSES / "__init__.py").read_bytes()
    assert "# Ünïcode\n".encode("latin-1") in init and b"IoUMetricLoss" in init
    run_cli(capsys, "revert", tree)
    apply_check_revert(capsys, tree)


def test_crlf_stays_crlf(capsys, tree):
    rewrite(tree, f"{HEADS}/__init__.py", lambda t: t.replace("\n", "\r\n"))
    commit(tree, "CRLF")
    code, _, err = run_cli(capsys, "apply", tree, "--heads", "ASPPHead")
    assert code == 0, err
    init = (tree / HEADS / "__init__.py").read_bytes()
    assert b"RewardASPPHead" in init and init.count(b"\n") == init.count(b"\r\n")
    run_cli(capsys, "revert", tree)
    apply_check_revert(capsys, tree)


@pytest.mark.parametrize("verb", ["list-heads", "apply"])
def test_an_unimported_head_file_that_is_not_utf8_is_skipped_with_one_warning(capsys, tree, verb):
    (tree / HEADS / "aspp_head_old.py").write_bytes("x = 'café'\n".encode("latin-1"))
    code, _, err = run_cli(capsys, verb, tree)
    assert code == 0
    assert one_line_error(err) == (
        f"rewardpatch: warning: skipped {HEADS}/aspp_head_old.py: not text in its declared encoding "
        "(invalid or missing encoding declaration) (no __init__ of mmseg.models.decode_heads imports it)"
    )


def test_an_unimported_reward_file_that_is_not_utf8_does_not_stop_apply_check_or_revert(capsys, tree):
    stray = tree / HEADS / "reward_scratch.py"
    stray.write_bytes(b"# scratch\nx = '\xe9'\n")
    for verb in ("apply", "check", "revert"):
        code, out, err = run_cli(capsys, verb, tree)
        assert code == 0, out + err
    assert git_status(tree) == f"?? {HEADS}/reward_scratch.py\n"


def test_an_imported_head_file_that_is_not_text_in_its_encoding_is_one_line_exit_2(capsys, tree):
    path = tree / ASPP
    path.write_bytes(path.read_bytes() + b"\n# caf\xe9\n")
    code, _, err = run_cli(capsys, "apply", tree, "--allow-dirty")
    assert code == 2
    assert one_line_error(err) == (
        f"rewardpatch: error: {ASPP}: not text in its declared encoding "
        "(utf-8: invalid continuation byte at byte " + str(len(path.read_bytes()) - 2) + ")"
    )
    assert git_status(tree) == f" M {ASPP}\n"


def test_version_py_with_a_coding_line_opens(capsys, tree):
    rewrite(tree, "mmseg/version.py", lambda t: "# -*- coding: latin-1 -*-\n# Versión\n" + t, "latin-1")
    commit(tree, "version.py in latin-1")
    code, out, err = run_cli(capsys, "list-heads", tree)
    assert code == 0, err
    assert "ASPPHead" in out


def test_an_undecodable_version_py_is_one_line_exit_2(capsys, tree):
    (tree / "mmseg/version.py").write_bytes(b"# Versi\xf3n\n__version__ = '1.2.2'\n")
    code, _, err = run_cli(capsys, "list-heads", tree)
    assert code == 2
    line = one_line_error(err)
    assert line.startswith(f"rewardpatch: error: {tree}/mmseg/version.py: not text in its declared encoding (")
    assert "--mmseg-version" in line


@pytest.mark.parametrize(
    "edit, why",
    [
        (lambda m: m["files"][f"{HEADS}/__init__.py"].update(exports=None), "an edited file's record has no exports"),
        (lambda m: m["files"][f"{HEADS}/__init__.py"]["exports"].update(names="RewardASPPHead"),
         "exports.names is a string"),
        (lambda m: m["files"][REWARD_ASPP].update(classes=None), "classes is null"),
        (lambda m: m.update(heads={"ASPPHead": 1}), "heads is an object"),
        (lambda m: m.update(files=[]), "files is an array"),
        (lambda m: m.pop("generation"), "no 'generation'"),
    ],
)
@pytest.mark.parametrize("verb", ["check", "revert", "apply"])
def test_a_manifest_with_a_wrong_type_is_one_line_exit_1(capsys, tree, edit, why, verb):
    assert run_cli(capsys, "apply", tree, "--heads", "ASPPHead")[0] == 0
    path = tree / ".rewardpatch.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    code, _, err = run_cli(capsys, verb, tree, *(["--allow-dirty"] if verb == "apply" else []))
    assert code == 1
    assert one_line_error(err) == f"rewardpatch: error: .rewardpatch.json is not a valid rewardpatch manifest ({why})"


def test_a_manifest_that_is_not_utf8_is_one_line_exit_1(capsys, tree):
    assert run_cli(capsys, "apply", tree, "--heads", "ASPPHead")[0] == 0
    path = tree / ".rewardpatch.json"
    path.write_bytes(path.read_bytes().replace(b"ASPPHead", b"ASPPH\xe9ad", 1))
    code, _, err = run_cli(capsys, "check", tree)
    assert code == 1
    assert one_line_error(err).startswith(
        "rewardpatch: error: .rewardpatch.json is not a valid rewardpatch manifest (utf-8: invalid"
    )


@pytest.mark.parametrize("coding", ["# -*- coding: latin-1 -*-\n", ""])
def test_the_header_goes_below_a_shebang_and_a_coding_line(capsys, tree, coding):
    shebang = "#!/usr/bin/env python\n"
    rewrite(tree, ASPP, lambda text: with_literal(text, "café", shebang + coding), "latin-1" if coding else "utf-8")
    commit(tree, "aspp_head.py, a script")
    code, _, err = run_cli(capsys, "apply", tree, "--heads", "ASPPHead")
    assert code == 0, err
    generated = tree / REWARD_ASPP
    lines = generated.read_bytes().decode("latin-1" if coding else "utf-8").splitlines(keepends=True)
    kept = [shebang] + ([coding] if coding else [])
    assert lines[: len(kept)] == kept
    assert lines[len(kept)].startswith("# Generated by rewardpatch ")
    compile(generated.read_bytes(), REWARD_ASPP, "exec")
    if importlib.util.find_spec("flake8") is not None:  # MMSeg's pinned linters (test_tree_linters.py)
        lint = subprocess.run(
            [sys.executable, "-m", "flake8", "--select", "E265,E902", str(generated)], capture_output=True, text=True
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
    code, out, err = run_cli(capsys, "check", tree)
    assert code == 0, out + err
    assert run_cli(capsys, "revert", tree)[0] == 0
    assert git_status(tree) == ""


def test_a_character_the_declared_encoding_cannot_hold_is_one_line(tmp_path, pristine):
    from rewardpatch.errors import InputError
    from rewardpatch.tree import MMSegTree

    tree = MMSegTree.open(pristine("1.2.2"))
    with pytest.raises(InputError, match=r"^x\.py:2: '语' cannot be written in iso-8859-1"):
        tree.encode("x.py", "# coding: latin-1\nx = '语'\n")
    assert tree.encode("x.py", "x = '语'\n") == "x = '语'\n".encode("utf-8")
