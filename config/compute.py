"""``compute`` section: the system managed nodegroup and where GPU capacity comes from."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, Strict, ValidationInfo, model_validator

from .base import Bool, CommaSeparated, ConfigModel, Given, Int, StrMap, is_production
from .errors import Allowed, Invalid, matches, raise_all
from .names import GPU_TAINT_EFFECT, GPU_TAINT_KEY, GPU_TAINT_VALUE, NODE_CLASS_LABEL
from .versions import (
    AL2023_RELEASE_PATTERN,
    DEFAULT_KUBERNETES_VERSION,
    KUBERNETES_VERSIONS,
    al2023_release_date,
)

#: Validation-context key: the cluster's Kubernetes version (config/app.py passes it to this section).
KUBERNETES_VERSION_CONTEXT = "kubernetesVersion"

#: AMI types allowed per nodegroup role (AL2 is end of life; AL2023 and Bottlerocket are current).
SystemAmiType = Literal[
    "AL2023_ARM_64_STANDARD", "AL2023_X86_64_STANDARD", "BOTTLEROCKET_ARM_64", "BOTTLEROCKET_X86_64"
]
GpuAmiType = Literal[
    "AL2023_ARM_64_NVIDIA", "AL2023_X86_64_NVIDIA", "BOTTLEROCKET_ARM_64_NVIDIA", "BOTTLEROCKET_X86_64_NVIDIA"
]
CapacityType = Literal["ON_DEMAND", "SPOT"]
TAINT_EFFECTS = {
    "NoSchedule": "NO_SCHEDULE",
    "PreferNoSchedule": "PREFER_NO_SCHEDULE",
    "NoExecute": "NO_EXECUTE",
}

_TAINT = re.compile(r"^(?P<key>[A-Za-z0-9./_-]{1,253})=(?P<value>[A-Za-z0-9._-]{0,63}):(?P<effect>\w+)$")
_TAINT_ALLOWED = (
    f"taints as key=value:Effect with Effect one of {list(TAINT_EFFECTS)}, such as "
    f"{GPU_TAINT_KEY}={GPU_TAINT_VALUE}:{GPU_TAINT_EFFECT}"
)


class GpuCapacity(enum.StrEnum):
    """Where GPU nodes come from. ``nodegroup``: the ``gpuNodegroup`` managed nodegroup (seed ch5).
    ``karpenter``: Karpenter's GPU NodePool (seed ch6): GPU nodes only while needed."""

    NODEGROUP = "nodegroup"
    KARPENTER = "karpenter"


DEFAULT_GPU_CAPACITY = GpuCapacity.KARPENTER


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str  # Kubernetes spelling: NoSchedule, PreferNoSchedule, NoExecute

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}"


#: The taint of every GPU node.
GPU_TAINT = Taint(GPU_TAINT_KEY, GPU_TAINT_VALUE, GPU_TAINT_EFFECT)


def _taint(value: Any) -> Any:
    if isinstance(value, Taint):
        return value
    m = _TAINT.match(value) if isinstance(value, str) else None
    if not m or m["effect"] not in TAINT_EFFECTS:
        raise Invalid(_TAINT_ALLOWED)
    return Taint(m["key"], m["value"], m["effect"])


InstanceType = Annotated[
    str, Strict(), matches(r"[a-z][a-z0-9-]*\.[a-z0-9]+", "EC2 instance type names such as m6i.large")
]


def is_nvidia(instance_type: str) -> bool:
    family = instance_type.split(".")[0]
    return family[0] in "gp" and family[1:2].isdigit()  # g4dn, g5, g6, g6e, p4d, p5 ...


def is_arm(instance_type: str) -> bool:
    family = instance_type.split(".")[0]
    return family == "a1" or re.match(r"^[a-z]+\d+g", family) is not None  # m7g, c7gn, r8g, t4g, g5g ...


