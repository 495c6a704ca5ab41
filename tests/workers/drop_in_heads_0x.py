"""Run with a patched MMSeg 0.x tree first on the path, by the 0.x stack's interpreter.

argv: TREE OUT_JSON. The 0.x counterpart of tests/test_drop_in_heads.py: for every
reward head of the tree (a class Reward* in mmseg.models.builder.HEADS that subclasses
the tree's RewardDecodeHead), one of the tree's own configs that uses X is loaded with
mmcv.Config.fromfile (the choice is tests/drop_in.py's, as in 1.x), the decode and
auxiliary head types X become RewardX, and the whole segmentor is built, computes its
`forward_train` losses on a random batch of two images (64x64; LRASPPHead 416x416) and
backpropagates their sum (`_parse_losses`, as train_step does).

Besides the head types, only these mechanical edits, to the whole model config:
- `model.pretrained`, every `pretrained` key and every `init_cfg` of type 'Pretrained'
  (backbones, their backbone_cfg) are set to None, so nothing is downloaded;
- every norm_cfg of type 'SyncBN' (backbone, necks and heads) becomes 'BN': SyncBN
  needs a process group.
Heads of tests/drop_in.py's SIGMOID_CE are tried twice: first as the config has them,
which must be refused by name, then with their CrossEntropyLoss use_sigmoid=False.

Writes, per head: the config (relative to TREE), ok, the summed loss, the norm of the
gradient on each RewardX instance's output layer (conv_seg; Segmenter's mask head has
none: classes_proj), the loss keys, the sigmoid refusal and the error, if any.
"""

import copy
import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict

tree, out = Path(sys.argv[1]), sys.argv[2]
sys.path.insert(0, str(tree))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests/, for drop_in

import torch  # noqa: E402
from mmcv import Config  # noqa: E402
from mmcv.utils import get_logger  # noqa: E402

import mmseg  # noqa: E402
from drop_in import SIDE, SIDES, SIGMOID_CE, config_for, config_texts, softmax_ce, swap_types  # noqa: E402
from mmseg.models import build_segmentor  # noqa: E402
from mmseg.models.builder import HEADS  # noqa: E402
from mmseg.models.decode_heads.reward_decode_head import RewardDecodeHead  # noqa: E402

assert Path(mmseg.__file__).resolve().is_relative_to(tree.resolve()), mmseg.__file__
get_logger("mmcv").setLevel(logging.WARNING)  # init_weights' line per parameter
# A head's output layer when it has no conv_seg (SegmenterMaskTransformerHead deletes it).
OUTPUT_LAYER = {"SegmenterMaskTransformerHead": "classes_proj"}


def reward_heads():
    return sorted(
        name[len("Reward"):] for name, cls in HEADS.module_dict.items()
        if name.startswith("Reward") and isinstance(cls, type) and issubclass(cls, RewardDecodeHead)
    )


def offline(node):
    """In place: no pretrained weights, BN for SyncBN (the worker's only non-head edits)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pretrained" or (key == "init_cfg" and isinstance(value, dict)
                                       and value.get("type") == "Pretrained"):
                node[key] = None
            elif key == "type" and value == "SyncBN":
                node[key] = "BN"
            else:
                offline(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            offline(value)


def train_step(model_cfg, head: str, side: int) -> dict:
    torch.manual_seed(0)
    model = build_segmentor(model_cfg)
    model.init_weights()
    model.train()
    reward_class = HEADS.get(f"Reward{head}")
    instances = [m for m in model.modules() if type(m) is reward_class]
    assert instances, f"no Reward{head} in the built model"
    num_classes = instances[0].num_classes
    img = torch.randn(2, 3, side, side)
    meta = dict(img_shape=(side, side, 3), ori_shape=(side, side, 3), pad_shape=(side, side, 3),
                scale_factor=1.0, flip=False, flip_direction=None, filename="x.png", ori_filename="x.png")
    label = torch.randint(0, num_classes, (2, 1, side, side))
    label[torch.rand(label.shape) < 0.2] = 255
    losses = model.forward_train(img, [dict(meta) for _ in range(2)], label)
    assert [k for k in losses if k.endswith("reward_mean")], f"no reward statistics in {sorted(losses)}"
    loss, _ = model._parse_losses(losses)
    assert torch.isfinite(loss), loss
    loss.backward()
    norms = []
    for instance in instances:
        layer = getattr(instance, OUTPUT_LAYER.get(head, "conv_seg"))
        grad = layer.weight.grad
        assert grad is not None, f"no gradient on Reward{head}'s {OUTPUT_LAYER.get(head, 'conv_seg')}"
        norm = grad.norm().item()
        assert torch.isfinite(grad).all() and norm > 0, f"gradient norm {norm} on Reward{head}'s output layer"
        norms.append(norm)
    return dict(loss=loss.item(), grad_norms=norms, loss_keys=sorted(losses))


started = time.perf_counter()
texts = config_texts(tree)
results = {}
for head in reward_heads():
    t0 = time.perf_counter()
    result: Dict[str, Any] = dict(config=None, ok=False, loss=None, grad_norms=None, loss_keys=None,
                                   sigmoid_error=None, error=None)
    results[head] = result
    try:
        found = config_for(texts, head, Config.fromfile)
        if found is None:
            raise LookupError(f"no config of the tree that loads uses {head}")
        path, cfg = found
        result["config"] = str(path.relative_to(tree))
        model_cfg = cfg.model
        offline(model_cfg)
        swap_types(model_cfg, head)
        side = SIDES.get(head, SIDE)
        if head in SIGMOID_CE:
            try:
                train_step(copy.deepcopy(model_cfg), head, side)
                result["sigmoid_error"] = "trained with use_sigmoid=True"
            except Exception as exc:  # noqa: BLE001 - the test checks that it is the refusal by name
                result["sigmoid_error"] = f"{type(exc).__name__}: {exc}"
            softmax_ce(model_cfg, head)
        result.update(train_step(model_cfg, head, side), ok=True)
    except Exception as exc:  # noqa: BLE001 - every head's failure is reported
        result["error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}"
    result["seconds"] = round(time.perf_counter() - t0, 2)
    print(f"{head}: {'ok' if result['ok'] else 'FAILED'} {result['config']} {result['seconds']}s", flush=True)

Path(out).write_text(json.dumps(dict(mmseg=mmseg.__version__, heads=results,
                                     seconds=round(time.perf_counter() - started, 1)), indent=1))
