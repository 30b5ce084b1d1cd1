"""A Service exposed through a Network Load Balancer, from an ``ExposureConfig`` (config/exposure.py).

Shared by every exposed Service of the product (the inference Service; the chat UI reuses it unchanged):
the AWS Load Balancer Controller's annotations, the source ranges, the port (80, or 443 with TLS ending at
the NLB) and the sources a NetworkPolicy must admit for the NLB to reach the pods.

What the NLB does, and why:

* IP targets (pod IPs, no NodePort hop), client IP preservation **off** (pinned, not left to the target
  group's default): the pods see the NLB's private addresses in the VPC subnets, for client traffic and
  health checks alike, so a NetworkPolicy admits the VPC CIDR (:meth:`Exposure.ingress_cidrs`). Who may
  connect is decided at the NLB: the controller writes ``loadBalancerSourceRanges`` into the NLB's
  frontend security group (the VPC CIDR for ``internal``, the configured client CIDRs otherwise).
* Health check: HTTP on the traffic port, ``health_check_path``, 2 checks of 10 s.
* Deregistration delay = the pod's termination grace period: a terminating pod keeps its in-flight
  connections for as long as it may still be draining them.
* TLS: ``ssl-cert`` (ACM), ``ssl-ports`` (the one listener, 443) and ``ssl-negotiation-policy``. TLS ends at
  the NLB; NLB -> pod and the in-cluster ClusterIP path stay plain HTTP on the same Service port.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cdk8s
import cdk8s_plus_30 as kplus
from constructs import Construct

from config.base import CIDR_ALLOWED, is_ipv4_cidr
from config.errors import ConfigError
from config.exposure import ExposureConfig

#: The AWS Load Balancer Controller's Service annotations.
ANNOTATION_PREFIX = "service.beta.kubernetes.io/aws-load-balancer-"
#: The Service port's name (HTTP from the Service's point of view: TLS, when on, ends at the NLB).
PORT_NAME = "http"


@dataclass(frozen=True)
class Exposure:
    """How one Service is exposed. ``config``: its validated exposure section. ``vpc_cidr``: the VPC (the
    internal NLB's source range and where the NLB's addresses come from). ``health_check_path``: the
    readiness path the NLB checks. ``deregistration_delay_seconds``: how long a deregistered target keeps
    its connections (the pods' termination grace period)."""

    config: ExposureConfig
    vpc_cidr: str
    health_check_path: str
    deregistration_delay_seconds: int

    def __post_init__(self) -> None:
        if not isinstance(self.config, ExposureConfig):
            raise ConfigError("exposure", self.config, "an ExposureConfig")
        if not is_ipv4_cidr(self.vpc_cidr):
            raise ConfigError("network.vpcCidr", self.vpc_cidr, CIDR_ALLOWED)
        if not self.health_check_path.startswith("/"):
            raise ConfigError("exposure.healthCheckPath", self.health_check_path, "an absolute URL path")
        if not 0 <= self.deregistration_delay_seconds <= 3600:
            raise ConfigError(
                "exposure.deregistrationDelaySeconds",
                self.deregistration_delay_seconds,
                "an integer from 0 to 3600 (the NLB's range)",
            )

    @property
    def port(self) -> int:
        """The Service's port (and the NLB listener's): 443 with TLS, else 80."""
        return self.config.port

    @property
    def source_ranges(self) -> list[str]:
        """``loadBalancerSourceRanges``: the VPC for an internal NLB, the client CIDRs otherwise."""
        c = self.config
        return list(c.source_ranges) if c.internet_facing else [self.vpc_cidr]

    @property
    def ingress_cidrs(self) -> list[str]:
        """Where the NLB's packets (client traffic and health checks) come from, as the pods see them: its
        private addresses in the VPC subnets (IP targets, client IP preservation off)."""
        return [self.vpc_cidr]

    def annotations(self) -> dict[str, str]:
        """The AWS Load Balancer Controller's annotations of the Service."""
        c = self.config
        ann = {
            # An NLB provisioned by the AWS Load Balancer Controller (not the in-tree cloud provider) ...
            "type": "external",
            "scheme": c.scheme.value,
            # ... with pod IPs as targets (no NodePort hop; works with Karpenter's short-lived nodes).
            "nlb-target-type": "ip",
            "healthcheck-protocol": "HTTP",
            "healthcheck-path": self.health_check_path,
            "healthcheck-port": "traffic-port",
            "healthcheck-interval": "10",
            "healthcheck-healthy-threshold": "2",
            "healthcheck-unhealthy-threshold": "2",
            "target-group-attributes": ",".join(
                (
                    f"deregistration_delay.timeout_seconds={self.deregistration_delay_seconds}",
                    # Pinned: the pods (and their NetworkPolicy) see the NLB's VPC addresses.
                    "preserve_client_ip.enabled=false",
                )
            ),
            "attributes": "load_balancing.cross_zone.enabled=true",
        }
        if c.tls:
            ann |= {
                "ssl-cert": str(c.certificate_arn),
                "ssl-ports": str(c.port),
                "ssl-negotiation-policy": c.tls_policy,
            }
        return {ANNOTATION_PREFIX + key: value for key, value in ann.items()}

    def service(
        self,
        scope: Construct,
        id: str,
        *,
        name: str,
        labels: Mapping[str, str],
        selector: kplus.IPodSelector,
        target_port: int,
    ) -> kplus.Service:
        """The ``LoadBalancer`` Service ``name``: one port (:attr:`port`, named ``http``) to ``target_port``
        of the pods ``selector`` selects."""
        return kplus.Service(
            scope,
            id,
            metadata=cdk8s.ApiObjectMetadata(name=name, labels=dict(labels), annotations=self.annotations()),
            type=kplus.ServiceType.LOAD_BALANCER,
            selector=selector,
            ports=[
                kplus.ServicePort(
                    name=PORT_NAME, port=self.port, target_port=target_port, protocol=kplus.Protocol.TCP
                )
            ],
            load_balancer_source_ranges=self.source_ranges,
        )

    def ingress_peers(self, scope: Construct, id: str) -> list[kplus.INetworkPolicyPeer]:
        """NetworkPolicy peers that admit the NLB (:attr:`ingress_cidrs`), one ``ipBlock`` each."""
        return [
            kplus.NetworkPolicyIpBlock.ipv4(scope, f"{id}{i}" if i else id, cidr)
            for i, cidr in enumerate(self.ingress_cidrs)
        ]
