"""Strict validation of custom resources against their CRD's served ``openAPIV3Schema``.

The Kubernetes API server prunes unknown fields and applies ``default`` values; ``kubectl apply
--validate=strict`` rejects unknown fields. This validator is the strict variant, offline:

* unknown fields are errors, unless the schema node has ``x-kubernetes-preserve-unknown-fields: true``
  (an object schema without ``properties``/``additionalProperties`` accepts no fields at all);
* ``default`` values are applied (recursively, as the API server does) before validation, and the
  defaulted object is returned;
* ``nullable: true`` admits ``null``; anywhere else ``null`` is an error;
* ``x-kubernetes-int-or-string: true`` and ``format: int-or-string`` admit an integer or a string;
* ``metadata`` at the root is checked as ObjectMeta (name as a DNS subdomain, label values, known
  fields only), since CRD schemas leave it to the API server.

Not evaluated: ``x-kubernetes-validations`` (CEL rules). Karpenter and KEDA express a few constraints
only in CEL; :func:`cel_rules` lists them so tests can pin what they rely on.

Usage::

    from tests.helpers.crd_schema import validate, CrdValidationError
    defaulted = validate(manifest_dict)   # raises CrdValidationError listing every violation
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO.parent / "shared" / "crds"

_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_QUALIFIED_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)

# ObjectMeta as a client may send it (server-populated read-only fields are not accepted).
_OBJECT_META: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": _DNS_SUBDOMAIN},
        "generateName": {"type": "string"},
        "namespace": {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": {
            "type": "object",
            "propertyNames": {"pattern": _QUALIFIED_KEY},
            "additionalProperties": {"type": "string", "maxLength": 63, "pattern": _LABEL_VALUE},
        },
        "annotations": {
            "type": "object",
            "propertyNames": {"pattern": _QUALIFIED_KEY},
            "additionalProperties": {"type": "string"},
        },
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
    },
}


class CrdValidationError(ValueError):
    """A custom resource does not match its CRD; ``errors`` holds ``(json path, message)`` pairs."""

    def __init__(self, ident: str, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        lines = "\n".join(f"  {path}: {msg}" for path, msg in errors)
        super().__init__(f"{ident} is invalid against its CRD schema:\n{lines}")


def _is_object_schema(schema: Mapping[str, Any]) -> bool:
    return schema.get("type") == "object" or "properties" in schema


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Translate one structural OpenAPI v3 schema node (recursively) into strict JSON Schema (draft 4)."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: strict_schema(sub) for name, sub in value.items()}
        elif key in ("additionalProperties", "items") and isinstance(value, Mapping):
            out[key] = strict_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [strict_schema(sub) for sub in value]
        elif key == "not":
            out[key] = strict_schema(value)
        elif key == "pattern":
            out[key] = _python_pattern(value)
        elif key in ("nullable", "x-kubernetes-validations", "default", "description"):
            continue  # handled below, by defaulting, or not evaluated
        else:
            out[key] = copy.deepcopy(value)

    int_or_string = schema.get("x-kubernetes-int-or-string") or schema.get("format") == "int-or-string"
    if int_or_string:
        out.pop("format", None)
        if "anyOf" not in out:
            out["type"] = ["integer", "string"]
    preserve = schema.get("x-kubernetes-preserve-unknown-fields")
    if _is_object_schema(schema) and not preserve and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    if schema.get("nullable"):
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return {"anyOf": [{"type": "null"}, out]} if "anyOf" in out or "allOf" in out else out
    return out


def _python_pattern(pattern: str) -> str:
    """Go RE2 allows inline flags mid-pattern (``^(?i)(a|b)$``); Python only at the start."""
    for flag in ("(?i)", "(?s)", "(?m)"):
        if flag in pattern and not pattern.startswith(flag):
            pattern = flag + pattern.replace(flag, "")
    return pattern


def apply_defaults(schema: Mapping[str, Any], instance: Any) -> Any:
    """Fill ``default`` values into ``instance`` (in place) the way the API server defaults a request."""
    if isinstance(instance, dict):
        for name, sub in schema.get("properties", {}).items():
            if (name not in instance or (instance[name] is None and not sub.get("nullable"))) and (
                "default" in sub
            ):
                instance[name] = copy.deepcopy(sub["default"])
            if name in instance:
                apply_defaults(sub, instance[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            known = set(schema.get("properties", {}))
            for name, value in instance.items():
                if name not in known:
                    apply_defaults(extra, value)
    elif isinstance(instance, list) and isinstance(schema.get("items"), Mapping):
        for item in instance:
            apply_defaults(schema["items"], item)
    return instance


def _crd_documents(crd_dir: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(crd_dir.glob("*.yaml")):
        with path.open(encoding="utf-8") as fh:
            for doc in yaml.safe_load_all(fh):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    yield doc


def schemas_of(crds: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(apiVersion, kind): openAPIV3Schema}`` for every served version of the given CRD documents."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for crd in crds:
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


@functools.cache
def served_schemas(crd_dir: Path = CRD_DIR) -> dict[tuple[str, str], dict[str, Any]]:
    """``{(apiVersion, kind): openAPIV3Schema}`` for every served version of every CRD in ``crd_dir``."""
    if not crd_dir.is_dir():
        raise FileNotFoundError(f"CRD folder not found: {crd_dir} (expected ../shared/crds beside the repo)")
    return schemas_of(_crd_documents(crd_dir))


def _compile(api_version: str, kind: str, raw: Mapping[str, Any]) -> jsonschema.Draft4Validator:
    strict = strict_schema(raw)
    strict.setdefault("properties", {})
    strict["properties"]["metadata"] = _OBJECT_META
    strict["properties"]["apiVersion"] = {"enum": [api_version]}
    strict["properties"]["kind"] = {"enum": [kind]}
    strict["additionalProperties"] = False
    strict["required"] = sorted({*strict.get("required", []), "apiVersion", "kind", "metadata"})
    jsonschema.Draft4Validator.check_schema(strict)
    return jsonschema.Draft4Validator(strict, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)


def _unknown(api_version: str, kind: str, schemas: Mapping[tuple[str, str], Any]) -> CrdValidationError:
    known = sorted(f"{a} {k}" for a, k in schemas)
    return CrdValidationError(f"{kind} ({api_version})", [("", f"no served CRD version; known: {known}")])


@functools.cache
def _validator(
    api_version: str, kind: str, crd_dir: Path
) -> tuple[dict[str, Any], jsonschema.Draft4Validator]:
    schemas = served_schemas(crd_dir)
    if (api_version, kind) not in schemas:
        raise _unknown(api_version, kind, schemas)
    raw = schemas[(api_version, kind)]
    return raw, _compile(api_version, kind, raw)


def _ident(resource: Mapping[str, Any]) -> tuple[str, Any, Any]:
    api_version, kind = resource.get("apiVersion"), resource.get("kind")
    name = (resource.get("metadata") or {}).get("name", "<unnamed>")
    ident = f"{kind}/{name} ({api_version})"
    if not isinstance(api_version, str) or not isinstance(kind, str):
        raise CrdValidationError(ident, [("", "apiVersion and kind are required strings")])
    return ident, api_version, kind


def _check(
    ident: str, resource: Mapping[str, Any], raw: Mapping[str, Any], validator: jsonschema.Draft4Validator
) -> dict[str, Any]:
    defaulted = apply_defaults(raw, copy.deepcopy(dict(resource)))
    errors = sorted(
        ("$" + "".join(f"[{p!r}]" for p in err.absolute_path), err.message)
        for err in validator.iter_errors(defaulted)
    )
    if errors:
        raise CrdValidationError(ident, errors)
    return defaulted


def validate(resource: Mapping[str, Any], crd_dir: Path = CRD_DIR) -> dict[str, Any]:
    """Validate one custom resource strictly; return a defaulted copy or raise :class:`CrdValidationError`."""
    ident, api_version, kind = _ident(resource)
    raw, validator = _validator(api_version, kind, crd_dir)
    return _check(ident, resource, raw, validator)


class CrdSet:
    """The served versions of some CRD documents held in memory (e.g. the CRDs Helm charts install),
    each version's strict validator compiled once. ``validate`` behaves like :func:`validate`."""

    #: id(schema) -> (schema, validator): sets built from the same parsed CRDs share compiled validators.
    _compiled: ClassVar[dict[int, tuple[Mapping[str, Any], jsonschema.Draft4Validator]]] = {}

    def __init__(self, crds: Iterable[Mapping[str, Any]]) -> None:
        self.schemas = schemas_of(crds)

    def __contains__(self, api_version_kind: object) -> bool:
        return api_version_kind in self.schemas

    def validate(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        ident, api_version, kind = _ident(resource)
        raw = self.schemas.get((api_version, kind))
        if raw is None:
            raise _unknown(api_version, kind, self.schemas)
        if id(raw) not in self._compiled:
            self._compiled[id(raw)] = (raw, _compile(api_version, kind, raw))
        return _check(ident, resource, raw, self._compiled[id(raw)][1])


def validate_all(resources: Iterable[Mapping[str, Any]], crd_dir: Path = CRD_DIR) -> list[dict[str, Any]]:
    """Validate every custom resource (objects whose apiVersion has a CRD); return the defaulted ones."""
    known = {api for api, _ in served_schemas(crd_dir)}
    return [validate(r, crd_dir) for r in resources if r.get("apiVersion") in known]


def cel_rules(api_version: str, kind: str, crd_dir: Path = CRD_DIR) -> list[str]:
    """Every ``x-kubernetes-validations`` rule in the schema (not evaluated by :func:`validate`)."""
    rules: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            rules.extend(v["rule"] for v in node.get("x-kubernetes-validations", []))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(served_schemas(crd_dir)[(api_version, kind)])
    return rules
