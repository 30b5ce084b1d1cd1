"""The one error type of configuration loading, and its translation from pydantic's validation errors.

Every message names the key (the dotted path in ``cdk.json`` context), the bad value and what is allowed::

    Invalid config 'network.vpcCidr': '10.0.0.0/33'. Allowed: an IPv4 CIDR with a prefix from /16 to /24 ...

Several bad values are reported together, one line each.
"""

from __future__ import annotations

import enum
import re
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, GetCoreSchemaHandler, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import core_schema

_UNSET: Any = object()


@dataclass(frozen=True)
class Problem:
    """One bad value: its dotted key, the value as given and what is allowed."""

    key: str
    value: Any
    allowed: str

    def __str__(self) -> str:
        return f"Invalid config '{self.key}': {self.value!r}. Allowed: {self.allowed}."


class ConfigError(ValueError):
    """One or more configuration values are invalid.

    ``key``, ``value`` and ``allowed`` describe the first problem; ``problems`` lists all of them.
    """

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.problems: tuple[Problem, ...] = (Problem(key, value, allowed),)
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(str(self.problems[0]))

    @classmethod
    def of(cls, problems: Sequence[Problem]) -> ConfigError:
        """One error for several problems (at least one); the message lists every one."""
        first, *rest = problems
        error = cls(first.key, first.value, first.allowed)
        if rest:
            error.problems = tuple(problems)
            error.args = (
                f"{len(problems)} invalid config values:\n" + "\n".join(f"- {p}" for p in problems),
            )
        return error


def as_given(value: Any) -> Any:
    """A validated value as the user wrote it: enum members as their values, tuples as lists."""
    if isinstance(value, tuple | list):
        return [as_given(v) for v in value]
    return value.value if isinstance(value, enum.Enum) else value


class Invalid(ValueError):
    """Raised by a validator: what is allowed, and optionally the absolute key and the value to report.

    Without ``key`` the problem is reported at the validated field's key; without ``value``, with the
    value pydantic saw. Cross-field validators name the key to blame (``key="network.vpcCidr"``).
    """

    def __init__(self, allowed: str, *, key: str | None = None, value: Any = _UNSET) -> None:
        super().__init__(allowed)
        self.allowed, self.key, self.value = allowed, key, value


class Invalids(ValueError):
    """Several problems found by one validator (every one is reported)."""

    def __init__(self, problems: Iterable[Invalid]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(p.allowed for p in self.problems))


