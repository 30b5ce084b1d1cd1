"""``cluster`` section: the EKS control plane."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, Field, Strict, ValidationInfo, field_validator

from .base import (
    PRODUCTION,
    Bool,
    Cidr,
    CommaSeparated,
    ConfigModel,
    Given,
    LogRetentionDays,
    Unique,
    is_production,
)
from .errors import Allowed, Invalid, Rule, matches
from .versions import DEFAULT_KUBERNETES_VERSION, KUBERNETES_VERSIONS, KubernetesVersionInfo, version_allowed

LogType = Literal["api", "audit", "authenticator", "controllerManager", "scheduler"]
LOG_TYPES: tuple[LogType, ...] = get_args(LogType)

#: EKS managed add-ons this stack can install. metrics-server is an EKS community add-on.
ManagedAddon = Literal["coredns", "eks-pod-identity-agent", "kube-proxy", "metrics-server", "vpc-cni"]
MANAGED_ADDONS: tuple[str, ...] = get_args(ManagedAddon)
#: Without these the nodes never become Ready (bootstrapSelfManagedAddons is off).
REQUIRED_ADDONS = ("coredns", "kube-proxy", "vpc-cni")

#: EKS upgrade policy. extended: the version stays after standard support (6 times the standard control
#: plane price per cluster hour); standard: EKS auto-upgrades the control plane when standard support ends.
SupportType = Literal["extended", "standard"]


def _supported_version(value: str) -> str:
    if value not in KUBERNETES_VERSIONS:
        raise Invalid(version_allowed(value))
    return value


KubernetesVersion = Annotated[
    str,
    Strict(),
    AfterValidator(_supported_version),
    Allowed(f"one of {list(KUBERNETES_VERSIONS)} (a string)"),
]

#: How to find one's own principal ARN (error texts and docs).
FIND_YOUR_ARN = (
    "find yours with `aws sts get-caller-identity`: an IAM user ARN (arn:aws:iam::ACCOUNT:user/NAME) is "
    "used as is; for an assumed role (arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION, e.g. an IAM Identity "
    "Center (SSO) permission set) give the role's IAM ARN, path included, as `aws iam get-role --role-name "
    "ROLE --query Role.Arn --output text` prints it, e.g. arn:aws:iam::123456789012:role/aws-reserved/"
    "sso.amazonaws.com/us-west-2/AWSReservedSSO_AdministratorAccess_0123456789abcdef"
)
_PRINCIPAL_ALLOWED = (
    "IAM role or user ARNs such as arn:aws:iam::123456789012:role/platform-admin or "
    "arn:aws:iam::123456789012:user/alice; " + FIND_YOUR_ARN
)
_PARTITION = r"arn:aws(-cn|-us-gov|-iso[a-z]*)?"
_PRINCIPAL = re.compile(_PARTITION + r":iam::\d{12}:(role|user)/([\w+=,.@-]+/)*[\w+=,.@-]{1,128}")
_ASSUMED_ROLE = re.compile(_PARTITION + r":sts::\d{12}:assumed-role/(?P<role>[\w+=,.@-]+)/.+")
#: IAM Identity Center creates its roles under this path; access entries need the ARN with it.
_SSO_PATH = "aws-reserved/sso.amazonaws.com/"


def _principal_arn(value: str) -> str:
    """An IAM role or user ARN that an EKS access entry accepts; clear errors for the two usual mistakes."""
    assumed = _ASSUMED_ROLE.fullmatch(value)
    if assumed:
        role = assumed["role"]
        raise Invalid(
            f"the IAM role ARN of assumed role {role}, not the STS session ARN that `aws sts "
            f"get-caller-identity` prints (access entries take IAM principals): `aws iam get-role "
            f"--role-name {role} --query Role.Arn --output text` prints it, path included"
        )
    if not _PRINCIPAL.fullmatch(value):
        raise Invalid(_PRINCIPAL_ALLOWED)
    name = value.rsplit("/", 1)[-1]
    if name.startswith("AWSReservedSSO_") and _SSO_PATH not in value:
        raise Invalid(
            f"the IAM Identity Center role's full ARN, path included (EKS refuses the ARN without it as an "
            f"invalid principal): `aws iam get-role --role-name {name} --query Role.Arn --output text` "
            f"prints arn:aws:iam::ACCOUNT:role/{_SSO_PATH}REGION/{name} (no REGION/ when Identity Center "
            "lives in us-east-1)"
        )
    return value


PrincipalArn = Annotated[str, Strict(), AfterValidator(_principal_arn), Allowed(_PRINCIPAL_ALLOWED)]


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
        "`private`: inside the VPC only (the kubectl handler always runs in the private subnets; people "
        "need a way into the VPC: VPN, Direct Connect, or AWS CloudShell in the VPC, see the runbook).",
        json_schema_extra={"defaultDoc": "`private` when `production`, else `publicAndPrivate`"},
    )
    public_access_cidrs: Annotated[tuple[Cidr, ...], CommaSeparated] = Field(
        ("0.0.0.0/0",),
        description="Clients of the public API endpoint: non-empty with `publicAndPrivate`, empty with "
        "`private`. With `production`, explicit ranges narrower than `0.0.0.0/0` (your office/VPN egress).",
        json_schema_extra={
            "defaultDoc": '`["0.0.0.0/0"]` with `publicAndPrivate` outside `production`, else `[]`'
        },
    )
    private_access_cidrs: Annotated[tuple[Cidr, ...], CommaSeparated, Unique] = Field(
        (),
        description="Clients of the private API endpoint besides the nodes: networks that reach the VPC "
        "through a VPN, Direct Connect, a transit gateway or peering (the cluster security group admits "
        "HTTPS from them). How people reach a `private` endpoint: the runbook's 'kubectl access'.",
    )
    logging: Annotated[tuple[LogType, ...], CommaSeparated, Unique] = Field(
        LOG_TYPES, description="Control-plane log types sent to CloudWatch Logs."
    )
    log_retention_days: LogRetentionDays = Field(
        90,
        description="Retention of the control-plane log group `/aws/eks/<name>/cluster`, which EKS owns: "
        "the stack sets the retention on every deploy and leaves the group (audit logs) on `cdk destroy`; "
        "a redeploy with the same name reuses it.",
    )
    admin_principal_arns: Annotated[tuple[PrincipalArn, ...], CommaSeparated, Unique] = Field(
        (),
        description="IAM roles or users that get an `AmazonEKSClusterAdminPolicy` access entry: the only "
        "people with kubectl access (nobody else gets any, the deploying identity neither). Required with "
        "`production`. How to find yours: the allowed column, and the runbook's 'kubectl access'.",
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
        "standard",
        description="`standard`: EKS upgrades the control plane to the next version when standard support "
        "ends; `extended` (the EKS API's default): the version keeps running for 12 more months at 6 times "
        "the standard control-plane price per cluster hour.",
    )
    deletion_protection: Bool = Field(
        False,
        description="EKS refuses to delete the cluster (also through `cdk destroy`) until it is turned off.",
    )

    @classmethod
    def dependent_defaults(cls, given: Given) -> Mapping[str, Any]:
        production = is_production(given.context)
        access = given.raw("endpoint_access")
        if access is None:
            access = EndpointAccess.PRIVATE if production else EndpointAccess.PUBLIC_AND_PRIVATE
        else:
            access = given.value("endpoint_access")
        # Open to any client by default only outside production, and only with a public endpoint at all.
        open_to_all = access is EndpointAccess.PUBLIC_AND_PRIVATE and not production
        return {"endpointAccess": access, "publicAccessCidrs": ["0.0.0.0/0"] if open_to_all else []}

    @field_validator("public_access_cidrs")
    @classmethod
    def _cidrs_match_access(cls, cidrs: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        access = info.data.get("endpoint_access")
        production = is_production(info.context)
        if access is EndpointAccess.PRIVATE and cidrs:
            raise Invalid("an empty list when cluster.endpointAccess is 'private'", value=list(cidrs))
        if access is EndpointAccess.PUBLIC_AND_PRIVATE and not cidrs:
            where = "in a production environment: your office/VPN egress ranges" if production else ""
            raise Invalid(
                "a non-empty list of IPv4 CIDRs when cluster.endpointAccess is 'publicAndPrivate' "
                f"{where}{' ' if where else ''}(use 'private' for no public access)",
                value=[],
            )
        if production and access is EndpointAccess.PUBLIC_AND_PRIVATE:
            open_ranges = [c for c in cidrs if c.endswith("/0")]
            if open_ranges:
                raise Invalid(
                    "CIDRs narrower than 0.0.0.0/0 in a production environment (your office/VPN egress "
                    "ranges), or cluster.endpointAccess 'private'",
                    value=list(cidrs),
                )
        return cidrs

    @property
    def version_info(self) -> KubernetesVersionInfo:
        return KUBERNETES_VERSIONS[self.kubernetes_version]


def production_problems(cluster: ClusterConfig) -> list[Invalid]:
    """What a production environment needs of the cluster section (config/app.py applies it): someone
    who can use kubectl (the runbook's smoke test and the API-key Secret need it)."""
    if cluster.admin_principal_arns:
        return []
    return [
        Invalid(
            f"at least one IAM role or user ARN in a production environment (`{PRODUCTION}: true`; nobody "
            f"else gets kubectl access): {FIND_YOUR_ARN}",
            key="cluster.adminPrincipalArns",
            value=[],
        )
    ]
