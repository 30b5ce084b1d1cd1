"""``network`` section: the VPC (seed chapter 3 layout)."""

from __future__ import annotations

import enum
import ipaddress
from typing import Annotated, Literal, get_args

from pydantic import Field, field_validator, model_validator

from .base import Bool, Cidr, CommaSeparated, ConfigModel, Int, LogRetentionDays, Str, Unique
from .errors import Invalid, Rule, int_range, raise_all

#: Interface endpoints the VPC can create (service name suffix -> ``ec2.InterfaceVpcEndpointAwsService``).
InterfaceEndpoint = Literal["ec2", "ecr.api", "ecr.dkr", "sqs", "sts"]
INTERFACE_ENDPOINTS: tuple[str, ...] = get_args(InterfaceEndpoint)

#: VPC sizes AWS allows.
VPC_PREFIXES = (16, 24)
#: Smallest subnet this layout creates (AWS allows /28).
MAX_SUBNET_MASK = 28
DEFAULT_REGION = "us-west-2"


def default_availability_zones(region: str) -> tuple[str, ...]:
    """The first three AZ names of ``region`` (``us-west-2a`` ...): the default of ``availabilityZones``."""
    return tuple(f"{region}{letter}" for letter in "abc")


class NatGateways(enum.StrEnum):
    """``single``: one NAT gateway (cheap; egress of every AZ depends on one AZ). ``onePerAz``: HA."""

    SINGLE = "single"
    ONE_PER_AZ = "onePerAz"


def _vpc_cidr(value: str) -> bool:
    return VPC_PREFIXES[0] <= ipaddress.ip_network(value).prefixlen <= VPC_PREFIXES[1]


class NetworkConfig(ConfigModel):
    """The VPC. Defaults reproduce seed chapter 3.

    Subnets are laid out in order, private first, then public, each ``/mask`` block aligned, one per AZ:
    with the defaults private ``10.0.0.0/20, 10.0.16.0/20, 10.0.32.0/20`` and public ``10.0.48.0/24,
    10.0.49.0/24, 10.0.50.0/24`` (the same allocation CDK's ``ec2.Vpc`` makes).
    """

    path = "network"

    vpc_cidr: Annotated[
        Cidr,
        Rule(_vpc_cidr, "an IPv4 CIDR with a prefix from /16 to /24 (a VPC limit)"),
    ] = Field("10.0.0.0/16", description="The VPC's address range.")
    availability_zones: Annotated[tuple[Str, ...], CommaSeparated] = Field(
        default_availability_zones(DEFAULT_REGION),
        description=(
            "2 to 6 distinct AZ names of `aws.region` (default: the region's a, b, c). Explicit so synth "
            "needs no AZ lookup; AZ names map to different physical zones per account: pick names that "
            "exist in yours."
        ),
        json_schema_extra={"defaultDoc": "`aws.region` + a, b, c"},
    )
    private_subnet_mask: Int = Field(
        20,
        ge=VPC_PREFIXES[0] + 1,
        le=MAX_SUBNET_MASK,
        description="One private subnet per AZ (nodes, pods, control-plane ENIs); VPC prefix + 1 to 28.",
    )
    public_subnet_mask: Int = Field(
        24,
        ge=VPC_PREFIXES[0] + 1,
        le=MAX_SUBNET_MASK,
        description="One public subnet per AZ (NAT, internet-facing load balancers); VPC prefix + 1 to 28.",
    )
    nat_gateways: NatGateways = Field(
        NatGateways.SINGLE,
        description="`single`: one NAT gateway (cheaper, egress depends on one AZ); `onePerAz`: one per AZ.",
    )
    flow_logs: Bool = Field(True, description="VPC flow logs (all traffic) to CloudWatch Logs.")
    flow_log_retention_days: LogRetentionDays = Field(90, description="Retention of the flow logs.")
    interface_endpoints: Annotated[tuple[InterfaceEndpoint, ...], CommaSeparated, Unique] = Field(
        (),
        description="Interface endpoints (private DNS on; HTTPS from the VPC CIDR only). An S3 gateway "
        "endpoint is always created.",
    )

    @field_validator("availability_zones")
    @classmethod
    def _az_count(cls, azs: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(azs)) != len(azs) or not 2 <= len(azs) <= 6:
            raise Invalid(
                "2 to 6 distinct availability zones (EKS needs subnets in at least 2)", value=list(azs)
            )
        return azs

    @model_validator(mode="after")
    def _subnets_fit(self) -> NetworkConfig:
        prefix = ipaddress.ip_network(self.vpc_cidr).prefixlen
        raise_all(
            [
                Invalid(int_range(prefix + 1, MAX_SUBNET_MASK), key=f"network.{key}", value=mask)
                for key, mask in (
                    ("privateSubnetMask", self.private_subnet_mask),
                    ("publicSubnetMask", self.public_subnet_mask),
                )
                if mask <= prefix
            ]
        )
        try:
            self._layout()
        except ValueError:
            azs = len(self.availability_zones)
            need = azs * (2 ** (32 - self.private_subnet_mask) + 2 ** (32 - self.public_subnet_mask))
            raise Invalid(
                f"subnet masks whose {azs} private /{self.private_subnet_mask} and {azs} public "
                f"/{self.public_subnet_mask} subnets ({need} addresses) fit in network.vpcCidr "
                f"{self.vpc_cidr} ({2 ** (32 - prefix)} addresses)",
                key="network.privateSubnetMask",
                value=self.private_subnet_mask,
            ) from None
        return self

    @property
    def nat_gateway_count(self) -> int:
        return 1 if self.nat_gateways is NatGateways.SINGLE else len(self.availability_zones)

    @property
    def private_subnet_cidrs(self) -> tuple[str, ...]:
        return self._layout()[0]

    @property
    def public_subnet_cidrs(self) -> tuple[str, ...]:
        return self._layout()[1]

    def _layout(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        vpc = ipaddress.ip_network(self.vpc_cidr)
        cursor = int(vpc.network_address)
        groups: list[tuple[str, ...]] = []
        for mask in (self.private_subnet_mask, self.public_subnet_mask):
            size = 2 ** (32 - mask)
            cidrs = []
            for _ in self.availability_zones:
                cursor = -(-cursor // size) * size  # align up to the block size
                cidrs.append(f"{ipaddress.ip_address(cursor)}/{mask}")
                cursor += size
            groups.append(tuple(cidrs))
        if cursor > int(vpc.broadcast_address) + 1:
            raise ValueError("subnets do not fit")
        return groups[0], groups[1]
