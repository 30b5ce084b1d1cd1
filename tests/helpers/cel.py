"""Evaluate a CRD's CEL validation rules (``x-kubernetes-validations``) on a custom resource, offline.

The API server evaluates each rule with ``self`` bound to the value of the schema node that carries it,
for every value present in the object (each list item, each map value), after defaulting. This module
does the same with cel-python (the cloud-custodian implementation of CEL) plus the Kubernetes CEL
library functions the rules in ../shared/crds and the pinned charts' CRDs use:

* strings extension: ``split(separator)``; regex extension: ``find(regex)``, ``findAll(regex)`` (RE2);
* cel-python's standard library: ``has``, ``all``, ``exists``, ``exists_one``, ``filter``, ``map``,
  ``size``, ``matches``, ``startsWith``, ``endsWith``, ``contains``, ``in``, conversions.

Anything else (``quantity``, ``format``, ``url``, ``ip``, ``cidr``, optionals, ...) is refused before
evaluation with :class:`UnsupportedRule` naming the function, and so is a rule whose evaluation errors:
nothing passes silently. The one documented exception is :data:`UNSUPPORTED`: transition rules
(``oldSelf``) are evaluated by the API server on updates only, so on a create they are skipped and
reported in :attr:`Result.skipped`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import celpy
import re2
from celpy import celtypes
from lark import Token, Tree

#: Rules this evaluator does not evaluate, with why (checked by :func:`classify`).
UNSUPPORTED = {
    "transition": "references oldSelf: the API server evaluates transition rules on updates only, and "
    "these objects are created (a create has no old object)",
}


def _split(text: celtypes.StringType, separator: celtypes.StringType) -> celtypes.ListType:
    return celtypes.ListType([celtypes.StringType(p) for p in str(text).split(str(separator))])


def _find(text: celtypes.StringType, pattern: celtypes.StringType) -> celtypes.StringType:
    match = re2.search(str(pattern), str(text))
    return celtypes.StringType(match.group(0) if match else "")


def _find_all(text: celtypes.StringType, pattern: celtypes.StringType) -> celtypes.ListType:
    return celtypes.ListType([celtypes.StringType(m.group(0)) for m in re2.finditer(str(pattern), str(text))])


#: The Kubernetes CEL library functions implemented here.
KUBERNETES_FUNCTIONS = {"split": _split, "find": _find, "findAll": _find_all}
#: Macros and cel-python's standard functions the rules may use.
STANDARD_FUNCTIONS = frozenset(
    {"has", "all", "exists", "exists_one", "filter", "map", "size", "matches", "startsWith", "endsWith"}
    | {"contains", "int", "uint", "double", "string", "bool", "type", "duration", "timestamp"}
)
SUPPORTED_FUNCTIONS = STANDARD_FUNCTIONS | frozenset(KUBERNETES_FUNCTIONS)


class UnsupportedRule(ValueError):
    """A rule this evaluator cannot evaluate faithfully (unknown function, evaluation error)."""


@dataclass(frozen=True)
class Rule:
    rule: str
    message: str
    schema_path: str


@dataclass(frozen=True)
class Violation:
    path: str  # where in the object, e.g. "spec.template.spec.requirements[0].key"
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} (rule: {self.rule})"


@dataclass
class Result:
    violations: list[Violation] = field(default_factory=list)
    #: (path, rule, reason) of rules not evaluated (:data:`UNSUPPORTED`).
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    evaluated: int = 0


_ENV = celpy.Environment()


def _functions_used(tree: Tree) -> set[str]:
    names: set[str] = set()
    for node in tree.iter_subtrees():
        if node.data == "member_dot_arg":
            names.add(str(node.children[1]))
        elif node.data == "ident_arg":
            names.add(str(node.children[0]))
    return names


def _identifiers(tree: Tree) -> set[str]:
    return {
        str(child)
        for node in tree.iter_subtrees()
        if node.data == "ident"
        for child in node.children
        if isinstance(child, Token)
    }


@functools.cache
def classify(rule: str) -> str | None:
    """None when the rule is evaluated, else the :data:`UNSUPPORTED` key it falls under; raises
    :class:`UnsupportedRule` for a function this evaluator does not implement."""
    tree = _ENV.compile(rule)
    unknown = _functions_used(tree) - SUPPORTED_FUNCTIONS
    if unknown:
        raise UnsupportedRule(
            f"CEL rule uses {sorted(unknown)}, which tests/helpers/cel.py does not implement: {rule}"
        )
    if "oldSelf" in _identifiers(tree):
        return "transition"
    return None


@functools.cache
def _program(rule: str) -> celpy.Runner:
    return _ENV.program(_ENV.compile(rule), functions=KUBERNETES_FUNCTIONS)


def evaluate_rule(rule: str, value: Any) -> bool:
    """Evaluate one (non-transition) rule with ``self`` = ``value``."""
    classify(rule)
    try:
        result = _program(rule).evaluate({"self": celpy.json_to_cel(value)})
    except celpy.CELEvalError as err:
        raise UnsupportedRule(f"CEL rule failed to evaluate ({err.args[0]}): {rule}") from None
    if not isinstance(result, celtypes.BoolType):
        raise UnsupportedRule(f"CEL rule returned {result!r}, not a bool: {rule}")
    return bool(result)


def rules(schema: Mapping[str, Any], path: str = "") -> Iterator[Rule]:
    """Every rule in a structural schema, with the schema path that carries it."""
    for v in schema.get("x-kubernetes-validations", []):
        yield Rule(v["rule"], v.get("message") or f"failed rule: {v['rule']}", path or ".")
    for name, sub in (schema.get("properties") or {}).items():
        yield from rules(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), Mapping):
        yield from rules(schema["items"], f"{path}[*]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield from rules(schema["additionalProperties"], f"{path}[*]")


def evaluate(schema: Mapping[str, Any], value: Any, path: str = "") -> Result:
    """Every rule of ``schema`` (an ``openAPIV3Schema``) on ``value`` (a defaulted custom resource)."""
    result = Result()
    _walk(schema, value, path, result)
    return result


def _walk(schema: Mapping[str, Any], value: Any, path: str, result: Result) -> None:
    for v in schema.get("x-kubernetes-validations", []):
        rule = v["rule"]
        kind = classify(rule)
        if kind is not None:
            result.skipped.append((path or ".", rule, UNSUPPORTED[kind]))
            continue
        result.evaluated += 1
        if not evaluate_rule(rule, value):
            result.violations.append(Violation(path or ".", rule, v.get("message") or f"failed rule: {rule}"))
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for name, sub in value.items():
            if name in props:
                _walk(props[name], sub, f"{path}.{name}" if path else name, result)
            elif isinstance(extra, Mapping):
                _walk(extra, sub, f"{path}[{name!r}]", result)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            _walk(schema["items"], item, f"{path}[{index}]", result)
