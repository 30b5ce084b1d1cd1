"""``addons`` section: Karpenter and the other cluster add-ons (each switchable).

Chart versions are pinned here, next to the CRDs they must match (``../shared/crds``); bump both together.
Only Karpenter's version is configurable, because the Kubernetes compatibility gate checks it.
"""

from __future__ import annotations

import datetime
import enum
import math
import re
from typing import Annotated, Literal

from pydantic import Field, Strict, model_validator

from .base import Bool, CommaSeparated, ConfigModel, Duration, Int, Str, Unique
from .errors import ConfigError, Invalid, Rule, matches
from .versions import AL2023_DATE_TAG_PATTERN

#: Pinned chart versions (see docs/addons.md for where each comes from).
KARPENTER_VERSION = "1.14.1"
LOAD_BALANCER_CONTROLLER_CHART = "3.5.0"
NVIDIA_DEVICE_PLUGIN_CHART = "0.18.2"
DCGM_EXPORTER_CHART = "4.1.1"
KEDA_CHART = "2.20.2"
#: kube-prometheus-stack 88.0.0 ships prometheus-operator v0.93.0 (the CRDs in ../shared/crds).
KUBE_PROMETHEUS_STACK_CHART = "88.0.0"
#: VerticalPodAutoscaler release: the recommender image tag and the CRDs vendored in charts/crds/.
VPA_VERSION = "1.7.1"

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

KarpenterCapacityType = Literal["on-demand", "spot", "reserved"]
#: ``WhenEmpty``: only nodes without pods go (a busy GPU node is never replaced to save money);
#: ``WhenEmptyOrUnderutilized`` also moves pods to cheaper or fewer nodes.
ConsolidationPolicy = Literal["WhenEmpty", "WhenEmptyOrUnderutilized"]

#: EC2's spot interruption notice, and what Karpenter needs of it before pods start draining (EventBridge
#: to SQS delivery, Karpenter's queue poll, cordon and eviction): a pod's grace period must fit the rest.
SPOT_NOTICE_SECONDS = 120
INTERRUPTION_REACTION_SECONDS = 20
SPOT_DRAIN_SECONDS = SPOT_NOTICE_SECONDS - INTERRUPTION_REACTION_SECONDS

_RELEASE_ALLOWED = "an AL2023 EKS AMI release v<YYYYMMDD> (a real date) such as v20260828, or latest"
_BUDGET = re.compile(r"(100|[0-9]{1,2})%|[0-9]+")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def _is_release(value: str) -> bool:
    if value == "latest":
        return True
    if not re.fullmatch(AL2023_DATE_TAG_PATTERN, value):
        return False
    try:
        datetime.datetime.strptime(value[1:], "%Y%m%d")
    except ValueError:
        return False
    return True


def duration_seconds(value: str) -> int:
    """Seconds of a Karpenter duration such as ``1h30m`` (validated by the ``Duration`` type)."""
    return sum(int(n) * _DURATION_UNITS[u] for n, u in re.findall(r"([0-9]+)(s|m|h)", value))


def disrupted_at_once(budget: str, nodes: int) -> int:
    """How many of ``nodes`` a NodePool budget (``"1"`` or ``"10%"``) lets Karpenter disrupt at once
    (Karpenter rounds a percentage up)."""
    if budget.endswith("%"):
        return math.ceil(nodes * int(budget[:-1]) / 100)
    return int(budget)


_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
_VERSION_ALLOWED = "a version MAJOR.MINOR.PATCH such as 1.14.1"


def parse_version(key: str, value: str) -> tuple[int, int, int]:
    m = _SEMVER.match(value) if isinstance(value, str) else None
    if not m:
        raise ConfigError(key, value, _VERSION_ALLOWED)
    return int(m[1]), int(m[2]), int(m[3])


