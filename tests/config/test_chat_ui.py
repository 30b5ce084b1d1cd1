"""The ``chatUi`` section (config/chat_ui.py) and its rules across sections (config/app.py, issue 15): the
seed's HPA numbers by default, env=prod's two replicas, the shared exposure rules under the UI's own keys,
and the exact error texts."""

from __future__ import annotations

from typing import Any

import pytest

from config import AppConfig, ConfigError, load_config
from config.chat_ui import ChatUiConfig
from tests.conftest import cdk_json_context

CERT = "arn:aws:acm:us-west-2:111111111111:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
PUBLIC = {"chatUi.exposure.scheme": "internet-facing", "chatUi.exposure.sourceRanges": "203.0.113.0/24"}


#: Production refuses a cluster nobody can administer (tests/config/test_cluster.py): beside the point here.
ADMIN = {"cluster.adminPrincipalArns": "arn:aws:iam::111111111111:role/platform-admin"}


def load(env: str = "dev", **overrides: Any) -> AppConfig:
    return load_config({**cdk_json_context(), "env": env, **(ADMIN if env == "prod" else {}), **overrides})


def error(env: str = "dev", **overrides: Any) -> str:
    with pytest.raises(ConfigError) as err:
        load(env, **overrides)
    return str(err.value)


def test_on_by_default_with_the_seed_hpa() -> None:
    ui = load().chat_ui
    assert ui.enabled
    a = ui.autoscaling
    assert (a.min_replicas, a.max_replicas, a.cpu_utilization) == (1, 5, 70)
    # Seed ch6's VPA, recommendations only, with the VPA add-on (on by default); off without it.
    assert ui.vpa.enabled and ui.vpa.update_mode == "Off"
    assert not load(**{"addons.vpa.enabled": False}).chat_ui.vpa.enabled
    assert ui.exposure.scheme.value == "internal" and not ui.exposure.tls and ui.exposure.port == 80
    assert ui.exposure.path == "chatUi.exposure"
    assert (ui.resources.cpu_request, ui.resources.cpu_limit, ui.resources.memory) == ("250m", "1", "512Mi")
    assert ui.system_prompt is None  # the app's default: the seed's sys_msg
    assert ui.title == "Llama chat" and ui.max_tokens == 512


def test_prod_defaults_run_two_replicas() -> None:
    prod = load("prod").chat_ui.autoscaling
    assert (prod.min_replicas, prod.max_replicas, prod.cpu_utilization) == (2, 5, 70)
    # An explicit value wins over the environment's default.
    assert load("prod", **{"chatUi.autoscaling.minReplicas": 3}).chat_ui.autoscaling.min_replicas == 3


def test_settings_from_the_context() -> None:
    ui = load(
        **{
            "chatUi.title": "Team assistant",
            "chatUi.systemPrompt": "",
            "chatUi.maxTokens": 1024,
            "chatUi.resources.cpuRequest": "500m",
            **PUBLIC,
            "chatUi.exposure.certificateArn": CERT,
            "chatUi.exposure.domainName": "chat.example.com",
        }
    ).chat_ui
    assert (ui.title, ui.system_prompt, ui.max_tokens, ui.resources.cpu_request) == (
        "Team assistant",
        "",
        1024,
        "500m",
    )
    assert ui.exposure.internet_facing and ui.exposure.tls and ui.exposure.port == 443
    assert ui.exposure.source_ranges == ("203.0.113.0/24",)


def test_disabled_skips_the_cross_section_rules() -> None:
    # Nothing of the UI is deployed: its exposure and metrics-server needs do not apply ...
    config = load(
        "prod",
        **{"chatUi.enabled": False, **PUBLIC, "chatUi.autoscaling.minReplicas": 1},
    )
    assert not config.chat_ui.enabled
    # ... but its keys are still validated.
    assert (
        error(**{"chatUi.enabled": False, "chatUi.autoscaling.maxReplicas": 0})
        == "Invalid config 'chatUi.autoscaling.maxReplicas': 0. Allowed: an integer from 1 to 100."
    )


