"""The base of every configuration model and the value types sections share.

Models are frozen, reject unknown keys and read camelCase keys (``diskSizeGiB``); Python code may also
pass field names. Values given on the command line (``-c key=value``) arrive as strings: the types here
read ``"3"`` as an integer, ``"true"``/``"false"`` as booleans, ``"a,b"`` as a list and a JSON object
string as a map, and nothing looser (``"yes"`` is not a boolean, ``true`` is not a count).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ModelWrapValidatorHandler,
    Strict,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .errors import Allowed, Invalid, Rule, as_given, from_validation_error, matches

#: Top-level key (and validation-context key) that marks a production environment: sections resolve their
#: production defaults from it, config/app.py applies the production rules.
PRODUCTION = "production"


def is_production(context: Mapping[str, Any] | None) -> bool:
    """Whether the section being validated belongs to a production environment (the validation context)."""
    return bool((context or {}).get(PRODUCTION, False))


class ConfigModel(BaseModel):
    """Frozen, strict about unknown keys, camelCase keys. ``path``: the model's dotted context key."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
    )

    #: Where the model lives in the context (``inference.autoscaling``); "" for models used in several places.
    path: ClassVar[str] = ""

    @classmethod
    def dependent_defaults(cls, given: Given) -> Mapping[str, Any]:
        """Defaults that depend on other keys, by camelCase key: a value, or for a sub-section a JSON object
        laid under what is given. Sections override this; ``given`` reads the other keys' values."""
        return {}

    @model_validator(mode="wrap")
    @classmethod
    def _resolve_dependent_defaults(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        if not isinstance(data, Mapping):
            return handler(data)
        defaults = cls.dependent_defaults(Given(cls, data, info.context or {}))
        resolved = dict(data)
        filled: dict[str, set[str]] = {}  # field -> the keys of its sub-section filled in ({} for a value)
        for key, default in defaults.items():
            name = _field_name(cls, key) or key
            present = next((k for k in (key, name) if k in data), None)
            section = _is_section(cls, name) and isinstance(default, Mapping)
            if present is None:
                resolved[key] = default
                filled[name] = set(default) if section else set()
            elif section and isinstance(data[present], Mapping):
                resolved[present] = with_defaults(data[present], default)
                filled[name] = set(default) - set(data[present])
        model = handler(resolved)
        # What was filled in here was not given: keep model_fields_set to the keys the user wrote.
        for name, keys in filled.items():
            if name not in data and _field_alias(cls, name) not in data:
                model.__pydantic_fields_set__.discard(name)
            if keys:
                sub = getattr(model, name)
                sub.__pydantic_fields_set__.difference_update(_field_name(type(sub), k) or k for k in keys)
        return model

    @classmethod
    def load(cls, data: Any = None, *, context: Mapping[str, Any] | None = None) -> Self:
        """Validate raw context data (camelCase keys); raise :class:`ConfigError` naming every bad key."""
        try:
            return cls.model_validate({} if data is None else data, context=dict(context or {}))
        except ValidationError as error:
            raise from_validation_error(error, cls, cls.path) from None


class Given:
    """The raw keys of a section being validated, read as their fields would read them."""

    def __init__(self, model: type[ConfigModel], data: Mapping[str, Any], context: Mapping[str, Any]) -> None:
        self._model, self._data, self.context = model, data, context

    def _keys(self, name: str) -> tuple[str, ...]:
        alias = self._model.model_fields[name].alias
        return (alias, name) if alias else (name,)

    def raw(self, name: str) -> Any:
        """Field ``name`` as given (by key or field name); None when absent."""
        return next((self._data[k] for k in self._keys(name) if k in self._data), None)

    def value(self, name: str) -> Any:
        """Field ``name``'s value as validation will read it; its default when absent or invalid (the
        invalid value is reported by the field itself)."""
        field = self._model.model_fields[name]
        for key in self._keys(name):
            if key in self._data:
                try:
                    return _adapter(self._model, name).validate_python(self._data[key])
                except ValidationError:
                    break
        return field.get_default(call_default_factory=True, validated_data={})


@functools.cache
def _adapter(model: type[ConfigModel], name: str) -> TypeAdapter[Any]:
    field = model.model_fields[name]
    annotation: Any = field.annotation
    return TypeAdapter(Annotated[annotation, *field.metadata] if field.metadata else annotation)


def _field_name(model: type[BaseModel], key: str) -> str | None:
    return next((n for n, f in model.model_fields.items() if key in (n, f.alias)), None)


def _field_alias(model: type[BaseModel], name: str) -> str | None:
    field = model.model_fields.get(name)
    return field.alias if field else None


def _is_section(model: type[BaseModel], name: str) -> bool:
    field = model.model_fields.get(name)
    return (
        field is not None and isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    )


def with_defaults(value: Any, defaults: Mapping[str, Any]) -> Any:
    """Raw ``value`` of a sub-section laid over ``defaults`` that depend on other keys (camelCase).

    A model instance contributes the keys that were set explicitly; anything that is not a JSON object
    is returned as is, for the field's own validation to report.
    """
    if isinstance(value, BaseModel):
        value = value.model_dump(by_alias=True, exclude_unset=True)
    if value is None:
        value = {}
    if isinstance(value, Mapping):
        return {**defaults, **value}
    return value


# ------------------------------------------------------------------ readers of `-c` strings


def _int(value: Any) -> Any:
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return value


def _bool(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _json_object(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _read_only(value: dict[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(value))


def _no_duplicates(items: tuple[Any, ...]) -> tuple[Any, ...]:
    if len(set(items)) != len(items):
        raise Invalid("a list without duplicates", value=as_given(items))
    return items


#: ``Annotated`` metadata of list fields: ``-c key=a,b`` is the list ``["a", "b"]`` (``-c key=`` is empty).
CommaSeparated = BeforeValidator(_split_commas)
#: ``Annotated`` metadata of list fields whose items must not repeat.
Unique = AfterValidator(_no_duplicates)

#: An integer; ``"3"`` from the command line too, never a boolean or a float.
Int = Annotated[int, BeforeValidator(_int), Strict()]
#: ``true``/``false`` (also the strings, any case); nothing else.
Bool = Annotated[bool, BeforeValidator(_bool), Strict()]
#: A non-empty string.
Str = Annotated[str, Strict(), Rule(bool, "a non-empty string")]
_STR_LIST = "a list of non-empty strings"
#: A list of non-empty strings (``"a,b"`` from the command line).
StrList = Annotated[
    tuple[Annotated[str, Strict(), Rule(bool, _STR_LIST), Allowed(_STR_LIST)], ...],
    CommaSeparated,
    Allowed(_STR_LIST),
]
#: A JSON object of string to string (``-c 'key={"a":"b"}'`` is parsed as JSON), read-only.
StrMap = Annotated[
    dict[Annotated[str, Strict()], Annotated[str, Strict()]],
    BeforeValidator(_json_object),
    AfterValidator(_read_only),
    Allowed("a JSON object of string to string"),
]

# ------------------------------------------------------------------ shared value types

CIDR_ALLOWED = "an IPv4 CIDR with host bits zero, such as 10.0.0.0/16"


def cidr_prefix(value: str) -> int | None:
    """The prefix length written after the ``/`` of ``value`` (None when there is none, or no number)."""
    _, slash, prefix = value.partition("/")
    return int(prefix) if slash and prefix.isdigit() else None


def is_ipv4_cidr(value: str) -> bool:
    """An IPv4 network written as ADDRESS/PREFIX with host bits zero."""
    try:
        return "/" in value and ipaddress.ip_network(value, strict=True).version == 4
    except ValueError:
        return False


def check_cidr(value: str, low: int = 0, high: int = 32, why: str = "") -> str:
    """``value`` if it is an IPv4 CIDR with a prefix from ``low`` to ``high`` and host bits zero; else
    raise :class:`Invalid` naming what is wrong (the prefix, or the host bits)."""
    prefix = cidr_prefix(value)
    if prefix is not None and not low <= prefix <= high:
        raise Invalid(f"an IPv4 CIDR with a prefix from /{low} to /{high}{why}, such as 10.0.0.0/16")
    if not is_ipv4_cidr(value):
        raise Invalid(CIDR_ALLOWED)
    return value


#: An IPv4 network in CIDR form with host bits zero.
Cidr = Annotated[str, Strict(), AfterValidator(check_cidr), Allowed(CIDR_ALLOWED)]

#: CloudWatch Logs accepts only these retention values.
LOG_RETENTION_DAYS: tuple[int, ...] = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip
#: A CloudWatch Logs retention in days.
LogRetentionDays = Annotated[
    int,
    BeforeValidator(_int),
    Strict(),
    Rule(LOG_RETENTION_DAYS.__contains__, f"one of {list(LOG_RETENTION_DAYS)}"),
]

#: A 12-digit AWS account id.
ACCOUNT_PATTERN = r"\d{12}"
#: An AWS region name (commercial, GovCloud, ISO partitions).
REGION_PATTERN = r"[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d"
#: An AWS region name.
Region = Annotated[str, Strict(), matches(REGION_PATTERN, "an AWS region name such as us-west-2")]
#: A duration as Karpenter reads it.
Duration = Annotated[str, Strict(), matches(r"([0-9]+(s|m|h))+", "a duration such as 30s, 5m or 720h")]
#: Secrets Manager secret ARN.
SECRET_ARN_PATTERN = r"arn:aws(-cn|-us-gov)?:secretsmanager:[a-z]{2}(-gov)?-[a-z]+-\d:\d{12}:secret:.+"
#: A DNS label of at most 40 characters (Kubernetes names this product derives longer names from).
DNS_LABEL_PATTERN = r"[a-z]([-a-z0-9]{0,38}[a-z0-9])?"
