"""``chatUi`` section: the chat UI in front of the model on the cluster (chart ``charts/chat_ui.py``).

A top-level section, not a part of ``inference``: the UI is its own service (its own image, replicas,
autoscaler and load balancer; ``chat_ui/`` is its own package for the same reason). It runs in the model's
namespace (``inference.namespace``), because it mounts the model's API key Secret when the model requires one
and a Secret can only be mounted in its own namespace. Every key has a default: ``"chatUi": {}`` deploys seed
ch6's ``chatbot-ui-deployment`` with its HPA (average CPU 70%, 1 to 5 replicas) behind an internal NLB;
``"chatUi": {"enabled": false}`` removes every UI object and the UI's image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, Strict, model_validator

from .base import Bool, ConfigModel, Given, Int
from .errors import Allowed, Invalid, Rule
from .exposure import ExposureConfig
from .inference import PRODUCTION_MIN_REPLICAS, CpuQuantity, MemoryQuantity, parse_quantity

#: Seed ch6's HPA: average CPU utilisation target (percent) and replica bounds.
SEED_CPU_UTILIZATION = 70
SEED_MIN_REPLICAS = 1
SEED_MAX_REPLICAS = 5


def _title(value: str) -> bool:
    return bool(value.strip()) and "\n" not in value


class ChatUiExposureConfig(ExposureConfig):
    """The ``chatbot-ui-service`` LoadBalancer Service: an NLB (IP targets) like the model's, with the same
    rules: ``internal`` by default, ``internet-facing`` only with explicit ``sourceRanges``, TLS on 443 with
    ``certificateArn``; ``env=prod`` refuses internet-facing without TLS. The UI has no sign-in of its own:
    whoever ``sourceRanges`` admits can use the model through it."""

    path = "chatUi.exposure"


class ChatUiResourcesConfig(ConfigModel):
    """Requests/limits of the UI container. The CPU request is what the HPA's utilisation is measured
    against, so it is sized to the UI's real use (docs/chat_ui.md "On the cluster": about 80 millicores
    idle and 120 while an answer streams, measured on a shared VM): the 70% target (175m) is reached by a
    replica streaming one or two answers at full speed. Memory request == limit."""

    path = "chatUi.resources"

    cpu_request: CpuQuantity = Field("250m", description="CPU request (the HPA's 100%).")
    cpu_limit: CpuQuantity = Field(
        "1", description="CPU limit, at least the request (start-up imports Gradio: about 1 CPU-second)."
    )
    memory: MemoryQuantity = Field("512Mi", description="Memory request and limit.")

    @model_validator(mode="after")
    def _limit_covers_request(self) -> ChatUiResourcesConfig:
        if parse_quantity(self.cpu_limit) < parse_quantity(self.cpu_request):
            raise Invalid(
                f"a quantity >= chatUi.resources.cpuRequest ({self.cpu_request})",
                key="chatUi.resources.cpuLimit",
                value=self.cpu_limit,
            )
        return self


class ChatUiAutoscalingConfig(ConfigModel):
    """Seed ch6's HorizontalPodAutoscaler ``chatbot-ui-hpa``: average CPU utilisation 70%, 1 to 5 replicas,
    with the seed's scaling behaviour (scale-down stabilisation 180 s and at most 50% per 15 s; scale-up at
    once, at most 2 pods per 15 s)."""

    path = "chatUi.autoscaling"

    min_replicas: Int = Field(
        SEED_MIN_REPLICAS,
        ge=1,
        le=100,
        description="Fewest replicas; at least 2 in `env=prod` (one replica survives a node's disruption).",
        json_schema_extra={"defaultDoc": "`2` in `env=prod`, else `1` (the seed's)"},
    )
    max_replicas: Int = Field(SEED_MAX_REPLICAS, ge=1, le=100, description="Most replicas.")
    cpu_utilization: Int = Field(
        SEED_CPU_UTILIZATION,
        ge=1,
        le=100,
        description="Average CPU utilisation target, percent of `resources.cpuRequest`.",
    )

    @model_validator(mode="after")
    def _replica_bounds(self) -> ChatUiAutoscalingConfig:
        if self.max_replicas < self.min_replicas:
            raise Invalid(
                f"an integer from chatUi.autoscaling.minReplicas ({self.min_replicas}) to 100",
                key="chatUi.autoscaling.maxReplicas",
                value=self.max_replicas,
            )
        return self


class ChatUiVpaConfig(ConfigModel):
    """Seed ch6's VerticalPodAutoscaler ``chatbot-ui-vpa``, in recommendation mode only (``updateMode:
    Off``: a VPA that evicts pods fights the HPA over the same pods). Its bounds are the seed's (1-2 CPU,
    2-4 GiB); the unclamped recommendation is the status' ``uncappedTarget``."""

    path = "chatUi.vpa"

    enabled: Bool = Field(
        True,
        description="Render the VerticalPodAutoscaler (`kubectl describe vpa chatbot-ui-vpa` shows its "
        "recommendation); needs `addons.vpa.enabled` (its CRDs and recommender).",
        json_schema_extra={"defaultDoc": "`addons.vpa.enabled`"},
    )
    update_mode: Annotated[
        Literal["Off"],
        Allowed(
            "'Off' (recommendations only: a VPA that evicts pods conflicts with the HPA on the same pods)"
        ),
    ] = Field("Off", description="Recommendations only.")