class NodegroupConfig(ConfigModel):
    """One EKS managed nodegroup. Nodes: IMDSv2 only, encrypted gp3 root volume of ``disk_size_gib``.

    Subclasses are the two roles; ``DEFAULTS`` holds each role's defaults (camelCase keys).
    """

    DEFAULTS: ClassVar[Mapping[str, Any]] = {}
    #: Defaults that differ in a production environment.
    PRODUCTION_DEFAULTS: ClassVar[Mapping[str, Any]] = {}
    GPU: ClassVar[bool] = False

    name: Annotated[
        str,
        Strict(),
        matches(r"[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}", "1-63 characters: letters, digits, '-' and '_'"),
    ] = Field(description="Nodegroup name; the two nodegroups' names must differ.")
    instance_types: Annotated[tuple[InstanceType, ...], CommaSeparated] = Field(
        min_length=1,
        description="Instance types that fit `amiType`: NVIDIA families (`g*`, `p*`) only in the GPU "
        "nodegroup, none in the system one; Graviton (`m7g`, `c7gn`, `g5g`, ...) exactly with `ARM_64` AMIs.",
    )
    ami_type: str = Field(description="The EKS AMI type (EKS picks the release that matches the cluster).")
    capacity_type: CapacityType = Field(description="`ON_DEMAND` or `SPOT`.")
    min_size: Int = Field(ge=0, le=450, description="Smallest node count; at most `desiredSize`.")
    desired_size: Int = Field(
        ge=0,
        le=450,
        description="Node count after a deploy, from `minSize` to `maxSize` (CloudFormation sets it on every "
        "deploy of a changed nodegroup: keep it at the floor you want).",
    )
    max_size: Int = Field(ge=1, le=450, description="Largest node count.")
    disk_size_gib: Int = Field(
        ge=20, le=16384, alias="diskSizeGiB", description="Encrypted gp3 root volume, in GiB."
    )
    ami_release_version: (
        Annotated[
            str,
            Strict(),
            matches(AL2023_RELEASE_PATTERN, "an EKS AL2023 AMI release such as 1.35.6-20260714, or null"),
        ]
        | None
    ) = Field(
        None,
        description="The EKS-optimized AL2023 AMI release the nodes run (`<kubernetes patch>-<date>`, a "
        "release of `cluster.kubernetesVersion`). A deploy fails before anything is created when that "
        "release does not exist (its SSM parameter is a CloudFormation parameter); see the runbook for the "
        "command that checks one and the one that prints the newest. `null` with a Bottlerocket `amiType`: "
        "EKS's newest at creation, not pinned.",
        json_schema_extra={
            "defaultDoc": "AL2023: the release in config/versions.py for `cluster.kubernetesVersion`; "
            "Bottlerocket: `null`"
        },
    )
    force_update: Bool = Field(
        True,
        description="`true`: a node update (new AMI release, new launch template) evicts pods even when a "
        "PodDisruptionBudget forbids it; `false`: it respects the budgets and fails after 15 minutes when "
        "one blocks.",
        json_schema_extra={"defaultDoc": "`false` when `production`, else `true`"},
    )
    labels: StrMap = Field(default_factory=dict, description="Kubernetes labels of the nodes.")
    taints: Annotated[
        tuple[Annotated[Taint, BeforeValidator(_taint)], ...], CommaSeparated, Allowed(_TAINT_ALLOWED)
    ] = Field(
        (),
        description="Kubernetes taints of the nodes, `key=value:Effect` "
        f"(Effect: {', '.join(TAINT_EFFECTS)}).",
    )

    @classmethod
    def dependent_defaults(cls, given: Given) -> Mapping[str, Any]:
        defaults = {**cls.DEFAULTS, **(cls.PRODUCTION_DEFAULTS if is_production(given.context) else {})}
        ami = given.raw("ami_type") or defaults["amiType"]
        version = KUBERNETES_VERSIONS.get(
            given.context.get(KUBERNETES_VERSION_CONTEXT, DEFAULT_KUBERNETES_VERSION)
        )
        al2023 = isinstance(ami, str) and ami.startswith("AL2023")
        release = version.al2023_release if al2023 and version is not None else None
        return {**defaults, "amiReleaseVersion": release, "forceUpdate": not is_production(given.context)}

    @property
    def is_al2023(self) -> bool:
        return self.ami_type.startswith("AL2023")

    @property
    def ami_arch(self) -> Literal["x86_64", "arm64"]:
        return "arm64" if "ARM_64" in self.ami_type else "x86_64"

    @property
    def ami_variant(self) -> Literal["standard", "nvidia"]:
        return "nvidia" if self.ami_type.endswith("NVIDIA") else "standard"

    @property
    def ami_release_date(self) -> str | None:
        """``v<YYYYMMDD>`` of the pinned AL2023 release (the tag in its AMI's name), or None."""
        return al2023_release_date(self.ami_release_version) if self.ami_release_version else None

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> NodegroupConfig:
        key = f"{self.path}.{{}}".format
        problems = []
        release = self.ami_release_version
        version = (info.context or {}).get(KUBERNETES_VERSION_CONTEXT, DEFAULT_KUBERNETES_VERSION)
        if release is not None and not self.is_al2023:
            problems.append(
                Invalid(
                    f"null with amiType {self.ami_type} (the pinned releases are EKS AL2023 AMI releases)",
                    key=key("amiReleaseVersion"),
                    value=release,
                )
            )
        elif release is not None and not release.startswith(f"{version}."):
            problems.append(
                Invalid(
                    f"an EKS AL2023 AMI release of Kubernetes {version} (cluster.kubernetesVersion), such as "
                    f"{_example_release(version)}: nodes follow the control plane's minor version",
                    key=key("amiReleaseVersion"),
                    value=release,
                )
            )
        if self.min_size > self.max_size:
            problems.append(
                Invalid(
                    f"an integer <= {key('maxSize')} ({self.max_size})",
                    key=key("minSize"),
                    value=self.min_size,
                )
            )
        elif not self.min_size <= self.desired_size <= self.max_size:
            problems.append(
                Invalid(
                    f"an integer from {key('minSize')} ({self.min_size}) "
                    f"to {key('maxSize')} ({self.max_size})",
                    key=key("desiredSize"),
                    value=self.desired_size,
                )
            )
        arm = "ARM_64" in self.ami_type
        gpu = self.GPU
        example = ("g5g.2xlarge" if arm else "g6.2xlarge") if gpu else ("m7g.large" if arm else "m6i.large")
        kind = f"{'NVIDIA GPU' if gpu else 'non-GPU'} {'arm64 (Graviton)' if arm else 'x86_64'}"
        wrong = [it for it in self.instance_types if is_nvidia(it) is not gpu or is_arm(it) is not arm]
        if wrong:
            problems.append(
                Invalid(
                    f"{kind} instance types for amiType {self.ami_type}, such as {example}",
                    key=key("instanceTypes"),
                    value=wrong[0],
                )
            )
        raise_all(problems)
        return self