def raise_all(problems: Sequence[Invalid]) -> None:
    """Raise the problems found by a validator, if any: one as :class:`Invalid`, several together."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise Invalids(problems)


class Allowed:
    """``Annotated`` metadata: what a type allows, in words (error messages and the docs' tables)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Allowed({self.text!r})"


@dataclass(frozen=True)
class Rule:
    """``Annotated`` metadata: a value must pass ``test``; ``allowed`` says what is allowed, in words."""

    test: Callable[[Any], object]
    allowed: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def _check(self, value: Any) -> Any:
        if not self.test(value):
            raise Invalid(self.allowed, value=as_given(value))
        return value


def matches(pattern: str, allowed: str) -> Rule:
    """A :class:`Rule` for strings that match ``pattern`` as a whole."""
    return Rule(re.compile(pattern).fullmatch, allowed)


# ------------------------------------------------------------------ pydantic errors -> problems


def from_validation_error(error: ValidationError, model: type[BaseModel], prefix: str = "") -> ConfigError:
    """Translate pydantic's errors for ``model`` (validated at dotted key ``prefix``) into one ConfigError."""
    problems: dict[str, Problem] = {}
    for detail in error.errors(include_url=False):
        for problem in _problems(detail, model, prefix):
            problems.setdefault(
                problem.key, problem
            )  # the first problem of each key (a list's first bad item)
    return ConfigError.of(list(problems.values()))


def _dotted(prefix: str, loc: Sequence[Any]) -> str:
    parts = [prefix] if prefix else []
    parts += [str(p) for p in loc if not isinstance(p, int)]
    return ".".join(parts)


def _problems(detail: Mapping[str, Any], model: type[BaseModel], prefix: str) -> list[Problem]:
    loc = tuple(detail["loc"])
    value = detail.get("input")
    kind = detail["type"]
    if kind == "value_error":
        raised = detail.get("ctx", {}).get("error")
        found = raised.problems if isinstance(raised, Invalids) else [raised]
        if all(isinstance(p, Invalid) for p in found):
            return [
                Problem(
                    p.key or _dotted(prefix, loc),
                    value if p.value is _UNSET else p.value,
                    p.allowed,
                )
                for p in found
            ]
    key = _dotted(prefix, loc)
    if kind == "missing":
        return [Problem(key, None, "a value is required")]
    if kind == "extra_forbidden":
        parent = _resolve(model, loc[:-1])
        owner = _model_of(parent.annotation) if parent else None
        known = sorted(_key_names(owner)) if owner else []
        where = _dotted(prefix, loc[:-1]) or "<root>"
        return [Problem(key, value, f"known keys of '{where}' are {known}")]
    if kind in ("model_type", "model_attributes_type"):
        return [Problem(key, value, "a JSON object")]
    target = _resolve(model, loc)
    return [Problem(key, value, allowed_text(target, error_type=kind) if target else detail["msg"])]


@dataclass(frozen=True)
class _Target:
    annotation: Any
    metadata: tuple[Any, ...]
    item: bool  # a list item, not the list itself


def _split(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    """``Annotated[T, m1, m2]`` -> (T, (m1, m2)), recursively; ``T | None`` -> T."""
    metadata: tuple[Any, ...] = ()
    while True:
        if get_origin(annotation) is Annotated:
            base, *extra = get_args(annotation)
            annotation, metadata = base, metadata + tuple(extra)
            continue
        if get_origin(annotation) in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation, metadata


def _model_of(annotation: Any) -> type[BaseModel] | None:
    base, _ = _split(annotation)
    return base if isinstance(base, type) and issubclass(base, BaseModel) else None


def _key_names(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _field(model: type[BaseModel], key: str) -> FieldInfo | None:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field
    return None


def _resolve(model: type[BaseModel], loc: Sequence[Any]) -> _Target | None:
    """The declared type (and its metadata) at ``loc`` inside ``model``."""
    target = _Target(model, (), item=False)
    for part in loc:
        base, _ = _split(target.annotation)
        owner = _model_of(base)
        if isinstance(part, str) and owner is not None:
            field = _field(owner, part)
            if field is None:
                return None
            annotation, extra = _split(field.annotation)
            target = _Target(annotation, tuple(field.metadata) + extra, item=False)
        elif isinstance(part, int) and get_origin(base) in (tuple, list):
            annotation, extra = _split(get_args(base)[0])
            target = _Target(annotation, extra, item=True)
        elif isinstance(part, str) and get_origin(base) in (dict, Mapping):
            annotation, extra = _split(get_args(base)[1])
            target = _Target(annotation, extra, item=True)
        else:
            return None
    return target


def _choices(annotation: Any) -> list[Any] | None:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return sorted(m.value for m in annotation)
    if get_origin(annotation) is Literal:
        return sorted(get_args(annotation))
    return None


def int_range(minimum: int | None, maximum: int | None) -> str:
    """``an integer from 1 to 450`` and its one-sided forms."""
    if minimum is not None and maximum is not None:
        return f"an integer from {minimum} to {maximum}"
    if minimum is not None:
        return f"an integer >= {minimum}"
    if maximum is not None:
        return f"an integer <= {maximum}"
    return "an integer"


def _bounds(metadata: Iterable[Any]) -> tuple[int | None, int | None]:
    low: int | None = None
    high: int | None = None
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            low = int(m.ge)  # type: ignore[call-overload]
        elif isinstance(m, annotated_types.Gt):
            low = int(m.gt) + 1  # type: ignore[call-overload]
        elif isinstance(m, annotated_types.Le):
            high = int(m.le)  # type: ignore[call-overload]
        elif isinstance(m, annotated_types.Lt):
            high = int(m.lt) - 1  # type: ignore[call-overload]
    return low, high


def _explicit(metadata: Iterable[Any]) -> str | None:
    texts = [
        m.text if isinstance(m, Allowed) else m.allowed for m in metadata if isinstance(m, Allowed | Rule)
    ]
    return texts[-1] if texts else None


def allowed_text(target: _Target | FieldInfo, *, error_type: str | None = None) -> str:
    """What a declared type allows, in words: its :class:`Allowed` text, else derived from the type."""
    if isinstance(target, FieldInfo):
        annotation, extra = _split(target.annotation)
        target = _Target(annotation, tuple(target.metadata) + extra, item=False)
    base, metadata = target.annotation, target.metadata
    origin = get_origin(base)
    if origin in (tuple, list):
        if error_type in ("too_short",):
            return "a non-empty list"
        explicit = _explicit(metadata)
        if explicit:
            return explicit
        item, item_metadata = _split(get_args(base)[0])
        choices = _choices(item)
        if choices is not None:
            return f"items from {choices}"
        return _explicit(item_metadata) or "a list of non-empty strings"
    explicit = _explicit(metadata)
    if explicit:
        return explicit
    choices = _choices(base)
    if choices is not None:
        return f"items from {choices}" if target.item else f"one of {choices}"
    if base is bool:
        return "true or false"
    if base is int:
        return int_range(*_bounds(metadata))
    if origin in (dict, Mapping):
        return "a JSON object of string to string"
    return "a non-empty string"
