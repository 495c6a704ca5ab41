"""The fine-tune config as Python source, written only once mmengine loads it back as intended."""

from __future__ import annotations

import keyword
import math
import os
from pathlib import Path

from .. import __version__
from ..errors import InputError, StateError
from .diff import leaf_changes
from .finetune_plan import FinetunePlan

WIDTH = 100
REWARD_TITLE = "Reward fine-tuning config"
BASELINE_TITLE = "Cross-entropy A/B baseline config"


def _scalar(value, where: str) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"float('{value}')"
    if value is None or isinstance(value, (str, int, float, bool)):
        return repr(value)
    raise InputError(f"{where}: cannot write a {type(value).__name__} value into a config")


def _is_name(key) -> bool:
    return isinstance(key, str) and key.isidentifier() and not keyword.iskeyword(key)


def python_value(value, indent: int = 0, where: str = "") -> str:
    """`value` as config source: dict(k=v) like MMSeg's configs, wrapped black-style."""
    if isinstance(value, dict):
        keyword_style = all(_is_name(k) for k in value)
        items = [
            f"{k if keyword_style else _scalar(k, where)}{'=' if keyword_style else ': '}"
            f"{python_value(v, indent + 4, f'{where}.{k}')}"
            for k, v in value.items()
        ]
        open_, close = ("dict(", ")") if keyword_style else ("{", "}")
    elif isinstance(value, (list, tuple)):
        items = [python_value(v, indent + 4, f"{where}[{i}]") for i, v in enumerate(value)]
        open_, close = ("[", "]") if isinstance(value, list) else ("(", ")")
        if isinstance(value, tuple) and len(value) == 1:
            items[0] += ","
    else:
        return _scalar(value, where)
    inline = open_ + ", ".join(items) + close
    if len(inline) + indent <= WIDTH and "\n" not in inline:
        return inline
    pad = " " * (indent + 4)
    return open_ + "\n" + "".join(f"{pad}{item},\n" for item in items) + " " * indent + close


def base_reference(src: Path, out: Path) -> str:
    """SRC as OUT's `_base_`: relative when both live in one area, else absolute."""
    src, out_dir = Path(os.path.abspath(src)), Path(os.path.abspath(out)).parent
    try:
        relative = Path(os.path.relpath(src, out_dir))
        common = Path(os.path.commonpath([src, out_dir]))
    except ValueError:  # different drives
        return src.as_posix()
    if common == Path(common.anchor) or relative.parts.count("..") > 3:
        return src.as_posix()
    text = relative.as_posix()
    return text if text.startswith("../") else f"./{text}"


def render(plan: FinetunePlan, base: str, source_name: str, origin: str,
           title: str = REWARD_TITLE) -> str:
    """`origin`: where the reward heads come from ("the patched tree T", or plugin mode's MMSeg)."""
    lines = [
        f"# {title} written by `rewardpatch config` (rewardpatch {__version__}).",
        f"# Source: {source_name} (inherited through _base_)",
        f"# {'Reward heads from' if title == REWARD_TITLE else 'For'} {origin}",
        "# Changes from the source config:",
        *(f"#   {change.line()}" for change in plan.changes),
        "",
        f"_base_ = {base!r}",
        "",
    ]
    for key, value in plan.overrides.items():
        lines.append(f"{key} = {python_value(value, 0, key)}")
    return "\n".join(lines) + "\n"


def load_config(path: Path, what: str) -> dict:
    """A config file as a plain dict, `_base_` resolved; custom_imports are not imported.

    Read by mmengine's Config, or where mmengine is not installed (an MMSeg 0.x training
    environment, DAFormer's among them) by mmcv 1.x's, which reads 0.x configs the same way."""
    try:
        from mmengine.config import Config
    except ImportError:
        from mmcv import Config  # mmcv-full 1.x

    try:
        config = Config.fromfile(str(path), import_custom_modules=False)
        return config.to_dict() if hasattr(config, "to_dict") else config._cfg_dict.to_dict()
    except Exception as exc:  # noqa: BLE001 - the config is the user's Python; anything can fail
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(f"{what}: cannot load the config ({type(exc).__name__}: {message})") from None


def write_verified(out: Path, text: str, expected: dict) -> None:
    """Write OUT only if mmengine loads it back into exactly `expected`."""
    tmp = out.with_name(f".{out.stem}.rewardpatch-tmp.py")
    try:
        tmp.write_text(text, encoding="utf-8")
        loaded = load_config(tmp, str(out))
        difference = next(leaf_changes(expected, loaded), None)
        if difference is not None:
            raise StateError(
                f"internal error: {out} would not load as intended ({difference.line()}); please report it"
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