class SystemNodegroupConfig(NodegroupConfig):
    """The system nodegroup ``eks-mng``: controllers and add-ons run here, never on GPU nodes."""

    path = "compute.systemNodegroup"
    DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "name": "eks-mng",
        "instanceTypes": ("m5.large", "m6i.large", "m6a.large", "m7i.large", "m7a.large"),
        "amiType": "AL2023_X86_64_STANDARD",
        "capacityType": "ON_DEMAND",
        "minSize": 2,
        "desiredSize": 2,
        "maxSize": 3,
        "diskSizeGiB": 50,
        "labels": {NODE_CLASS_LABEL: "system"},
        "taints": (),
    }

    ami_type: SystemAmiType = Field(
        description="The EKS AMI type (EKS picks the release that matches the cluster)."
    )


class GpuNodegroupConfig(NodegroupConfig):
    """The GPU nodegroup ``eks-gpu-mng`` (seed ch5), created only when ``gpuCapacity`` is ``nodegroup``."""

    path = "compute.gpuNodegroup"
    GPU = True
    DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "name": "eks-gpu-mng",
        "instanceTypes": ("g6.2xlarge",),
        "amiType": "AL2023_X86_64_NVIDIA",
        "capacityType": "SPOT",
        "minSize": 0,
        "desiredSize": 1,
        "maxSize": 2,
        "diskSizeGiB": 100,
        "labels": {NODE_CLASS_LABEL: "gpu"},
        "taints": (GPU_TAINT,),
    }
    #: When this nodegroup serves (gpuCapacity: nodegroup) a production environment keeps two on-demand
    #: nodes over the zones, and room for a third while a rollout surges.
    PRODUCTION_DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "capacityType": "ON_DEMAND",
        "minSize": 2,
        "desiredSize": 2,
        "maxSize": 3,
    }

    ami_type: GpuAmiType = Field(
        description="The EKS AMI type (EKS picks the release that matches the cluster)."
    )


