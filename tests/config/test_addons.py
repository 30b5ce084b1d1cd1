"""``addons`` configuration: defaults, exact error texts, conflicts, the Karpenter compatibility gate."""

from __future__ import annotations

import pytest

from config import ConfigError, load_config
from config.addons import (
    KARPENTER_COMPATIBILITY,
    AddonsConfig,
    KarpenterConfig,
    MetricsBackend,
    check_karpenter_compatibility,
)
from config.versions import al2023_ami_parameter
from tests.conftest import cdk_json_context


def _load(**overrides):
    return load_config({**cdk_json_context(), **overrides})


def _error(**overrides) -> str:
    with pytest.raises(ConfigError) as info:
        _load(**overrides)
    return str(info.value)


def test_cdk_json_spells_out_the_defaults():
    config = _load()
    assert config.addons == AddonsConfig()
    assert config.compute.gpu_capacity.value == "karpenter"
    assert AddonsConfig.load({}) == AddonsConfig()


def test_defaults_follow_the_seed_and_the_issue():
    k = KarpenterConfig()
    assert (k.version, k.gpu_instance_families, k.capacity_types) == (
        "1.14.1",
        ("g6",),
        ("spot", "on-demand"),
    )
    assert k.ami_alias == "al2023@v20260828" and not k.ami_alias.endswith("@latest")
    assert al2023_ami_parameter("1.35", "x86_64", "nvidia", k.ami_version) == (
        "/aws/service/eks/optimized-ami/1.35/amazon-linux-2023/x86_64/nvidia/"
        "amazon-eks-node-al2023-x86_64-nvidia-1.35-v20260828/image_id"
    )
    assert al2023_ami_parameter("1.36", "arm64", "standard", "latest") == (
        "/aws/service/eks/optimized-ami/1.36/amazon-linux-2023/arm64/standard/recommended/image_id"
    )
    assert (k.root_volume_gib, k.general_purpose_pool) == (100, False)
    assert AddonsConfig().metrics.backend is MetricsBackend.KUBE_PROMETHEUS_STACK


