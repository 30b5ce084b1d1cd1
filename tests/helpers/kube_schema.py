"""kubernetes-validate's strict schemas with each (version, apiVersion, kind) loaded and compiled once.

``kubernetes_validate.validate`` re-reads its ~2 MB ``_definitions.json`` on every call (tens of ms per
object); rendered Helm charts hold hundreds of objects. :func:`validate` uses the same schema files and
the same version resolution, and raises the same errors, with the validator cached.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import jsonschema
import kubernetes_validate
from kubernetes_validate import utils
from referencing import Registry, Resource


@functools.cache
def _schema_version(desired: str) -> str:
    """The newest shipped schema version not newer than ``desired`` (kubernetes_validate's rule)."""
    wanted = tuple(int(p) for p in utils.major_minor(desired.removeprefix("v")).split("."))
    shipped = [
        v for v in utils.all_versions() if tuple(int(p) for p in utils.major_minor(v).split(".")) <= wanted
    ]
    if not shipped:
        raise kubernetes_validate.VersionNotSupportedError(version=desired)
    return shipped[-1]


@functools.cache
def _validator(version: str, api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    schema_dir = f"kubernetes-json-schema/v{version}-local-strict"
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = utils.schema_contents(f"{schema_dir}/{kind.lower()}-{api}.json", version)
    except FileNotFoundError:
        raise kubernetes_validate.SchemaNotFoundError(
            version=utils.major_minor(version), kind=kind, api_version=api_version
        ) from None
    definitions = _definitions(schema_dir, version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


@functools.cache
def _definitions(schema_dir: str, version: str) -> Any:
    return utils.schema_contents(f"{schema_dir}/_definitions.json", version)


def validate(obj: Mapping[str, Any], desired_version: str) -> str:
    """Strictly validate one built-in object at ``desired_version``; return the schema version used.

    Raises ``kubernetes_validate.SchemaNotFoundError`` for a kind it has no schema for and
    ``kubernetes_validate.ValidationError`` for an invalid object, like ``kubernetes_validate.validate``.
    """
    version = _schema_version(desired_version)
    validator = _validator(version, obj["apiVersion"], obj["kind"])
    try:
        validator.validate(obj)
    except jsonschema.ValidationError as err:
        raise kubernetes_validate.ValidationError(err, version=utils.major_minor(version)) from None
    return utils.major_minor(version)


def is_builtin(api_version: str, kind: str, desired_version: str) -> bool:
    """True when kubernetes-validate has a schema for this kind at ``desired_version`` (not a CRD)."""
    try:
        _validator(_schema_version(desired_version), api_version, kind)
    except kubernetes_validate.SchemaNotFoundError:
        return False
    return True
