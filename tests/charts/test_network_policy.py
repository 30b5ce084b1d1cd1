"""The NetworkPolicy, enforced (vpc-cni's network policy agent), still admits what the service needs: the
NLB's health checks and client traffic, Prometheus' scrapes; and KEDA needs no path to the pods.

Every port and address below is read from the rendered objects (the Service's health-check annotation and
target port, the ServiceMonitor's port name, KEDA's server address), so a change that breaks the path
fails here; tests/helpers/netpol.py evaluates the policy the way the API defines it.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlparse

import pytest

from tests.charts.manifests import Manifests, one
from tests.helpers.netpol import Source, admitted

ANN = "service.beta.kubernetes.io/aws-load-balancer-"
VPC = ipaddress.ip_network("10.0.0.0/16")
#: An NLB ENI's private address in a public subnet (internet-facing) and in a private subnet (internal):
#: both in the VPC, which the Network stack carves into /19s (seed ch3).
NLB_PUBLIC_SUBNET_IP = "10.0.0.37"
NLB_PRIVATE_SUBNET_IP = "10.0.130.8"
PROMETHEUS = Source(
    ip="10.0.140.21",
    namespace="monitoring",
    labels={"app.kubernetes.io/name": "prometheus", "prometheus": "kube-prometheus-stack-prometheus"},
)


def service_target_port(manifests: Manifests, port: int | str) -> int:
    """The pod port a Service port (by number or name) forwards to."""
    (match,) = [p for p in one(manifests, "Service")["spec"]["ports"] if port in (p["port"], p.get("name"))]
    return int(match["targetPort"])


def health_check_port(manifests: Manifests) -> int:
    svc = one(manifests, "Service")
    value = svc["metadata"]["annotations"][ANN + "healthcheck-port"]
    # traffic-port: the target group's port, i.e. the pod port the Service forwards to (IP targets).
    return (
        service_target_port(manifests, svc["spec"]["ports"][0]["port"])
        if value == "traffic-port"
        else int(value)
    )


@pytest.mark.parametrize("variant", ["gpu-keda", "prod", "prod-public-tls", "public-scale-to-zero", "cpu"])
@pytest.mark.parametrize("nlb_ip", [NLB_PUBLIC_SUBNET_IP, NLB_PRIVATE_SUBNET_IP])
def test_nlb_health_checks_and_traffic_are_admitted(
    rendered: dict[str, Manifests], variant: str, nlb_ip: str
) -> None:
    m = rendered[variant]
    deployment = one(m, "Deployment")
    assert ipaddress.ip_address(nlb_ip) in VPC
    nlb = Source(ip=nlb_ip)  # not a pod: no namespace, no labels
    assert admitted(m, deployment, nlb, health_check_port(m))
    svc = one(m, "Service")
    assert admitted(m, deployment, nlb, service_target_port(m, svc["spec"]["ports"][0]["port"]))
    # Nothing else on the pod is open to it.
    assert not admitted(m, deployment, nlb, 22)


@pytest.mark.parametrize("variant", ["public-scale-to-zero", "prod-public-tls"])
def test_internet_clients_reach_the_pods_only_through_the_nlb(
    rendered: dict[str, Manifests], variant: str
) -> None:
    m = rendered[variant]
    svc = one(m, "Service")
    attributes = dict(
        pair.split("=", 1)
        for pair in svc["metadata"]["annotations"][ANN + "target-group-attributes"].split(",")
    )
    # Client IP preservation is pinned off: the pods see the NLB's VPC address, never the client's ...
    assert attributes["preserve_client_ip.enabled"] == "false"
    client = Source(ip=str(next(ipaddress.ip_network(svc["spec"]["loadBalancerSourceRanges"][0]).hosts())))
    port = service_target_port(m, svc["spec"]["ports"][0]["port"])
    # ... so the policy need not (and does not) admit the clients' CIDRs: the NLB's security group checks
    # loadBalancerSourceRanges, the policy admits the NLB.
    assert not admitted(m, one(m, "Deployment"), client, port)
    assert admitted(m, one(m, "Deployment"), Source(ip=NLB_PUBLIC_SUBNET_IP), port)


@pytest.mark.parametrize("variant", ["gpu-keda", "prod-public-tls", "cpu"])
def test_prometheus_scrapes_are_admitted(rendered: dict[str, Manifests], variant: str) -> None:
    m = rendered[variant]
    (endpoint,) = one(m, "ServiceMonitor")["spec"]["endpoints"]
    port = service_target_port(m, endpoint["port"])
    assert admitted(m, one(m, "Deployment"), PROMETHEUS, port)
    # The namespace is what admits it: the same pod elsewhere (outside the VPC's addresses) is refused.
    outsider = Source(ip="192.168.7.7", namespace="other", labels=dict(PROMETHEUS.labels))
    assert not admitted(m, one(m, "Deployment"), outsider, port)


@pytest.mark.parametrize("variant", ["gpu-keda", "prod", "public-scale-to-zero"])
def test_keda_queries_prometheus_not_the_pods(rendered: dict[str, Manifests], variant: str) -> None:
    m = rendered[variant]
    for trigger in one(m, "ScaledObject")["spec"]["triggers"]:
        assert trigger["type"] == "prometheus"
        host = urlparse(trigger["metadata"]["serverAddress"]).hostname or ""
        # <service>.<namespace>.svc: the Prometheus Service in the monitoring namespace, never a pod here.
        name, namespace, *_ = host.split(".")
        assert namespace == PROMETHEUS.namespace != one(m, "Deployment")["metadata"]["namespace"]
        assert name.endswith("-prometheus")