def test_overrides_reach_the_config():
    config = _load(
        **{
            "addons.karpenter.gpuInstanceFamilies": "g6,g6e",
            "addons.karpenter.generalPurposePool": "true",
            "addons.metrics.backend": "amp",
            "addons.metrics.grafana": False,
            "addons.keda.enabled": "false",
        }
    )
    assert config.addons.karpenter.gpu_instance_families == ("g6", "g6e")
    assert config.addons.karpenter.general_purpose_pool is True
    assert config.addons.metrics.backend is MetricsBackend.AMP
    assert config.addons.keda.enabled is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"addons.karpenter.gpuInstanceFamilies": ["G6!"]},
            "Invalid config 'addons.karpenter.gpuInstanceFamilies': 'G6!'. "
            "Allowed: EC2 instance families such as g6, g6e, g5.",
        ),
        (
            {"addons.karpenter.capacityTypes": ["spot", "ondemand"]},
            "Invalid config 'addons.karpenter.capacityTypes': 'ondemand'. "
            "Allowed: items from ['on-demand', 'reserved', 'spot'].",
        ),
        (
            {"addons.karpenter.amiVersion": "2026-08-28"},
            "Invalid config 'addons.karpenter.amiVersion': '2026-08-28'. "
            "Allowed: an AL2023 EKS AMI release v<YYYYMMDD> (a real date) such as v20260828, or latest.",
        ),
        (
            {"addons.karpenter.amiVersion": "v20260231"},
            "Invalid config 'addons.karpenter.amiVersion': 'v20260231'. "
            "Allowed: an AL2023 EKS AMI release v<YYYYMMDD> (a real date) such as v20260828, or latest.",
        ),
        (
            {"addons.karpenter.consolidationPolicy": "WhenUnderutilized"},
            "Invalid config 'addons.karpenter.consolidationPolicy': 'WhenUnderutilized'. "
            "Allowed: one of ['WhenEmpty', 'WhenEmptyOrUnderutilized'].",
        ),
        (
            {"addons.karpenter.expireAfter": "never"},
            "Invalid config 'addons.karpenter.expireAfter': 'never'. "
            "Allowed: a duration such as 720h, or Never.",
        ),
        (
            {"addons.karpenter.terminationGracePeriod": "Never"},
            "Invalid config 'addons.karpenter.terminationGracePeriod': 'Never'. "
            "Allowed: a duration such as 30s, 5m or 720h.",
        ),
        (
            {"addons.karpenter.disruptionBudget": "one"},
            "Invalid config 'addons.karpenter.disruptionBudget': 'one'. "
            "Allowed: a node count such as 1 or a percentage such as 10%.",
        ),
        (
            {"addons.karpenter.consolidateAfter": "5 minutes"},
            "Invalid config 'addons.karpenter.consolidateAfter': '5 minutes'. "
            "Allowed: a duration such as 30s, 5m or 720h.",
        ),
        (
            {"addons.karpenter.gpuLimit": 0},
            "Invalid config 'addons.karpenter.gpuLimit': 0. Allowed: an integer from 1 to 1024.",
        ),
        (
            {"addons.karpenter.version": "v1.14"},
            "Invalid config 'addons.karpenter.version': 'v1.14'. "
            "Allowed: a version MAJOR.MINOR.PATCH such as 1.14.1.",
        ),
        (
            {"addons.karpenter.nodePool": "x"},
            "Invalid config 'addons.karpenter.nodePool': 'x'. Allowed: known keys of 'addons.karpenter' are "
            "['amiVersion', 'capacityTypes', 'consolidateAfter', 'consolidationPolicy', 'cpuLimit', "
            "'disruptionBudget', 'enabled', 'expireAfter', 'generalPurposeCpuLimit', 'generalPurposePool', "
            "'gpuInstanceFamilies', 'gpuLimit', 'namespace', 'rootVolumeGiB', 'terminationGracePeriod', "
            "'version'].",
        ),
        (
            {"addons.metrics.backend": "prometheus"},
            "Invalid config 'addons.metrics.backend': 'prometheus'. "
            "Allowed: one of ['amp', 'kubePrometheusStack', 'none'].",
        ),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_values(overrides, message):
    assert _error(**overrides) == message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"addons.metrics.backend": "none"},
            "Invalid config 'addons.dcgmExporter.enabled': True. "
            "Allowed: false when addons.metrics.backend is 'none' "
            "(its ServiceMonitor needs the Prometheus operator).",
        ),
        (
            {"addons.metrics.backend": "amp", "addons.metrics.grafana": True},
            "Invalid config 'addons.metrics.grafana': True. "
            "Allowed: false unless addons.metrics.backend is 'kubePrometheusStack'.",
        ),
        (
            {"addons.karpenter.enabled": False},
            "Invalid config 'addons.karpenter.enabled': False. "
            "Allowed: true when compute.gpuCapacity is 'karpenter'.",
        ),
        (
            {
                "compute.gpuCapacity": "nodegroup",
                "addons.karpenter.enabled": False,
                "addons.karpenter.generalPurposePool": True,
            },
            "Invalid config 'addons.karpenter.generalPurposePool': True. "
            "Allowed: false when addons.karpenter.enabled is false.",
        ),
    ],
)
def test_conflicts_are_config_errors(overrides, message):
    assert _error(**overrides) == message