def karpenter_compatibility_problem(kubernetes_version: str, karpenter_version: str) -> Invalid | None:
    """Why ``karpenter_version`` cannot run on ``kubernetes_version`` (too old, or the pair is unknown)."""
    key = "addons.karpenter.version"
    minimum = KARPENTER_COMPATIBILITY.get(kubernetes_version)
    if minimum is None:
        return Invalid(
            f"a version in Karpenter's compatibility matrix {sorted(KARPENTER_COMPATIBILITY)} "
            f"(extend KARPENTER_COMPATIBILITY in config/addons.py when Karpenter supports it)",
            key="cluster.kubernetesVersion",
            value=kubernetes_version,
        )
    if parse_version(key, karpenter_version) < parse_version(key, minimum):
        return Invalid(
            f">= {minimum}: Kubernetes {kubernetes_version} needs Karpenter {minimum} or newer "
            f"(upgrade Karpenter before the cluster, together with the CRDs in ../shared/crds)",
            key=key,
            value=karpenter_version,
        )
    return None


def check_karpenter_compatibility(kubernetes_version: str, karpenter_version: str) -> None:
    """Fail when ``karpenter_version`` is too old for ``kubernetes_version`` (or the pair is unknown)."""
    problem = karpenter_compatibility_problem(kubernetes_version, karpenter_version)
    if problem is not None:
        raise ConfigError(str(problem.key), problem.value, problem.allowed)


class MetricsBackend(enum.StrEnum):
    """``kubePrometheusStack``: Prometheus + Grafana in the cluster. ``amp``: an Amazon Managed
    Prometheus workspace; the in-cluster Prometheus (no Grafana) scrapes and remote-writes to it.
    ``none``: no metrics stack (ServiceMonitors cannot be served)."""

    KUBE_PROMETHEUS_STACK = "kubePrometheusStack"
    AMP = "amp"
    NONE = "none"


