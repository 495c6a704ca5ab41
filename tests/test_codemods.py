"""The libcst transforms on small sources: head copies and __init__ exports."""

import ast
import textwrap
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from rewardpatch import __version__
from rewardpatch.codemods.export_record import ExportRecord, missing_exports
from rewardpatch.codemods.exports import add_exports, remove_exports
from rewardpatch.planner import plan_apply, plan_revert
from rewardpatch.tree import MMSegTree, sha256

BASE = '''\
from abc import ABCMeta

from mmengine.model import BaseModule


class BaseDecodeHead(BaseModule, metaclass=ABCMeta):
    def loss_by_feat(self, seg_logits, batch_data_samples):
        return {}
'''
CASCADE = '''\
from .decode_head import BaseDecodeHead


class BaseCascadeDecodeHead(BaseDecodeHead):
    pass
'''


def mini_tree(root: Path, heads: dict[str, str], heads_init: str | None = None) -> Path:
    """A tree with MMSeg 1.x's layout and only the given head modules."""
    decode_heads = root / "mmseg/models/decode_heads"
    losses = root / "mmseg/models/losses"
    decode_heads.mkdir(parents=True)
    losses.mkdir(parents=True)
    (root / "mmseg/version.py").write_text("__version__ = '1.2.2'\n")
    (decode_heads / "decode_head.py").write_text(BASE)
    (decode_heads / "cascade_decode_head.py").write_text(CASCADE)
    for stem, source in heads.items():
        (decode_heads / f"{stem}.py").write_text(textwrap.dedent(source))
    # by default the package imports every head module, as a real one does: only those hold heads
    default_init = "".join(f"from .{stem} import *  # noqa\n" for stem in heads)
    (decode_heads / "__init__.py").write_text(default_init if heads_init is None else heads_init)
    (losses / "__init__.py").write_text("from .accuracy import accuracy\n\n__all__ = ['accuracy']\n")
    for path, source in STUBS.items():  # what the inserted files import from the tree
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(source)
    return root


STUBS = {
    "mmseg/registry/__init__.py": "MODELS = None\n",
    "mmseg/models/utils/__init__.py": "def resize():\n    pass\n",
    "mmseg/models/losses/cross_entropy_loss.py": "class CrossEntropyLoss:\n    pass\n",
    "mmseg/models/losses/utils.py": "def weight_reduce_loss():\n    pass\n",
}


def generated(root: Path, stem: str) -> str:
    return (root / f"mmseg/models/decode_heads/reward_{stem}.py").read_text()


def test_explicit_super_with_the_class_name_is_rewritten(tmp_path):
    root = mini_tree(tmp_path, {"my_head": '''\
        from mmseg.registry import MODELS
        from .decode_head import BaseDecodeHead


        @MODELS.register_module()
        class MyHead(BaseDecodeHead):
            def __init__(self, **kwargs):
                super(MyHead, self).__init__(**kwargs)

            def forward(self, inputs):
                return super(BaseDecodeHead, self).forward(inputs)
        '''})
    plan_apply(MMSegTree.open(root)).execute()
    text = generated(root, "my_head")
    assert "class RewardMyHead(RewardDecodeHead):" in text
    assert "super(RewardMyHead, self).__init__(**kwargs)" in text
    assert "super(BaseDecodeHead, self).forward(inputs)" in text
    assert "from .decode_head import BaseDecodeHead" in text  # still read by the copy


def test_helpers_are_imported_from_the_source_not_copied(tmp_path):
    root = mini_tree(tmp_path, {"my_head": '''\
        import torch
        import torch.nn as nn

        from mmseg.registry import MODELS
        from .decode_head import BaseDecodeHead

        SCALES = (1, 2)


        class Helper(nn.Module):
            pass


        @MODELS.register_module()
        class MyHead(BaseDecodeHead):
            def forward(self, inputs):
                return Helper()(inputs) * SCALES[0]
        '''})
    plan_apply(MMSegTree.open(root)).execute()
    text = generated(root, "my_head")
    assert "from .my_head import SCALES, Helper" in text
    assert "class Helper" not in text
    assert text.count("@MODELS.register_module()") == 1
    assert "import torch\n" not in text  # no longer read by the copy
    assert "import torch.nn as nn" not in text