def test_the_serving_gpu_pool_is_safe_by_default_and_prod_is_on_demand_without_expiry():
    dev = _load().addons.karpenter
    assert (dev.consolidation_policy, dev.disruption_budget, dev.termination_grace_period) == (
        "WhenEmpty",
        "1",
        "1h",
    )
    assert (dev.capacity_types, dev.expire_after) == (("spot", "on-demand"), "720h")
    prod = _load(env="prod", **{"cluster.adminPrincipalArns": "arn:aws:iam::111111111111:role/admin"})
    karpenter = prod.addons.karpenter
    assert (karpenter.capacity_types, karpenter.expire_after) == (("on-demand",), "Never")
    assert (karpenter.consolidation_policy, karpenter.disruption_budget) == ("WhenEmpty", "1")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            # preStop 15 + drain 100 + 10: more than a spot interruption leaves.
            {"inference.server.drainTimeoutSeconds": 100},
            "Invalid config 'inference.terminationGracePeriodSeconds': 125. Allowed: an integer <= 100 while "
            "the serving capacity can be spot: a spot interruption gives 120 s notice and Karpenter needs "
            "about 20 s of it to start the drain (lower inference.server.drainTimeoutSeconds or "
            "inference.preStopSeconds, or use on-demand capacity).",
        ),
        (
            {"addons.karpenter.terminationGracePeriod": "1m"},
            "Invalid config 'addons.karpenter.terminationGracePeriod': '1m'. Allowed: a duration of at least "
            "inference.terminationGracePeriodSeconds (85 s): Karpenter deletes pods early so that they end "
            "before the node's grace period does.",
        ),
        (
            {"inference.autoscaling.minReplicas": 2, "addons.karpenter.disruptionBudget": "50%"},
            None,  # 50 % of 2 nodes is 1: one serving node stays
        ),
        (
            {"inference.autoscaling.minReplicas": 3, "addons.karpenter.disruptionBudget": "3"},
            "Invalid config 'addons.karpenter.disruptionBudget': '3'. Allowed: a budget that disrupts fewer "
            "than 3 nodes at once (the serving replicas' GPU nodes), such as 1: '3' may take every serving "
            "node together.",
        ),
        (
            {"inference.autoscaling.minReplicas": 2, "addons.karpenter.disruptionBudget": "51%"},
            "Invalid config 'addons.karpenter.disruptionBudget': '51%'. Allowed: a budget that disrupts "
            "fewer than 2 nodes at once (the serving replicas' GPU nodes), such as 1: '51%' may take every "
            "serving node together.",
        ),
    ],
)
def test_the_serving_pool_lets_pods_drain_and_keeps_a_serving_node(overrides, message):
    if message is None:
        _load(**overrides)
    else:
        assert _error(**overrides) == message


def test_on_demand_or_a_gpu_nodegroup_lifts_the_spot_notice_limit():
    drain = {"inference.server.drainTimeoutSeconds": 100}
    on_demand_pool = {"addons.karpenter.capacityTypes": "on-demand"}
    assert _load(**drain, **on_demand_pool).inference.termination_grace_seconds == 125
    # A spot nodegroup gets the same 2-minute notice (config/app.py); an on-demand one does not.
    on_demand_nodegroup = {
        "compute.gpuCapacity": "nodegroup",
        "compute.gpuNodegroup.capacityType": "ON_DEMAND",
    }
    assert _load(**drain, **on_demand_nodegroup).inference.termination_grace_seconds == 125
    with pytest.raises(ConfigError, match="terminationGracePeriodSeconds': 125"):
        _load(**drain, **{"compute.gpuCapacity": "nodegroup", "compute.gpuNodegroup.capacityType": "SPOT"})


def test_nodegroup_capacity_may_keep_karpenter_or_drop_it():
    assert _load(**{"compute.gpuCapacity": "nodegroup"}).addons.karpenter.enabled is True
    assert (
        _load(
            **{"compute.gpuCapacity": "nodegroup", "addons.karpenter.enabled": False}
        ).addons.karpenter.enabled
        is False
    )


@pytest.mark.parametrize(
    ("kubernetes", "too_old", "minimum"),
    [
        ("1.33", "1.4.9", "1.5.0"),
        ("1.34", "1.5.4", "1.6.0"),
        ("1.35", "1.8.2", "1.9.0"),
        ("1.36", "1.12.9", "1.13.0"),
    ],
)
def test_compatibility_gate(kubernetes, too_old, minimum):
    check_karpenter_compatibility(kubernetes, minimum)
    check_karpenter_compatibility(kubernetes, "1.14.1")
    with pytest.raises(ConfigError) as info:
        check_karpenter_compatibility(kubernetes, too_old)
    assert str(info.value) == (
        f"Invalid config 'addons.karpenter.version': '{too_old}'. "
        f"Allowed: >= {minimum}: Kubernetes {kubernetes} needs Karpenter {minimum} or newer "
        f"(upgrade Karpenter before the cluster, together with the CRDs in ../shared/crds)."
    )


def test_gate_rejects_kubernetes_versions_outside_the_matrix():
    with pytest.raises(ConfigError) as info:
        check_karpenter_compatibility("1.37", "1.14.1")
    assert info.value.key == "cluster.kubernetesVersion"
    assert "1.36" in str(info.value) and "KARPENTER_COMPATIBILITY" in str(info.value)
    assert set(KARPENTER_COMPATIBILITY) >= {"1.33", "1.34", "1.35", "1.36"}