class KarpenterConfig(ConfigModel):
    """Karpenter and its NodePools. Defaults follow seed ch6 (``eks-gpu-np``: G6, spot + on-demand)."""

    path = "addons.karpenter"

    enabled: Bool = Field(
        True, description="Install Karpenter (required by `compute.gpuCapacity: karpenter`)."
    )
    version: Annotated[str, Strict(), matches(_SEMVER.pattern.strip("^$"), _VERSION_ALLOWED)] = Field(
        KARPENTER_VERSION,
        description="Karpenter chart and CRD version; checked against `cluster.kubernetesVersion` "
        "(Karpenter's compatibility matrix).",
    )
    namespace: Str = Field("kube-system", description="Namespace of the controller.")
    gpu_instance_families: Annotated[
        tuple[
            Annotated[
                str,
                Strict(),
                matches(r"[a-z][a-z0-9-]*[0-9][a-z0-9-]*", "EC2 instance families such as g6, g6e, g5"),
            ],
            ...,
        ],
        CommaSeparated,
    ] = Field(("g6",), min_length=1, description="Instance families of the GPU NodePool.")
    capacity_types: Annotated[tuple[KarpenterCapacityType, ...], CommaSeparated, Unique] = Field(
        ("spot", "on-demand"),
        min_length=1,
        description="Capacity types of the GPU NodePool. With `spot`, an interruption leaves a serving pod 2 "
        f"minutes: `inference.terminationGracePeriodSeconds` must fit in {SPOT_DRAIN_SECONDS} s. Env `prod` "
        "uses `on-demand` only (cdk.json).",
    )
    ami_version: Annotated[str, Strict(), Rule(_is_release, _RELEASE_ALLOWED)] = Field(
        "v20260828",
        description="AL2023 EKS AMI release (`v<YYYYMMDD>`) of Karpenter's nodes; `latest` rolls every node "
        "on each AMI release and is never the default. The deploy fails before anything is created when the "
        "release does not exist for `cluster.kubernetesVersion` (a CloudFormation parameter resolves its "
        "public SSM parameter; docs/runbook.md shows the `aws ssm get-parameter` command to check first).",
    )
    consolidation_policy: ConsolidationPolicy = Field(
        "WhenEmpty",
        description="`WhenEmpty`: only GPU nodes without pods are removed (a busy GPU node is never "
        "replaced to save money); `WhenEmptyOrUnderutilized` also moves serving pods to cheaper nodes.",
    )
    consolidate_after: Duration = Field(
        "5m",
        description="Empty (or, with `WhenEmptyOrUnderutilized`, underutilized) GPU nodes go after this "
        "long.",
    )
    expire_after: Annotated[
        str, Strict(), matches(r"([0-9]+(s|m|h))+|Never", "a duration such as 720h, or Never")
    ] = Field(
        "720h",
        description="GPU nodes are drained and replaced after this long. Expiry ignores disruption budgets "
        "and launches no replacement first; `Never` leaves node updates to drift (a new `amiVersion`), which "
        "respects them.",
    )
    termination_grace_period: Duration = Field(
        "1h",
        description="A draining GPU node is terminated after this long, even if PodDisruptionBudgets still "
        "block evictions; at least `inference.terminationGracePeriodSeconds`.",
    )
    disruption_budget: Annotated[
        str, Strict(), matches(_BUDGET.pattern, "a node count such as 1 or a percentage such as 10%")
    ] = Field(
        "1",
        description="GPU nodes Karpenter disrupts at once (drift, emptiness, consolidation); with at least "
        "2 serving replicas it must leave one of them running.",
    )
    gpu_limit: Int = Field(8, ge=1, le=1024, description="Most GPUs the GPU NodePool launches.")
    cpu_limit: Int = Field(256, ge=1, le=100000, description="Most vCPUs the GPU NodePool launches.")
    root_volume_gib: Int = Field(
        100,
        ge=20,
        le=16384,
        alias="rootVolumeGiB",
        description="Encrypted gp3 root volume of Karpenter's nodes.",
    )
    general_purpose_pool: Bool = Field(
        False, description="A CPU NodePool `general-purpose` (for `inference.accelerator: cpu`)."
    )
    general_purpose_cpu_limit: Int = Field(
        64, ge=1, le=100000, description="Most vCPUs the general-purpose NodePool launches."
    )

    @property
    def ami_alias(self) -> str:
        return f"al2023@{self.ami_version}"

    @model_validator(mode="after")
    def _pool_needs_karpenter(self) -> KarpenterConfig:
        if self.general_purpose_pool and not self.enabled:
            raise Invalid(
                "false when addons.karpenter.enabled is false",
                key="addons.karpenter.generalPurposePool",
                value=True,
            )
        return self


class Toggle(ConfigModel):
    """An add-on that is only switched on or off (its chart version is pinned in this module)."""

    enabled: Bool = Field(True, description="Install it.")


class VpaAddonConfig(ConfigModel):
    """VerticalPodAutoscaler (seed ch6): its two CRDs and the recommender, rendered with cdk8s
    (stacks/addons/vpa.py). Recommendations only: no updater (it evicts pods), no admission controller (a
    webhook that rewrites requests); the VPAs of `inference.vpa` and `chatUi.vpa` run with `updateMode:
    Off`. The recommender reads pod usage from the metrics API (`metrics-server` in
    `cluster.managedAddons`)."""

    path = "addons.vpa"

    enabled: Bool = Field(
        True,
        description=f"Install VPA {VPA_VERSION}'s CRDs and recommender; `inference.vpa.enabled` and "
        "`chatUi.vpa.enabled` follow it by default. Switch it off when the cluster already runs a VPA.",
    )


