"""The libcst transforms as before/after pairs, each pair one rule; then the planner end to end.

A pair is written as libcst's `CodemodTest.assertCodemod` writes one: the source before,
the source after (both dedented), and the transform run directly on the text, the way
the planner runs it (planner._head_modules/_desired_files for the head copy, plan_apply
for the `__init__` exports). The end-to-end tests below them check that the planner hands
the transforms what the pairs assume, on a small tree written to disk.
"""

import ast
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewardpatch import __version__
from rewardpatch.codemods.export_record import ExportRecord, missing_exports
from rewardpatch.codemods.exports import add_exports, remove_exports
from rewardpatch.codemods.reward_head import RewardClass, render_reward_module
from rewardpatch.head_index import ClassInfo
from rewardpatch.import_graph import defined_names
from rewardpatch.naming import reward_name
from rewardpatch.planning import plan_apply, plan_revert
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


# --- the pairs' machinery ----------------------------------------------------------------------


def fixture(code: str) -> str:
    """A pair's source as libcst's CodemodTest reads it: dedented, one final newline."""
    return textwrap.dedent(code).strip() + "\n"


DECODE = ("BaseDecodeHead", "RewardDecodeHead", "reward_decode_head")
CASCADE_BASE = ("BaseCascadeDecodeHead", "RewardCascadeDecodeHead", "reward_decode_head")
PAIR_HEADER = ["# (the generated header)"]


def reward_module(source: str, heads: dict[str, tuple[str, str, str]], stem: str = "my_head",
                  header: list[str] = PAIR_HEADER) -> str:
    """render_reward_module as planner._desired_files calls it. `heads` maps each class to
    copy, in source order, to (its head base as written, the reward base, the module the
    reward base is imported from); what the class reads and the module defines come from
    the source's syntax tree, as the planner's head index finds them."""
    tree = ast.parse(source)
    nodes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    classes = []
    for name, (base, reward_base, reward_module_stem) in heads.items():
        info = ClassInfo(name, stem, f"{stem}.py", [base], True, nodes[name])
        classes.append(RewardClass(name, reward_name(name), base, reward_base, reward_module_stem,
                                   info.used_names, info.explicit_super))
    defined = {name for node in tree.body for name in defined_names(node)}
    return render_reward_module(source, stem, classes, defined, header)


def assert_head_codemod(before: str, after: str, heads=None, stem: str = "my_head") -> None:
    """assertCodemod for the head copy: `heads` defaults to MyHead on BaseDecodeHead."""
    before, after = fixture(before), fixture(after)
    assert reward_module(before, heads or {"MyHead": DECODE}, stem) == after


def assert_exports_codemod(before: str, imports, after: str, names=None) -> ExportRecord:
    """assertCodemod for the `__init__` edit, and its inverse: remove_exports gives `before` back."""
    before, after = fixture(before), fixture(after)
    names = [n for _, group in imports for n in group] if names is None else names
    text, record = add_exports(before, imports, names)
    assert text == after
    assert not missing_exports(text, record)
    assert remove_exports(text, record) == before
    return record


# --- the head copy: reward_<x>.py --------------------------------------------------------------


def test_a_1x_head_is_renamed_onto_reward_decode_head_and_its_unread_imports_go():
    assert_head_codemod(
        before='''
        # Copyright (c) OpenMMLab. All rights reserved.
        import torch
        import torch.nn as nn
        from mmcv.cnn import ConvModule

        from mmseg.registry import MODELS
        from .decode_head import BaseDecodeHead


        @MODELS.register_module()
        class MyHead(BaseDecodeHead):
            """My head."""

            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.conv = ConvModule(self.in_channels, self.channels, 3)

            def forward(self, inputs):
                return self.cls_seg(self.conv(inputs))
        ''',
        after='''
        # (the generated header)
        # Copyright (c) OpenMMLab. All rights reserved.
        from mmcv.cnn import ConvModule

        from mmseg.registry import MODELS
        from .reward_decode_head import RewardDecodeHead


        @MODELS.register_module()
        class RewardMyHead(RewardDecodeHead):
            """My head."""

            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.conv = ConvModule(self.in_channels, self.channels, 3)

            def forward(self, inputs):
                return self.cls_seg(self.conv(inputs))
        ''',
    )


