"""The tiny expression language of search spaces (``when:`` conditions and ``constraints:``).

Parsed with :mod:`ast` and checked against a whitelist; evaluated by walking the tree (never ``eval``/``exec``).

Grammar (Python syntax, a small subset)::

    expr     := expr ("and" | "or") expr | "not" expr | compare
    compare  := arith (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") arith)*
    arith    := arith ("+" | "-" | "*" | "/") arith | "-" arith | atom        (numbers only)
    atom     := dotted.name | literal | "[" literal, ... "]" | "(" expr ")"
    literal  := 'string' | "string" | 12 | 1.5e-3 | true | false | null  (True/False/None also accepted)

``dotted.name`` is a path into the trial config (``attention.layout``, ``finetune.lora.rank``, ``seed``);
the caller resolves it. Example: ``attention.layout != 'linear' and attention.window <= data.seq_len``.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_LITERAL_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
MAX_EXPR_CHARS = 1000  # conditions and constraints are one-liners; longer input is refused before parsing
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}


class ExprError(ValueError):
    """A bad expression (syntax, forbidden construct) or a failed evaluation (types, division by zero)."""


@dataclass(frozen=True)
class Expr:
    """A parsed, whitelisted expression. ``names``: the dotted names it reads, in order of appearance."""

    source: str
    tree: ast.Expression
    names: tuple[str, ...]

    def evaluate(self, lookup: Callable[[str], Any]) -> Any:
        """Value of the expression; ``lookup(dotted_name)`` gives each name's value."""
        try:
            return _eval(self.tree.body, lookup)
        except (RecursionError, MemoryError):
            raise ExprError(f"'{self.source[:60]}...' is nested too deeply to evaluate") from None

    def truth(self, lookup: Callable[[str], Any]) -> bool:
        """Like :meth:`evaluate` but the result must be a boolean."""
        value = self.evaluate(lookup)
        if not isinstance(value, bool):
            raise ExprError(f"'{self.source}' must give true or false, got {value!r}")
        return value


def parse_expr(source: str) -> Expr:
    """Parses and whitelists ``source``; raises :class:`ExprError` with a one-line reason."""
    if not isinstance(source, str) or not source.strip():
        raise ExprError("expected a non-empty expression string")
    if len(source) > MAX_EXPR_CHARS:
        raise ExprError(f"expression longer than {MAX_EXPR_CHARS} characters ({len(source)})")
    names: list[str] = []
    try:
        tree = ast.parse(source.strip(), mode="eval")
        _check(tree.body, names)
    except SyntaxError as err:
        where = f" at column {err.offset}" if err.offset else ""
        raise ExprError(f"bad expression {source!r}: {err.msg}{where}") from None
    except (RecursionError, MemoryError):
        raise ExprError(f"expression nested too deeply: {source[:60]!r}...") from None
    return Expr(source.strip(), tree, tuple(dict.fromkeys(names)))


def dotted_name(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of attribute accesses on a plain name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _check(node: ast.AST, names: list[str]) -> None:
    """Raises ExprError on anything outside the grammar; collects dotted names."""
    if isinstance(node, ast.BoolOp):
        for v in node.values:
            _check(v, names)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
        _check(node.operand, names)
    elif isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        _check(node.left, names)
        _check(node.right, names)
    elif isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        for v in (node.left, *node.comparators):
            _check(v, names)
    elif isinstance(node, (ast.List, ast.Tuple)):
        for v in node.elts:
            _check(v, names)
    elif isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (bool, int, float, str))):
        pass
    elif isinstance(node, (ast.Name, ast.Attribute)):
        name = dotted_name(node)
        if name is None or any(part.startswith("_") for part in name.split(".")):
            raise ExprError(f"only dotted config names like attention.window are allowed, not '{ast.unparse(node)}'")
        if name not in _LITERAL_NAMES:
            names.append(name)
    else:
        raise ExprError(f"'{ast.unparse(node)}' is not allowed (allowed: dotted names, literals, comparisons, "
                        "in / not in, and / or / not, + - * / on numbers)")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _eval(node: ast.AST, lookup: Callable[[str], Any]) -> Any:
    if isinstance(node, ast.BoolOp):
        is_and = isinstance(node.op, ast.And)
        for v in node.values:
            value = _eval(v, lookup)
            if not isinstance(value, bool):
                raise ExprError(f"'{ast.unparse(v)}' is {value!r}, expected true or false")
            if value != is_and:
                return value
        return is_and
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, lookup)
        if isinstance(node.op, ast.Not):
            if not isinstance(value, bool):
                raise ExprError(f"'not' needs true or false, got {value!r}")
            return not value
        if not _is_number(value):
            raise ExprError(f"unary minus needs a number, got {value!r}")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, lookup), _eval(node.right, lookup)
        sym = _SYMBOL[type(node.op)]
        if not (_is_number(left) and _is_number(right)):
            raise ExprError(f"'{sym}' needs numbers, got {left!r} {sym} {right!r}")
        if isinstance(node.op, ast.Div) and right == 0:
            raise ExprError(f"division by zero in '{ast.unparse(node)}'")
        return _ARITH[type(node.op)](left, right)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, lookup)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _eval(comp, lookup)
            try:
                ok = _COMPARE[type(op)](left, right)
            except TypeError:
                what = "in" if isinstance(op, (ast.In, ast.NotIn)) else _SYMBOL[type(op)]
                raise ExprError(f"cannot evaluate {left!r} {what} {right!r} in '{ast.unparse(node)}'") from None
            if not ok:
                return False
            left = right
        return True
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(v, lookup) for v in node.elts]
    if isinstance(node, ast.Constant):
        return node.value
    name = dotted_name(node)
    if name in _LITERAL_NAMES:
        return _LITERAL_NAMES[name]
    return lookup(name)
