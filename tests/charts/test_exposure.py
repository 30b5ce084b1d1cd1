"""charts/exposure.py on its own: one config model and one helper that any exposed Service reuses (the
inference Service; the chat UI of issue 15 is the second user: simulated here by a second ExposureConfig
subclass and a second Service in the same chart)."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
import cdk8s
import cdk8s_plus_30 as kplus
import pytest
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk.assertions import Template
from cdk8s import Testing as Cdk8sTesting

from charts.exposure import ANNOTATION_PREFIX, Exposure
from config.errors import ConfigError
from config.exposure import DEFAULT_TLS_POLICY, ExposureConfig, TlsPolicy
from tests.charts.manifests import CERTIFICATE_ARN

VPC = "10.0.0.0/16"


class ChatUiExposure(ExposureConfig):
    """A second exposed Service's section, as the chat UI declares it."""

    path = "inference.chatUi.exposure"


def render(*exposures: tuple[str, Exposure, int]) -> list[dict[str, Any]]:
    """One chart with a Service per (name, exposure, target port)."""
    chart = cdk8s.Chart(Cdk8sTesting.app(), "Test", namespace="llama", disable_resource_name_hashes=True)
    for name, exposure, target_port in exposures:
        pods = kplus.Pods.select(chart, f"{name}-pods", labels={"app": name})
        exposure.service(chart, name, name=name, labels={"app": name}, selector=pods, target_port=target_port)
    return Cdk8sTesting.synth(chart)


def exposure(section: dict[str, Any], *, model: type[ExposureConfig] = ExposureConfig, **kw: Any) -> Exposure:
    return Exposure(
        config=model.load(section),
        vpc_cidr=VPC,
        health_check_path=kw.get("health_check_path", "/readyz"),
        deregistration_delay_seconds=kw.get("delay", 85),
    )


def test_internal_nlb_on_80() -> None:
    (svc,) = render(("api", exposure({}), 5000))
    ann = svc["metadata"]["annotations"]
    assert ann == {
        ANNOTATION_PREFIX + "type": "external",
        ANNOTATION_PREFIX + "scheme": "internal",
        ANNOTATION_PREFIX + "nlb-target-type": "ip",
        ANNOTATION_PREFIX + "healthcheck-protocol": "HTTP",
        ANNOTATION_PREFIX + "healthcheck-path": "/readyz",
        ANNOTATION_PREFIX + "healthcheck-port": "traffic-port",
        ANNOTATION_PREFIX + "healthcheck-interval": "10",
        ANNOTATION_PREFIX + "healthcheck-healthy-threshold": "2",
        ANNOTATION_PREFIX + "healthcheck-unhealthy-threshold": "2",
        ANNOTATION_PREFIX + "target-group-attributes": (
            "deregistration_delay.timeout_seconds=85,preserve_client_ip.enabled=false"
        ),
        ANNOTATION_PREFIX + "attributes": "load_balancing.cross_zone.enabled=true",
    }
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 5000}]
    assert svc["spec"]["loadBalancerSourceRanges"] == [VPC]


def test_tls_moves_the_one_listener_to_443() -> None:
    e = exposure({"certificateArn": CERTIFICATE_ARN, "tlsPolicy": "ELBSecurityPolicy-TLS13-1-3-2021-06"})
    (svc,) = render(("api", e, 5000))
    ann = svc["metadata"]["annotations"]
    assert ann[ANNOTATION_PREFIX + "ssl-cert"] == CERTIFICATE_ARN
    assert ann[ANNOTATION_PREFIX + "ssl-ports"] == "443"
    assert ann[ANNOTATION_PREFIX + "ssl-negotiation-policy"] == "ELBSecurityPolicy-TLS13-1-3-2021-06"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 443, "protocol": "TCP", "targetPort": 5000}]
    assert (e.port, e.config.url_scheme) == (443, "https")


