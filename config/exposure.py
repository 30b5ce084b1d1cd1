"""How a Service is exposed: a Network Load Balancer provisioned by the AWS Load Balancer Controller.

One model for every exposed Service of the product (the inference Service ``inference.exposure``; the chat
UI reuses it unchanged): each place subclasses :class:`ExposureConfig` with its own ``path``, so error
texts name the right key. ``charts/exposure.py`` renders it (annotations, source ranges, ports).

The rules, everywhere: ``internal`` by default; ``internet-facing`` only with explicit client CIDRs
(``0.0.0.0/0`` only with ``allowAnySource``); a TLS listener on 443 with an ACM certificate
(``certificateArn``) and a TLS 1.3 policy. In ``env=prod`` an internet-facing NLB without TLS is refused
(:func:`exposure_problems`, applied by ``config/app.py``).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from typing import Annotated, Literal

from pydantic import Field, Strict, model_validator

from .base import Bool, Cidr, CommaSeparated, ConfigModel
from .errors import Invalid, matches

#: ACM certificate ARN (the NLB's TLS listener; the certificate lives in the stack's region).
CERTIFICATE_ARN_PATTERN = (
    r"arn:aws(-cn|-us-gov)?:acm:(?P<region>[a-z]{2}(-gov)?-[a-z]+-\d):\d{12}:certificate/[0-9a-f-]{36}"
)
#: ELB security policies with TLS 1.3 and no protocol below TLS 1.2 (TLS13-1-2-* and TLS13-1-3-*):
#: the current policies of docs.aws.amazon.com/elasticloadbalancing/latest/network/describe-ssl-policies.
TlsPolicy = Literal[
    "ELBSecurityPolicy-TLS13-1-2-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-2-Ext1-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-2-Ext2-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-3-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-2-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Ext1-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Ext2-2021-06",
    "ELBSecurityPolicy-TLS13-1-3-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-FIPS-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-2-Res-FIPS-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-3-FIPS-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-2-FIPS-2023-04",
    "ELBSecurityPolicy-TLS13-1-2-Res-FIPS-2023-04",
    "ELBSecurityPolicy-TLS13-1-3-FIPS-2023-04",
]
#: TLS 1.3 and 1.2 with hybrid post-quantum key exchange (aws-cdk-lib's default for new TLS listeners).
DEFAULT_TLS_POLICY: TlsPolicy = "ELBSecurityPolicy-TLS13-1-2-PQ-2025-09"
#: Listener ports: plain TCP (HTTP) without a certificate, TLS with one.
HTTP_PORT = 80
TLS_PORT = 443

_DOMAIN_NAME = r"(?=.{1,253}$)([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"


class Scheme(enum.StrEnum):
    """NLB scheme. ``internal`` (default) is reachable from the VPC only."""

    INTERNAL = "internal"
    INTERNET_FACING = "internet-facing"


class ExposureConfig(ConfigModel):
    """A LoadBalancer Service: an NLB (IP targets) through the AWS Load Balancer Controller.

    ``internet-facing`` requires ``sourceRanges`` (explicit client CIDRs, enforced by the NLB's security
    group); ``0.0.0.0/0`` is refused unless ``allowAnySource`` is set, so an open endpoint is always a
    deliberate choice. ``certificateArn`` (an ACM certificate of the stack's region) moves the listener to
    443 with TLS ending at the NLB (``tlsPolicy``); ``env=prod`` refuses internet-facing without it.
    """

    #: The dotted key of this exposure (set by each subclass: error texts name it).
    path = ""

    scheme: Scheme = Field(Scheme.INTERNAL, description="`internal`: reachable from the VPC only.")
    source_ranges: Annotated[tuple[Cidr, ...], CommaSeparated] = Field(
        (), description="Client CIDRs of an internet-facing NLB (required then)."
    )
    allow_any_source: Bool = Field(False, description="Allow `0.0.0.0/0` in `sourceRanges`.")
    certificate_arn: (
        Annotated[
            str,
            Strict(),
            matches(
                CERTIFICATE_ARN_PATTERN,
                "an ACM certificate ARN (arn:aws:acm:REGION:ACCOUNT:certificate/ID) of the stack's region",
            ),
        ]
        | None
    ) = Field(
        None,
        description="ACM certificate for a TLS listener on port 443 (instead of plain HTTP on 80); "
        "required for `internet-facing` in `env=prod`.",
    )
    tls_policy: TlsPolicy = Field(
        DEFAULT_TLS_POLICY,
        description="The TLS listener's security policy (TLS 1.3 and 1.2 only).",
    )
    domain_name: (
        Annotated[
            str,
            Strict(),
            matches(_DOMAIN_NAME, "a lower-case DNS name such as llama.example.com"),
        ]
        | None
    ) = Field(
        None,
        description="The DNS name clients use (a record you point at the NLB; covered by the certificate). "
        "Used in the stack's URL outputs; the NLB's own name otherwise.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ExposureConfig:
        key = f"{self.path}.{{}}".format
        for cidr in self.source_ranges:
            if ipaddress.ip_network(cidr).prefixlen == 0 and not self.allow_any_source:
                raise Invalid(
                    f"client CIDRs narrower than /0 (set {key('allowAnySource')} to true to open the "
                    "endpoint to the whole internet)",
                    key=key("sourceRanges"),
                    value=cidr,
                )
        if self.scheme is Scheme.INTERNET_FACING and not self.source_ranges:
            raise Invalid(
                f"a non-empty list of client CIDRs when {key('scheme')} is 'internet-facing'",
                key=key("sourceRanges"),
                value=[],
            )
        return self

    @property
    def internet_facing(self) -> bool:
        return self.scheme is Scheme.INTERNET_FACING

    @property
    def tls(self) -> bool:
        """A TLS listener (the certificate is set)."""
        return self.certificate_arn is not None

    @property
    def port(self) -> int:
        """The Service's (and the NLB listener's) port: 443 with TLS, else 80."""
        return TLS_PORT if self.tls else HTTP_PORT

    @property
    def url_scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def certificate_region(self) -> str | None:
        found = re.fullmatch(CERTIFICATE_ARN_PATTERN, self.certificate_arn or "")
        return found.group("region") if found else None


def exposure_problems(exposure: ExposureConfig, *, production: bool, region: str) -> list[Invalid]:
    """Rules across sections: the certificate's region is the stack's; ``env=prod`` refuses an
    internet-facing NLB without TLS (clients would send the API key and prompts in clear text)."""
    key = f"{exposure.path}.{{}}".format
    problems = []
    cert_region = exposure.certificate_region
    if cert_region is not None and cert_region != region:
        problems.append(
            Invalid(
                f"an ACM certificate of region {region} (aws.region): an NLB uses certificates of its own "
                "region only",
                key=key("certificateArn"),
                value=exposure.certificate_arn,
            )
        )
    if production and exposure.internet_facing and not exposure.tls:
        problems.append(
            Invalid(
                f"an ACM certificate ARN when {key('scheme')} is 'internet-facing' in env=prod (TLS on 443: "
                "without it API keys and prompts cross the internet in clear text); or scheme 'internal'",
                key=key("certificateArn"),
                value=None,
            )
        )
    return problems
