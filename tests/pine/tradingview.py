"""Test support: what TradingView does with the bundled scripts, done independently of pine/render.py.

* :class:`PineScript` parses a script with pynescript (an independent Pine parser) and evaluates
  the small part of Pine that builds alert messages (string concatenation, ``str.tostring``,
  ternaries, the script's own helper functions), so the tests see the message the *Pine source*
  builds, not the one the renderer meant to build.
* :func:`substitute` replaces placeholders the way TradingView does: plain text replacement, and a
  placeholder it does not know stays in the text as it was.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pynescript import ast

PLACEHOLDER = re.compile(r"\{\{[^{}]*\}\}")


def substitute(message: str, values: Mapping[str, str]) -> str:
    """TradingView's substitution: each known ``{{...}}`` becomes its text, unknown ones stay."""
    return PLACEHOLDER.sub(lambda m: values.get(m.group(0), m.group(0)), message)


def placeholder_values(
    *,
    price: str = "1800.8000000000002",
    contracts: str = "0.05",
    position_size: str = "0.05",
    market_position: str = "long",
    prev_market_position: str = "flat",
    order_id: str = "Long",
    comment: str = "Long",
    now: datetime | None = None,
    plots: Mapping[str, str] | None = None,
    market_position_size: str | None = None,
    prev_market_position_size: str | None = None,
) -> dict[str, str]:
    """Realistic text for every placeholder the scripts use, as TradingView would print it."""
    now = now or datetime.now(UTC)
    bar_open = now.replace(minute=0, second=0, microsecond=0)
    values = {
        "{{ticker}}": "BTCUSDT",
        "{{exchange}}": "BINANCE",
        "{{interval}}": "60",
        "{{time}}": bar_open.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "{{timenow}}": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "{{open}}": "1795.1",
        "{{high}}": "1803.4",
        "{{low}}": "1790.25",
        "{{close}}": "1800.8000000000002",
        "{{volume}}": "1234.567",
        "{{strategy.order.action}}": "sell" if order_id.startswith("Short") else "buy",
        "{{strategy.order.contracts}}": contracts,
        "{{strategy.order.price}}": price,
        "{{strategy.order.id}}": order_id,
        "{{strategy.order.comment}}": comment,
        "{{strategy.position_size}}": position_size,
        "{{strategy.market_position}}": market_position,
        "{{strategy.prev_market_position}}": prev_market_position,
        # Unsigned sizes, consistent with the sides above unless the test says otherwise.
        "{{strategy.market_position_size}}": market_position_size
        if market_position_size is not None
        else ("0" if market_position == "flat" else position_size.lstrip("-")),
        "{{strategy.prev_market_position_size}}": prev_market_position_size
        if prev_market_position_size is not None
        else ("0" if prev_market_position == "flat" else position_size.lstrip("-")),
    }
    for title, value in (plots or {}).items():
        values['{{plot("' + title + '")}}'] = value
    return values


# --- a tiny evaluator for the message-building part of Pine ------------------------------------


def _tostring(value: Any, fmt: str | None = None) -> str:
    """Pine's ``str.tostring`` for the formats the scripts use ("#.####": up to N decimals)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN"
    if fmt is None:
        return str(value)
    match = re.fullmatch(r"#\.(#+)", fmt)
    if match is None:
        raise NotImplementedError(f"str.tostring format {fmt!r} is not emulated")
    text = f"{float(value):.{len(match.group(1))}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _nz(value: Any, replacement: Any = 0) -> Any:
    return replacement if value is None or (isinstance(value, float) and math.isnan(value)) else value


BUILTINS: dict[str, Callable[..., Any]] = {
    "str.tostring": _tostring,
    "str.replace_all": lambda s, target, replacement: s.replace(target, replacement),
    "nz": _nz,
    "math.max": max,
    "math.min": min,
    "math.exp": math.exp,
    "math.abs": abs,
    "math.ceil": math.ceil,
}

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Mod: lambda a, b: a % b,
}
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
}


def dotted(node: Any) -> str:
    """``strategy.position_size`` for an Attribute chain, ``close`` for a Name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    raise TypeError(f"not a name: {ast.dump(node)}")


@dataclass
class OrderCall:
    """A ``strategy.entry``/``strategy.exit`` call and its ``alert_message=`` expression."""

    function: str
    order_id: str
    alert_message: Any