def test_a_second_service_reuses_it_unchanged() -> None:
    api = exposure(
        {"scheme": "internet-facing", "sourceRanges": ["203.0.113.0/24"], "certificateArn": CERTIFICATE_ARN}
    )
    ui = exposure(
        {"scheme": "internet-facing", "sourceRanges": ["198.51.100.0/24"], "certificateArn": CERTIFICATE_ARN},
        model=ChatUiExposure,
        health_check_path="/healthz",
        delay=30,
    )
    api_svc, ui_svc = render(("my-llama-svc", api, 5000), ("chatbot-ui-service", ui, 7860))
    assert ui_svc["metadata"]["name"] == "chatbot-ui-service"
    assert ui_svc["spec"]["selector"] == {"app": "chatbot-ui-service"}
    assert ui_svc["spec"]["ports"] == [{"name": "http", "port": 443, "protocol": "TCP", "targetPort": 7860}]
    assert ui_svc["spec"]["loadBalancerSourceRanges"] == ["198.51.100.0/24"]
    ann = ui_svc["metadata"]["annotations"]
    assert ann[ANNOTATION_PREFIX + "healthcheck-path"] == "/healthz"
    assert ann[ANNOTATION_PREFIX + "target-group-attributes"].startswith(
        "deregistration_delay.timeout_seconds=30,"
    )
    assert api_svc["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]


def test_error_texts_name_each_services_own_key() -> None:
    with pytest.raises(ConfigError) as err:
        ChatUiExposure.load({"scheme": "internet-facing"})
    assert str(err.value) == (
        "Invalid config 'inference.chatUi.exposure.sourceRanges': []. Allowed: a non-empty list of client "
        "CIDRs when inference.chatUi.exposure.scheme is 'internet-facing'."
    )
    with pytest.raises(ConfigError) as err:
        ChatUiExposure.load({"scheme": "internet-facing", "sourceRanges": ["0.0.0.0/0"]})
    assert str(err.value) == (
        "Invalid config 'inference.chatUi.exposure.sourceRanges': '0.0.0.0/0'. Allowed: client CIDRs "
        "narrower than /0 (set inference.chatUi.exposure.allowAnySource to true to open the endpoint to the "
        "whole internet)."
    )


def test_ingress_sources_are_the_vpc() -> None:
    # IP targets without client IP preservation: the pods see the NLB's addresses, in the VPC.
    public = exposure({"scheme": "internet-facing", "sourceRanges": ["203.0.113.0/24"]})
    assert public.ingress_cidrs == [VPC]
    assert public.source_ranges == ["203.0.113.0/24"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vpc_cidr": "10.0.0.1/16"}, "Invalid config 'network.vpcCidr': '10.0.0.1/16'."),
        ({"health_check_path": "readyz"}, "Invalid config 'exposure.healthCheckPath': 'readyz'."),
        (
            {"deregistration_delay_seconds": 3601},
            "Invalid config 'exposure.deregistrationDelaySeconds': 3601.",
        ),
    ],
)
def test_props_are_validated(kwargs: dict[str, Any], message: str) -> None:
    props = {
        "config": ExposureConfig(),
        "vpc_cidr": VPC,
        "health_check_path": "/readyz",
        "deregistration_delay_seconds": 85,
        **kwargs,
    }
    with pytest.raises(ConfigError) as err:
        Exposure(**props)
    assert str(err.value).startswith(message)


def elb_policy_names() -> set[str]:
    """The ELB API's names of every ``SslPolicy`` aws-cdk-lib knows (jsii enums expose only the member
    names in Python, so each is rendered by a TLS listener and read back from the template)."""
    stack = cdk.Stack(cdk.App())
    vpc = ec2.Vpc(stack, "Vpc", max_azs=2, nat_gateways=0)
    nlb = elbv2.NetworkLoadBalancer(stack, "Nlb", vpc=vpc)
    group = elbv2.NetworkTargetGroup(stack, "Targets", vpc=vpc, port=80, target_type=elbv2.TargetType.IP)
    for i, policy in enumerate(elbv2.SslPolicy):
        nlb.add_listener(
            f"L{i}",
            port=1000 + i,
            protocol=elbv2.Protocol.TLS,
            certificates=[elbv2.ListenerCertificate.from_arn(CERTIFICATE_ARN)],
            ssl_policy=policy,
            default_target_groups=[group],
        )
    listeners = Template.from_stack(stack).find_resources("AWS::ElasticLoadBalancingV2::Listener")
    return {r["Properties"]["SslPolicy"] for r in listeners.values()}


def test_tls_policies_are_real_tls13_policies() -> None:
    allowed = set(TlsPolicy.__args__)  # type: ignore[attr-defined]
    # Every policy offered is one aws-cdk-lib knows (the ELB API's names) ...
    assert allowed <= elb_policy_names()
    # ... with TLS 1.3 and nothing below TLS 1.2.
    assert all(
        p.startswith(("ELBSecurityPolicy-TLS13-1-2-", "ELBSecurityPolicy-TLS13-1-3-")) for p in allowed
    )
    assert DEFAULT_TLS_POLICY in allowed
