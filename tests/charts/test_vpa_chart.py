"""The VPA add-on's objects (charts/vpa.py): the vendored CRDs (the exact upstream file), the recommender's
RBAC pinned rule by rule, its Deployment (restricted Pod Security, probes, resources, system nodes), every
object strictly schema-validated, and the product's VPAs validated against the vendored CRD."""

from __future__ import annotations

import copy
from typing import Any

import cdk8s
import kubernetes_validate
import pytest
import yaml

from charts.vpa import (
    CRD_FILE,
    RECOMMENDER_IMAGE,
    VpaCrds,
    VpaRecommender,
    VpaRecommenderProps,
)
from config.addons import VPA_VERSION
from config.versions import SUPPORTED_VERSIONS
from tests.charts.manifests import Manifests, by_kind, one
from tests.helpers import crd_schema
from tests.helpers.crd_schema import CRD_DIR

SYSTEM = {"llama-eks/node-class": "system"}
VENDORED_DIR = CRD_FILE.parent

#: The recommender's ClusterRoles, rule for rule (upstream's vpa-rbac.yaml for the recommender, narrowed).
RULES: dict[str, list[dict[str, list[str]]]] = {
    "vpa-recommender:metrics-reader": [
        {"apiGroups": ["metrics.k8s.io"], "resources": ["pods"], "verbs": ["get", "list"]},
    ],
    "vpa-recommender:actor": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": ["autoscaling.k8s.io"],
            "resources": ["verticalpodautoscalers"],
            "verbs": ["get", "list", "watch"],
        },
    ],
    "vpa-recommender:status-actor": [
        {
            "apiGroups": ["autoscaling.k8s.io"],
            "resources": ["verticalpodautoscalers/status"],
            "verbs": ["get", "patch"],
        },
    ],
    "vpa-recommender:checkpoint-actor": [
        {
            "apiGroups": ["autoscaling.k8s.io"],
            "resources": ["verticalpodautoscalercheckpoints"],
            "verbs": ["get", "list", "watch", "create", "patch", "delete"],
        },
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list"]},
    ],
    "vpa-recommender:target-reader": [
        {"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["get", "watch"]},
        {"apiGroups": [""], "resources": ["replicationcontrollers"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": ["apps"],
            "resources": ["daemonsets", "deployments", "replicasets", "statefulsets"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["get", "list", "watch"]},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def crds() -> Manifests:
    return cdk8s.Testing.synth(VpaCrds(cdk8s.Testing.app(), "VpaCrds"))


@pytest.fixture(scope="module")
def recommender() -> Manifests:
    return cdk8s.Testing.synth(
        VpaRecommender(cdk8s.Testing.app(), "VpaRecommender", props=VpaRecommenderProps(SYSTEM))
    )


def _pod(recommender: Manifests) -> dict[str, Any]:
    return one(recommender, "Deployment")["spec"]["template"]["spec"]


# --- the CRDs -----------------------------------------------------------------------------------------------


@pytest.mark.skipif(not CRD_DIR.is_dir(), reason="../shared is not checked out beside the repository")
def test_the_vendored_crd_file_is_shareds_byte_for_byte() -> None:
    assert CRD_FILE.read_bytes() == (CRD_DIR / CRD_FILE.name).read_bytes()


def test_the_readme_names_the_upstream_tag_of_the_vendored_file() -> None:
    readme = (VENDORED_DIR / "README.md").read_text()
    assert f"| {CRD_FILE.name} | kubernetes/autoscaler | vertical-pod-autoscaler-{VPA_VERSION} " in readme


def test_crds_are_the_files_documents_unchanged(crds: Manifests) -> None:
    assert crds == list(yaml.safe_load_all(CRD_FILE.read_text()))
    assert [(c["kind"], c["metadata"]["name"]) for c in crds] == [
        ("CustomResourceDefinition", "verticalpodautoscalercheckpoints.autoscaling.k8s.io"),
        ("CustomResourceDefinition", "verticalpodautoscalers.autoscaling.k8s.io"),
    ]


def test_the_vendored_crds_serve_the_vpa_kinds_the_charts_emit() -> None:
    assert set(crd_schema.served_schemas(VENDORED_DIR)) == {
        ("autoscaling.k8s.io/v1", "VerticalPodAutoscaler"),
        ("autoscaling.k8s.io/v1", "VerticalPodAutoscalerCheckpoint"),
    }


def test_a_vendored_file_of_another_shape_fails_in_the_constructor(monkeypatch, tmp_path) -> None:
    import charts.vpa

    only_one = tmp_path / CRD_FILE.name
    only_one.write_text(CRD_FILE.read_text().split("\n---\n")[0])
    monkeypatch.setattr(charts.vpa, "CRD_FILE", only_one)
    with pytest.raises(ValueError) as info:
        VpaCrds(cdk8s.Testing.app(), "VpaCrds")
    assert str(info.value) == (
        "VpaCrds: autoscaling.k8s.io_verticalpodautoscalers.yaml holds "
        "('verticalpodautoscalercheckpoints.autoscaling.k8s.io',); expected "
        "('verticalpodautoscalercheckpoints.autoscaling.k8s.io', 'verticalpodautoscalers.autoscaling.k8s.io')"
    )


# --- every object, strictly ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_every_object_validates_strictly(crds: Manifests, recommender: Manifests, version: str) -> None:
    kinds = sorted({m["kind"] for m in crds + recommender})
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "ServiceAccount",
    ]
    for manifest in crds + recommender:
        assert kubernetes_validate.validate(manifest, version, strict=True) == version


def test_the_validator_rejects_a_misspelt_rule(recommender: Manifests) -> None:
    broken = copy.deepcopy(by_kind(recommender, "ClusterRole")[0])
    broken["rules"][0]["verb"] = broken["rules"][0].pop("verbs")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, SUPPORTED_VERSIONS[-1], strict=True)


# --- RBAC ---------------------------------------------------------------------------------------------------


def test_cluster_roles_are_pinned_rule_for_rule(recommender: Manifests) -> None:
    roles = {r["metadata"]["name"]: r["rules"] for r in by_kind(recommender, "ClusterRole")}
    assert roles == RULES
    # Only cluster-scoped roles: no leader-election lease Role (one replica, --leader-elect off).
    assert not by_kind(recommender, "Role") and not by_kind(recommender, "RoleBinding")


def test_least_privilege(recommender: Manifests) -> None:
    rules = [rule for role in by_kind(recommender, "ClusterRole") for rule in role["rules"]]
    writes = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        if verb not in ("get", "list", "watch")
    }
    # It writes only its own objects: the VPAs' status and its checkpoints. No pod evictions, no updates of
    # workloads, no events, no webhooks (updater and admission controller are not installed).
    assert writes == {
        ("autoscaling.k8s.io", "verticalpodautoscalers/status", "patch"),
        ("autoscaling.k8s.io", "verticalpodautoscalercheckpoints", "create"),
        ("autoscaling.k8s.io", "verticalpodautoscalercheckpoints", "patch"),
        ("autoscaling.k8s.io", "verticalpodautoscalercheckpoints", "delete"),
    }
    resources = {resource for rule in rules for resource in rule["resources"]}
    assert not resources & {"secrets", "configmaps", "pods/eviction", "nodes", "*"}
    assert all("poc.autoscaling.k8s.io" not in rule["apiGroups"] for rule in rules)


def test_each_role_is_bound_to_the_recommender_only(recommender: Manifests) -> None:
    bindings = by_kind(recommender, "ClusterRoleBinding")
    assert {b["metadata"]["name"] for b in bindings} == set(RULES)
    for binding in bindings:
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": binding["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "vpa-recommender", "namespace": "kube-system"}
        ]
    account = one(recommender, "ServiceAccount")["metadata"]
    assert (account["name"], account["namespace"]) == ("vpa-recommender", "kube-system")


