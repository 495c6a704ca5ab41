"""Fit the adapter template to a tree's own head API (head_api.HeadAPI).

Two edits, each only where the tree differs from upstream MMSeg: the loss method the
adapter overrides takes the tree's extra parameters and hands them to
`reward_losses` (the pixel weights, then the context parameters by keyword, then
**kwargs); the reward bases of base classes
the tree lacks (a fork without BaseCascadeDecodeHead) are left out with their
imports, so that the inserted file imports only what the tree has.
"""

from __future__ import annotations

import libcst as cst

from ..head_api import HeadAPI
from ..mmseg_generations import Generation

# MMSeg's own line length (its setup.cfg and flake8 settings, both generations)
LINE_LENGTH = 79


class LossMethodParameters(cst.CSTTransformer):
    """def <method>(<template's>) -> def <method>(<template's>, <tree's extra>)."""

    def __init__(self, method: str, api: HeadAPI):
        super().__init__()
        self.method = method
        self.api = api
        self.inside = False

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        if node.name.value == self.method:
            self.inside = True

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.FunctionDef:
        if original.name.value != self.method:
            return updated
        self.inside = False
        own = cst.Module([]).code_for_node(updated.params)
        function = cst.parse_statement(f"def f({', '.join([own, *self.api.extra])}):\n    pass\n")
        assert isinstance(function, cst.FunctionDef)  # the def just written
        return updated.with_changes(params=function.params)

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.Call:
        func = updated.func
        if not (self.inside and isinstance(func, cst.Attribute) and func.attr.value == "reward_losses"):
            return updated
        args = list(updated.args)
        if self.api.pixel_weight:
            args.append(cst.Arg(cst.Name(self.api.pixel_weight)))
        for name in self.api.context:
            args.append(cst.Arg(cst.Name(name), keyword=cst.Name(name), equal=cst.AssignEqual(
                whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace(""))))
        if self.api.var_keyword:
            args.append(cst.Arg(cst.Name(self.api.var_keyword), star="**"))
        for i, arg in enumerate(args[:-1]):  # commas as the template writes them
            if arg.comma is cst.MaybeSentinel.DEFAULT:
                args[i] = arg.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
        return updated.with_changes(args=args)


def _one_parameter_a_line(function: cst.FunctionDef, column: int) -> cst.FunctionDef:
    """The parameters one a line, aligned with the first, `column` past the def's
    indentation: yapf's layout (MMSeg's pep8-based style) for a signature with
    defaults that does not fit on one line."""
    params = function.params
    groups = ("params", "kwonly_params")
    items = [p for g in groups for p in getattr(params, g)]
    items += [p for p in (params.star_arg, params.star_kwarg) if isinstance(p, cst.Param)]
    last = items[-1]
    newline = cst.ParenthesizedWhitespace(
        first_line=cst.TrailingWhitespace(), indent=True, last_line=cst.SimpleWhitespace(" " * column)
    )
    comma = cst.Comma(whitespace_after=newline)

    def relaid(param):
        if not isinstance(param, cst.Param) or param is last:
            return param
        return param.with_changes(comma=comma)

    changes: dict[str, object] = {g: [relaid(p) for p in getattr(params, g)] for g in groups}
    if isinstance(params.star_arg, cst.ParamStar):
        changes["star_arg"] = params.star_arg.with_changes(comma=comma)
    elif isinstance(params.star_arg, cst.Param):
        changes["star_arg"] = relaid(params.star_arg)
    return function.with_changes(params=params.with_changes(**changes))


class FitLongSignatures(cst.CSTTransformer):
    def __init__(self, method: str):
        super().__init__()
        self.method = method
        self.indent = 0

    def visit_IndentedBlock(self, node: cst.IndentedBlock) -> None:
        self.indent += 1

    def leave_IndentedBlock(self, original, updated):
        self.indent -= 1
        return updated

    def leave_FunctionDef(self, original: cst.FunctionDef, updated: cst.FunctionDef) -> cst.FunctionDef:
        if updated.name.value != self.method:
            return updated
        header = cst.Module([]).code_for_node(updated.with_changes(body=cst.SimpleStatementSuite([cst.Pass()])))
        line = next(line for line in header.splitlines() if line.lstrip().startswith("def "))
        indent = 4 * self.indent
        if indent + len(line.lstrip()) - len(" pass") <= LINE_LENGTH:
            return updated
        return _one_parameter_a_line(updated, len(f"def {self.method}("))


class MissingBases(cst.CSTTransformer):
    """Leave out the reward bases of bases the tree lacks, and the imports of those bases."""

    def __init__(self, missing: dict[str, str]):
        super().__init__()
        self.missing = missing  # base -> its reward base

    def leave_ClassDef(self, original: cst.ClassDef, updated: cst.ClassDef):
        if updated.name.value in self.missing.values():
            return cst.RemoveFromParent()
        return updated

    def leave_SimpleStatementLine(self, original, updated):
        small = updated.body[0] if len(updated.body) == 1 else None
        if isinstance(small, cst.ImportFrom) and not isinstance(small.names, cst.ImportStar):
            names = {alias.evaluated_name for alias in small.names}
            if names and names <= set(self.missing):
                return cst.RemoveFromParent()
        return updated


def adapt_template(text: str, gen: Generation, api: HeadAPI) -> str:
    """The adapter template's text for a tree of head API `api`."""
    module = cst.parse_module(text)
    missing = {name: spec.reward for name, spec in gen.bases.items() if name not in api.bases}
    if missing:
        module = module.visit(MissingBases(missing))
    if not api.extra:
        return module.code
    module = module.visit(LossMethodParameters(gen.adapter.loss_method, api))
    text = module.visit(FitLongSignatures(gen.adapter.loss_method)).code
    return "".join(_fit_reward_call(line) for line in text.splitlines(keepends=True))


def _fit_reward_call(line: str) -> str:
    """`return self.reward_losses(...)`, which the context keywords can take past the column
    limit, laid out as MMSeg's yapf (0.30 and 0.32, pep8 base) lays out a call with keyword
    arguments: the arguments on one line below the call, indented four more columns, or,
    when they do not fit there, one a line."""
    body = line.rstrip("\r\n")
    call = "self.reward_losses("
    if call not in body or len(body) <= LINE_LENGTH or not body.endswith(")"):
        return line
    ending = line[len(body):]
    head, arguments = body.split(call, 1)
    indent = " " * (len(head) - len(head.lstrip()) + 4)
    # the arguments are names, name=name and **name: no comma inside any of them
    names = arguments[:-1].split(", ")
    if len(indent) + len(arguments) <= LINE_LENGTH:
        return f"{head}{call}{ending}{indent}{arguments}{ending}"
    return f"{head}{call}{ending}" + f",{ending}".join(indent + name for name in names) + f"){ending}"


def adapter_exports(exports: tuple[str, ...], gen: Generation, api: HeadAPI) -> list[str]:
    """The adapter's exports less the reward bases of bases the tree lacks."""
    left_out = {spec.reward for name, spec in gen.bases.items() if name not in api.bases}
    return [name for name in exports if name not in left_out]