class ChatUiConfig(ConfigModel):
    """The chat UI (``chat_ui/``, docs/chat_ui.md) on the cluster, in front of the model's Service.

    Seed ch6's names: Deployment ``chatbot-ui-deployment``, Service ``chatbot-ui-service``, HPA
    ``chatbot-ui-hpa``, VPA ``chatbot-ui-vpa``, in ``inference.namespace``. The UI reaches the model's
    Service inside the cluster (plain HTTP on its port) and signs in with the model's API key Secret when
    ``inference.apiKey.enabled``.
    """

    path = "chatUi"

    enabled: Bool = Field(True, description="Deploy the chat UI; `false` removes every UI object and image.")
    title: Annotated[str, Strict(), Rule(_title, "a non-empty single line of at most 200 characters")] = (
        Field("Llama chat", max_length=200, description="Page title and heading (`CHAT_UI_TITLE`).")
    )
    system_prompt: (
        Annotated[str, Strict(), Allowed('a string of at most 20000 characters ("" for none)')] | None
    ) = Field(
        None,
        max_length=20_000,
        description='System prompt sent before every conversation (`CHAT_UI_SYSTEM_PROMPT`); `""` for none.',
        json_schema_extra={"defaultDoc": "the seed's `sys_msg` (chapter 2; the app's default)"},
    )
    max_tokens: Int = Field(
        512,
        ge=1,
        le=32_768,
        description="Longest answer in tokens (`CHAT_UI_MAX_TOKENS`); the model server caps it further at "
        "`inference.server.maxTokensLimit` and its context.",
    )
    resources: ChatUiResourcesConfig = Field(
        default_factory=ChatUiResourcesConfig, description="The UI container's resources (table below)."
    )
    autoscaling: ChatUiAutoscalingConfig = Field(
        default_factory=ChatUiAutoscalingConfig, description="The seed's HPA (table below)."
    )
    vpa: ChatUiVpaConfig = Field(
        default_factory=ChatUiVpaConfig, description="The seed's VPA, recommendations only (table below)."
    )
    exposure: ChatUiExposureConfig = Field(
        default_factory=ChatUiExposureConfig, description="The UI's NLB (table below)."
    )

    @classmethod
    def dependent_defaults(cls, given: Given) -> Mapping[str, Any]:
        defaults: dict[str, Any] = {}
        # env=prod (config/app.py passes it): two replicas, so a node's disruption keeps the page up.
        if given.context.get("production"):
            defaults["autoscaling"] = {"minReplicas": PRODUCTION_MIN_REPLICAS}
        # Seed ch6's VPA: on wherever the VPA add-on installs its CRDs and recommender (config/app.py
        # passes the add-ons).
        addons = given.context.get("addons")
        if addons is not None:
            defaults["vpa"] = {"enabled": addons.vpa.enabled}
        return defaults
