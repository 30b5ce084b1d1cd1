"""Render the inference chart from a config (cdk8s Testing) into manifest dicts; the variants tested."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cdk8s import Testing

from charts.inference import InferenceChart, InferenceChartProps
from config.inference import InferenceConfig

IMAGE = "111111111111.dkr.ecr.us-west-2.amazonaws.com/cdk-hnb659fds-container-assets:0123abcd"
CERTIFICATE_ARN = "arn:aws:acm:us-west-2:111111111111:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"

Manifests = list[dict[str, Any]]

#: Context ``inference`` sections of every supported shape: default (GPU, KEDA), the seed's HPA, CPU,
#: internet-facing with explicit CIDRs, everything optional switched on, and env=prod internal and public.
VARIANTS: dict[str, dict[str, Any]] = {
    "gpu-keda": {},
    "gpu-hpa": {"autoscaling": {"mode": "hpa"}},
    "cpu": {"accelerator": "cpu"},
    "public-scale-to-zero": {
        "exposure": {"scheme": "internet-facing", "sourceRanges": ["203.0.113.0/24"]},
        "autoscaling": {"minReplicas": 0, "maxReplicas": 3},
    },
    "everything": {
        "vpa": {"enabled": True},
        "apiKey": {"enabled": True},
        "model": {
            "uri": "s3://models-bucket/llama/llama-2-7b-chat.Q4_K_M.gguf",
            "sha256": "a" * 64,
            "sizeGiB": 5,
        },
    },
    "minimal": {
        "autoscaling": {"mode": "none"},
        "replicas": 2,
        "monitoring": {"serviceMonitor": False, "dashboard": False},
    },
    # env=prod's defaults (two replicas at least), internal.
    "prod": {},
    # env=prod, internet-facing: TLS on 443 and the API key (on by default when internet-facing).
    "prod-public-tls": {
        "exposure": {
            "scheme": "internet-facing",
            "sourceRanges": ["203.0.113.0/24", "198.51.100.0/24"],
            "certificateArn": CERTIFICATE_ARN,
        },
    },
}
#: Variants rendered with env=prod's defaults (config/app.py tells the inference section it is prod).
PRODUCTION = frozenset({"prod", "prod-public-tls"})


def config_of(section: Mapping[str, Any], *, production: bool = False) -> InferenceConfig:
    return InferenceConfig.load(dict(section), context={"production": production})


def render(config: InferenceConfig | None = None, **props: Any) -> Manifests:
    """Synthesize one InferenceChart in a fresh cdk8s test app and return its manifests."""
    app = Testing.app()
    chart = InferenceChart(
        app, "Inference", InferenceChartProps(config=config or InferenceConfig(), image=IMAGE, **props)
    )
    return Testing.synth(chart)


def by_kind(manifests: Manifests, kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: Manifests, kind: str) -> dict[str, Any]:
    found = by_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(manifests: Manifests) -> dict[str, Any]:
    return one(manifests, "Deployment")["spec"]["template"]["spec"]
