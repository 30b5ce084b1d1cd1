"""Metrics on EKS as deployed in env=dev and env=prod: Prometheus on an encrypted gp3 volume from the EBS CSI
driver (a managed add-on with Pod Identity), resource requests, a generated Grafana admin password, and no
monitors for the control-plane components EKS runs (their absent() alerts would fire forever)."""

from __future__ import annotations

import re

import pytest
import yaml
from aws_cdk.assertions import Match, Template

from config import ConfigError, load_config
from config.addons import KUBE_PROMETHEUS_STACK_CHART
from tests.conftest import cdk_json_context
from tests.helpers.crd_schema import REPO, validate
from tests.stacks.addons._cfn import helm_releases, manifests, one, resources

CHART = REPO.parent / "shared" / "charts" / f"kube-prometheus-stack-{KUBE_PROMETHEUS_STACK_CHART}"
OPERATOR_CRDS = CHART / "charts" / "crds" / "crds"
ENVS = ["synthesized", "prod"]


def _values(app) -> dict:
    return helm_releases(app.template("Addons"))["kube-prometheus-stack"]["Values"]


@pytest.mark.parametrize("env", ENVS)
def test_the_ebs_csi_driver_is_a_managed_addon_with_pod_identity_and_the_aws_policy(request, env):
    app = request.getfixturevalue(env)
    template = app.template("Addons")
    addon_id, addon = one(template, "AWS::EKS::Addon", "EbsCsiDriverAddon")
    role_id, role = one(template, "AWS::IAM::Role", "EbsCsiDriverRole")
    assert addon["Properties"]["AddonName"] == "aws-ebs-csi-driver"
    assert addon["Properties"]["PodIdentityAssociations"] == [
        {"RoleArn": {"Fn::GetAtt": [role_id, "Arn"]}, "ServiceAccount": "ebs-csi-controller-sa"}
    ]
    assert addon["Properties"]["ResolveConflicts"] == "OVERWRITE"
    assert "AddonVersion" not in addon["Properties"]  # the version EKS defaults to for the cluster version
    statements = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert {
        a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    } == {"sts:AssumeRole", "sts:TagSession"}
    assert {s["Principal"]["Service"] for s in statements} == {"pods.eks.amazonaws.com"}
    (policy,) = role["Properties"]["ManagedPolicyArns"]
    assert policy["Fn::Join"][1][-1] == ":iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
    # The StorageClass is applied once the driver is there.
    storage_id, _ = one(template, "Custom::AWSCDK-EKS-KubernetesResource", "EbsCsiDriverStorageClass")
    assert addon_id in template["Resources"][storage_id]["DependsOn"]
    (storage_class,) = manifests(template)[storage_id]
    assert storage_class["metadata"]["name"] == "gp3-encrypted"
    assert storage_class["parameters"]["encrypted"] == "true"
    assert storage_class["parameters"]["tagSpecification_1"] == f"llama-eks/cluster={app.config.cluster.name}"


def _waits_for(template: dict, logical_id: str) -> set[str]:
    """Every resource ``logical_id`` waits for, directly or through others (DependsOn)."""
    seen: set[str] = set()
    todo = list(template["Resources"][logical_id].get("DependsOn", []))
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += template["Resources"][current].get("DependsOn", [])
    return seen


@pytest.mark.parametrize("env", ENVS)
def test_the_driver_is_installed_first_and_removed_last(request, env):
    """On destroy the driver must outlive kube-prometheus-stack: its controller deletes the volume of the
    claim that goes with Prometheus's StatefulSet. Every release and manifest waits for it (so CloudFormation
    deletes them all before it)."""
    template = request.getfixturevalue(env).template("Addons")
    addon_id, _ = one(template, "AWS::EKS::Addon", "EbsCsiDriverAddon")
    kubernetes = {
        **resources(template, "Custom::AWSCDK-EKS-HelmChart"),
        **resources(template, "Custom::AWSCDK-EKS-KubernetesResource"),
    }
    assert len(kubernetes) >= 9
    assert {k for k in kubernetes if addon_id in _waits_for(template, k)} == set(kubernetes)
    # ...and the driver waits for no other add-on: only its own role.
    assert {k for k in _waits_for(template, addon_id)} <= {
        k for k in template["Resources"] if k.startswith("EbsCsiDriver")
    }