def test_a_0x_head_keeps_its_heads_registry_and_its_explicit_super_is_renamed():
    assert_head_codemod(
        stem="aspp_head",
        heads={"ASPPHead": DECODE},
        before='''
        import torch.nn as nn

        from mmseg.ops import resize
        from ..builder import HEADS
        from .decode_head import BaseDecodeHead


        @HEADS.register_module()
        class ASPPHead(BaseDecodeHead):

            def __init__(self, dilations=(1, 6, 12, 18), **kwargs):
                super(ASPPHead, self).__init__(**kwargs)
                self.bottleneck = nn.Conv2d(self.in_channels, self.channels, 3)

            def forward(self, inputs):
                x = self._transform_inputs(inputs)
                return self.cls_seg(resize(self.bottleneck(x), size=x.shape[2:]))
        ''',
        after='''
        # (the generated header)
        import torch.nn as nn

        from mmseg.ops import resize
        from ..builder import HEADS
        from .reward_decode_head import RewardDecodeHead


        @HEADS.register_module()
        class RewardASPPHead(RewardDecodeHead):

            def __init__(self, dilations=(1, 6, 12, 18), **kwargs):
                super(RewardASPPHead, self).__init__(**kwargs)
                self.bottleneck = nn.Conv2d(self.in_channels, self.channels, 3)

            def forward(self, inputs):
                x = self._transform_inputs(inputs)
                return self.cls_seg(resize(self.bottleneck(x), size=x.shape[2:]))
        ''',
    )


def test_only_a_super_call_naming_the_class_itself_is_renamed():
    # super(BaseDecodeHead, self) still reads BaseDecodeHead: its import stays
    assert_head_codemod(
        before='''
        from mmseg.registry import MODELS
        from .decode_head import BaseDecodeHead


        @MODELS.register_module()
        class MyHead(BaseDecodeHead):
            def __init__(self, **kwargs):
                super(MyHead, self).__init__(**kwargs)

            def forward(self, inputs):
                return super(BaseDecodeHead, self).forward(inputs)
        ''',
        after='''
        # (the generated header)
        from mmseg.registry import MODELS
        from .decode_head import BaseDecodeHead
        from .reward_decode_head import RewardDecodeHead


        @MODELS.register_module()
        class RewardMyHead(RewardDecodeHead):
            def __init__(self, **kwargs):
                super(RewardMyHead, self).__init__(**kwargs)

            def forward(self, inputs):
                return super(BaseDecodeHead, self).forward(inputs)
        ''',
    )


def test_a_renamed_super_line_too_long_for_79_columns_is_split_as_yapf_splits_it():
    # 0.x DAHead: `super(RewardDAHead, self)` takes the line to 83 columns; it is split after
    # the commas of its outermost bracket, aligned with that bracket (codemods/layout.py)
    assert_head_codemod(
        stem="da_head",
        heads={"DAHead": DECODE},
        before='''
        from mmseg.core import add_prefix
        from ..builder import HEADS
        from .decode_head import BaseDecodeHead


        @HEADS.register_module()
        class DAHead(BaseDecodeHead):

            def losses(self, seg_logit, seg_label):
                pam_cam_seg_logit, pam_seg_logit, cam_seg_logit = seg_logit
                loss = dict()
                loss.update(
                    add_prefix(
                        super(DAHead, self).losses(pam_seg_logit, seg_label), 'pam'))
                return loss
        ''',
        after='''
        # (the generated header)
        from mmseg.core import add_prefix
        from ..builder import HEADS
        from .reward_decode_head import RewardDecodeHead


        @HEADS.register_module()
        class RewardDAHead(RewardDecodeHead):

            def losses(self, seg_logit, seg_label):
                pam_cam_seg_logit, pam_seg_logit, cam_seg_logit = seg_logit
                loss = dict()
                loss.update(
                    add_prefix(
                        super(RewardDAHead, self).losses(pam_seg_logit, seg_label),
                        'pam'))
                return loss
        ''',
    )


def test_a_cascade_head_derives_from_reward_cascade_decode_head():
    assert_head_codemod(
        stem="my_ocr_head",
        heads={"MyOCRHead": CASCADE_BASE},
        before='''
        from mmseg.registry import MODELS
        from .cascade_decode_head import BaseCascadeDecodeHead


        @MODELS.register_module()
        class MyOCRHead(BaseCascadeDecodeHead):
            pass
        ''',
        after='''
        # (the generated header)
        from mmseg.registry import MODELS
        from .reward_decode_head import RewardCascadeDecodeHead


        @MODELS.register_module()
        class RewardMyOCRHead(RewardCascadeDecodeHead):
            pass
        ''',
    )


