"""``network`` section: the VPC (seed chapter 3 layout)."""

from __future__ import annotations

import enum
import ipaddress
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, Field, Strict, field_validator, model_validator

from .base import Bool, CommaSeparated, ConfigModel, Int, LogRetentionDays, Str, Unique, check_cidr
from .errors import Allowed, Invalid, int_range, raise_all

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


_VPC_LIMIT = " (a VPC limit)"


def _vpc_cidr(value: str) -> str:
    return check_cidr(value, *VPC_PREFIXES, why=_VPC_LIMIT)


class NetworkConfig(ConfigModel):
    """The VPC. Defaults reproduce seed chapter 3.

    Subnets are laid out in order, private first, then public, each ``/mask`` block aligned, one per AZ:
    with the defaults private ``10.0.0.0/20, 10.0.16.0/20, 10.0.32.0/20`` and public ``10.0.48.0/24,
    10.0.49.0/24, 10.0.50.0/24`` (the same allocation CDK's ``ec2.Vpc`` makes).
    """

    path = "network"

    vpc_cidr: Annotated[
        str,
        Strict(),
        AfterValidator(_vpc_cidr),
        Allowed(f"an IPv4 CIDR with a prefix from /{VPC_PREFIXES[0]} to /{VPC_PREFIXES[1]}{_VPC_LIMIT}"),
    ] = Field("10.0.0.0/16", description="The VPC's address range.")
    availability_zones: Annotated[
        tuple[Str, ...], CommaSeparated, Allowed("2 to 6 distinct availability zone names of aws.region")
    ] = Field(
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
        """The subnets must fit the VPC. The error names the key the user set: a subnet mask given
        explicitly is blamed with what would fit; otherwise the VPC CIDR, with the sizes that would fit."""
        prefix = ipaddress.ip_network(self.vpc_cidr).prefixlen
        given = self.model_fields_set
        masks = {"privateSubnetMask": "private_subnet_mask", "publicSubnetMask": "public_subnet_mask"}
        too_wide = [key for key, name in masks.items() if getattr(self, name) <= prefix]
        allowed = int_range(prefix + 1, MAX_SUBNET_MASK)
        raise_all(
            [
                Invalid(allowed, key=f"network.{key}", value=getattr(self, masks[key]))
                for key in too_wide
                if masks[key] in given
            ]
        )
        if not too_wide and _fits(self.vpc_cidr, len(self.availability_zones), *self._masks()):
            return self
        azs, (private, public) = len(self.availability_zones), self._masks()
        subnets = f"{azs} private /{private} and {azs} public /{public} subnets"
        need, have = azs * (2 ** (32 - private) + 2 ** (32 - public)), 2 ** (32 - prefix)
        if given & set(masks.values()):
            raise Invalid(
                f"subnet masks whose {subnets} ({need} addresses) fit in network.vpcCidr {self.vpc_cidr} "
                f"({have} addresses)",
                key="network.privateSubnetMask",
                value=self.private_subnet_mask,
            )
        prefixes = range(VPC_PREFIXES[0], VPC_PREFIXES[1] + 1)
        largest = max((p for p in prefixes if _fits(f"10.0.0.0/{p}", azs, private, public)), default=None)
        options = [
            f"a prefix of /{largest} or shorter: {subnets} need {need} addresses, /{prefix} has {have}"
        ]
        smaller = _largest_masks_that_fit(self.vpc_cidr, azs)
        if smaller:
            options.append(
                f"keep /{prefix} with network.privateSubnetMask={smaller[0]} and "
                f"network.publicSubnetMask={smaller[1]}"
            )
        raise Invalid("; or ".join(options), key="network.vpcCidr", value=self.vpc_cidr)

    def _masks(self) -> tuple[int, int]:
        return self.private_subnet_mask, self.public_subnet_mask

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
        private, public = subnet_layout(self.vpc_cidr, len(self.availability_zones), *self._masks())
        return private, public


def subnet_layout(vpc_cidr: str, azs: int, *masks: int) -> list[tuple[str, ...]]:
    """One ``/mask`` block per AZ for each mask in turn, each aligned, in order from the VPC's start
    (the allocation CDK's ``ec2.Vpc`` makes). Raises ValueError when they do not fit."""
    vpc = ipaddress.ip_network(vpc_cidr)
    cursor = int(vpc.network_address)
    groups: list[tuple[str, ...]] = []
    for mask in masks:
        if mask <= vpc.prefixlen:
            raise ValueError(f"/{mask} subnets do not fit in {vpc_cidr}")
        size = 2 ** (32 - mask)
        cidrs = []
        for _ in range(azs):
            cursor = -(-cursor // size) * size  # align up to the block size
            cidrs.append(f"{ipaddress.ip_address(cursor)}/{mask}")
            cursor += size
        groups.append(tuple(cidrs))
    if cursor > int(vpc.broadcast_address) + 1:
        raise ValueError("subnets do not fit")
    return groups


def _fits(vpc_cidr: str, azs: int, private: int, public: int) -> bool:
    try:
        subnet_layout(vpc_cidr, azs, private, public)
    except ValueError:
        return False
    return True


def _largest_masks_that_fit(vpc_cidr: str, azs: int) -> tuple[int, int] | None:
    """The largest private subnets (then the largest public ones) that fit ``vpc_cidr``, if any."""
    prefix = ipaddress.ip_network(vpc_cidr).prefixlen
    for private in range(prefix + 1, MAX_SUBNET_MASK + 1):
        for public in range(private, MAX_SUBNET_MASK + 1):
            if _fits(vpc_cidr, azs, private, public):
                return private, public
    return None
