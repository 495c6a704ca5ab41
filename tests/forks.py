"""Forks written by the tests: a reference checkout plus the edits a research fork makes.

The edits imitate the domain-adaptation family (DAFormer, HRDA, MIC and a 1.x port of
them): BaseDecodeHead hands per-pixel pseudo-label weights, `seg_weight`, from the
training step to its loss method, and the 1.x port has no cascade decode head. Each
fork is committed, so that its git status starts clean as a user's would.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from rewardpatch.checkout import COMMIT_ENV

HEADS = "mmseg/models/decode_heads"


def edit(tree: Path, relative: str, *replacements: tuple[str, str]) -> None:
    path = tree / relative
    text = path.read_text()
    for old, new in replacements:
        assert old in text, f"{relative}: {old!r} not found"
        text = text.replace(old, new)
    path.write_text(text)


def commit(tree: Path, message: str) -> None:
    env = {**COMMIT_ENV, "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "add", "-A"], cwd=tree, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", message], cwd=tree, check=True, env=env)


def add_heads(tree: Path, module: str, source: str, names: list[str], anchor: str, message: str) -> None:
    """Writes `source` as the tree's decode_heads/<module>.py, exports `names` from the package
    (the import beside `anchor`, one of its import lines: before it when `module` sorts first, as
    isort orders them) and commits."""
    (tree / HEADS / f"{module}.py").write_text(source)
    line = f"from .{module} import {', '.join(names)}\n"
    beside = line + anchor if module < anchor[len("from ."):] else anchor + line
    edit(tree, f"{HEADS}/__init__.py", (anchor, beside),
         ("__all__ = [\n", "__all__ = [\n    " + ", ".join(repr(name) for name in names) + ",\n"))
    commit(tree, message)


def daformer_0x(tree: Path) -> Path:
    """A 0.x tree whose BaseDecodeHead trains with seg_weight, as DAFormer's (MMSeg 0.16.0) does,
    and whose heads that override `losses` take it and hand it on."""
    edit(
        tree, f"{HEADS}/decode_head.py",
        ("def forward_train(self, inputs, img_metas, gt_semantic_seg, train_cfg):",
         "def forward_train(self,\n                      inputs,\n                      img_metas,\n"
         "                      gt_semantic_seg,\n                      train_cfg,\n"
         "                      seg_weight=None):"),
        ("losses = self.losses(seg_logits, gt_semantic_seg)",
         "losses = self.losses(seg_logits, gt_semantic_seg, seg_weight)"),
        ("def losses(self, seg_logit, seg_label):", "def losses(self, seg_logit, seg_label, seg_weight=None):"),
        ("            seg_weight = self.sampler.sample(seg_logit, seg_label)\n"
         "        else:\n            seg_weight = None\n",
         "            seg_weight = self.sampler.sample(seg_logit, seg_label)\n"),
    )
    # the heads that override losses hand it on too, as DAFormer's DAHead does (EncHead alike):
    # the base calls losses(seg_logit, seg_label, seg_weight)
    edit(
        tree, f"{HEADS}/da_head.py",
        ("def losses(self, seg_logit, seg_label):", "def losses(self, seg_logit, seg_label, seg_weight=None):"),
        *[(f"super(DAHead, self).losses({logit}, seg_label)", f"super(DAHead, self).losses({logit}, seg_label,\n"
           f"{' ' * 43}seg_weight)") for logit in ("pam_cam_seg_logit", "pam_seg_logit", "cam_seg_logit")],
        # laid out as the fork's yapf (0.30.0) lays it out, as a fork's pre-commit keeps it
        ("seg_weight),\n                'pam_cam'))", "seg_weight), 'pam_cam'))"),
    )
    edit(
        tree, f"{HEADS}/enc_head.py",
        ("def losses(self, seg_logit, seg_label):", "def losses(self, seg_logit, seg_label, seg_weight=None):"),
        ("loss.update(super(EncHead, self).losses(seg_logit, seg_label))",
         "loss.update(\n            super(EncHead, self).losses(seg_logit, seg_label, seg_weight))"),
    )
    commit(tree, "BaseDecodeHead: seg_weight (pseudo-label confidence)")
    return tree


def daformer_1x(tree: Path) -> Path:
    """A 1.2.2 tree with seg_weight in BaseDecodeHead.loss / loss_by_feat and no cascade decode head."""
    edit(
        tree, f"{HEADS}/decode_head.py",
        ("    def loss(self, inputs: Tuple[Tensor], batch_data_samples: SampleList,\n"
         "             train_cfg: ConfigType) -> dict:",
         "    def loss(self,\n             inputs: Tuple[Tensor],\n             batch_data_samples: SampleList,\n"
         "             train_cfg: ConfigType,\n             seg_weight=None) -> dict:"),
        ("losses = self.loss_by_feat(seg_logits, batch_data_samples)",
         "losses = self.loss_by_feat(seg_logits, batch_data_samples,\n"
         "                                   seg_weight)"),
        ("    def loss_by_feat(self, seg_logits: Tensor,\n"
         "                     batch_data_samples: SampleList) -> dict:",
         "    def loss_by_feat(self,\n                     seg_logits: Tensor,\n"
         "                     batch_data_samples: SampleList,\n                     seg_weight=None) -> dict:"),
        ("            seg_weight = self.sampler.sample(seg_logits, seg_label)\n"
         "        else:\n            seg_weight = None\n",
         "            seg_weight = self.sampler.sample(seg_logits, seg_label)\n"),
    )
    for stem in ("cascade_decode_head", "ocr_head", "point_head"):
        (tree / HEADS / f"{stem}.py").unlink()
    edit(
        tree, f"{HEADS}/__init__.py",
        ("from .ocr_head import OCRHead\n", ""),
        ("from .point_head import PointHead\n", ""),
        (" 'OCRHead',", ""),
        ("    'PointHead', ", "    "),
    )
    commit(tree, "DAFormer port: seg_weight in the loss, no cascade decode head")
    return tree


SCALE_POOL_HEAD = '''# Copyright (c) OpenMMLab. All rights reserved.
import torch.nn.functional as F
from mmcv.cnn import ConvModule

from mmseg.registry import MODELS
from ..utils import resize
from .decode_head import BaseDecodeHead


@MODELS.register_module()
class ScalePoolHead(BaseDecodeHead):
    """Pools its input at each of `scales` (output sizes) and sums the results.

    Args:
        scales (tuple[int]): The output sizes of the poolings; no default.
    """

    def __init__(self, scales, **kwargs):
        super().__init__(**kwargs)
        self.scales = scales
        self.bottleneck = ConvModule(
            self.in_channels,
            self.channels,
            3,
            padding=1,
            conv_cfg=self.conv_cfg,
            norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg)

    def forward(self, inputs):
        x = self._transform_inputs(inputs)
        pooled = [
            resize(
                F.adaptive_avg_pool2d(x, scale),
                size=x.shape[2:],
                mode='bilinear',
                align_corners=self.align_corners) for scale in self.scales
        ]
        return self.cls_seg(self.bottleneck(sum(pooled)))
'''


def scale_pool_head_1x(tree: Path) -> Path:
    """A 1.2.2 tree with a head of its own whose constructor takes an argument without a default
    (`scales`), which verify cannot guess."""
    add_heads(tree, "scale_pool_head", SCALE_POOL_HEAD, ["ScalePoolHead"], "from .psp_head import PSPHead\n",
              "ScalePoolHead: pooling at scales the config gives")
    return tree


def pixel_weights_0x(tree: Path) -> Path:
    """A 0.x tree whose BaseDecodeHead.losses takes the training config and per-pixel weights
    under another name, `losses(seg_logit, seg_label, train_cfg, pixel_weights=None)`, as a
    fork of MMSeg 0.14 does."""
    edit(
        tree, f"{HEADS}/decode_head.py",
        ("def forward_train(self, inputs, img_metas, gt_semantic_seg, train_cfg):",
         "def forward_train(self,\n                      inputs,\n                      img_metas,\n"
         "                      gt_semantic_seg,\n                      train_cfg,\n"
         "                      pixel_weights=None):"),
        ("losses = self.losses(seg_logits, gt_semantic_seg)",
         "losses = self.losses(seg_logits, gt_semantic_seg, train_cfg,\n"
         "                             pixel_weights)"),
        ("def losses(self, seg_logit, seg_label):",
         "def losses(self, seg_logit, seg_label, train_cfg, pixel_weights=None):"),
        ("        else:\n            seg_weight = None\n", "        else:\n            seg_weight = pixel_weights\n"),
    )
    commit(tree, "BaseDecodeHead: train_cfg and pixel_weights in the loss")
    return tree


def img_metas_0x(tree: Path) -> Path:
    """A 0.x tree whose BaseDecodeHead.losses takes the images' metas, as a fork of MMSeg 0.18 does."""
    edit(
        tree, f"{HEADS}/decode_head.py",
        ("losses = self.losses(seg_logits, gt_semantic_seg)",
         "losses = self.losses(seg_logits, gt_semantic_seg, img_metas)"),
        ("def losses(self, seg_logit, seg_label):", "def losses(self, seg_logit, seg_label, img_metas):"),
    )
    commit(tree, "BaseDecodeHead: img_metas in the loss")
    return tree