def test_a_head_derived_from_another_head_derives_from_its_reward_version():
    # CCHead(FCNHead) -> RewardCCHead(RewardFCNHead), imported from the generated reward_fcn_head
    assert_head_codemod(
        stem="cc_head",
        heads={"CCHead": ("FCNHead", "RewardFCNHead", "reward_fcn_head")},
        before='''
        from mmseg.registry import MODELS
        from .fcn_head import FCNHead


        @MODELS.register_module()
        class CCHead(FCNHead):
            def __init__(self, recurrence=2, **kwargs):
                super().__init__(num_convs=2, **kwargs)
                self.recurrence = recurrence
        ''',
        after='''
        # (the generated header)
        from mmseg.registry import MODELS
        from .reward_fcn_head import RewardFCNHead


        @MODELS.register_module()
        class RewardCCHead(RewardFCNHead):
            def __init__(self, recurrence=2, **kwargs):
                super().__init__(num_convs=2, **kwargs)
                self.recurrence = recurrence
        ''',
    )


def test_two_heads_of_one_file_are_copied_into_one_and_the_second_derives_from_the_first_there():
    # no import of RewardFirstHead: it is defined in the same file; comments are kept
    assert_head_codemod(
        stem="two_heads",
        heads={"FirstHead": DECODE, "SecondHead": ("FirstHead", "RewardFirstHead", "reward_two_heads")},
        before='''
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
        ''',
        after='''
        # (the generated header)
        from mmseg.registry import MODELS
        from .reward_decode_head import RewardDecodeHead


        @MODELS.register_module()
        class RewardFirstHead(RewardDecodeHead):
            # a comment the copy keeps
            def forward(self, inputs):
                return inputs


        @MODELS.register_module()
        class RewardSecondHead(RewardFirstHead):
            def forward(self, inputs):  # and this one
                return inputs[0]
        ''',
    )


def test_helpers_and_constants_are_imported_from_the_source_not_copied():
    # copying Helper would register or define it twice; `import torch` is no longer read
    assert_head_codemod(
        before='''
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
        ''',
        after='''
        # (the generated header)

        from mmseg.registry import MODELS
        from .my_head import SCALES, Helper
        from .reward_decode_head import RewardDecodeHead


        @MODELS.register_module()
        class RewardMyHead(RewardDecodeHead):
            def forward(self, inputs):
                return Helper()(inputs) * SCALES[0]
        ''',
    )


def test_an_optional_import_block_is_kept_when_the_copy_reads_it_and_dropped_when_not():
    assert_head_codemod(
        stem="psa_head",
        heads={"PSAHead": DECODE},
        before='''
        from mmseg.registry import MODELS
        from .decode_head import BaseDecodeHead

        try:
            from mmcv.ops import PSAMask
        except ModuleNotFoundError:
            PSAMask = None


        @MODELS.register_module()
        class PSAHead(BaseDecodeHead):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                assert PSAMask is not None
        ''',
        after='''
        # (the generated header)
        from mmseg.registry import MODELS
        from .reward_decode_head import RewardDecodeHead

        try:
            from mmcv.ops import PSAMask
        except ModuleNotFoundError:
            PSAMask = None


        @MODELS.register_module()
        class RewardPSAHead(RewardDecodeHead):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                assert PSAMask is not None
        ''',
    )
    assert_head_codemod(
        before='''
        from mmseg.registry import MODELS
        from .decode_head import BaseDecodeHead

        try:
            import scipy
        except ImportError:
            scipy = None


        @MODELS.register_module()
        class MyHead(BaseDecodeHead):
            pass
        ''',
        after='''
        # (the generated header)
        from mmseg.registry import MODELS
        from .reward_decode_head import RewardDecodeHead


        @MODELS.register_module()
        class RewardMyHead(RewardDecodeHead):
            pass
        ''',
    )


def test_an_unread_optional_import_block_is_dropped_beside_a_read_one():
    # both blocks mention None and handle an ImportError: neither keeps the other (a block stays
    # for the names it binds, not for the ones it shares)
    assert_head_codemod(
        before='''
        from mmseg.registry import MODELS
        from .decode_head import BaseDecodeHead

        try:
            from mmcv.ops import PSAMask
        except ModuleNotFoundError:
            PSAMask = None

        try:
            import scipy
        except ImportError:
            scipy = None


        @MODELS.register_module()
        class MyHead(BaseDecodeHead):
            def forward(self, inputs):
                return PSAMask
        ''',
        after='''
        # (the generated header)
        from mmseg.registry import MODELS
        from .reward_decode_head import RewardDecodeHead

        try:
            from mmcv.ops import PSAMask
        except ModuleNotFoundError:
            PSAMask = None


        @MODELS.register_module()
        class RewardMyHead(RewardDecodeHead):
            def forward(self, inputs):
                return PSAMask
        ''',
    )