# --- the Deployment -----------------------------------------------------------------------------------------


def test_recommender_deployment_as_upstream_on_the_system_nodes(recommender: Manifests) -> None:
    deployment = one(recommender, "Deployment")
    assert (deployment["metadata"]["name"], deployment["metadata"]["namespace"]) == (
        "vpa-recommender",
        "kube-system",
    )
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # never two recommenders at once
    assert deployment["spec"]["selector"] == {"matchLabels": {"app": "vpa-recommender"}}
    pod = _pod(recommender)
    assert pod["serviceAccountName"] == "vpa-recommender"
    assert pod["nodeSelector"] == SYSTEM
    (container,) = pod["containers"]
    assert container["image"] == RECOMMENDER_IMAGE == "registry.k8s.io/autoscaling/vpa-recommender:1.7.1"
    assert "args" not in container and "command" not in container  # upstream's defaults: no leader election
    assert container["resources"] == {
        "requests": {"cpu": "50m", "memory": "500Mi"},
        "limits": {"cpu": "200m", "memory": "1000Mi"},
    }


def test_probes_on_the_metrics_and_health_port(recommender: Manifests) -> None:
    (container,) = _pod(recommender)["containers"]
    assert container["ports"] == [{"name": "prometheus", "containerPort": 8942, "protocol": "TCP"}]
    get = {"path": "/health-check", "port": "prometheus", "scheme": "HTTP"}
    assert container["livenessProbe"] == {
        "httpGet": get,
        "initialDelaySeconds": 5,
        "periodSeconds": 10,
        "failureThreshold": 3,
    }
    assert container["readinessProbe"] == {"httpGet": get, "periodSeconds": 10, "failureThreshold": 3}