def features_1x(tree: Path) -> Path:
    """A 1.x tree whose BaseDecodeHead.loss_by_feat takes the head's input features, as a fork
    of MMSeg 0.25 does in its own API."""
    edit(
        tree, f"{HEADS}/decode_head.py",
        ("losses = self.loss_by_feat(seg_logits, batch_data_samples)",
         "losses = self.loss_by_feat(\n            seg_logits, batch_data_samples, features=inputs)"),
        ("    def loss_by_feat(self, seg_logits: Tensor,\n"
         "                     batch_data_samples: SampleList) -> dict:",
         "    def loss_by_feat(self,\n                     seg_logits: Tensor,\n"
         "                     batch_data_samples: SampleList,\n                     features=None) -> dict:"),
    )
    commit(tree, "BaseDecodeHead: the input features in the loss")
    return tree


def pixel_weights_1x(tree: Path) -> Path:
    """A 1.x tree whose BaseDecodeHead.loss_by_feat takes the training config and `pixel_weights`."""
    edit(
        tree, f"{HEADS}/decode_head.py",
        ("    def loss(self, inputs: Tuple[Tensor], batch_data_samples: SampleList,\n"
         "             train_cfg: ConfigType) -> dict:",
         "    def loss(self,\n             inputs: Tuple[Tensor],\n             batch_data_samples: SampleList,\n"
         "             train_cfg: ConfigType,\n             pixel_weights=None) -> dict:"),
        ("losses = self.loss_by_feat(seg_logits, batch_data_samples)",
         "losses = self.loss_by_feat(seg_logits, batch_data_samples,\n"
         "                                   train_cfg, pixel_weights)"),
        ("    def loss_by_feat(self, seg_logits: Tensor,\n"
         "                     batch_data_samples: SampleList) -> dict:",
         "    def loss_by_feat(self,\n                     seg_logits: Tensor,\n"
         "                     batch_data_samples: SampleList,\n                     train_cfg,\n"
         "                     pixel_weights=None) -> dict:"),
        ("        else:\n            seg_weight = None\n", "        else:\n            seg_weight = pixel_weights\n"),
    )
    commit(tree, "BaseDecodeHead: train_cfg and pixel_weights in the loss")
    return tree


