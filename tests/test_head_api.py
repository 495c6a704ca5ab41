"""What the reward base must take, read from the tree's own BaseDecodeHead (head_api.py)."""

import ast
from typing import Dict, Tuple, cast

import pytest

from rewardpatch.head_api import read_head_api
from rewardpatch.mmseg_generations import generations

GEN_0X = next(g for g in generations() if g.name == "mmseg-0.x")


def api_of(losses_def: str, cascade: bool = True):
    sources = {"decode_head": f"class BaseDecodeHead:\n    {losses_def}\n        pass\n"}
    if cascade:
        sources["cascade_decode_head"] = "class BaseCascadeDecodeHead: pass"
    classes: Dict[Tuple[str, str], ast.ClassDef] = {}
    for stem, source in sources.items():
        cls = cast(ast.ClassDef, ast.parse(source).body[0])
        classes[(stem, cls.name)] = cls
    return read_head_api(GEN_0X, classes, sources)


@pytest.mark.parametrize(("losses_def", "extra", "pixel_weight", "var_keyword"), [
    ("def losses(self, seg_logit, seg_label):", (), None, None),
    ("def losses(self, seg_logit, seg_label, seg_weight=None):", ("seg_weight=None",), "seg_weight", None),
    ("def losses(self, seg_logit, seg_label, seg_weight):", ("seg_weight",), "seg_weight", None),
    ("def losses(self, seg_logit, seg_label, *, seg_weight=None):", ("*", "seg_weight=None"), "seg_weight", None),
    ("def losses(self, seg_logit, seg_label, seg_weight=None, **kw):", ("seg_weight=None", "**kw"), "seg_weight", "kw"),
    ("def losses(self, logits, labels, **kwargs):", ("**kwargs",), None, "kwargs"),
], ids=["upstream", "daformer", "required", "keyword-only", "vblc", "kwargs-only"])
def test_the_extra_parameters_the_adapter_takes(losses_def, extra, pixel_weight, var_keyword):
    api = api_of(losses_def)
    assert api.problem is None
    assert (api.extra, api.pixel_weight, api.var_keyword) == (extra, pixel_weight, var_keyword)


@pytest.mark.parametrize(("losses_def", "extra", "pixel_weight", "context"), [
    ("def losses(self, seg_logit, seg_label, train_cfg, pixel_weights=None):",
     ("train_cfg", "pixel_weights=None"), "pixel_weights", ("train_cfg",)),
    ("def losses(self, seg_logit, seg_label, img_metas):", ("img_metas",), None, ("img_metas",)),
    ("def losses(self, seg_logit, seg_label, features=None):", ("features=None",), None, ("features",)),
    ("def losses(self, seg_logit, seg_label, weight=None):", ("weight=None",), "weight", ()),
    ("def losses(self, seg_logit, seg_label, temperature=1.0):", ("temperature=1.0",), None, ("temperature",)),
    ("def losses(self, seg_logit, seg_label, seg_weight=None, *, img_metas=None):",
     ("seg_weight=None", "*", "img_metas=None"), "seg_weight", ("img_metas",)),
], ids=["train-cfg-and-pixel-weights", "img-metas", "features", "weight", "unlisted-name", "keyword-only-context"])
def test_each_extra_parameter_is_read_by_its_kind(losses_def, extra, pixel_weight, context):
    api = api_of(losses_def)
    assert api.problem is None
    assert (api.extra, api.pixel_weight, api.context) == (extra, pixel_weight, context)


@pytest.mark.parametrize(("losses_def", "named"), [
    ("def losses(self, seg_logit, seg_label, avg_factor=None):", "takes avg_factor (a setting of the loss"),
    ("def losses(self, seg_logit, seg_label, *args):", "takes *args"),
    ("def losses(self, seg_logit, seg_label, seg_weight=DEFAULT):", "takes seg_weight=DEFAULT"),
    ("def losses(self, seg_logit, seg_label, seg_weight=None, pixel_weights=None):",
     "takes pixel_weights (per-pixel weights beside seg_weight)"),
    ("def losses(self, seg_logit, seg_label, reward_class=None):", "takes reward_class (a name the reward's own"),
    ("def losses(self, seg_logit):", "does not take (self, seg_logit, seg_label)"),
], ids=["loss-setting", "varargs", "non-literal-default", "two-pixel-weights", "reserved-name", "too-few"])
def test_a_base_the_reward_cannot_honour_is_named_with_the_reason(losses_def, named):
    problem = api_of(losses_def).problem
    assert problem is not None and named in problem


def test_the_bases_the_tree_has_are_known():
    assert api_of("def losses(self, seg_logit, seg_label):", cascade=False).bases == {"BaseDecodeHead"}
    assert api_of("def losses(self, a, b):").bases == {"BaseDecodeHead", "BaseCascadeDecodeHead"}


def test_a_base_without_the_loss_method_is_named():
    assert "defines no losses" in api_of("def forward(self, x):").problem