def test_restricted_pod_security(recommender: Manifests) -> None:
    pod = _pod(recommender)
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65534,
        "runAsGroup": 65534,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not {"hostNetwork", "hostPID", "hostIPC", "volumes", "initContainers"} & set(pod)


@pytest.mark.parametrize(
    ("props", "message"),
    [
        (
            VpaRecommenderProps({}),
            "VpaRecommenderProps.node_selector: {} is invalid; allowed: the system nodes' labels (the "
            "recommender must not run on the nodes it sizes)",
        ),
        (
            VpaRecommenderProps(SYSTEM, namespace="Kube_System"),
            "VpaRecommenderProps.namespace: 'Kube_System' is invalid; allowed: a DNS label",
        ),
    ],
)
def test_invalid_props_fail_in_the_constructor(props: VpaRecommenderProps, message: str) -> None:
    with pytest.raises(ValueError) as info:
        VpaRecommender(cdk8s.Testing.app(), "VpaRecommender", props=props)
    assert str(info.value) == message


# --- the product's VPAs against the vendored CRD ------------------------------------------------------------


def test_the_products_vpas_validate_against_the_vendored_crd(
    rendered: dict[str, Manifests], rendered_chat_ui: dict[str, Manifests]
) -> None:
    vpas = [
        m
        for manifests in [*rendered.values(), *rendered_chat_ui.values()]
        for m in by_kind(manifests, "VerticalPodAutoscaler")
    ]
    assert {v["metadata"]["name"] for v in vpas} == {"my-llama", "chatbot-ui-vpa"}
    for vpa in vpas:
        assert vpa["spec"]["updatePolicy"] == {"updateMode": "Off"}
        crd_schema.validate(vpa, VENDORED_DIR)
    broken = copy.deepcopy(vpas[0])
    broken["spec"]["updatePolicy"]["updateMode"] = "Evict"
    with pytest.raises(crd_schema.CrdValidationError):
        crd_schema.validate(broken, VENDORED_DIR)