@pytest.mark.parametrize("env", ENVS)
def test_prometheus_keeps_its_data_on_an_encrypted_volume_with_requests(request, env, tmp_path):
    app = request.getfixturevalue(env)
    # The two CRDs these resources need (another CRD of the folder is YAML 1.1 that PyYAML cannot read).
    for crd in ("crd-prometheuses.yaml", "crd-alertmanagers.yaml"):
        (tmp_path / crd).write_text((OPERATOR_CRDS / crd).read_text())
    spec = _values(app)["prometheus"]["prometheusSpec"]
    assert spec["storageSpec"] == {
        "volumeClaimTemplate": {
            "spec": {
                "storageClassName": "gp3-encrypted",
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "50Gi"}},
            }
        }
    }
    assert spec["retentionSize"] == "42GiB"  # 85 % of the volume: Prometheus stops before the disk is full
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Delete", "whenScaled": "Retain"}
    assert spec["resources"] == {"requests": {"cpu": "250m", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}
    # The chart copies these prometheusSpec keys into the Prometheus resource (storageSpec -> storage):
    # that resource must be valid against the operator's CRD of the pinned chart.
    prometheus = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "Prometheus",
        "metadata": {"name": "kube-prometheus-stack-prometheus", "namespace": "monitoring"},
        "spec": {
            "retention": spec["retention"],
            "retentionSize": spec["retentionSize"],
            "resources": spec["resources"],
            "nodeSelector": spec["nodeSelector"],
            "storage": spec["storageSpec"],
            "persistentVolumeClaimRetentionPolicy": spec["persistentVolumeClaimRetentionPolicy"],
        },
    }
    validate(prometheus, tmp_path)
    alertmanager = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "Alertmanager",
        "metadata": {"name": "kube-prometheus-stack-alertmanager", "namespace": "monitoring"},
        "spec": _values(app)["alertmanager"]["alertmanagerSpec"],
    }
    validate(alertmanager, tmp_path)
    values = _values(app)
    for component in (values["grafana"], values["prometheusOperator"], alertmanager["spec"]):
        assert set(component["resources"]) == {"requests", "limits"}


def test_the_chart_reads_the_keys_we_set():
    """None of these charts has a values schema: a misspelt key would be silently ignored. Each key we set
    is one the pinned chart's values.yaml declares (the rendering test of tests/helm proves it is read)."""
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    prometheus_spec = chart_values["prometheus"]["prometheusSpec"]
    for key in ("storageSpec", "retentionSize", "resources", "persistentVolumeClaimRetentionPolicy"):
        assert key in prometheus_spec, key
    assert "resources" in chart_values["alertmanager"]["alertmanagerSpec"]
    assert "resources" in chart_values["prometheusOperator"]
    for component in ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy"):
        assert chart_values[component]["enabled"] is True, component  # on unless we switch it off


@pytest.mark.parametrize("env", ENVS)
def test_grafana_has_no_default_admin_password(request, env):
    values = _values(request.getfixturevalue(env))
    grafana = values["grafana"]
    assert grafana["enabled"] is True
    text = str(values).lower()
    assert "password" not in text and "existingsecret" not in text
    # Neither does the pinned chart (it dropped 'prom-operator' in 79.x): the Grafana chart then generates
    # a 40-character password into the Secret kube-prometheus-stack-grafana and keeps it on upgrades.
    chart_grafana = yaml.safe_load((CHART / "values.yaml").read_text())["grafana"]
    assert "adminPassword" not in chart_grafana
    assert chart_grafana["admin"]["existingSecret"] == ""


@pytest.mark.parametrize("env", ENVS)
def test_the_control_plane_components_eks_runs_are_not_monitored(request, env):
    values = _values(request.getfixturevalue(env))
    for component in ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy"):
        assert values[component] == {"enabled": False}, component
    # What still works on EKS stays on: the API server, kubelets, CoreDNS, kube-state-metrics, node-exporter.
    assert not {"kubeApiServer", "kubelet", "coreDns", "kubeStateMetrics", "nodeExporter"} & set(values)


def test_switching_a_component_off_removes_its_absent_alert_in_the_chart():
    """The pinned chart's rule groups with the absent() 'Down' alerts render only while the component's
    `enabled` is true."""
    rules = CHART / "templates" / "prometheus" / "rules-1.14"
    gates = {
        "kubernetes-system-controller-manager.yaml": ("kubeControllerManager", "KubeControllerManagerDown"),
        "kubernetes-system-scheduler.yaml": ("kubeScheduler", "KubeSchedulerDown"),
        "kubernetes-system-kube-proxy.yaml": ("kubeProxy", "KubeProxyDown"),
        "etcd.yaml": ("kubeEtcd", "etcdMembersDown"),
    }
    for file, (component, alert) in gates.items():
        text = (rules / file).read_text()
        first_if = next(line for line in text.splitlines() if line.startswith("{{- if "))
        assert f".Values.{component}.enabled" in first_if, file
        assert re.search(rf"alert: {alert}\b", text), file


def _error(**overrides) -> str:
    with pytest.raises(ConfigError) as info:
        load_config({**cdk_json_context(), **overrides})
    return str(info.value)


def test_persistent_storage_needs_the_ebs_csi_driver():
    assert _error(**{"addons.ebsCsiDriver.enabled": False}) == (
        "Invalid config 'addons.metrics.storageGiB': 50. Allowed: 0 (an emptyDir) while "
        "addons.ebsCsiDriver.enabled is false (persistent volumes need the EBS CSI driver)."
    )
    config = load_config(
        {**cdk_json_context(), "addons.ebsCsiDriver.enabled": False, "addons.metrics.storageGiB": 0}
    )
    assert config.addons.metrics.storage_gib == 0


def test_without_storage_prometheus_uses_an_empty_dir(alternative):
    # The alternative (nodegroup, AMP) keeps the default storage; the metrics add-on's helper decides.
    from stacks.addons.metrics import _storage

    assert _storage(0) == {}
    assert _storage(100)["retentionSize"] == "85GiB"
    Template.from_json(alternative.template("Addons")).has_resource_properties(
        "AWS::EKS::Addon", Match.object_like({"AddonName": "aws-ebs-csi-driver"})
    )