CONDITIONAL_HEADS_1X = '''# Copyright (c) OpenMMLab. All rights reserved.
from mmseg.registry import MODELS
from .decode_head import BaseDecodeHead


@MODELS.register_module()
class ATMHead(BaseDecodeHead):
    """Trains with its own loss unless CE_loss, as MaskCLIP's ATMHead does."""

    def __init__(self, CE_loss=False, **kwargs):
        super().__init__(**kwargs)
        self.CE_loss = CE_loss

    def forward(self, inputs):
        return self.cls_seg(self._transform_inputs(inputs))

    def loss_by_feat(self, seg_logits, batch_data_samples):
        if self.CE_loss:
            return super().loss_by_feat(seg_logits, batch_data_samples)
        return dict(loss_own=seg_logits.abs().mean())


@MODELS.register_module()
class ManyClassHead(BaseDecodeHead):
    """Hands its labels to the base only for more than two classes."""

    def forward(self, inputs):
        return self.cls_seg(self._transform_inputs(inputs))

    def loss_by_feat(self, seg_logits, batch_data_samples):
        if not self.num_classes > 2:
            return dict(loss_own=seg_logits.abs().mean())
        return super().loss_by_feat(seg_logits, batch_data_samples)


@MODELS.register_module()
class LossTypeHead(BaseDecodeHead):
    """Chooses its loss by a config value."""

    def __init__(self, loss_type: str = 'own', **kwargs):
        super().__init__(**kwargs)
        self.loss_type: str = loss_type

    def forward(self, inputs):
        return self.cls_seg(self._transform_inputs(inputs))

    def loss_by_feat(self, seg_logits, batch_data_samples):
        if self.loss_type == 'ce':
            return super().loss_by_feat(seg_logits, batch_data_samples)
        return dict(loss_own=seg_logits.abs().mean())
'''


def conditional_1x(tree: Path) -> Path:
    """A 1.2.2 tree with three heads that reach the base's loss on one branch only: ATMHead when
    its constructor argument CE_loss is true, LossTypeHead when loss_type is 'ce', ManyClassHead
    when it has more than two classes."""
    add_heads(tree, "atm_head", CONDITIONAL_HEADS_1X, ["ATMHead", "LossTypeHead", "ManyClassHead"],
              "from .fcn_head import FCNHead\n", "ATMHead and ManyClassHead: the base's loss on one branch")
    return tree


ATM_HEAD_0X = '''# Copyright (c) OpenMMLab. All rights reserved.
from ..builder import HEADS
from .decode_head import BaseDecodeHead


@HEADS.register_module()
class ATMHead(BaseDecodeHead):
    """Trains with its own loss unless CE_loss, as MaskCLIP's ATMHead does."""

    def __init__(self, use_ce=False, **kwargs):
        super(ATMHead, self).__init__(**kwargs)
        self.CE_loss = use_ce

    def forward(self, inputs):
        return self.cls_seg(self._transform_inputs(inputs))

    def losses(self, seg_logit, seg_label):
        loss = super(ATMHead, self).losses(
            seg_logit, seg_label) if self.CE_loss else dict()
        loss['loss_own'] = seg_logit.abs().mean()
        return loss


@HEADS.register_module()
class MyATMHead(ATMHead):
    """A fork's variant of ATMHead: it inherits the condition."""
'''


def conditional_0x(tree: Path) -> Path:
    """A 0.x tree with MaskCLIP's ATMHead as 0.x spells it: `losses` reaches the base's loss only
    when self.CE_loss, stored from the constructor argument use_ce; and a head derived from it."""
    add_heads(tree, "atm_head", ATM_HEAD_0X, ["ATMHead", "MyATMHead"], "from .fcn_head import FCNHead\n",
              "ATMHead: the base's loss when CE_loss")
    return tree
