"""What the drop-in head tests share across MMSeg generations: which of a tree's own
configs to try for a head, and the only edits made to them (the head types, and a
sigmoid CrossEntropyLoss made softmax where a test asks for it).

Plain Python, no MMSeg import: tests/test_drop_in_heads.py (1.x, in-process) and
tests/workers/drop_in_heads_0x.py (0.x, run by the 0.x interpreter) both import it,
each passing its generation's config loader.
"""

from __future__ import annotations

import re
from pathlib import Path

# Backbones that build without extra packages and run on a 64x64 image; a head whose
# configs use none of them is tried with the first config of its own that builds.
LIGHT_BACKBONES = ("ResNetV1c", "ResNet", "ResNetV1d", "MobileNetV2", "MobileNetV3", "HRNet",
                   "MixVisionTransformer", "STDCContextPathNet", "BiSeNetV1", "CGNet", "FastSCNN")
SIDE = 64
SIDES = {"LRASPPHead": 416}  # its image pooling is a fixed 49x49 window on 1/8 of the input
# Fast-SCNN's configs use CrossEntropyLoss(use_sigmoid=True): a sigmoid per class, which the
# reward head refuses by name (it samples from a softmax); with use_sigmoid=False it trains.
SIGMOID_CE = {"DepthwiseSeparableFCNHead"}


def sigmoid_refusal(head: str) -> str:
    """The start of the error a reward head gives for a sigmoid CrossEntropyLoss."""
    return f"loss_decode: Reward{head} samples from a softmax"


def head_cfgs(model_cfg):
    for key in ("decode_head", "auxiliary_head"):
        heads = model_cfg.get(key)
        yield from heads if isinstance(heads, (list, tuple)) else [heads] if heads else []


def config_texts(tree: Path) -> dict[Path, str]:
    return {p: p.read_text(errors="replace") for p in (tree / "configs").rglob("*.py")}


def configs_using(texts: dict[Path, str], head: str) -> list[Path]:
    """Configs of the tree that may build `head`: files naming it, and those inheriting a base that does."""
    pattern = re.compile(rf"type\s*=\s*['\"]{head}['\"]")
    naming = [p for p, text in texts.items() if pattern.search(text)]
    found = [p for p in naming if "_base_" not in p.parts]
    for base in (p for p in naming if "_base_" in p.parts):
        found += [p for p, text in texts.items() if "_base_" not in p.parts and base.name in text]
    return sorted(set(found), key=lambda p: (len(p.name), p.name))


def config_for(texts: dict[Path, str], head: str, load):
    """(path, config) of the first config using `head` with a light backbone, else of the
    first one that loads at all; None when none does. `load(path)` reads a config."""
    fallback = None
    for path in configs_using(texts, head)[:40]:
        try:
            cfg = load(path)
        except Exception:  # noqa: BLE001 - configs that need packages we do not install
            continue
        if head not in [c["type"] for c in head_cfgs(cfg.model)]:
            continue
        if cfg.model.get("backbone", {}).get("type") in LIGHT_BACKBONES:
            return path, cfg
        fallback = fallback or (path, cfg)
    return fallback


def swap_types(model_cfg, head: str) -> None:
    for cfg in head_cfgs(model_cfg):
        if cfg["type"] == head:
            cfg["type"] = f"Reward{head}"


def softmax_ce(model_cfg, head: str) -> None:
    for cfg in head_cfgs(model_cfg):
        losses = cfg.get("loss_decode", [])
        for loss in losses if isinstance(losses, (list, tuple)) else [losses]:
            if cfg["type"] == f"Reward{head}" and loss.get("use_sigmoid"):
                loss["use_sigmoid"] = False
