"""The ``inference`` config section: defaults, typed values, and the exact error for each bad value."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from config.errors import ConfigError
from config.inference import (
    CPU_RESOURCES,
    DEFAULT_MODEL_URI,
    GPU_RESOURCES,
    Accelerator,
    Autoscaler,
    InferenceConfig,
    Scheme,
)
from tests.charts.manifests import config_of


def test_defaults_are_the_production_gpu_service() -> None:
    c = config_of({})
    assert c == InferenceConfig()
    assert (c.name, c.service_name, c.namespace) == ("my-llama", "my-llama-svc", "llama")
    assert c.accelerator is Accelerator.GPU
    assert c.resources == GPU_RESOURCES
    assert c.autoscaling.mode is Autoscaler.KEDA
    assert (c.autoscaling.min_replicas, c.autoscaling.max_replicas, c.autoscaling.cpu_utilization) == (
        1,
        5,
        70,
    )
    assert c.exposure.scheme is Scheme.INTERNAL and c.exposure.source_ranges == ()
    assert c.model.uri == DEFAULT_MODEL_URI and c.model.file_name == "llama-2-7b-chat.Q2_K.gguf"
    # Seed ch6's VPA, recommendations only: on (config/app.py switches it off with addons.vpa.enabled).
    assert c.vpa.enabled and c.vpa.update_mode == "Off" and not c.api_key.enabled
    assert c.api_key.secret_name == "my-llama-api-key"
    assert c.termination_grace_seconds == 15 + 60 + 10
    assert c.zone_spread == "DoNotSchedule" and not c.registry_scan_on_push


def test_cpu_defaults_to_the_seed_hpa() -> None:
    c = config_of({"accelerator": "cpu"})
    assert c.autoscaling.mode is Autoscaler.HPA
    assert c.resources == CPU_RESOURCES


def test_full_section_is_read() -> None:
    c = config_of(
        {
            "name": "chat",
            "namespace": "serving",
            "accelerator": "gpu",
            "model": {"uri": "s3://bucket/m/model.gguf", "sha256": "0" * 64, "sizeGiB": 8},
            "resources": {"cpuRequest": "500m", "cpuLimit": "2.5", "memory": "24Gi"},
            "exposure": {"scheme": "internet-facing", "sourceRanges": "198.51.100.0/24,203.0.113.7/32"},
            "autoscaling": {
                "mode": "keda",
                "minReplicas": 0,
                "maxReplicas": 4,
                "keda": {"queuePerReplica": 3, "cooldownSeconds": 600},
            },
            "vpa": {"enabled": "false"},
            "apiKey": {"enabled": True},
            "monitoring": {"prometheusNamespace": "observability"},
            "server": {"drainTimeoutSeconds": 120},
        }
    )
    assert c.model.s3_bucket == "bucket" and c.model.s3_key == "m/model.gguf"
    assert c.exposure.source_ranges == ("198.51.100.0/24", "203.0.113.7/32")
    assert c.autoscaling.min_replicas == 0 and c.autoscaling.keda.queue_per_replica == 3
    assert c.autoscaling.keda.cooldown_seconds == 600 and c.autoscaling.keda.in_flight_per_replica == 4
    assert not c.vpa.enabled and c.api_key.secret_name == "chat-api-key"
    assert c.termination_grace_seconds == 15 + 120 + 10


BAD: list[tuple[dict[str, Any], str]] = [
    (
        {"accelerator": "tpu"},
        "Invalid config 'inference.accelerator': 'tpu'. Allowed: one of ['cpu', 'gpu'].",
    ),
    (
        {"name": "My_Llama"},
        "Invalid config 'inference.name': 'My_Llama'. Allowed: a DNS label of at most 40 characters: "
        "lower-case letters, digits and '-'.",
    ),
    (
        {"namespace": "kube-system"},
        "Invalid config 'inference.namespace': 'kube-system'. Allowed: a DNS label (lower-case letters, "
        "digits, '-') not starting with 'kube-'.",
    ),
    (
        {"model": {"uri": "http://example.com/model.gguf"}},
        "Invalid config 'inference.model.uri': 'http://example.com/model.gguf'. Allowed: an https://, s3:// "
        "or file:// URI of a .gguf file.",
    ),
    (
        {"model": {"uri": "s3:///model.gguf"}},
        "Invalid config 'inference.model.uri': 's3:///model.gguf'. Allowed: s3://<bucket>/<key>.gguf.",
    ),
    (
        {"model": {"sha256": "ABC"}},
        "Invalid config 'inference.model.sha256': 'ABC'. Allowed: 64 lower-case hex digits.",
    ),
    (
        {"model": {"sizeGiB": 0}},
        "Invalid config 'inference.model.sizeGiB': 0. Allowed: an integer from 1 to 200.",
    ),
    (
        {"resources": {"memory": "16G"}},
        "Invalid config 'inference.resources.memory': '16G'. Allowed: a Kubernetes quantity such as "
        "'16Gi' or '512Mi'.",
    ),
    (
        {"resources": {"cpuRequest": "4", "cpuLimit": "3500m"}},
        "Invalid config 'inference.resources.cpuLimit': '3500m'. Allowed: a quantity >= "
        "inference.resources.cpuRequest (4).",
    ),
    (
        {"exposure": {"scheme": "internet-facing"}},
        "Invalid config 'inference.exposure.sourceRanges': []. Allowed: a non-empty list of client CIDRs "
        "when inference.exposure.scheme is 'internet-facing'.",
    ),
    (
        {"exposure": {"scheme": "internet-facing", "sourceRanges": ["0.0.0.0/0"]}},
        "Invalid config 'inference.exposure.sourceRanges': '0.0.0.0/0'. Allowed: client CIDRs narrower than "
        "/0 (set inference.exposure.allowAnySource to true to open the endpoint to the whole internet).",
    ),
    (
        {"exposure": {"sourceRanges": ["10.0.0.1/8"]}},
        "Invalid config 'inference.exposure.sourceRanges': '10.0.0.1/8'. Allowed: an IPv4 CIDR with host "
        "bits zero, such as 10.0.0.0/16.",
    ),
    (
        {"exposure": {"certificateArn": "arn:aws:acm:us-west-2:111111111111:certificate/abc"}},
        "Invalid config 'inference.exposure.certificateArn': 'arn:aws:acm:us-west-2:111111111111:certificate/"
        "abc'. Allowed: an ACM certificate ARN (arn:aws:acm:REGION:ACCOUNT:certificate/ID) of the stack's "
        "region.",
    ),
    (
        {"exposure": {"tlsPolicy": "ELBSecurityPolicy-2016-08"}},
        "Invalid config 'inference.exposure.tlsPolicy': 'ELBSecurityPolicy-2016-08'. Allowed: one of "
        "['ELBSecurityPolicy-TLS13-1-2-2021-06', 'ELBSecurityPolicy-TLS13-1-2-Ext1-2021-06', "
        "'ELBSecurityPolicy-TLS13-1-2-Ext1-PQ-2025-09', 'ELBSecurityPolicy-TLS13-1-2-Ext2-2021-06', "
        "'ELBSecurityPolicy-TLS13-1-2-Ext2-PQ-2025-09', 'ELBSecurityPolicy-TLS13-1-2-FIPS-2023-04', "
        "'ELBSecurityPolicy-TLS13-1-2-FIPS-PQ-2025-09', 'ELBSecurityPolicy-TLS13-1-2-PQ-2025-09', "
        "'ELBSecurityPolicy-TLS13-1-2-Res-2021-06', 'ELBSecurityPolicy-TLS13-1-2-Res-FIPS-2023-04', "
        "'ELBSecurityPolicy-TLS13-1-2-Res-FIPS-PQ-2025-09', 'ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09', "
        "'ELBSecurityPolicy-TLS13-1-3-2021-06', 'ELBSecurityPolicy-TLS13-1-3-FIPS-2023-04', "
        "'ELBSecurityPolicy-TLS13-1-3-FIPS-PQ-2025-09', 'ELBSecurityPolicy-TLS13-1-3-PQ-2025-09'].",
    ),
    (
        {"exposure": {"domainName": "Llama.Example.com"}},
        "Invalid config 'inference.exposure.domainName': 'Llama.Example.com'. Allowed: a lower-case DNS name "
        "such as llama.example.com.",
    ),
    (
        {
            "exposure": {"scheme": "internet-facing", "sourceRanges": ["203.0.113.0/24"]},
            "apiKey": {"enabled": False},
        },
        "Invalid config 'inference.apiKey.enabled': False. Allowed: true when inference.exposure.scheme is "
        "'internet-facing': an endpoint reachable from the internet requires the bearer token (create the "
        "Secret 'my-llama-api-key' first: docs/runbook.md).",
    ),
    (
        {"zoneSpread": "Required"},
        "Invalid config 'inference.zoneSpread': 'Required'. Allowed: one of ['DoNotSchedule', "
        "'ScheduleAnyway'].",
    ),
    (
        {"exposure": {"scheme": "public"}},
        "Invalid config 'inference.exposure.scheme': 'public'. "
        "Allowed: one of ['internal', 'internet-facing'].",
    ),
    (
        {"autoscaling": {"mode": "hpa", "minReplicas": 0}},
        "Invalid config 'inference.autoscaling.minReplicas': 0. Allowed: an integer >= 1 unless "
        "inference.autoscaling.mode is 'keda' (only KEDA scales to and from zero).",
    ),
    (
        {"autoscaling": {"minReplicas": 4, "maxReplicas": 2}},
        "Invalid config 'inference.autoscaling.maxReplicas': 2. Allowed: an integer from max(1, "
        "inference.autoscaling.minReplicas (4)) to 100.",
    ),
    (
        {"autoscaling": {"mode": "vpa"}},
        "Invalid config 'inference.autoscaling.mode': 'vpa'. Allowed: one of ['hpa', 'keda', 'none'].",
    ),
    (
        {"autoscaling": {"keda": {"gpuUtilization": 101}}},
        "Invalid config 'inference.autoscaling.keda.gpuUtilization': 101. Allowed: an integer from 1 to 100.",
    ),
    (
        {"vpa": {"enabled": True, "updateMode": "Auto"}},
        "Invalid config 'inference.vpa.updateMode': 'Auto'. Allowed: 'Off' (recommendations only: a VPA "
        "that evicts pods conflicts with the HPA/KEDA autoscaler on the same pods).",
    ),
    (
        {"monitoring": {"prometheusUrl": "prometheus:9090"}},
        "Invalid config 'inference.monitoring.prometheusUrl': 'prometheus:9090'. Allowed: an http:// or "
        "https:// URL of the Prometheus server.",
    ),
    (
        {"server": {"drainTimeoutSeconds": -1}},
        "Invalid config 'inference.server.drainTimeoutSeconds': -1. Allowed: an integer from 0 to 3600.",
    ),
    (
        {"replicas": True},
        "Invalid config 'inference.replicas': True. Allowed: an integer from 1 to 100.",
    ),
    (
        {"autoscalling": {}},
        "Invalid config 'inference.autoscalling': {}. Allowed: known keys of 'inference' are ['accelerator', "
        "'apiKey', 'autoscaling', 'exposure', 'model', 'monitoring', 'name', 'namespace', 'preStopSeconds', "
        "'registryScanOnPush', 'replicas', 'resources', 'server', 'startupTimeoutSeconds', "
        "'terminationGracePeriodSeconds', 'vpa', 'zoneSpread'].",
    ),
    (
        {"autoscaling": {"keda": {"threshold": 3}}},
        "Invalid config 'inference.autoscaling.keda.threshold': 3. Allowed: known keys of "
        "'inference.autoscaling.keda' are ['cooldownSeconds', 'gpuUtilization', 'inFlightPerReplica', "
        "'pollingIntervalSeconds', 'queuePerReplica'].",
    ),
]


@pytest.mark.parametrize(("section", "message"), BAD, ids=[m.split("'")[1] for _, m in BAD])
def test_bad_values_fail_with_key_and_allowed_values(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_of(section)
    assert str(err.value) == message


def test_open_internet_is_an_explicit_choice() -> None:
    c = config_of(
        {"exposure": {"scheme": "internet-facing", "sourceRanges": ["0.0.0.0/0"], "allowAnySource": True}}
    )
    assert c.exposure.source_ranges == ("0.0.0.0/0",)


def test_internet_facing_turns_the_api_key_on() -> None:
    public = config_of({"exposure": {"scheme": "internet-facing", "sourceRanges": ["203.0.113.0/24"]}})
    assert public.api_key.enabled and public.api_key.secret_name == "my-llama-api-key"
    assert "enabled" not in public.api_key.model_fields_set  # a default, not something the user wrote
    assert not config_of({}).api_key.enabled
    assert config_of({"apiKey": {"enabled": True}}).api_key.enabled  # internal with a key is fine


def test_tls_settings() -> None:
    arn = "arn:aws:acm:eu-west-1:111111111111:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
    c = config_of({"exposure": {"certificateArn": arn, "domainName": "llama.example.com"}})
    assert (c.exposure.tls, c.exposure.port, c.exposure.url_scheme) == (True, 443, "https")
    assert c.exposure.certificate_region == "eu-west-1"
    assert c.exposure.tls_policy == "ELBSecurityPolicy-TLS13-1-2-PQ-2025-09"
    plain = config_of({}).exposure
    assert (plain.tls, plain.port, plain.url_scheme, plain.certificate_region) == (False, 80, "http", None)


def test_production_defaults() -> None:
    prod = config_of({}, production=True)
    assert (prod.autoscaling.min_replicas, prod.fewest_replicas, prod.replicas) == (2, 2, 2)
    assert config_of({"autoscaling": {"mode": "none"}}, production=True).fewest_replicas == 2
    assert config_of({"autoscaling": {"mode": "hpa"}}, production=True).autoscaling.min_replicas == 2
    dev = config_of({})
    assert (dev.autoscaling.min_replicas, dev.fewest_replicas, dev.replicas) == (1, 1, 1)
    # What the user writes wins (the environment's rule then says whether it is allowed: config/app.py).
    assert config_of({"autoscaling": {"minReplicas": 3}}, production=True).fewest_replicas == 3


def test_models_validate_when_built_directly() -> None:
    # Config built in Python (not from cdk.json) fails in the constructor too; load() names the dotted key.
    with pytest.raises(ValidationError, match="name"):
        InferenceConfig(name="x" * 41)
    with pytest.raises(ConfigError) as err:
        InferenceConfig.load({"name": "x" * 41})
    assert err.value.key == "inference.name"


# ------------------------------------------------------------ the server section and its cross-rules


def test_server_defaults_and_threads_follow_the_cpu_limit() -> None:
    c = config_of({})
    assert (c.server.max_concurrency, c.server.max_queue, c.server.context_tokens) == (4, 16, 2048)
    assert c.server.threads == 6  # the GPU variant's CPU limit
    assert config_of({"accelerator": "cpu"}).server.threads == 4
    assert config_of({"resources": {"cpuRequest": "1", "cpuLimit": "2500m"}}).server.threads == 3
    assert c.server.environment()["MODEL_SERVER_N_THREADS"] == "6"


CROSS: list[tuple[dict[str, Any], str]] = [
    (
        {"server": {"threads": 8}},
        "Invalid config 'inference.server.threads': 8. Allowed: an integer from 1 to 6 "
        "(inference.resources.cpuLimit 6, rounded up): more threads than the CPU limit only spin against "
        "CPU throttling.",
    ),
    (
        # The user lowered the concurrency: that key is named.
        {"server": {"maxConcurrency": 2}},
        "Invalid config 'inference.server.maxConcurrency': 2. Allowed: an integer >= "
        "inference.autoscaling.keda.inFlightPerReplica (4), or lower that target too: KEDA scales out on the "
        "requests in flight per replica.",
    ),
    (
        # The user raised the target: that key is named.
        {"autoscaling": {"keda": {"inFlightPerReplica": 6}}},
        "Invalid config 'inference.autoscaling.keda.inFlightPerReplica': 6. Allowed: an integer from 1 to "
        "inference.server.maxConcurrency (4): a replica never has more requests in flight than it decodes "
        "together, so a higher target never scales out.",
    ),
    (
        {"terminationGracePeriodSeconds": 60},
        "Invalid config 'inference.terminationGracePeriodSeconds': 60. Allowed: an integer >= 75: "
        "inference.preStopSeconds (15) + inference.server.drainTimeoutSeconds (60), or the kubelet kills "
        "requests still in flight.",
    ),
    (
        {"model": {"sizeGiB": 40}, "startupTimeoutSeconds": 600},
        "Invalid config 'inference.startupTimeoutSeconds': 600. Allowed: an integer >= 750 for a 40 GiB "
        "model (inference.model.sizeGiB): loading it takes about 530 s (the startup probe) and downloading "
        "it 820 s (within the progress deadline, startupTimeoutSeconds + 600 s), at 100 MiB/s from disk and "
        "50 MiB/s from the model's store.",
    ),
]


@pytest.mark.parametrize(("section", "message"), CROSS, ids=[m.split("'")[1] for _, m in CROSS])
def test_cross_rules_name_the_key_and_the_bound(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_of(section)
    assert str(err.value) == message


def test_cross_rules_accept_what_fits() -> None:
    # KEDA's target only matters with KEDA; both lowered together is fine.
    config_of({"autoscaling": {"mode": "hpa", "keda": {"inFlightPerReplica": 8}}})
    config_of({"server": {"maxConcurrency": 2}, "autoscaling": {"keda": {"inFlightPerReplica": 2}}})
    # A longer drain moves the default grace period along; a generous explicit one is kept.
    assert config_of({"server": {"drainTimeoutSeconds": 300}}).termination_grace_seconds == 15 + 300 + 10
    assert config_of({"terminationGracePeriodSeconds": 600}).termination_grace_seconds == 600
    # The default startup budget covers the seed's 3 GiB model; 100 GiB needs more, and fits when given.
    config_of({"model": {"sizeGiB": 100}, "startupTimeoutSeconds": 2600})
    with pytest.raises(ConfigError) as err:
        config_of({"model": {"sizeGiB": 100}})
    assert err.value.key == "inference.startupTimeoutSeconds"