NAMED = '''
from mmseg.registry import MODELS
from .decode_head import BaseDecodeHead


@MODELS.{decorator}
class MyNamedHead(BaseDecodeHead):
    pass
'''
NAMED_COPY = '''
# (the generated header)
from mmseg.registry import MODELS
from .reward_decode_head import RewardDecodeHead


@MODELS.{decorator}
class RewardMyNamedHead(RewardDecodeHead):
    pass
'''


@pytest.mark.parametrize("decorator, copied", [
    # registered under another name: the copy registers the Reward-prefixed name
    ("register_module(name='MyNamed')", "register_module(name='RewardMyNamed')"),
    # force= is never copied: a reward head never replaces a registered one
    ("register_module(name='MyNamed', force=True)", "register_module(name='RewardMyNamed')"),
    ("register_module(force=True)", "register_module()"),
    # mmcv's and mmengine's (name, force, module): a positional name stays positional
    ('register_module("MyNamed", True)', 'register_module("RewardMyNamed")'),
    # each name of a list or tuple, quotes and trailing comma as written
    ("register_module(name=['MyNamed', 'MyAlias'])", "register_module(name=['RewardMyNamed', 'RewardMyAlias'])"),
    ("register_module(name=('MyNamed', 'MyAlias'), force=True,)",
     "register_module(name=('RewardMyNamed', 'RewardMyAlias'),)"),
    # a call laid out over lines keeps its layout, less the dropped argument
    ("register_module(\n    name='MyNamed',\n    force=True)", "register_module(\n    name='RewardMyNamed')"),
], ids=["name", "name-force", "force", "positional", "list", "tuple", "multi-line"])
def test_the_registry_call_registers_the_reward_name_and_drops_force(decorator, copied):
    assert_head_codemod(
        NAMED.format(decorator=decorator), NAMED_COPY.format(decorator=copied), heads={"MyNamedHead": DECODE}
    )


def test_a_shebang_and_a_coding_line_stay_above_the_header():
    assert_head_codemod(
        before='''
        #!/usr/bin/env python
        # -*- coding: latin-1 -*-
        # Copyright (c) somebody.
        from mmseg.registry import MODELS
        from .decode_head import BaseDecodeHead


        @MODELS.register_module()
        class MyHead(BaseDecodeHead):
            pass
        ''',
        after='''
        #!/usr/bin/env python
        # -*- coding: latin-1 -*-
        # (the generated header)
        # Copyright (c) somebody.
        from mmseg.registry import MODELS
        from .reward_decode_head import RewardDecodeHead


        @MODELS.register_module()
        class RewardMyHead(RewardDecodeHead):
            pass
        ''',
    )


# --- the __init__ exports ----------------------------------------------------------------------

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


def test_exports_go_where_isort_puts_them_and_fill_a_multi_line_all_list_as_yapf_does():
    # MMSeg's losses/__init__.py: the import after .cross_entropy_loss (a multi-line import),
    # before the comment that belongs to .utils; the last line filled up to 79 columns first
    assert_exports_codemod(
        before=MMSEG_STYLE,
        imports=[("iou_metric_loss", ["IoUMetricLoss", "per_image_miou"])],
        after="""
        # Copyright (c) OpenMMLab. All rights reserved.
        from .accuracy import Accuracy, accuracy
        from .cross_entropy_loss import (CrossEntropyLoss, binary_cross_entropy,
                                         cross_entropy, mask_cross_entropy)
        from .iou_metric_loss import IoUMetricLoss, per_image_miou
        # a comment between imports
        from .utils import reduce_loss

        __all__ = [
            'accuracy', 'Accuracy', 'cross_entropy', 'binary_cross_entropy',
            'mask_cross_entropy', 'CrossEntropyLoss', 'reduce_loss', 'IoUMetricLoss',
            'per_image_miou'
        ]
        """,
    )


def test_a_one_line_all_list_stays_on_one_line():
    assert_exports_codemod(
        before="""
        from .a import A

        __all__ = ['A']
        """,
        imports=[("reward_a", ["RewardA"])],
        after="""
        from .a import A
        from .reward_a import RewardA

        __all__ = ['A', 'RewardA']
        """,
    )