def test_gate_fails_loading_the_app_config():
    message = _error(**{"cluster.kubernetesVersion": "1.35", "addons.karpenter.version": "1.8.0"})
    assert message.startswith("Invalid config 'addons.karpenter.version': '1.8.0'. Allowed: >= 1.9.0:")
    # Karpenter switched off: no gate (the nodegroup path does not run Karpenter).
    _load(
        **{
            "compute.gpuCapacity": "nodegroup",
            "addons.karpenter.enabled": False,
            "addons.karpenter.version": "1.8.0",
        }
    )


def test_the_runbooks_ami_check_names_the_default_pin():
    """docs/runbook.md's `aws ssm get-parameter` command checks exactly what the default deploy resolves."""
    from config.versions import DEFAULT_KUBERNETES_VERSION
    from tests.conftest import REPO

    runbook = (REPO / "docs" / "runbook.md").read_text()
    k = KarpenterConfig()
    assert (
        f"--name {al2023_ami_parameter(DEFAULT_KUBERNETES_VERSION, 'x86_64', 'nvidia', k.ami_version)} "
        in runbook
    )
    recommended = al2023_ami_parameter(DEFAULT_KUBERNETES_VERSION, "x86_64", "nvidia", "latest")
    assert f"--name {recommended} " in runbook


# --- the VPA add-on (issue 15) ------------------------------------------------------------------------------


def test_vpa_addon_and_the_seeds_vpas_are_on_by_default():
    config = _load()
    assert config.addons.vpa.enabled
    assert config.inference.vpa.enabled and config.inference.vpa.update_mode == "Off"
    assert config.chat_ui.vpa.enabled and config.chat_ui.vpa.update_mode == "Off"


def test_without_the_vpa_addon_no_vpa_is_rendered_by_default():
    config = _load(**{"addons.vpa.enabled": False})
    assert not config.inference.vpa.enabled and not config.chat_ui.vpa.enabled
    # ...and a VPA can be switched off with the add-on left on.
    config = _load(**{"inference.vpa.enabled": False})
    assert config.addons.vpa.enabled and not config.inference.vpa.enabled and config.chat_ui.vpa.enabled


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"addons.vpa.enabled": False, "inference.vpa.enabled": True},
            "Invalid config 'inference.vpa.enabled': True. Allowed: false while addons.vpa.enabled is false "
            "(the VerticalPodAutoscaler CRDs and recommender come from that add-on).",
        ),
        (
            {"addons.vpa.enabled": "false", "chatUi.vpa.enabled": "true"},
            "Invalid config 'chatUi.vpa.enabled': True. Allowed: false while addons.vpa.enabled is false "
            "(the VerticalPodAutoscaler CRDs and recommender come from that add-on).",
        ),
        (
            {
                "chatUi.enabled": False,
                "cluster.managedAddons": "vpc-cni,kube-proxy,coredns,eks-pod-identity-agent",
            },
            "Invalid config 'cluster.managedAddons': ['vpc-cni', 'kube-proxy', 'coredns', "
            "'eks-pod-identity-agent']. Allowed: a list that includes 'metrics-server' while "
            "addons.vpa.enabled is true (the VPA recommender reads pod usage from the metrics API).",
        ),
        (
            {"addons.vpa.enabled": "yes"},
            "Invalid config 'addons.vpa.enabled': 'yes'. Allowed: true or false.",
        ),
    ],
)
def test_vpa_error_texts(overrides, message):
    assert _error(**overrides) == message


def test_both_vpas_on_without_the_addon_name_both_keys():
    with pytest.raises(ConfigError) as info:
        _load(**{"addons.vpa.enabled": False, "inference.vpa.enabled": True, "chatUi.vpa.enabled": True})
    assert [p.key for p in info.value.problems] == ["inference.vpa.enabled", "chatUi.vpa.enabled"]


def test_no_metrics_server_is_fine_without_the_vpa_addon_and_the_chat_ui():
    config = _load(
        **{
            "addons.vpa.enabled": False,
            "chatUi.enabled": False,
            "cluster.managedAddons": "vpc-cni,kube-proxy,coredns,eks-pod-identity-agent",
        }
    )
    assert "metrics-server" not in config.cluster.managed_addons
