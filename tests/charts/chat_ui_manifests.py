"""Render the chat UI chart (charts/chat_ui.py) from a ``chatUi`` section into manifest dicts; the variants
tested (schema validation, checkov and the field-by-field tests all read the same renderings)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cdk8s import Testing

from charts.chat_ui import ChatUiChart, ChatUiChartProps, ModelEndpoint
from config.chat_ui import ChatUiConfig
from tests.charts.manifests import CERTIFICATE_ARN, IMAGE, Manifests

NAMESPACE = "llama"
#: The model as the InferenceStack describes it for the default inference section.
MODEL = ModelEndpoint(
    url="http://my-llama-svc.llama.svc.cluster.local:80", pod_labels={"app": "my-llama"}, port=5000
)
MODEL_WITH_KEY = ModelEndpoint(
    url="http://my-llama-svc.llama.svc.cluster.local:443",
    pod_labels={"app": "my-llama"},
    port=5000,
    api_key_secret="my-llama-api-key",
)

#: name -> (chatUi section, env=prod, the model it fronts).
VARIANTS: dict[str, tuple[dict[str, Any], bool, ModelEndpoint]] = {
    "default": ({}, False, MODEL),
    "public": ({"exposure": {"scheme": "internet-facing", "sourceRanges": ["203.0.113.0/24"]}}, False, MODEL),
    "vpa": ({"vpa": {"enabled": True}, "systemPrompt": "", "title": "Team chat"}, False, MODEL),
    "prod-public-tls": (
        {
            "exposure": {
                "scheme": "internet-facing",
                "sourceRanges": ["203.0.113.0/24", "198.51.100.0/24"],
                "certificateArn": CERTIFICATE_ARN,
            }
        },
        True,
        MODEL_WITH_KEY,
    ),
}


def config_of(section: Mapping[str, Any], *, production: bool = False) -> ChatUiConfig:
    return ChatUiConfig.load(dict(section), context={"production": production})


def render(config: ChatUiConfig | None = None, model: ModelEndpoint = MODEL, **props: Any) -> Manifests:
    """Synthesize one ChatUiChart in a fresh cdk8s test app and return its manifests."""
    app = Testing.app()
    chart = ChatUiChart(
        app,
        "ChatUi",
        ChatUiChartProps(
            config=config or ChatUiConfig(), image=IMAGE, namespace=NAMESPACE, model=model, **props
        ),
    )
    return Testing.synth(chart)


def render_variants() -> dict[str, Manifests]:
    return {
        name: render(config_of(section, production=production), model)
        for name, (section, production, model) in VARIANTS.items()
    }
