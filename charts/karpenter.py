"""Karpenter NodePools and EC2NodeClass as typed cdk8s constructs (generated from ../shared/crds).

Seed ch6: the GPU NodePool ``eks-gpu-np`` launches G6 instances (spot or on-demand) when inference pods
are pending and removes them when idle. The book selects ``karpenter.k8s.aws/instance-generation In
[g6]``, which never matches (the generation label is a number such as ``6``); the family label
``karpenter.k8s.aws/instance-family`` is the one that carries ``g6``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import cdk8s
from constructs import Construct

from config.addons import KarpenterConfig
from config.names import (
    GENERAL_NODEPOOL_NAME,
    GPU_NODEPOOL_NAME,
    GPU_RESOURCE,
    GPU_TAINT_KEY,
    GPU_TAINT_VALUE,
    NODE_CLASS_LABEL,
    NODECLASS_NAME,
)
from imports.aws.k8s import karpenter as k8s_aws
from imports.sh import karpenter

__all__ = ["GENERAL_NODEPOOL_NAME", "GPU_NODEPOOL_NAME", "GpuNodePoolProps", "KarpenterNodePools"]

#: The defaults of the ``addons.karpenter`` section (the props' defaults; one home: config/addons.py).
_DEFAULTS = KarpenterConfig()
#: Subnets and security groups Karpenter may use carry this tag (value: the cluster name).
DISCOVERY_TAG = "karpenter.sh/discovery"

_DURATION = re.compile(r"^([0-9]+(s|m|h))+$")
_DURATION_OR_NEVER = re.compile(r"^(([0-9]+(s|m|h))+|Never)$")
_POLICY = karpenter.NodePoolSpecDisruptionConsolidationPolicy
_CONSOLIDATION_POLICIES = {
    "WhenEmpty": _POLICY.WHEN_EMPTY,
    "WhenEmptyOrUnderutilized": _POLICY.WHEN_EMPTY_OR_UNDERUTILIZED,
}
_RESERVED_TAG_PREFIXES = ("kubernetes.io/cluster", "karpenter.sh/", "karpenter.k8s.aws/", "eks:")


@dataclass(frozen=True)
class GpuNodePoolProps:
    """The GPU NodePool that serves inference. Defaults (those of ``addons.karpenter``): G6, spot +
    on-demand, only empty nodes are consolidated (after 5 minutes), at most one node disrupted at once,
    nodes expire after 30 days, a draining node is terminated after 1 hour at the latest."""

    instance_families: tuple[str, ...] = _DEFAULTS.gpu_instance_families
    capacity_types: tuple[str, ...] = _DEFAULTS.capacity_types
    consolidation_policy: str = _DEFAULTS.consolidation_policy
    consolidate_after: str = _DEFAULTS.consolidate_after
    #: A duration or ``Never``.
    expire_after: str = _DEFAULTS.expire_after
    #: Pods get this long to drain before a disrupted node is forcibly terminated.
    termination_grace_period: str = _DEFAULTS.termination_grace_period
    disruption_budget: str = _DEFAULTS.disruption_budget
    gpu_limit: int = _DEFAULTS.gpu_limit
    cpu_limit: int = _DEFAULTS.cpu_limit


@dataclass(frozen=True)
class KarpenterNodePoolsProps:
    """Everything the Karpenter chart needs. ``node_role_name`` may be a CDK token (resolved at deploy)."""

    cluster_name: str
    node_role_name: str
    #: AMI alias ``al2023@<release>``; pin a release, ``@latest`` rolls every node on each AMI release.
    ami_alias: str = _DEFAULTS.ami_alias
    root_volume_gib: int = _DEFAULTS.root_volume_gib
    #: IMDSv2 hop limit: 1 keeps pods (one hop further) away from the node's credentials.
    imds_hop_limit: int = 1
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    gpu: GpuNodePoolProps = field(default_factory=GpuNodePoolProps)
    #: Optional NodePool for CPU pods (``None``: CPU pods stay on the system nodegroup).
    general_purpose_cpu_limit: int | None = None


class KarpenterNodePools(cdk8s.Chart):
    """EC2NodeClass ``default`` plus NodePool ``eks-gpu-np`` (and optionally ``general-purpose``).

    Invalid props fail here, in the constructor, with the offending field named.
    """

    def __init__(self, scope: Construct, construct_id: str, *, props: KarpenterNodePoolsProps) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        _validate(props)
        self.props = props
        self.node_class = self._node_class(props)
        self.gpu_pool = self._gpu_pool(props.gpu)
        self.general_pool = (
            self._general_pool(props.general_purpose_cpu_limit)
            if props.general_purpose_cpu_limit is not None
            else None
        )

    def _node_class(self, p: KarpenterNodePoolsProps) -> k8s_aws.Ec2NodeClass:
        discovery = {DISCOVERY_TAG: p.cluster_name}
        return k8s_aws.Ec2NodeClass(
            self,
            "NodeClass",
            metadata=cdk8s.ApiObjectMetadata(name=NODECLASS_NAME),
            spec=k8s_aws.Ec2NodeClassSpec(
                role=p.node_role_name,
                ami_selector_terms=[k8s_aws.Ec2NodeClassSpecAmiSelectorTerms(alias=p.ami_alias)],
                subnet_selector_terms=[k8s_aws.Ec2NodeClassSpecSubnetSelectorTerms(tags=discovery)],
                security_group_selector_terms=[
                    k8s_aws.Ec2NodeClassSpecSecurityGroupSelectorTerms(tags=discovery)
                ],
                block_device_mappings=[
                    k8s_aws.Ec2NodeClassSpecBlockDeviceMappings(
                        device_name="/dev/xvda",
                        root_volume=True,
                        ebs=k8s_aws.Ec2NodeClassSpecBlockDeviceMappingsEbs(
                            volume_size=f"{p.root_volume_gib}Gi",
                            volume_type=k8s_aws.Ec2NodeClassSpecBlockDeviceMappingsEbsVolumeType.GP3,
                            encrypted=True,
                            delete_on_termination=True,
                        ),
                    )
                ],
                metadata_options=k8s_aws.Ec2NodeClassSpecMetadataOptions(
                    http_endpoint=k8s_aws.Ec2NodeClassSpecMetadataOptionsHttpEndpoint.ENABLED,
                    http_protocol_i_pv6=k8s_aws.Ec2NodeClassSpecMetadataOptionsHttpProtocolIPv6.DISABLED,
                    http_put_response_hop_limit=p.imds_hop_limit,
                    http_tokens=k8s_aws.Ec2NodeClassSpecMetadataOptionsHttpTokens.REQUIRED,
                ),
                tags={**p.tags, DISCOVERY_TAG: p.cluster_name},
            ),
        )

    def _ref(self) -> karpenter.NodePoolSpecTemplateSpecNodeClassRef:
        return karpenter.NodePoolSpecTemplateSpecNodeClassRef(
            group="karpenter.k8s.aws", kind="EC2NodeClass", name=NODECLASS_NAME
        )

    @staticmethod
    def _req(key: str, values: tuple[str, ...] | list[str]) -> karpenter.NodePoolSpecTemplateSpecRequirements:
        return karpenter.NodePoolSpecTemplateSpecRequirements(
            key=key, operator=karpenter.NodePoolSpecTemplateSpecRequirementsOperator.IN, values=list(values)
        )

    def _gpu_pool(self, g: GpuNodePoolProps) -> karpenter.NodePool:
        return karpenter.NodePool(
            self,
            "GpuNodePool",
            metadata=cdk8s.ApiObjectMetadata(name=GPU_NODEPOOL_NAME),
            spec=karpenter.NodePoolSpec(
                template=karpenter.NodePoolSpecTemplate(
                    metadata=karpenter.NodePoolSpecTemplateMetadata(labels={NODE_CLASS_LABEL: "gpu"}),
                    spec=karpenter.NodePoolSpecTemplateSpec(
                        node_class_ref=self._ref(),
                        requirements=[
                            self._req("karpenter.k8s.aws/instance-family", g.instance_families),
                            self._req("karpenter.sh/capacity-type", g.capacity_types),
                            self._req("kubernetes.io/arch", ["amd64"]),
                            self._req("kubernetes.io/os", ["linux"]),
                        ],
                        taints=[
                            karpenter.NodePoolSpecTemplateSpecTaints(
                                key=GPU_TAINT_KEY,
                                value=GPU_TAINT_VALUE,
                                effect=karpenter.NodePoolSpecTemplateSpecTaintsEffect.NO_SCHEDULE,
                            )
                        ],
                        expire_after=g.expire_after,
                        termination_grace_period=g.termination_grace_period,
                    ),
                ),
                disruption=karpenter.NodePoolSpecDisruption(
                    consolidation_policy=_CONSOLIDATION_POLICIES[g.consolidation_policy],
                    consolidate_after=g.consolidate_after,
                    budgets=[
                        # Voluntary disruption (drift, emptiness, consolidation) of this many nodes at once;
                        # expiry and interruptions ignore budgets (see addons.karpenter.expireAfter).
                        karpenter.NodePoolSpecDisruptionBudgets(nodes=g.disruption_budget),
                        # An AMI bump drifts every GPU node: replace them one at a time.
                        karpenter.NodePoolSpecDisruptionBudgets(
                            nodes="1", reasons=[karpenter.NodePoolSpecDisruptionBudgetsReasons.DRIFTED]
                        ),
                    ],
                ),
                limits={
                    "cpu": karpenter.NodePoolSpecLimits.from_number(g.cpu_limit),
                    GPU_RESOURCE: karpenter.NodePoolSpecLimits.from_number(g.gpu_limit),
                },
                weight=10,
            ),
        )

    def _general_pool(self, cpu_limit: int) -> karpenter.NodePool:
        return karpenter.NodePool(
            self,
            "GeneralPurposeNodePool",
            metadata=cdk8s.ApiObjectMetadata(name=GENERAL_NODEPOOL_NAME),
            spec=karpenter.NodePoolSpec(
                template=karpenter.NodePoolSpecTemplate(
                    metadata=karpenter.NodePoolSpecTemplateMetadata(labels={NODE_CLASS_LABEL: "general"}),
                    spec=karpenter.NodePoolSpecTemplateSpec(
                        node_class_ref=self._ref(),
                        requirements=[
                            self._req("karpenter.k8s.aws/instance-category", ["c", "m", "r"]),
                            karpenter.NodePoolSpecTemplateSpecRequirements(
                                key="karpenter.k8s.aws/instance-generation",
                                operator=karpenter.NodePoolSpecTemplateSpecRequirementsOperator.GT,
                                values=["5"],
                            ),
                            self._req("karpenter.sh/capacity-type", ["spot", "on-demand"]),
                            self._req("kubernetes.io/arch", ["amd64"]),
                            self._req("kubernetes.io/os", ["linux"]),
                        ],
                        expire_after=self.props.gpu.expire_after,
                        termination_grace_period=self.props.gpu.termination_grace_period,
                    ),
                ),
                disruption=karpenter.NodePoolSpecDisruption(
                    consolidation_policy=karpenter.NodePoolSpecDisruptionConsolidationPolicy.WHEN_EMPTY_OR_UNDERUTILIZED,
                    consolidate_after="1m",
                    budgets=[karpenter.NodePoolSpecDisruptionBudgets(nodes="10%")],
                ),
                limits={"cpu": karpenter.NodePoolSpecLimits.from_number(cpu_limit)},
                weight=1,
            ),
        )


def _fail(name: str, value: object, allowed: str) -> None:
    raise ValueError(f"KarpenterNodePoolsProps.{name}: {value!r} is invalid; allowed: {allowed}")


def _validate(p: KarpenterNodePoolsProps) -> None:
    if not p.cluster_name:
        _fail("cluster_name", p.cluster_name, "a non-empty cluster name")
    if not p.node_role_name:
        _fail("node_role_name", p.node_role_name, "the IAM role name of the Karpenter nodes")
    if not re.match(r"^(al2023)@(v\d{8}|latest)$", p.ami_alias):
        _fail("ami_alias", p.ami_alias, "al2023@v<YYYYMMDD> (or al2023@latest)")
    if not 20 <= p.root_volume_gib <= 16384:
        _fail("root_volume_gib", p.root_volume_gib, "20 to 16384")
    if not 1 <= p.imds_hop_limit <= 64:
        _fail("imds_hop_limit", p.imds_hop_limit, "1 to 64")
    for key in p.tags:
        if key.startswith(_RESERVED_TAG_PREFIXES):
            allowed = f"keys not starting with {list(_RESERVED_TAG_PREFIXES)} (Karpenter sets those)"
            _fail("tags", key, allowed)
    _validate_gpu(p.gpu)
    if p.general_purpose_cpu_limit is not None and p.general_purpose_cpu_limit < 1:
        _fail("general_purpose_cpu_limit", p.general_purpose_cpu_limit, "a positive integer or None")


def _validate_gpu(g: GpuNodePoolProps) -> None:
    if not g.instance_families:
        _fail("gpu.instance_families", g.instance_families, "at least one family such as g6")
    if not g.capacity_types or set(g.capacity_types) - {"spot", "on-demand", "reserved"}:
        _fail("gpu.capacity_types", g.capacity_types, "spot, on-demand, reserved")
    if g.consolidation_policy not in _CONSOLIDATION_POLICIES:
        _fail("gpu.consolidation_policy", g.consolidation_policy, ", ".join(_CONSOLIDATION_POLICIES))
    for name in ("consolidate_after", "termination_grace_period"):
        if not _DURATION.match(getattr(g, name)):
            _fail(f"gpu.{name}", getattr(g, name), "a duration such as 30s, 5m, 720h")
    if not _DURATION_OR_NEVER.match(g.expire_after):
        _fail("gpu.expire_after", g.expire_after, "a duration such as 720h, or Never")
    if not re.match(r"^((100|[0-9]{1,2})%|[0-9]+)$", g.disruption_budget):
        _fail("gpu.disruption_budget", g.disruption_budget, "a node count or a percentage such as 10%")
    if g.gpu_limit < 1 or g.cpu_limit < 1:
        _fail("gpu.gpu_limit/cpu_limit", (g.gpu_limit, g.cpu_limit), "positive integers")