class PineScript:
    """A parsed Pine script whose message-building expressions can be evaluated."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.tree = parse_tree(source)
        self.functions = {s.name: s for s in self.tree.body if isinstance(s, ast.FunctionDef)}

    def calls(self, name: str) -> list[ast.Call]:
        """Every call of ``name`` (``alertcondition``, ``strategy.entry`` ...) anywhere in the script."""
        return [
            node
            for node in ast.walk(self.tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute)
            if dotted(node.func) == name
        ]

    def input_default(self, variable: str) -> Any:
        """The default value of ``variable = input.*(default, ...)``."""
        for stmt in self.tree.body:
            if (
                isinstance(stmt, ast.Assign)
                and isinstance(stmt.target, ast.Name)
                and stmt.target.id == variable
            ):
                return self.evaluate(stmt.value.args[0].value, {})
        raise KeyError(f"no input named {variable}")

    def assignment(self, variable: str) -> Any:
        """The expression of the top-level ``variable = ...``."""
        for stmt in self.tree.body:
            target = getattr(stmt, "target", None)
            if isinstance(stmt, ast.Assign) and isinstance(target, ast.Name) and target.id == variable:
                return stmt.value
        raise KeyError(f"no top-level assignment to {variable}")

    def guarded_calls(self, name: str) -> list[tuple[ast.Call, list[Any]]]:
        """Every call of ``name`` with the tests of the ``if`` blocks it sits in (outermost
        first): it runs only on a bar where all of them hold."""
        found: list[tuple[ast.Call, list[Any]]] = []

        def visit(node: Any, tests: list[Any]) -> None:
            if isinstance(node, ast.If):
                for child in node.body:
                    visit(child, [*tests, node.test])
                for child in node.orelse:
                    visit(child, tests)  # an else branch: not guarded by this test
                return
            called = isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute)
            if called and dotted(node.func) == name:
                found.append((node, tests))
            for child in ast.iter_child_nodes(node):
                visit(child, tests)

        for stmt in self.tree.body:
            visit(stmt, [])
        return found

    def order_calls(self) -> list[OrderCall]:
        found = []
        for name in ("strategy.entry", "strategy.exit"):
            for call in self.calls(name):
                message = next((a.value for a in call.args if a.name == "alert_message"), None)
                found.append(OrderCall(name, self.evaluate(call.args[0].value, {}), message))
        return found

    def evaluate(self, node: Any, scope: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name | ast.Attribute):
            name = dotted(node)
            if name in scope:
                return scope[name]
            raise KeyError(f"the evaluation needs a value for {name!r}")
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](self.evaluate(node.left, scope), self.evaluate(node.right, scope))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -self.evaluate(node.operand, scope)
        if isinstance(node, ast.Compare):
            left = self.evaluate(node.left, scope)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = self.evaluate(right_node, scope)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.BoolOp):
            values = (self.evaluate(v, scope) for v in node.values)
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not self.evaluate(node.operand, scope)
        if isinstance(node, ast.Conditional):
            branch = node.body if self.evaluate(node.test, scope) else node.orelse
            return self.evaluate(branch, scope)
        if isinstance(node, ast.Call):
            return self._call(node, scope)
        raise NotImplementedError(f"Pine node {type(node).__name__} is not emulated")

    def _call(self, node: ast.Call, scope: Mapping[str, Any]) -> Any:
        name = dotted(node.func)
        args = [self.evaluate(a.value, scope) for a in node.args]
        if name in self.functions:
            return self.call(name, args, scope)
        if name in BUILTINS:
            return BUILTINS[name](*args)
        if callable(scope.get(name)):  # a chart-dependent built-in the test supplies
            return scope[name](*args)
        raise NotImplementedError(f"Pine function {name} is not emulated")

    def call(self, name: str, args: list[Any], globals_: Mapping[str, Any]) -> Any:
        """Run the user function ``name``: its last statement's value is its result."""
        function = self.functions[name]
        scope = dict(globals_)
        scope.update({p.name: v for p, v in zip(function.args, args, strict=True)})
        result = None
        for stmt in function.body:
            if isinstance(stmt, ast.Assign | ast.ReAssign):
                scope[stmt.target.id] = self.evaluate(stmt.value, scope)
            elif isinstance(stmt, ast.Expr):
                result = self.evaluate(stmt.value, scope)
            else:
                raise NotImplementedError(f"Pine statement {type(stmt).__name__} is not emulated")
        return result


@functools.lru_cache(maxsize=32)
def parse_script(source: str) -> PineScript:
    """Parse once per source: pynescript's first parse in a process warms up its ANTLR caches
    (40 s on an idle 2-core machine, 80–200 s on a busy one); later parses take under a second."""
    return PineScript(source)


#: Where parsed trees are kept between test runs (tests/pine/conftest.py points it into pytest's
#: cache directory); None keeps them in memory only.
TREE_CACHE: Path | None = None


def _cache_path(source: str) -> Path | None:
    if TREE_CACHE is None:
        return None
    key = hashlib.sha256(f"{version('pynescript')}\0{source}".encode()).hexdigest()
    return TREE_CACHE / f"{key}.pickle"


def is_cached(source: str) -> bool:
    """Whether :func:`parse_tree` will read ``source``'s tree from the cache (no parse)."""
    path = _cache_path(source)
    return path is not None and path.is_file()


def parse_tree(source: str) -> Any:
    """pynescript's tree of ``source``, from :data:`TREE_CACHE` when this exact source was parsed
    by this pynescript version before, so a second run skips the ANTLR warm-up altogether.

    The cache holds pickles this test suite wrote into the developer's own cache directory;
    an entry that does not unpickle is parsed again and rewritten.
    """
    path = _cache_path(source)
    if path is None:
        return ast.parse(source)
    try:
        return pickle.loads(path.read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
        pass
    tree = ast.parse(source)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.write_bytes(pickle.dumps(tree))
    os.replace(partial, path)
    return tree


#: Values of the script's own series, as they might be on the bar that fires an order.
SERIES = {
    "proxyLongProbability": 0.72,
    "longChecks": 6,
    "shortChecks": 2,
    "sentimentScore": 0.1,
    "kellyMultiplier": 0.5,
    "rewardRisk": 3.5 / 2.5,
    "maxPositionPct": 10.0,
    "stopAtrMult": 2.5,
    "takeProfitAtrMult": 3.5,
    "atr": 300.0,
    "close": 30_000.0,
    "bar_index": 4321,
}

#: The strategy's inputs for the optional alert fields (trailing stop, leverage, margin mode).
OPTION_INPUTS = ("trailingStopAtrMult", "leverageInput", "marginModeInput")


def input_scope(script: PineScript, **overrides: Any) -> dict[str, Any]:
    """The optional-field inputs at the script's defaults, except those the trader set."""
    names = [name for name in OPTION_INPUTS if f"{name} = input." in script.source]
    return {**{name: script.input_default(name) for name in names}, **overrides}
