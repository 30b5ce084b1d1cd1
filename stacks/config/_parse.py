"""Typed readers over one section of the raw context dictionary.

Each reader returns a typed value or raises :class:`ConfigError` naming the full dotted key. A section
rejects keys it does not know (a typo must fail synth, not be silently ignored).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigError

_MISSING: Any = object()


class Section:
    """Read-only view of one mapping in the context, e.g. ``network`` -> ``Section(data, "network")``."""

    def __init__(self, data: Mapping[str, Any] | None, path: str = "") -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(path or "<root>", data, "a JSON object")
        self._data = data
        self._path = path
        self._read: set[str] = set()

    def key(self, name: str) -> str:
        """The dotted path of ``name`` in this section (used in error messages)."""
        return f"{self._path}.{name}" if self._path else name

    def has(self, name: str) -> bool:
        return name in self._data

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        self._read.add(name)
        if name in self._data and self._data[name] is not None:
            return self._data[name]
        if default is _MISSING:
            raise ConfigError(self.key(name), None, "a value is required")
        return default

    def section(self, name: str) -> Section:
        return Section(self.raw(name, {}), self.key(name))

    def string(self, name: str, default: Any = _MISSING, choices: Iterable[str] | None = None) -> str:
        value = self.raw(name, default)
        allowed = sorted(choices) if choices is not None else None
        if not isinstance(value, str) or not value:
            raise ConfigError(self.key(name), value, f"one of {allowed}" if allowed else "a non-empty string")
        if allowed is not None and value not in allowed:
            raise ConfigError(self.key(name), value, f"one of {allowed}")
        return value

    def integer(
        self, name: str, default: Any = _MISSING, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self.raw(name, default)
        # `-c key=3` arrives as the string "3".
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value.strip())
        # bool is an int in Python; "true" for a count is always a mistake.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(name), value, _int_range(minimum, maximum))
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise ConfigError(self.key(name), value, _int_range(minimum, maximum))
        return value

    def boolean(self, name: str, default: Any = _MISSING) -> bool:
        value = self.raw(name, default)
        # `-c key=false` arrives as the string "false".
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(self.key(name), value, "true or false")
        return value

    def cidr(self, name: str, default: Any = _MISSING) -> str:
        value = self.raw(name, default)
        return check_cidr(self.key(name), value)

    def string_list(self, name: str, default: Any = _MISSING, *, non_empty: bool = True) -> tuple[str, ...]:
        value = self.raw(name, default)
        if isinstance(value, str):  # `-c key=a,b` arrives as one string
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(self.key(name), value, "a list of non-empty strings")
        if non_empty and not value:
            raise ConfigError(self.key(name), value, "a non-empty list")
        return tuple(value)

    def string_map(self, name: str, default: Any = _MISSING) -> dict[str, str]:
        """A JSON object of string -> string (e.g. labels, tags); `-c key='{"a":"b"}'` is parsed as JSON."""
        value = self.raw(name, default)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ConfigError(self.key(name), value, "a JSON object of string to string") from None
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in value.items()
        ):
            raise ConfigError(self.key(name), value, "a JSON object of string to string")
        return dict(value)

    def choice_list(
        self, name: str, choices: Iterable[str], default: Any = _MISSING, *, non_empty: bool = True
    ) -> tuple[str, ...]:
        """A list whose items all come from ``choices`` (duplicates rejected)."""
        allowed = sorted(choices)
        items = self.string_list(name, default, non_empty=non_empty)
        for item in items:
            if item not in allowed:
                raise ConfigError(self.key(name), item, f"items from {allowed}")
        if len(set(items)) != len(items):
            raise ConfigError(self.key(name), list(items), "a list without duplicates")
        return items

    def reject_unknown(self) -> None:
        """Fail on keys nobody read: call after reading every field of the section."""
        unknown = sorted(set(self._data) - self._read)
        if unknown:
            raise ConfigError(
                self.key(unknown[0]),
                self._data[unknown[0]],
                f"known keys of '{self._path or '<root>'}' are {sorted(self._read)}",
            )


def check_cidr(key: str, value: Any) -> str:
    """Return ``value`` if it is an IPv4 network in CIDR form (host bits zero), else raise."""
    allowed = "an IPv4 CIDR with host bits zero, such as 10.0.0.0/16"
    if not isinstance(value, str) or "/" not in value:
        raise ConfigError(key, value, allowed)
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ConfigError(key, value, allowed) from None
    if net.version != 4:
        raise ConfigError(key, value, allowed)
    return value


def _int_range(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"an integer from {minimum} to {maximum}"
    if minimum is not None:
        return f"an integer >= {minimum}"
    if maximum is not None:
        return f"an integer <= {maximum}"
    return "an integer"
