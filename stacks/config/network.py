"""``network`` section: the VPC (seed chapter 3 layout)."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from ._parse import Section
from .errors import ConfigError

#: Interface endpoints the VPC can create (service name suffix -> ``ec2.InterfaceVpcEndpointAwsService``).
INTERFACE_ENDPOINTS = ("ec2", "ecr.api", "ecr.dkr", "sqs", "sts")


class NatGateways(enum.Enum):
    """``single``: one NAT gateway (cheap; egress of every AZ depends on one AZ). ``onePerAz``: HA."""

    SINGLE = "single"
    ONE_PER_AZ = "onePerAz"


@dataclass(frozen=True)
class NetworkConfig:
    """The VPC. Defaults reproduce seed chapter 3.

    Subnets are laid out in order, private first, then public, each ``/mask`` block aligned, one per AZ:
    with the defaults private ``10.0.0.0/20, 10.0.16.0/20, 10.0.32.0/20`` and public ``10.0.48.0/24,
    10.0.49.0/24, 10.0.50.0/24`` (the same allocation CDK's ``ec2.Vpc`` makes).
    """

    vpc_cidr: str = "10.0.0.0/16"
    availability_zones: tuple[str, ...] = ("us-west-2a", "us-west-2b", "us-west-2c")
    private_subnet_mask: int = 20
    public_subnet_mask: int = 24
    nat_gateways: NatGateways = NatGateways.SINGLE
    flow_logs: bool = True
    flow_log_retention_days: int = 90
    interface_endpoints: tuple[str, ...] = ()

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


# CloudWatch Logs accepts only these retention values.
LOG_RETENTION_DAYS = (
    1,
    3,
    5,
    7,
    14,
    30,
    60,
    90,
    120,
    150,
    180,
    365,
    400,
    545,
    731,
    1096,
    1827,
    2192,
    2557,
    2922,
    3288,
    3653,
)


def log_retention(section: Section, name: str, default: int) -> int:
    value = section.integer(name, default)
    if value not in LOG_RETENTION_DAYS:
        raise ConfigError(section.key(name), value, f"one of {list(LOG_RETENTION_DAYS)}")
    return value


def from_section(s: Section, region: str) -> NetworkConfig:
    d = NetworkConfig()
    vpc_cidr = s.cidr("vpcCidr", d.vpc_cidr)
    vpc_prefix = ipaddress.ip_network(vpc_cidr).prefixlen
    if not 16 <= vpc_prefix <= 24:
        raise ConfigError(
            s.key("vpcCidr"), vpc_cidr, "an IPv4 CIDR with a prefix from /16 to /24 (a VPC limit)"
        )

    default_azs = tuple(f"{region}{letter}" for letter in "abc")
    azs = s.string_list("availabilityZones", list(default_azs))
    for az in azs:
        # AZ names are the region plus one letter (us-west-2a); local/wavelength zones are not for EKS nodes.
        if not (az.startswith(region) and len(az) == len(region) + 1 and az[-1].isalpha()):
            raise ConfigError(
                s.key("availabilityZones"),
                az,
                f"availability zone names of region {region}, such as {region}a",
            )
    if len(set(azs)) != len(azs) or not 2 <= len(azs) <= 6:
        raise ConfigError(
            s.key("availabilityZones"),
            list(azs),
            "2 to 6 distinct availability zones (EKS needs subnets in at least 2)",
        )

    private_mask = s.integer("privateSubnetMask", d.private_subnet_mask, minimum=vpc_prefix + 1, maximum=28)
    public_mask = s.integer("publicSubnetMask", d.public_subnet_mask, minimum=vpc_prefix + 1, maximum=28)
    nat = s.string("natGateways", d.nat_gateways.value, choices=[n.value for n in NatGateways])
    config = NetworkConfig(
        vpc_cidr=vpc_cidr,
        availability_zones=azs,
        private_subnet_mask=private_mask,
        public_subnet_mask=public_mask,
        nat_gateways=NatGateways(nat),
        flow_logs=s.boolean("flowLogs", d.flow_logs),
        flow_log_retention_days=log_retention(s, "flowLogRetentionDays", d.flow_log_retention_days),
        interface_endpoints=s.choice_list("interfaceEndpoints", INTERFACE_ENDPOINTS, [], non_empty=False),
    )
    try:
        config._layout()
    except ValueError:
        need = len(azs) * (2 ** (32 - private_mask) + 2 ** (32 - public_mask))
        raise ConfigError(
            s.key("privateSubnetMask"),
            private_mask,
            f"subnet masks whose {len(azs)} private /{private_mask} and {len(azs)} public "
            f"/{public_mask} subnets ({need} addresses) fit in network.vpcCidr {vpc_cidr} "
            f"({2 ** (32 - vpc_prefix)} addresses)",
        ) from None
    s.reject_unknown()
    return config