class MetricsConfig(ConfigModel):
    """The metrics stack."""

    path = "addons.metrics"

    backend: MetricsBackend = Field(
        MetricsBackend.KUBE_PROMETHEUS_STACK,
        description="`kubePrometheusStack` (Prometheus + Grafana in the cluster), `amp` (Amazon Managed "
        "Prometheus; the in-cluster Prometheus remote-writes to it) or `none`.",
    )
    retention: Annotated[
        str, Strict(), matches(r"[0-9]+(h|d|w)", "a Prometheus retention such as 24h, 15d or 2w")
    ] = Field("15d", description="How long the in-cluster Prometheus keeps samples.")
    storage_gib: Int = Field(
        50,
        ge=0,
        le=16384,
        alias="storageGiB",
        description="Prometheus's persistent volume (encrypted gp3 through the EBS CSI driver), in GiB; "
        "Prometheus also stops at 85 % of it (`retentionSize`). `0`: an `emptyDir` that a pod restart "
        "empties.",
    )
    prometheus_memory: Annotated[
        str, Strict(), matches(r"[1-9][0-9]*(Mi|Gi)", "a memory quantity such as 1536Mi or 2Gi")
    ] = Field(
        "2Gi",
        description="Prometheus's memory request and limit (equal: the scheduler reserves what it may use).",
    )
    grafana: Bool = Field(
        True,
        description="Grafana in the cluster (only with `kubePrometheusStack`; AMP pairs with Amazon Managed "
        "Grafana).",
        json_schema_extra={"defaultDoc": "`true` with `kubePrometheusStack`, else `false`"},
    )

    @classmethod
    def dependent_defaults(cls, given):  # type: ignore[no-untyped-def]
        return {"grafana": given.value("backend") is MetricsBackend.KUBE_PROMETHEUS_STACK}

    @model_validator(mode="after")
    def _grafana_needs_the_stack(self) -> MetricsConfig:
        if self.grafana and self.backend is not MetricsBackend.KUBE_PROMETHEUS_STACK:
            raise Invalid(
                "false unless addons.metrics.backend is 'kubePrometheusStack'",
                key="addons.metrics.grafana",
                value=True,
            )
        return self


class AddonsConfig(ConfigModel):
    """The cluster add-ons, each switchable."""

    path = "addons"

    karpenter: KarpenterConfig = Field(
        default_factory=KarpenterConfig, description="Karpenter (table below)."
    )
    load_balancer_controller: Toggle = Field(
        default_factory=Toggle,
        description="AWS Load Balancer Controller (the inference Service's NLB needs it).",
    )
    nvidia_device_plugin: Toggle = Field(
        default_factory=Toggle, description="NVIDIA device plugin (GPU nodes advertise `nvidia.com/gpu`)."
    )
    dcgm_exporter: Toggle = Field(
        default_factory=Toggle, description="DCGM exporter (GPU metrics; KEDA's GPU utilisation trigger)."
    )
    keda: Toggle = Field(
        default_factory=Toggle, description="KEDA (event-driven autoscaling, scale to zero)."
    )
    ebs_csi_driver: Toggle = Field(
        default_factory=Toggle,
        description="Amazon EBS CSI driver (EKS managed add-on, Pod Identity) and the default StorageClass "
        "`gp3-encrypted`: persistent volumes such as Prometheus's.",
    )
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig, description="The metrics stack (table below)."
    )
    vpa: VpaAddonConfig = Field(
        default_factory=VpaAddonConfig,
        description="VerticalPodAutoscaler CRDs and recommender (table below).",
    )

    @model_validator(mode="after")
    def _dcgm_needs_prometheus(self) -> AddonsConfig:
        if self.dcgm_exporter.enabled and self.metrics.backend is MetricsBackend.NONE:
            raise Invalid(
                "false when addons.metrics.backend is 'none' "
                "(its ServiceMonitor needs the Prometheus operator)",
                key="addons.dcgmExporter.enabled",
                value=True,
            )
        return self

    @model_validator(mode="after")
    def _storage_needs_the_ebs_csi_driver(self) -> AddonsConfig:
        metrics = self.metrics
        if (
            metrics.backend is not MetricsBackend.NONE
            and metrics.storage_gib
            and not self.ebs_csi_driver.enabled
        ):
            raise Invalid(
                "0 (an emptyDir) while addons.ebsCsiDriver.enabled is false (persistent volumes need the "
                "EBS CSI driver)",
                key="addons.metrics.storageGiB",
                value=metrics.storage_gib,
            )
        return self
