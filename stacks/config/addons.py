"""``addons`` section: Karpenter and the other cluster add-ons (each switchable).

Chart versions are pinned here, next to the CRDs they must match (``../shared/crds``); bump both together.
Only Karpenter's version is configurable, because the Kubernetes compatibility gate checks it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from ._parse import Section
from .errors import ConfigError

#: Pinned chart versions (see docs/addons.md for where each comes from).
KARPENTER_VERSION = "1.14.1"
LOAD_BALANCER_CONTROLLER_CHART = "3.5.0"
NVIDIA_DEVICE_PLUGIN_CHART = "0.18.2"
DCGM_EXPORTER_CHART = "4.1.1"
KEDA_CHART = "2.20.2"
#: kube-prometheus-stack 88.0.0 ships prometheus-operator v0.93.0 (the CRDs in ../shared/crds).
KUBE_PROMETHEUS_STACK_CHART = "88.0.0"

#: Minimum Karpenter per Kubernetes minor version (Karpenter's compatibility matrix).
KARPENTER_COMPATIBILITY: dict[str, str] = {
    "1.29": "0.34.0",
    "1.30": "0.37.0",
    "1.31": "1.0.5",
    "1.32": "1.2.0",
    "1.33": "1.5.0",
    "1.34": "1.6.0",
    "1.35": "1.9.0",
    "1.36": "1.13.0",
}

CAPACITY_TYPES = ("on-demand", "spot", "reserved")
_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
_FAMILY = re.compile(r"^[a-z][a-z0-9-]*[0-9][a-z0-9-]*$")
_DURATION = re.compile(r"^([0-9]+(s|m|h))+$")
_PERCENT_OR_COUNT = re.compile(r"^((100|[0-9]{1,2})%|[0-9]+)$")
_AMI_VERSION = re.compile(r"^(v\d{8}|latest)$")


def parse_version(key: str, value: str) -> tuple[int, int, int]:
    m = _SEMVER.match(value) if isinstance(value, str) else None
    if not m:
        raise ConfigError(key, value, "a version MAJOR.MINOR.PATCH such as 1.14.1")
    return int(m[1]), int(m[2]), int(m[3])


def check_karpenter_compatibility(kubernetes_version: str, karpenter_version: str) -> None:
    """Fail when ``karpenter_version`` is too old for ``kubernetes_version`` (or the pair is unknown)."""
    key = "addons.karpenter.version"
    have = parse_version(key, karpenter_version)
    minimum = KARPENTER_COMPATIBILITY.get(kubernetes_version)
    if minimum is None:
        raise ConfigError(
            "cluster.kubernetesVersion",
            kubernetes_version,
            f"a version in Karpenter's compatibility matrix {sorted(KARPENTER_COMPATIBILITY)} "
            f"(extend KARPENTER_COMPATIBILITY in stacks/config/addons.py when Karpenter supports it)",
        )
    if have < parse_version(key, minimum):
        raise ConfigError(
            key,
            karpenter_version,
            f">= {minimum}: Kubernetes {kubernetes_version} needs Karpenter {minimum} or newer "
            f"(upgrade Karpenter before the cluster, together with the CRDs in ../shared/crds)",
        )


class MetricsBackend(enum.Enum):
    """``kubePrometheusStack``: Prometheus + Grafana in the cluster. ``amp``: an Amazon Managed
    Prometheus workspace; the in-cluster Prometheus (no Grafana) scrapes and remote-writes to it.
    ``none``: no metrics stack (ServiceMonitors cannot be served)."""

    KUBE_PROMETHEUS_STACK = "kubePrometheusStack"
    AMP = "amp"
    NONE = "none"


@dataclass(frozen=True)
class KarpenterConfig:
    """Karpenter and its NodePools. Defaults follow seed ch6 (``eks-gpu-np``: G6, spot + on-demand)."""

    enabled: bool = True
    version: str = KARPENTER_VERSION
    namespace: str = "kube-system"
    gpu_instance_families: tuple[str, ...] = ("g6",)
    capacity_types: tuple[str, ...] = ("spot", "on-demand")
    #: AL2023 EKS AMI release (``v<YYYYMMDD>``); ``latest`` is accepted but never the default.
    ami_version: str = "v20260828"
    consolidate_after: str = "5m"
    expire_after: str = "720h"
    disruption_budget: str = "10%"
    gpu_limit: int = 8
    cpu_limit: int = 256
    root_volume_gib: int = 100
    general_purpose_pool: bool = False
    general_purpose_cpu_limit: int = 64

    @property
    def ami_alias(self) -> str:
        return f"al2023@{self.ami_version}"


@dataclass(frozen=True)
class Toggle:
    """An add-on that is only switched on or off (its chart version is pinned in this module)."""

    enabled: bool = True


@dataclass(frozen=True)
class MetricsConfig:
    backend: MetricsBackend = MetricsBackend.KUBE_PROMETHEUS_STACK
    retention: str = "15d"
    #: Default: true for kubePrometheusStack, false otherwise (AMP pairs with Amazon Managed Grafana).
    grafana: bool = True


@dataclass(frozen=True)
class AddonsConfig:
    karpenter: KarpenterConfig = field(default_factory=KarpenterConfig)
    load_balancer_controller: Toggle = field(default_factory=Toggle)
    nvidia_device_plugin: Toggle = field(default_factory=Toggle)
    dcgm_exporter: Toggle = field(default_factory=Toggle)
    keda: Toggle = field(default_factory=Toggle)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


def _duration(s: Section, name: str, default: str) -> str:
    value = s.string(name, default)
    if not _DURATION.match(value):
        raise ConfigError(s.key(name), value, "a duration such as 30s, 5m or 720h")
    return value


def _karpenter(s: Section) -> KarpenterConfig:
    d = KarpenterConfig()
    version = s.string("version", d.version)
    parse_version(s.key("version"), version)
    families = s.string_list("gpuInstanceFamilies", list(d.gpu_instance_families))
    for fam in families:
        if not _FAMILY.match(fam):
            raise ConfigError(s.key("gpuInstanceFamilies"), fam, "EC2 instance families such as g6, g6e, g5")
    capacity = s.choice_list("capacityTypes", CAPACITY_TYPES, list(d.capacity_types))
    ami_version = s.string("amiVersion", d.ami_version)
    if not _AMI_VERSION.match(ami_version):
        raise ConfigError(
            s.key("amiVersion"), ami_version, "an AL2023 EKS AMI release such as v20260828 (or latest)"
        )
    budget = s.string("disruptionBudget", d.disruption_budget)
    if not _PERCENT_OR_COUNT.match(budget):
        raise ConfigError(
            s.key("disruptionBudget"), budget, "a node count such as 1 or a percentage such as 10%"
        )
    config = KarpenterConfig(
        enabled=s.boolean("enabled", d.enabled),
        version=version,
        namespace=s.string("namespace", d.namespace),
        gpu_instance_families=families,
        capacity_types=capacity,
        ami_version=ami_version,
        consolidate_after=_duration(s, "consolidateAfter", d.consolidate_after),
        expire_after=_duration(s, "expireAfter", d.expire_after),
        disruption_budget=budget,
        gpu_limit=s.integer("gpuLimit", d.gpu_limit, minimum=1, maximum=1024),
        cpu_limit=s.integer("cpuLimit", d.cpu_limit, minimum=1, maximum=100000),
        root_volume_gib=s.integer("rootVolumeGiB", d.root_volume_gib, minimum=20, maximum=16384),
        general_purpose_pool=s.boolean("generalPurposePool", d.general_purpose_pool),
        general_purpose_cpu_limit=s.integer(
            "generalPurposeCpuLimit", d.general_purpose_cpu_limit, minimum=1, maximum=100000
        ),
    )
    s.reject_unknown()
    if config.general_purpose_pool and not config.enabled:
        raise ConfigError(s.key("generalPurposePool"), True, "false when addons.karpenter.enabled is false")
    return config


def _toggle(s: Section) -> Toggle:
    config = Toggle(enabled=s.boolean("enabled", True))
    s.reject_unknown()
    return config


def _metrics(s: Section) -> MetricsConfig:
    d = MetricsConfig()
    backend = MetricsBackend(s.string("backend", d.backend.value, choices=[b.value for b in MetricsBackend]))
    retention = s.string("retention", d.retention)
    if not re.match(r"^[0-9]+(h|d|w)$", retention):
        raise ConfigError(s.key("retention"), retention, "a Prometheus retention such as 24h, 15d or 2w")
    grafana = s.boolean("grafana", d.grafana and backend is MetricsBackend.KUBE_PROMETHEUS_STACK)
    if grafana and backend is not MetricsBackend.KUBE_PROMETHEUS_STACK:
        raise ConfigError(
            s.key("grafana"), True, "false unless addons.metrics.backend is 'kubePrometheusStack'"
        )
    s.reject_unknown()
    return MetricsConfig(backend=backend, retention=retention, grafana=grafana)


def from_section(s: Section) -> AddonsConfig:
    config = AddonsConfig(
        karpenter=_karpenter(s.section("karpenter")),
        load_balancer_controller=_toggle(s.section("loadBalancerController")),
        nvidia_device_plugin=_toggle(s.section("nvidiaDevicePlugin")),
        dcgm_exporter=_toggle(s.section("dcgmExporter")),
        keda=_toggle(s.section("keda")),
        metrics=_metrics(s.section("metrics")),
    )
    s.reject_unknown()
    if config.dcgm_exporter.enabled and config.metrics.backend is MetricsBackend.NONE:
        raise ConfigError(
            s.key("dcgmExporter.enabled"),
            True,
            "false when addons.metrics.backend is 'none' (its ServiceMonitor needs the Prometheus operator)",
        )
    return config


def check_against_cluster(addons: AddonsConfig, *, gpu_capacity: str, kubernetes_version: str) -> None:
    """Cross-section rules: Karpenter as GPU capacity must be installed and new enough."""
    if gpu_capacity == "karpenter" and not addons.karpenter.enabled:
        raise ConfigError("addons.karpenter.enabled", False, "true when compute.gpuCapacity is 'karpenter'")
    if addons.karpenter.enabled:
        check_karpenter_compatibility(kubernetes_version, addons.karpenter.version)
