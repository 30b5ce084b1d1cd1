"""``cluster`` section: the EKS control plane."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from ._parse import Section, check_cidr
from .errors import ConfigError
from .network import log_retention
from .versions import DEFAULT_KUBERNETES_VERSION, KUBERNETES_VERSIONS, KubernetesVersionInfo

LOG_TYPES = ("api", "audit", "authenticator", "controllerManager", "scheduler")

#: EKS managed add-ons this stack can install. metrics-server is an EKS community add-on.
MANAGED_ADDONS = ("coredns", "eks-pod-identity-agent", "kube-proxy", "metrics-server", "vpc-cni")
#: Without these the nodes never become Ready (bootstrapSelfManagedAddons is off).
REQUIRED_ADDONS = ("coredns", "kube-proxy", "vpc-cni")

#: EKS upgrade policy. extended: the version stays after standard support (extra cost per cluster hour);
#: standard: EKS auto-upgrades the control plane when standard support ends.
SUPPORT_TYPES = ("extended", "standard")

_CLUSTER_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9-_]{0,99}$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")


class EndpointAccess(enum.Enum):
    """``publicAndPrivate``: API reachable from ``publicAccessCidrs`` and inside the VPC.
    ``private``: only inside the VPC (kubectl handler, nodes, VPN/peering)."""

    PUBLIC_AND_PRIVATE = "publicAndPrivate"
    PRIVATE = "private"


@dataclass(frozen=True)
class ClusterConfig:
    """The EKS cluster. Secrets are always envelope-encrypted with a rotating KMS key."""

    name: str = "llama-eks"
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
    endpoint_access: EndpointAccess = EndpointAccess.PUBLIC_AND_PRIVATE
    public_access_cidrs: tuple[str, ...] = ("0.0.0.0/0",)
    logging: tuple[str, ...] = LOG_TYPES
    log_retention_days: int = 90
    admin_role_arns: tuple[str, ...] = ()
    managed_addons: tuple[str, ...] = MANAGED_ADDONS
    support_type: str = "extended"
    deletion_protection: bool = False

    @property
    def version_info(self) -> KubernetesVersionInfo:
        return KUBERNETES_VERSIONS[self.kubernetes_version]


def from_section(s: Section) -> ClusterConfig:
    d = ClusterConfig()
    name = s.string("name", d.name)
    if not _CLUSTER_NAME.match(name):
        raise ConfigError(
            s.key("name"), name, "1-100 characters: letters, digits, '-' and '_', starting with a letter"
        )
    version = s.raw("kubernetesVersion", d.kubernetes_version)
    if not isinstance(version, str) or version not in KUBERNETES_VERSIONS:
        raise ConfigError(
            s.key("kubernetesVersion"), version, f"one of {list(KUBERNETES_VERSIONS)} (a string)"
        )

    access = EndpointAccess(
        s.string("endpointAccess", d.endpoint_access.value, choices=[e.value for e in EndpointAccess])
    )
    default_cidrs = list(d.public_access_cidrs) if access is EndpointAccess.PUBLIC_AND_PRIVATE else []
    cidrs = s.string_list("publicAccessCidrs", default_cidrs, non_empty=False)
    for cidr in cidrs:
        check_cidr(s.key("publicAccessCidrs"), cidr)
    if access is EndpointAccess.PRIVATE and cidrs:
        raise ConfigError(
            s.key("publicAccessCidrs"), list(cidrs), "an empty list when cluster.endpointAccess is 'private'"
        )
    if access is EndpointAccess.PUBLIC_AND_PRIVATE and not cidrs:
        raise ConfigError(
            s.key("publicAccessCidrs"),
            [],
            "a non-empty list of IPv4 CIDRs when "
            "cluster.endpointAccess is 'publicAndPrivate' (use 'private' for no public access)",
        )

    arns = s.string_list("adminRoleArns", [], non_empty=False)
    for arn in arns:
        if not _ROLE_ARN.match(arn):
            raise ConfigError(
                s.key("adminRoleArns"),
                arn,
                "IAM role ARNs such as arn:aws:iam::123456789012:role/platform-admin",
            )
    addons = s.choice_list("managedAddons", MANAGED_ADDONS, list(d.managed_addons), non_empty=False)
    missing = [a for a in REQUIRED_ADDONS if a not in addons]
    if missing:
        raise ConfigError(
            s.key("managedAddons"),
            list(addons),
            f"a list that includes {list(REQUIRED_ADDONS)} (nodes need them to become Ready)",
        )
    config = ClusterConfig(
        name=name,
        kubernetes_version=version,
        endpoint_access=access,
        public_access_cidrs=cidrs,
        logging=s.choice_list("logging", LOG_TYPES, list(d.logging), non_empty=False),
        log_retention_days=log_retention(s, "logRetentionDays", d.log_retention_days),
        admin_role_arns=arns,
        managed_addons=addons,
        support_type=s.string("supportType", d.support_type, choices=SUPPORT_TYPES),
        deletion_protection=s.boolean("deletionProtection", d.deletion_protection),
    )
    s.reject_unknown()
    return config