class ComputeConfig(ConfigModel):
    """The system nodegroup and the source of GPU capacity."""

    path = "compute"

    gpu_capacity: GpuCapacity = Field(
        DEFAULT_GPU_CAPACITY,
        description="`karpenter`: Karpenter's GPU NodePool launches GPU nodes while inference pods need "
        "them; `nodegroup`: the `gpuNodegroup` managed nodegroup.",
    )
    system_nodegroup: SystemNodegroupConfig = Field(
        default_factory=lambda: SystemNodegroupConfig.load(),
        description="The system nodegroup (table below).",
    )
    gpu_nodegroup: GpuNodegroupConfig = Field(
        default_factory=lambda: GpuNodegroupConfig.load(),
        description="The GPU nodegroup (table below); created only when `gpuCapacity` is `nodegroup`.",
    )

    @classmethod
    def dependent_defaults(cls, given: Given) -> Mapping[str, Any]:
        # Validated here (not by the default factories) so their defaults see the validation context.
        return {"systemNodegroup": {}, "gpuNodegroup": {}}

    @model_validator(mode="after")
    def _distinct_names(self) -> ComputeConfig:
        if self.system_nodegroup.name == self.gpu_nodegroup.name:
            raise Invalid(
                "a name different from compute.systemNodegroup.name",
                key="compute.gpuNodegroup.name",
                value=self.gpu_nodegroup.name,
            )
        return self


def _example_release(version: str) -> str:
    info = KUBERNETES_VERSIONS.get(version)
    return info.al2023_release if info else f"{version}.0-20260714"


def production_problems(compute: ComputeConfig) -> list[Invalid]:
    """What a production environment needs of the nodegroups (config/app.py applies it): system nodes and,
    when the GPU nodegroup serves, GPU nodes that survive the loss of one node or one spot reclaim."""
    problems = []
    system = compute.system_nodegroup
    if system.min_size < 2:
        problems.append(
            Invalid(
                "an integer >= 2 in a production environment (the controllers, CoreDNS and the load balancer "
                "controller must survive the loss of a node)",
                key="compute.systemNodegroup.minSize",
                value=system.min_size,
            )
        )
    if compute.gpu_capacity is not GpuCapacity.NODEGROUP:
        return problems
    gpu = compute.gpu_nodegroup
    if gpu.min_size < 2:
        problems.append(
            Invalid(
                "an integer >= 2 in a production environment when compute.gpuCapacity is 'nodegroup' (two "
                "serving nodes over the zones keep a replica through a node's loss or update)",
                key="compute.gpuNodegroup.minSize",
                value=gpu.min_size,
            )
        )
    if gpu.capacity_type != "ON_DEMAND":
        problems.append(
            Invalid(
                "'ON_DEMAND' in a production environment when compute.gpuCapacity is 'nodegroup' (spot "
                "capacity of one nodegroup can be reclaimed all at once)",
                key="compute.gpuNodegroup.capacityType",
                value=gpu.capacity_type,
            )
        )
    return problems