def test_a_one_line_all_tuple_keeps_its_quotes_and_each_module_gets_its_own_import():
    assert_exports_codemod(
        before='''
        """Heads."""
        from .fcn_head import FCNHead
        from .psp_head import PSPHead

        __all__ = ("FCNHead", "PSPHead")
        ''',
        imports=[("reward_decode_head", ["RewardDecodeHead"]), ("reward_fcn_head", ["RewardFCNHead"])],
        after='''
        """Heads."""
        from .fcn_head import FCNHead
        from .psp_head import PSPHead
        from .reward_decode_head import RewardDecodeHead
        from .reward_fcn_head import RewardFCNHead

        __all__ = ("FCNHead", "PSPHead", "RewardDecodeHead", "RewardFCNHead")
        ''',
    )


def test_a_tuple_all_with_a_magic_trailing_comma_gets_one_name_a_line():
    assert_exports_codemod(
        before="""
        from .a import A

        __all__ = (
            "A",
        )
        """,
        imports=[("reward_a", ["RewardA"])],
        after="""
        from .a import A
        from .reward_a import RewardA

        __all__ = (
            "A",
            "RewardA",
        )
        """,
    )


def test_one_name_a_line_imports_and_all_keep_that_style():
    # a multi-line parenthesised import before the new one, a one-per-line __all__ list
    assert_exports_codemod(
        before="""
        from .ann_head import ANNHead
        from .apc_head import (
            APCHead,
        )
        from .zzz_head import ZHead

        __all__ = [
            'ANNHead',
            'APCHead',
            'ZHead',
        ]
        """,
        imports=[("reward_apc_head", ["RewardAPCHead"])],
        after="""
        from .ann_head import ANNHead
        from .apc_head import (
            APCHead,
        )
        from .reward_apc_head import RewardAPCHead
        from .zzz_head import ZHead

        __all__ = [
            'ANNHead',
            'APCHead',
            'ZHead',
            'RewardAPCHead',
        ]
        """,
    )


def test_a_long_import_is_wrapped_in_isort_s_grid_with_its_names_in_isort_order():
    # CONSTANTS, then Classes, then functions; continuation lines aligned with the bracket
    assert_exports_codemod(
        before="""
        from .accuracy import Accuracy, accuracy
        from .utils import reduce_loss

        __all__ = ['accuracy', 'Accuracy', 'reduce_loss']
        """,
        imports=[("iou_metric_loss", ["per_image_dice", "IoUMetricLoss", "per_image_miou", "PER_IMAGE"])],
        names=["IoUMetricLoss"],
        after="""
        from .accuracy import Accuracy, accuracy
        from .iou_metric_loss import (PER_IMAGE, IoUMetricLoss, per_image_dice,
                                      per_image_miou)
        from .utils import reduce_loss

        __all__ = ['accuracy', 'Accuracy', 'reduce_loss', 'IoUMetricLoss']
        """,
    )


def test_without_relative_imports_the_import_goes_after_the_last_import_and_an_empty_all_is_filled():
    assert_exports_codemod(
        before="""
        import os

        __all__ = []
        """,
        imports=[("reward_fcn_head", ["RewardFCNHead", "RewardPSPHead"])],
        after="""
        import os
        from .reward_fcn_head import RewardFCNHead, RewardPSPHead

        __all__ = ['RewardFCNHead', 'RewardPSPHead']
        """,
    )


def test_without_any_import_or_all_the_import_goes_after_the_docstring():
    record = assert_exports_codemod(
        before='''
        """Heads."""
        ''',
        imports=[("reward_fcn_head", ["RewardFCNHead"])],
        after='''
        """Heads."""
        from .reward_fcn_head import RewardFCNHead
        ''',
    )
    assert record.names == ()


def test_names_already_imported_and_exported_are_not_added_twice():
    record = assert_exports_codemod(
        before="""
        from .x import RewardX

        __all__ = ['RewardX']
        """,
        imports=[("reward_x", ["RewardX"])],
        after="""
        from .x import RewardX

        __all__ = ['RewardX']
        """,
    )
    assert record == ExportRecord((), ())


