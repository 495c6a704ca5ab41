"""What a tree's own decode-head base asks of the reward base that replaces it.

Forks change BaseDecodeHead: the domain-adaptation family (DAFormer, HRDA, MIC; a 1.x
port of them too) passes per-pixel pseudo-label weights to the loss method
(`losses(seg_logit, seg_label, seg_weight=None)`), VBLC adds `**kwargs` for its other
losses, others pass `pixel_weights`, `img_metas`, `train_cfg` or `features`, and some
forks have no BaseCascadeDecodeHead. The adapter template is written for the upstream
API; this module reads, with ast and from the tree itself, what the adapter must take on
top of that and which bases exist, or why it cannot be adapted. What each extra parameter
is to the reward is data, by name (`[adapter.parameters]` in patches/common.toml).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache

from .import_graph import expression_text
from .mmseg_generations import PARAMETER_KINDS, Generation, TemplateSpec


@dataclass(frozen=True)
class HeadAPI:
    """The tree's head API as the adapter sees it.

    `extra` is the text of the parameters the tree's loss method takes after the
    template's own (e.g. ('seg_weight=None', '**kwargs')); `pixel_weight` names the one
    that weights pixels, `context` those handed on by keyword to the other losses;
    `problem` says why the adapter cannot take them, or None when it can.
    """

    bases: frozenset[str]
    extra: tuple[str, ...] = ()
    pixel_weight: str | None = None
    var_keyword: str | None = None
    problem: str | None = None
    context: tuple[str, ...] = ()


PIXEL_WEIGHT, CONTEXT, UNSUPPORTED = PARAMETER_KINDS

# Names a context parameter cannot have: the reward's own loss functions take them
# (templates/reward_head.py), and a keyword of that name would collide there.
RESERVED_FUNCTIONS = ("reward_losses", "decode_head_losses")
# The template that defines them (RewardHeadMixin's), in every generation.
HEAD_TEMPLATE = "reward_head.py"


@lru_cache(maxsize=None)  # functools.cache, which Python 3.8 lacks
def template_parameters(spec: TemplateSpec, method: str) -> tuple[str, ...]:
    """The parameters of `method` in the adapter template, in order."""
    for node in ast.walk(ast.parse(spec.text)):
        if isinstance(node, ast.FunctionDef) and node.name == method:
            return tuple(a.arg for a in node.args.args)
    raise FileNotFoundError(f"templates/{spec.source} defines no {method}")


def adapter_template(gen: Generation) -> TemplateSpec:
    return next(t for t in gen.templates if t.source == gen.adapter.template)


def reserved_names(gen: Generation) -> frozenset[str]:
    """The parameters of the reward's loss functions, which a context keyword must not shadow."""
    heads = next(t for t in gen.templates if t.source == HEAD_TEMPLATE)
    return frozenset(name for function in RESERVED_FUNCTIONS for name in template_parameters(heads, function))


def read_head_api(
    gen: Generation, classes: dict[tuple[str, str], ast.ClassDef], sources: dict[str, str]
) -> HeadAPI:
    """The API of the tree whose classes by (module stem, name) are `classes`, and the source
    of its modules by stem `sources`."""
    bases = frozenset(name for name, spec in gen.bases.items() if (spec.module, name) in classes)
    adapter = gen.adapter
    where = f"{adapter.base}.{adapter.loss_method}"
    module = gen.bases[adapter.base].module
    base = classes.get((module, adapter.base))
    if base is None:
        return HeadAPI(bases, problem=f"the tree has no {adapter.base} in {module}.py")
    method = next(
        (n for n in base.body if isinstance(n, ast.FunctionDef) and n.name == adapter.loss_method), None
    )
    if method is None:
        return HeadAPI(bases, problem=f"the tree's {adapter.base} defines no {adapter.loss_method}")
    own = template_parameters(adapter_template(gen), adapter.loss_method)
    args = method.args
    positional = args.posonlyargs + args.args
    if len(positional) < len(own) or args.posonlyargs:
        found = ", ".join(a.arg for a in positional)
        return HeadAPI(
            bases, problem=f"the tree's {where}({found}) does not take ({', '.join(own)}) as rewardpatch's adapter does"
        )
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    extra: list[str] = []
    pixel_weight = var_keyword = None
    context: list[str] = []
    unknown = []  # "name (why)"
    reserved = reserved_names(gen)
    pairs: list[tuple[ast.arg | None, ast.expr | None]] = []  # (None, None): the bare '*'
    pairs += list(zip(positional, defaults))[len(own):]
    if args.vararg:
        unknown.append(f"*{args.vararg.arg} (positional arguments of unknown meaning)")
    if args.kwonlyargs:
        pairs.append((None, None))  # the bare '*' that starts keyword-only parameters
        pairs += list(zip(args.kwonlyargs, args.kw_defaults))
    for arg, default in pairs:
        if arg is None:
            extra.append("*")
            continue
        written = arg.arg if default is None else f"{arg.arg}={expression_text(default, sources[module])}"
        kind = adapter.parameters.get(arg.arg, CONTEXT)
        if kind == UNSUPPORTED:
            unknown.append(f"{arg.arg} (a setting of the loss that the reward loss does not take)")
        elif kind == PIXEL_WEIGHT and default is not None and not isinstance(default, ast.Constant):
            unknown.append(f"{written} (per-pixel weights whose default is not a literal)")
        elif kind == PIXEL_WEIGHT and pixel_weight is not None:
            unknown.append(f"{arg.arg} (per-pixel weights beside {pixel_weight})")
        elif kind == CONTEXT and arg.arg in reserved:
            unknown.append(f"{arg.arg} (a name the reward's own loss functions take)")
        elif kind == PIXEL_WEIGHT:
            pixel_weight = arg.arg
        else:
            context.append(arg.arg)
        extra.append(written)
    if args.kwarg:
        var_keyword = args.kwarg.arg
        extra.append(f"**{var_keyword}")
    if unknown:
        return HeadAPI(
            bases,
            problem=f"the tree's {where} takes {', '.join(unknown)}, which the reward loss cannot honour "
            f"(rewardpatch scales the reward by per-pixel weights, as by {adapter.pixel_weight}, and hands other "
            "parameters and **kwargs on to the other losses)",
        )
    if extra == ["*"]:
        extra = []
    return HeadAPI(bases, tuple(extra), pixel_weight, var_keyword, context=tuple(context))
