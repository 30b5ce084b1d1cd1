"""``cluster`` section: the EKS control plane."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, Strict, ValidationInfo, field_validator

from .base import Bool, Cidr, CommaSeparated, ConfigModel, Given, LogRetentionDays, Unique
from .errors import Invalid, Rule, matches
from .versions import DEFAULT_KUBERNETES_VERSION, KUBERNETES_VERSIONS, KubernetesVersionInfo

LogType = Literal["api", "audit", "authenticator", "controllerManager", "scheduler"]
LOG_TYPES: tuple[LogType, ...] = get_args(LogType)

#: EKS managed add-ons this stack can install. metrics-server is an EKS community add-on.
ManagedAddon = Literal["coredns", "eks-pod-identity-agent", "kube-proxy", "metrics-server", "vpc-cni"]
MANAGED_ADDONS: tuple[str, ...] = get_args(ManagedAddon)
#: Without these the nodes never become Ready (bootstrapSelfManagedAddons is off).
REQUIRED_ADDONS = ("coredns", "kube-proxy", "vpc-cni")

#: EKS upgrade policy. extended: the version stays after standard support (extra cost per cluster hour);
#: standard: EKS auto-upgrades the control plane when standard support ends.
SupportType = Literal["extended", "standard"]

KubernetesVersion = Annotated[
    str, Strict(), Rule(KUBERNETES_VERSIONS.__contains__, f"one of {list(KUBERNETES_VERSIONS)} (a string)")
]
RoleArn = Annotated[
    str,
    Strict(),
    matches(
        r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}",
        "IAM role ARNs such as arn:aws:iam::123456789012:role/platform-admin",
    ),
]


class EndpointAccess(enum.StrEnum):
    """``publicAndPrivate``: API reachable from ``publicAccessCidrs`` and inside the VPC.
    ``private``: only inside the VPC (kubectl handler, nodes, VPN/peering)."""

    PUBLIC_AND_PRIVATE = "publicAndPrivate"
    PRIVATE = "private"


def _required_addons(addons: tuple[str, ...]) -> bool:
    return all(a in addons for a in REQUIRED_ADDONS)


class ClusterConfig(ConfigModel):
    """The EKS cluster. Secrets are always envelope-encrypted with a rotating KMS key."""

    path = "cluster"

    name: Annotated[
        str,
        Strict(),
        matches(
            r"[a-zA-Z][a-zA-Z0-9-_]{0,99}",
            "1-100 characters: letters, digits, '-' and '_', starting with a letter",
        ),
    ] = Field(
        "llama-eks",
        description="EKS cluster name; also in the `karpenter.sh/discovery` tags and the stack names.",
    )
    kubernetes_version: KubernetesVersion = Field(
        DEFAULT_KUBERNETES_VERSION,
        description="A version of the table above, as a string (the newest in EKS standard support).",
    )
    endpoint_access: EndpointAccess = Field(
        EndpointAccess.PUBLIC_AND_PRIVATE,
        description="`publicAndPrivate`: API reachable from `publicAccessCidrs` and inside the VPC; "
        "`private`: inside the VPC only (the kubectl handler always runs in the private subnets).",
    )
    public_access_cidrs: Annotated[tuple[Cidr, ...], CommaSeparated] = Field(
        ("0.0.0.0/0",),
        description="Clients of the public API endpoint: non-empty with `publicAndPrivate`, empty with "
        "`private`. Restrict it to your office/VPN ranges for production.",
        json_schema_extra={"defaultDoc": '`["0.0.0.0/0"]` with `publicAndPrivate`, `[]` with `private`'},
    )
    logging: Annotated[tuple[LogType, ...], CommaSeparated, Unique] = Field(
        LOG_TYPES, description="Control-plane log types sent to CloudWatch Logs."
    )
    log_retention_days: LogRetentionDays = Field(
        90,
        description="Retention of `/aws/eks/<name>/cluster`. The log group is **retained** on `cdk destroy` "
        "(audit logs): delete it by hand before re-creating a cluster with the same name.",
    )
    admin_role_arns: Annotated[tuple[RoleArn, ...], CommaSeparated] = Field(
        (),
        description="IAM roles that get an `AmazonEKSClusterAdminPolicy` access entry (the deploying "
        "identity always gets admin).",
    )
    managed_addons: Annotated[
        tuple[ManagedAddon, ...],
        CommaSeparated,
        Unique,
        Rule(
            _required_addons,
            f"a list that includes {list(REQUIRED_ADDONS)} (nodes need them to become Ready)",
        ),
    ] = Field(
        # Created in this order: the CNI and kube-proxy before DNS.
        ("vpc-cni", "kube-proxy", "coredns", "eks-pod-identity-agent", "metrics-server"),
        description="EKS managed add-ons (self-managed bootstrap add-ons are off).",
    )
    support_type: SupportType = Field(
        "extended",
        description="`extended` (EKS default: the version keeps running in extended support, at extra cost "
        "per cluster hour) or `standard` (EKS auto-upgrades the control plane when standard support ends).",
    )
    deletion_protection: Bool = Field(
        False,
        description="EKS refuses to delete the cluster (also through `cdk destroy`) until it is turned off.",
    )

    @classmethod
    def dependent_defaults(cls, given: Given) -> Mapping[str, Any]:
        # Open to any client by default only when the API has a public endpoint at all.
        private = given.value("endpoint_access") is EndpointAccess.PRIVATE
        return {"publicAccessCidrs": [] if private else ["0.0.0.0/0"]}

    @field_validator("public_access_cidrs")
    @classmethod
    def _cidrs_match_access(cls, cidrs: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        access = info.data.get("endpoint_access")
        if access is EndpointAccess.PRIVATE and cidrs:
            raise Invalid("an empty list when cluster.endpointAccess is 'private'", value=list(cidrs))
        if access is EndpointAccess.PUBLIC_AND_PRIVATE and not cidrs:
            raise Invalid(
                "a non-empty list of IPv4 CIDRs when cluster.endpointAccess is 'publicAndPrivate' "
                "(use 'private' for no public access)",
                value=[],
            )
        return cidrs

    @property
    def version_info(self) -> KubernetesVersionInfo:
        return KUBERNETES_VERSIONS[self.kubernetes_version]
