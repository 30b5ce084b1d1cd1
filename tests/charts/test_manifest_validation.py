"""Every object the inference chart renders validates against a real schema.

Core kinds: kubernetes-validate's strict schemas (unknown fields are errors) for every Kubernetes version
the app supports (config/versions.py; kubernetes-validate 1.37.0 ships 1.25-1.37). Custom
resources: the served CRD schema of ../shared/crds (tests/helpers/crd_schema.py, strict).
"""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from config.versions import DEFAULT_KUBERNETES_VERSION, SUPPORTED_VERSIONS
from tests.charts.manifests import VARIANTS, Manifests, one
from tests.helpers import crd_schema

CUSTOM_KINDS = {"ScaledObject", "ServiceMonitor", "VerticalPodAutoscaler"}


def test_every_supported_version_has_schemas() -> None:
    shipped = set(kubernetes_validate.utils.all_versions())
    for version in SUPPORTED_VERSIONS:
        assert any(v.startswith(f"{version}.") for v in shipped), version


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_core_objects_validate_strictly(rendered: dict[str, Manifests], variant: str, version: str) -> None:
    core = [m for m in rendered[variant] if m["kind"] not in CUSTOM_KINDS]
    assert core
    for manifest in core:
        validated = kubernetes_validate.validate(manifest, version, strict=True)
        assert validated == version  # the schema of exactly this version was used


@pytest.mark.parametrize("variant", VARIANTS)
def test_custom_resources_validate_against_crds(rendered: dict[str, Manifests], variant: str) -> None:
    custom = [m for m in rendered[variant] if m["kind"] in CUSTOM_KINDS]
    for manifest in custom:
        crd_schema.validate(manifest)


def test_all_custom_kinds_are_covered(rendered: dict[str, Manifests]) -> None:
    kinds = {m["kind"] for manifests in rendered.values() for m in manifests}
    assert kinds >= CUSTOM_KINDS


def test_validator_rejects_a_broken_deployment(default: Manifests) -> None:
    # The strict schema catches a typo the API server would silently prune.
    broken = copy.deepcopy(one(default, "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, DEFAULT_KUBERNETES_VERSION, strict=True)


def test_validator_rejects_a_broken_scaled_object(default: Manifests) -> None:
    broken = copy.deepcopy(one(default, "ScaledObject"))
    broken["spec"]["minReplicas"] = 0  # HPA spelling; KEDA's field is minReplicaCount
    with pytest.raises(crd_schema.CrdValidationError):
        crd_schema.validate(broken)