def test_a_file_with_two_registered_heads_gives_one_reward_file_with_both(tmp_path):
    root = mini_tree(tmp_path, {"two_heads": '''\
        from mmseg.registry import MODELS
        from .decode_head import BaseDecodeHead


        @MODELS.register_module()
        class FirstHead(BaseDecodeHead):
            # a comment the copy keeps
            def forward(self, inputs):
                return inputs


        @MODELS.register_module()
        class SecondHead(FirstHead):
            def forward(self, inputs):  # and this one
                return inputs[0]
        '''}, heads_init="from .two_heads import FirstHead, SecondHead\n\n__all__ = ('FirstHead', 'SecondHead')\n")
    plan_apply(MMSegTree.open(root)).execute()
    text = generated(root, "two_heads")
    assert "class RewardFirstHead(RewardDecodeHead):" in text
    assert "class RewardSecondHead(RewardFirstHead):" in text
    assert "    # a comment the copy keeps\n" in text
    assert "def forward(self, inputs):  # and this one\n" in text
    assert "from .reward_two_heads" not in text  # its own base lives in the same file
    init = (root / "mmseg/models/decode_heads/__init__.py").read_text()
    assert "from .reward_two_heads import RewardFirstHead, RewardSecondHead\n" in init
    assert "'RewardFirstHead', 'RewardSecondHead'" in init
    compile(text, "reward_two_heads.py", "exec")


def test_a_cascade_head_gets_the_reward_cascade_base(tmp_path):
    root = mini_tree(tmp_path, {"my_ocr_head": '''\
        from mmseg.registry import MODELS
        from .cascade_decode_head import BaseCascadeDecodeHead


        @MODELS.register_module()
        class MyOCRHead(BaseCascadeDecodeHead):
            pass
        '''})
    plan_apply(MMSegTree.open(root)).execute()
    text = generated(root, "my_ocr_head")
    assert "class RewardMyOCRHead(RewardCascadeDecodeHead):" in text
    assert "from .reward_decode_head import RewardCascadeDecodeHead" in text


def test_the_header_names_the_source_and_its_hash(tmp_path):
    source = '''\
        from mmseg.registry import MODELS
        from .decode_head import BaseDecodeHead


        @MODELS.register_module()
        class MyHead(BaseDecodeHead):
            pass
        '''
    root = mini_tree(tmp_path, {"my_head": source})
    plan_apply(MMSegTree.open(root)).execute()
    header = generated(root, "my_head").splitlines()[:3]
    assert header[0] == f"# Generated by rewardpatch {__version__} from my_head.py"
    assert sha256(textwrap.dedent(source))[:16] in header[1]
    assert "Do not edit" in header[1]


MMSEG_STYLE = """\
# Copyright (c) OpenMMLab. All rights reserved.
from .accuracy import Accuracy, accuracy
from .cross_entropy_loss import (CrossEntropyLoss, binary_cross_entropy,
                                 cross_entropy, mask_cross_entropy)
# a comment between imports
from .utils import reduce_loss

__all__ = [
    'accuracy', 'Accuracy', 'cross_entropy', 'binary_cross_entropy',
    'mask_cross_entropy', 'CrossEntropyLoss', 'reduce_loss'
]
"""


def test_exports_are_added_in_isort_order_and_taken_out_byte_for_byte():
    text, record = add_exports(
        MMSEG_STYLE, [("iou_metric_loss", ["IoUMetricLoss", "per_image_miou"])], ["IoUMetricLoss", "per_image_miou"]
    )
    lines = text.splitlines()
    # after .cross_entropy_loss, before the comment that belongs to .utils
    assert lines[lines.index("# a comment between imports") - 1] == (
        "from .iou_metric_loss import IoUMetricLoss, per_image_miou"
    )
    # the last line is filled up to 79 columns first, as yapf fills it
    assert "    'mask_cross_entropy', 'CrossEntropyLoss', 'reduce_loss', 'IoUMetricLoss',\n    'per_image_miou'\n]" in text
    assert not missing_exports(text, record)
    assert remove_exports(text, record) == MMSEG_STYLE


def test_a_tuple_all_with_a_magic_trailing_comma_keeps_its_style():
    source = "from .a import A\n\n__all__ = (\n    \"A\",\n)\n"
    text, record = add_exports(source, [("reward_a", ["RewardA"])], ["RewardA"])
    assert text == 'from .a import A\nfrom .reward_a import RewardA\n\n__all__ = (\n    "A",\n    "RewardA",\n)\n'
    assert remove_exports(text, record) == source


def test_long_import_lines_are_wrapped_in_parentheses():
    names = ["IoUMetricLoss", "per_image_dice", "per_image_miou", "per_image_pixel_accuracy"]
    text, _ = add_exports("", [("iou_metric_loss", names)], names)
    assert text.startswith("from .iou_metric_loss import (IoUMetricLoss, per_image_dice, per_image_miou,\n")
    assert all(len(line) <= 79 for line in text.splitlines())


def test_revert_keeps_unrelated_edits_made_after_apply():
    text, record = add_exports(MMSEG_STYLE, [("reward_x", ["RewardX"])], ["RewardX"])
    edited = text.replace("from .utils import reduce_loss\n", "from .utils import reduce_loss\nfrom .mine import Mine\n")
    edited = edited.replace("'RewardX'", "'RewardX', 'Mine'")
    reverted = remove_exports(edited, record)
    assert "from .mine import Mine" in reverted and "'Mine'" in reverted
    assert "RewardX" not in reverted


