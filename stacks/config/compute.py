"""``compute`` section: the system managed nodegroup and where GPU capacity comes from."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ._parse import Section
from .errors import ConfigError

#: Label every node of this product carries; workloads select on it (``system`` or ``gpu``).
NODE_CLASS_LABEL = "llama-eks/node-class"

#: AMI types allowed per nodegroup role (AL2 is end of life; AL2023 and Bottlerocket are current).
SYSTEM_AMI_TYPES = (
    "AL2023_ARM_64_STANDARD",
    "AL2023_X86_64_STANDARD",
    "BOTTLEROCKET_ARM_64",
    "BOTTLEROCKET_X86_64",
)
GPU_AMI_TYPES = (
    "AL2023_ARM_64_NVIDIA",
    "AL2023_X86_64_NVIDIA",
    "BOTTLEROCKET_ARM_64_NVIDIA",
    "BOTTLEROCKET_X86_64_NVIDIA",
)
CAPACITY_TYPES = ("ON_DEMAND", "SPOT")
TAINT_EFFECTS = {
    "NoSchedule": "NO_SCHEDULE",
    "PreferNoSchedule": "PREFER_NO_SCHEDULE",
    "NoExecute": "NO_EXECUTE",
}

_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_TAINT = re.compile(r"^(?P<key>[A-Za-z0-9./_-]{1,253})=(?P<value>[A-Za-z0-9._-]{0,63}):(?P<effect>\w+)$")


class GpuCapacity(enum.Enum):
    """Where GPU nodes come from. ``nodegroup``: the ``gpuNodegroup`` managed nodegroup (seed ch5).

    Extension point: the Karpenter add-on adds ``karpenter`` (NodePools) and makes it the default by
    changing ``DEFAULT_GPU_CAPACITY``; the ClusterStack creates the GPU nodegroup only for ``nodegroup``.
    """

    NODEGROUP = "nodegroup"
    #: Karpenter NodePool ``eks-gpu-np`` (seed ch6; stacks/addons/karpenter.py): GPU nodes only while needed.
    KARPENTER = "karpenter"


DEFAULT_GPU_CAPACITY = GpuCapacity.KARPENTER


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str  # Kubernetes spelling: NoSchedule, PreferNoSchedule, NoExecute

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}"


@dataclass(frozen=True)
class NodegroupConfig:
    """One EKS managed nodegroup. Nodes: IMDSv2 only, encrypted gp3 root volume of ``disk_size_gib``."""

    name: str
    instance_types: tuple[str, ...]
    ami_type: str
    capacity_type: str
    min_size: int
    desired_size: int
    max_size: int
    disk_size_gib: int
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    taints: tuple[Taint, ...] = ()


SYSTEM_DEFAULTS = NodegroupConfig(
    name="eks-mng",
    instance_types=("m5.large", "m6i.large", "m6a.large", "m7i.large", "m7a.large"),
    ami_type="AL2023_X86_64_STANDARD",
    capacity_type="ON_DEMAND",
    min_size=2,
    desired_size=2,
    max_size=3,
    disk_size_gib=50,
    labels=MappingProxyType({NODE_CLASS_LABEL: "system"}),
)

GPU_DEFAULTS = NodegroupConfig(
    name="eks-gpu-mng",
    instance_types=("g6.2xlarge",),
    ami_type="AL2023_X86_64_NVIDIA",
    capacity_type="SPOT",
    min_size=0,
    desired_size=1,
    max_size=2,
    disk_size_gib=100,
    labels=MappingProxyType({NODE_CLASS_LABEL: "gpu"}),
    taints=(Taint("nvidia.com/gpu", "true", "NoSchedule"),),
)


@dataclass(frozen=True)
class ComputeConfig:
    gpu_capacity: GpuCapacity = DEFAULT_GPU_CAPACITY
    system_nodegroup: NodegroupConfig = SYSTEM_DEFAULTS
    gpu_nodegroup: NodegroupConfig = GPU_DEFAULTS


def _taints(s: Section, name: str, default: tuple[Taint, ...]) -> tuple[Taint, ...]:
    raw = s.string_list(name, [str(t) for t in default], non_empty=False)
    taints = []
    for item in raw:
        m = _TAINT.match(item)
        if not m or m["effect"] not in TAINT_EFFECTS:
            raise ConfigError(
                s.key(name),
                item,
                f"taints as key=value:Effect with Effect one of "
                f"{list(TAINT_EFFECTS)}, such as nvidia.com/gpu=true:NoSchedule",
            )
        taints.append(Taint(m["key"], m["value"], m["effect"]))
    return tuple(taints)


def _is_nvidia(instance_type: str) -> bool:
    family = instance_type.split(".")[0]
    return family[0] in "gp" and family[1:2].isdigit()  # g4dn, g5, g6, g6e, p4d, p5 ...


def _is_arm(instance_type: str) -> bool:
    family = instance_type.split(".")[0]
    return family == "a1" or re.match(r"^[a-z]+\d+g", family) is not None  # m7g, c7gn, r8g, t4g, g5g ...


def _check_instance_types(s: Section, instance_types: tuple[str, ...], ami_type: str, gpu: bool) -> None:
    """Instance types must fit the AMI: NVIDIA families for GPU AMIs only, Graviton for ARM AMIs only."""
    arm = "ARM_64" in ami_type
    example = ("g5g.2xlarge" if arm else "g6.2xlarge") if gpu else ("m7g.large" if arm else "m6i.large")
    kind = f"{'NVIDIA GPU' if gpu else 'non-GPU'} {'arm64 (Graviton)' if arm else 'x86_64'}"
    for it in instance_types:
        if _is_nvidia(it) is not gpu or _is_arm(it) is not arm:
            raise ConfigError(
                s.key("instanceTypes"), it, f"{kind} instance types for amiType {ami_type}, such as {example}"
            )


def nodegroup_from_section(s: Section, d: NodegroupConfig, ami_types: tuple[str, ...]) -> NodegroupConfig:
    name = s.string("name", d.name)
    if not re.match(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$", name):
        raise ConfigError(s.key("name"), name, "1-63 characters: letters, digits, '-' and '_'")
    instance_types = s.string_list("instanceTypes", list(d.instance_types))
    for it in instance_types:
        if not _INSTANCE_TYPE.match(it):
            raise ConfigError(s.key("instanceTypes"), it, "EC2 instance type names such as m6i.large")
    min_size = s.integer("minSize", d.min_size, minimum=0, maximum=450)
    max_size = s.integer("maxSize", d.max_size, minimum=1, maximum=450)
    desired = s.integer("desiredSize", d.desired_size, minimum=0, maximum=450)
    if min_size > max_size:
        raise ConfigError(s.key("minSize"), min_size, f"an integer <= {s.key('maxSize')} ({max_size})")
    if not min_size <= desired <= max_size:
        raise ConfigError(
            s.key("desiredSize"),
            desired,
            f"an integer from {s.key('minSize')} ({min_size}) to {s.key('maxSize')} ({max_size})",
        )
    ami_type = s.string("amiType", d.ami_type, choices=ami_types)
    _check_instance_types(s, instance_types, ami_type, gpu=ami_types == GPU_AMI_TYPES)
    config = NodegroupConfig(
        name=name,
        instance_types=instance_types,
        ami_type=ami_type,
        capacity_type=s.string("capacityType", d.capacity_type, choices=CAPACITY_TYPES),
        min_size=min_size,
        desired_size=desired,
        max_size=max_size,
        disk_size_gib=s.integer("diskSizeGiB", d.disk_size_gib, minimum=20, maximum=16384),
        labels=MappingProxyType(s.string_map("labels", dict(d.labels))),
        taints=_taints(s, "taints", d.taints),
    )
    s.reject_unknown()
    return config


def from_section(s: Section) -> ComputeConfig:
    d = ComputeConfig()
    capacity = GpuCapacity(
        s.string("gpuCapacity", d.gpu_capacity.value, choices=[g.value for g in GpuCapacity])
    )
    system = nodegroup_from_section(s.section("systemNodegroup"), d.system_nodegroup, SYSTEM_AMI_TYPES)
    gpu = nodegroup_from_section(s.section("gpuNodegroup"), d.gpu_nodegroup, GPU_AMI_TYPES)
    if system.name == gpu.name:
        raise ConfigError(
            s.key("gpuNodegroup.name"), gpu.name, f"a name different from {s.key('systemNodegroup.name')}"
        )
    s.reject_unknown()
    return ComputeConfig(gpu_capacity=capacity, system_nodegroup=system, gpu_nodegroup=gpu)