def test_an_element_whose_new_comma_does_not_fit_moves_to_the_next_line_and_back():
    before = """
        __all__ = [
            'FirstHead', 'SecondHead', 'ThirdHead', 'FourthHead', 'FifthHead1234',
            'LightHamHead', 'PIDHead', 'DDRHead', 'VPDDepthHead', 'SideAdapterCLIPHead'
        ]
        """
    assert max(len(line) for line in fixture(before).splitlines()) == 79
    record = assert_exports_codemod(
        before=before,
        imports=[],
        names=["RewardFCNHead"],
        after="""
        __all__ = [
            'FirstHead', 'SecondHead', 'ThirdHead', 'FourthHead', 'FifthHead1234',
            'LightHamHead', 'PIDHead', 'DDRHead', 'VPDDepthHead',
            'SideAdapterCLIPHead', 'RewardFCNHead'
        ]
        """,
    )
    assert record.rewrapped
    added, _ = add_exports(fixture(before), [], ["RewardFCNHead"])
    assert remove_exports(added, ExportRecord.from_json(record.as_json())) == fixture(before)


# --- the planner end to end, on a small tree ----------------------------------------------------

PLANNED = {  # stem: (source, the classes the planner should hand the transform, as in the pairs)
    "my_head": ('''\
        import torch.nn as nn

        from mmseg.registry import MODELS
        from .decode_head import BaseDecodeHead

        SCALES = (1, 2)


        class Helper(nn.Module):
            pass


        @MODELS.register_module(name='Mine', force=True)
        class MyHead(BaseDecodeHead):
            def __init__(self, **kwargs):
                super(MyHead, self).__init__(**kwargs)

            def forward(self, inputs):
                return super(BaseDecodeHead, self).forward(Helper()(inputs) * SCALES[0])
        ''', {"MyHead": DECODE}),
    "my_ocr_head": ('''\
        from mmseg.registry import MODELS
        from .cascade_decode_head import BaseCascadeDecodeHead


        @MODELS.register_module()
        class MyOCRHead(BaseCascadeDecodeHead):
            pass
        ''', {"MyOCRHead": CASCADE_BASE}),
    "two_heads": ('''\
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
        ''', {"FirstHead": DECODE, "SecondHead": ("FirstHead", "RewardFirstHead", "reward_two_heads")}),
}


def test_apply_writes_each_reward_module_as_the_pairs_transform_gives_it_under_its_header(tmp_path):
    root = mini_tree(tmp_path, {stem: source for stem, (source, _) in PLANNED.items()}, heads_init=(
        "from .my_head import MyHead\nfrom .my_ocr_head import MyOCRHead\n"
        "from .two_heads import FirstHead, SecondHead\n\n"
        "__all__ = ('MyHead', 'MyOCRHead', 'FirstHead', 'SecondHead')\n"
    ))
    plan_apply(MMSegTree.open(root)).execute()
    for stem, (source, heads) in PLANNED.items():
        text = generated(root, stem)
        header = text.splitlines()[:4]  # test_the_header_names_the_source_and_its_hash reads it
        assert all(line.startswith("# ") for line in header)
        assert text == reward_module(fixture(source), heads, stem, header), stem
        compile(text, f"reward_{stem}.py", "exec")
    init = (root / "mmseg/models/decode_heads/__init__.py").read_text()
    assert "from .reward_my_head import RewardMyHead\n" in init
    assert "from .reward_my_ocr_head import RewardMyOCRHead\n" in init
    assert "from .reward_two_heads import RewardFirstHead, RewardSecondHead\n" in init
    assert "'SecondHead', " in init and "'RewardFirstHead', 'RewardSecondHead'" in init


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


def test_revert_keeps_unrelated_edits_made_after_apply():
    text, record = add_exports(MMSEG_STYLE, [("reward_x", ["RewardX"])], ["RewardX"])
    edited = text.replace(
        "from .utils import reduce_loss\n", "from .utils import reduce_loss\nfrom .mine import Mine\n"
    )
    edited = edited.replace("'RewardX'", "'RewardX', 'Mine'")
    reverted = remove_exports(edited, record)
    assert "from .mine import Mine" in reverted and "'Mine'" in reverted
    assert "RewardX" not in reverted


# Random __init__.py files in the styles met in forks: isort grid or one-per-line imports,
# parenthesised or not, comments, list or tuple __all__, with or without trailing commas.
names = st.from_regex(r"[A-Z][a-z]{1,6}(Head|Loss)?", fullmatch=True)


@st.composite
def init_files(draw):
    modules = draw(
        st.lists(st.from_regex(r"[a-z]{1,8}_(head|loss)", fullmatch=True), min_size=0, max_size=6, unique=True)
    )
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
@given(
    source=init_files(),
    added=st.lists(st.from_regex(r"Reward[A-Z][a-z]{1,5}Head", fullmatch=True), min_size=1, max_size=5, unique=True),
)
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