def test_names_already_exported_are_not_added_twice():
    source = "from .x import RewardX\n\n__all__ = ['RewardX']\n"
    text, record = add_exports(source, [("reward_x", ["RewardX"])], ["RewardX"])
    assert text == source
    assert record.imports == () and record.names == ()


# Random __init__.py files in the styles met in forks: isort grid or one-per-line imports,
# parenthesised or not, comments, list or tuple __all__, with or without trailing commas.
names = st.from_regex(r"[A-Z][a-z]{1,6}(Head|Loss)?", fullmatch=True)


@st.composite
def init_files(draw):
    modules = draw(st.lists(st.from_regex(r"[a-z]{1,8}_(head|loss)", fullmatch=True), min_size=0, max_size=6, unique=True))
    lines, exported = [], []
    if draw(st.booleans()):
        lines.append("# Copyright (c) somebody. All rights reserved.")
    if draw(st.booleans()):
        lines.append('"""Package docstring."""')
    for module in modules:
        imported = draw(st.lists(names, min_size=1, max_size=4, unique=True))
        exported += imported
        style = draw(st.sampled_from(["plain", "paren", "paren-lines", "comment-before", "blank-before"]))
        if style == "plain":
            lines.append(f"from .{module} import {', '.join(imported)}")
        elif style == "paren":
            lines.append(f"from .{module} import ({', '.join(imported)})")
        elif style == "paren-lines":
            body = "".join(f"    {n},  # {n.lower()}\n" for n in imported)
            lines.append(f"from .{module} import (\n{body})")
        elif style == "comment-before":
            lines.append(f"# {module} holds these\nfrom .{module} import {', '.join(imported)}")
        else:
            lines.append(f"\nfrom .{module} import {', '.join(imported)}")
    if draw(st.booleans()):
        lines.append("import os  # an absolute import among them")
    if draw(st.booleans()):
        quote = draw(st.sampled_from(["'", '"']))
        items = [f"{quote}{n}{quote}" for n in exported]
        opening, closing = draw(st.sampled_from([("[", "]"), ("(", ")")]))
        trailing = "," if draw(st.booleans()) or (opening == "(" and len(items) == 1) else ""
        layout = draw(st.sampled_from(["one-line", "one-per-line", "grid", "hanging"]))
        if layout == "one-line":
            all_text = f"{opening}{', '.join(items)}{trailing}{closing}"
        elif layout == "one-per-line":
            all_text = opening + "\n" + "".join(f"    {i},\n" for i in items) + closing
        elif layout == "grid":
            all_text = f"{opening}\n    " + ", ".join(items) + f"{trailing}\n{closing}"
        else:
            all_text = opening + (",\n           ".join(items)) + trailing + closing
        if not items and trailing:
            all_text = opening + closing
        lines.append(f"\n__all__ = {all_text}")
    if draw(st.booleans()):
        lines.append("\n# a trailing comment")
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=None)
@given(source=init_files(), added=st.lists(st.from_regex(r"Reward[A-Z][a-z]{1,5}Head", fullmatch=True), min_size=1, max_size=5, unique=True))
def test_random_init_files_survive_apply_and_revert_byte_for_byte(source, added):
    ast.parse(source)
    imports = [(f"reward_{name[6:].lower()}", [name]) for name in added]
    text, record = add_exports(source, imports, added)
    ast.parse(text)
    assert not missing_exports(text, record)
    assert remove_exports(text, record) == source


def test_apply_then_revert_on_a_small_tree_restores_every_byte(tmp_path):
    root = mini_tree(tmp_path, {"my_head": '''\
        from mmseg.registry import MODELS
        from .decode_head import BaseDecodeHead


        @MODELS.register_module()
        class MyHead(BaseDecodeHead):
            pass
        '''}, heads_init="from .my_head import MyHead\n\n__all__ = ['MyHead']\n")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    tree = MMSegTree.open(root)
    plan_apply(tree).execute()
    plan_revert(tree).execute()
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before


def test_an_element_whose_new_comma_does_not_fit_moves_to_the_next_line_and_back():
    source = (
        "__all__ = [\n"
        "    'FirstHead', 'SecondHead', 'ThirdHead', 'FourthHead', 'FifthHead1234',\n"
        "    'LightHamHead', 'PIDHead', 'DDRHead', 'VPDDepthHead', 'SideAdapterCLIPHead'\n"
        "]\n"
    )
    assert max(len(line) for line in source.splitlines()) == 79
    text, record = add_exports(source, [], ["RewardFCNHead"])
    assert text.splitlines()[2:] == [
        "    'LightHamHead', 'PIDHead', 'DDRHead', 'VPDDepthHead',",
        "    'SideAdapterCLIPHead', 'RewardFCNHead'",
        "]",
    ]
    assert record.rewrapped
    assert remove_exports(text, record) == source
    assert remove_exports(text, ExportRecord.from_json(record.as_json())) == source
