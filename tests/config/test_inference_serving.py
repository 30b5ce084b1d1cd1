"""The inference service's rules across sections (config/app.py, issue 11): env=prod's safe defaults and
refusals, the spot interruption budget, GPU capacity for replicas and rollouts, TLS and the API key."""

from __future__ import annotations

from typing import Any

import pytest

from config import AppConfig, ConfigError, load_config
from tests.conftest import cdk_json_context

CERT = "arn:aws:acm:us-west-2:111111111111:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
PUBLIC = {"inference.exposure.scheme": "internet-facing", "inference.exposure.sourceRanges": "203.0.113.0/24"}
TWO_REPLICAS = (
    "Allowed: an integer >= 2 in env=prod: with one replica every node disruption (spot interruption, node "
    "upgrade, zone outage) is an outage."
)


def load(env: str = "dev", **overrides: Any) -> AppConfig:
    return load_config({**cdk_json_context(), "env": env, **overrides})


def error(env: str = "dev", **overrides: Any) -> str:
    with pytest.raises(ConfigError) as err:
        load(env, **overrides)
    return str(err.value)


def test_prod_defaults_run_two_replicas_dev_one() -> None:
    prod, dev = load("prod").inference, load("dev").inference
    assert (prod.autoscaling.min_replicas, prod.fewest_replicas) == (2, 2)
    assert (dev.autoscaling.min_replicas, dev.fewest_replicas) == (1, 1)
    assert load("prod").production and not load("dev").production
    # Other keys keep their defaults in both.
    assert prod.autoscaling.max_replicas == dev.autoscaling.max_replicas == 5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"inference.autoscaling.minReplicas": 1},
            f"Invalid config 'inference.autoscaling.minReplicas': 1. {TWO_REPLICAS}",
        ),
        (
            # Scale to zero stays a dev feature: in prod it breaks the two-replica rule.
            {"inference.autoscaling.minReplicas": 0},
            f"Invalid config 'inference.autoscaling.minReplicas': 0. {TWO_REPLICAS}",
        ),
        (
            {"inference.autoscaling.mode": "none", "inference.replicas": 1},
            f"Invalid config 'inference.replicas': 1. {TWO_REPLICAS}",
        ),
        (
            PUBLIC,
            "Invalid config 'inference.exposure.certificateArn': None. Allowed: an ACM certificate ARN when "
            "inference.exposure.scheme is 'internet-facing' in env=prod (TLS on 443: without it API keys and "
            "prompts cross the internet in clear text); or scheme 'internal'.",
        ),
    ],
)
def test_prod_refuses_unsafe_serving(overrides: dict[str, Any], message: str) -> None:
    assert error("prod", **overrides) == message


def test_dev_allows_what_prod_refuses() -> None:
    dev = load("dev", **{"inference.autoscaling.minReplicas": 0, **PUBLIC})
    assert dev.inference.fewest_replicas == 0
    assert dev.inference.api_key.enabled  # internet-facing: the API key is on in every environment
    assert not dev.inference.exposure.tls


def test_prod_internet_facing_with_tls_and_key() -> None:
    prod = load("prod", **PUBLIC, **{"inference.exposure.certificateArn": CERT}).inference
    assert prod.exposure.tls and prod.exposure.port == 443 and prod.api_key.enabled
    message = error(
        "prod", **PUBLIC, **{"inference.exposure.certificateArn": CERT, "inference.apiKey.enabled": False}
    )
    assert message.startswith("Invalid config 'inference.apiKey.enabled': False. Allowed: true when ")


def test_certificate_of_another_region_is_refused() -> None:
    other = CERT.replace("us-west-2", "us-east-1")
    assert error(**{"inference.exposure.certificateArn": other}) == (
        f"Invalid config 'inference.exposure.certificateArn': '{other}'. Allowed: an ACM certificate of "
        "region us-west-2 (aws.region): an NLB uses certificates of its own region only."
    )


def test_grace_period_must_fit_a_spot_interruption() -> None:
    message = (
        "Invalid config 'inference.terminationGracePeriodSeconds': {}. Allowed: an integer <= 100 while "
        "the serving capacity can be spot: a spot interruption gives 120 s notice and Karpenter needs about "
        "20 s of it to start the drain (lower inference.server.drainTimeoutSeconds or "
        "inference.preStopSeconds, or use on-demand capacity)."
    )
    # The default GPU NodePool takes spot: a 120 s drain does not fit.
    assert error(**{"inference.server.drainTimeoutSeconds": 120}) == message.format(145)
    assert error(**{"inference.terminationGracePeriodSeconds": 101}) == message.format(101)
    assert load(**{"inference.terminationGracePeriodSeconds": 100}).inference.termination_grace_seconds == 100
    # On-demand only: a long drain is the user's choice.
    on_demand = {"addons.karpenter.capacityTypes": "on-demand", "inference.server.drainTimeoutSeconds": 300}
    assert load(**on_demand).inference.termination_grace_seconds == 325
    # The GPU nodegroup is spot by default (seed ch5); on-demand lifts the bound there too.
    nodegroup = {"compute.gpuCapacity": "nodegroup", "inference.server.drainTimeoutSeconds": 120}
    assert error(**nodegroup) == message.format(145)
    load(**nodegroup, **{"compute.gpuNodegroup.capacityType": "ON_DEMAND"})
    # CPU serving: the general-purpose NodePool takes spot, the system nodegroup is on-demand.
    cpu = {"inference.accelerator": "cpu", "inference.terminationGracePeriodSeconds": 200}
    load(**cpu)
    assert error(**cpu, **{"addons.karpenter.generalPurposePool": True}) == message.format(200)


def test_karpenter_gpu_limit_leaves_room_for_a_rollout() -> None:
    assert error(**{"addons.karpenter.gpuLimit": 5}) == (
        "Invalid config 'addons.karpenter.gpuLimit': 5. Allowed: an integer >= 6: inference's most replicas "
        "(5, one GPU each) plus one for a rolling update's extra pod."
    )
    load(**{"addons.karpenter.gpuLimit": 6})
    load(**{"addons.karpenter.gpuLimit": 3, "inference.autoscaling.maxReplicas": 2})


def test_gpu_nodegroup_has_a_node_per_replica() -> None:
    prod_nodegroup = {"compute.gpuCapacity": "nodegroup"}
    assert error("prod", **prod_nodegroup) == (
        "Invalid config 'compute.gpuNodegroup.desiredSize': 1. Allowed: an integer >= 2 "
        "(inference.autoscaling.minReplicas: one GPU node per replica; no autoscaler adds nodes to the "
        "nodegroup)."
    )
    load("prod", **prod_nodegroup, **{"compute.gpuNodegroup.desiredSize": 2})
    load("dev", **prod_nodegroup)