@pytest.mark.parametrize(
    ("env", "overrides", "message"),
    [
        (
            "dev",
            {"chatUi.autoscaling.minReplicas": 4, "chatUi.autoscaling.maxReplicas": 3},
            "Invalid config 'chatUi.autoscaling.maxReplicas': 3. Allowed: an integer from "
            "chatUi.autoscaling.minReplicas (4) to 100.",
        ),
        (
            "dev",
            {"chatUi.autoscaling.cpuUtilization": 0},
            "Invalid config 'chatUi.autoscaling.cpuUtilization': 0. Allowed: an integer from 1 to 100.",
        ),
        (
            "dev",
            {"chatUi.resources.cpuRequest": "2", "chatUi.resources.cpuLimit": "1"},
            "Invalid config 'chatUi.resources.cpuLimit': '1'. Allowed: a quantity >= "
            "chatUi.resources.cpuRequest (2).",
        ),
        (
            "dev",
            {"chatUi.exposure.scheme": "internet-facing"},
            "Invalid config 'chatUi.exposure.sourceRanges': []. Allowed: a non-empty list of client CIDRs "
            "when chatUi.exposure.scheme is 'internet-facing'.",
        ),
        (
            "dev",
            {"chatUi.exposure.scheme": "internet-facing", "chatUi.exposure.sourceRanges": "0.0.0.0/0"},
            "Invalid config 'chatUi.exposure.sourceRanges': '0.0.0.0/0'. Allowed: client CIDRs narrower than "
            "/0 (set chatUi.exposure.allowAnySource to true to open the endpoint to the whole internet).",
        ),
        (
            "prod",
            PUBLIC,
            "Invalid config 'chatUi.exposure.certificateArn': None. Allowed: an ACM certificate ARN when "
            "chatUi.exposure.scheme is 'internet-facing' in env=prod (TLS on 443: without it API keys and "
            "prompts cross the internet in clear text); or scheme 'internal'.",
        ),
        (
            "dev",
            {"chatUi.exposure.certificateArn": CERT.replace("us-west-2", "eu-west-1")},
            f"Invalid config 'chatUi.exposure.certificateArn': '{CERT.replace('us-west-2', 'eu-west-1')}'. "
            "Allowed: an ACM certificate of region us-west-2 (aws.region): an NLB uses certificates of its "
            "own region only.",
        ),
        (
            "prod",
            {"chatUi.autoscaling.minReplicas": 1},
            "Invalid config 'chatUi.autoscaling.minReplicas': 1. Allowed: an integer >= 2 in env=prod: with "
            "one replica every node disruption (spot interruption, node upgrade, zone outage) takes the chat "
            "page down.",
        ),
        (
            "dev",
            {"addons.vpa.enabled": False, "chatUi.vpa.enabled": True},
            "Invalid config 'chatUi.vpa.enabled': True. Allowed: false while addons.vpa.enabled is false "
            "(the VerticalPodAutoscaler CRDs and recommender come from that add-on).",
        ),
        (
            "dev",
            {"chatUi.vpa.updateMode": "Auto"},
            "Invalid config 'chatUi.vpa.updateMode': 'Auto'. Allowed: 'Off' (recommendations only: a VPA "
            "that evicts pods conflicts with the HPA on the same pods).",
        ),
        (
            "dev",
            {"cluster.managedAddons": "vpc-cni,kube-proxy,coredns,eks-pod-identity-agent"},
            "Invalid config 'cluster.managedAddons': ['vpc-cni', 'kube-proxy', 'coredns', "
            "'eks-pod-identity-agent']. Allowed: a list that includes 'metrics-server' while chatUi.enabled "
            "is true (the chat UI's HPA scales on CPU utilisation from the metrics API).",
        ),
        (
            "dev",
            {"chatUi.title": "two\nlines"},
            "Invalid config 'chatUi.title': 'two\\nlines'. Allowed: a non-empty single line of at most 200 "
            "characters.",
        ),
        (
            "dev",
            {"chatUi.enabled": "yes"},
            "Invalid config 'chatUi.enabled': 'yes'. Allowed: true or false.",
        ),
        (
            "dev",
            {"chatUi.maxTokens": 0},
            "Invalid config 'chatUi.maxTokens': 0. Allowed: an integer from 1 to 32768.",
        ),
        (
            "dev",
            {"chatUi.replicas": 3},
            "Invalid config 'chatUi.replicas': 3. Allowed: known keys of 'chatUi' are ['autoscaling', "
            "'enabled', 'exposure', 'maxTokens', 'resources', 'systemPrompt', 'title', 'vpa'].",
        ),
    ],
)
def test_error_texts(env: str, overrides: dict[str, Any], message: str) -> None:
    assert error(env, **overrides) == message


def test_prod_accepts_a_public_ui_with_tls() -> None:
    ui = load("prod", **PUBLIC, **{"chatUi.exposure.certificateArn": CERT}).chat_ui
    assert ui.exposure.tls and ui.autoscaling.min_replicas == 2


def test_section_loads_on_its_own() -> None:
    # The chart tests build the section without the app (no env=prod context: the seed's single replica).
    assert ChatUiConfig.load({}).autoscaling.min_replicas == 1
    assert ChatUiConfig.load({}, context={"production": True}).autoscaling.min_replicas == 2
