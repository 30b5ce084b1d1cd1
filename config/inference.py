"""``inference`` section: the llama inference service on the cluster (chart ``charts/inference.py``).

Every key has a default, so ``"inference": {}`` deploys seed ch3's ``my-llama`` service done for
production: on a GPU, internal NLB, KEDA autoscaling, ServiceMonitor and dashboard. Defaults of keys left
unset follow the accelerator and, when the add-ons are known (``load_config``), what they install.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import Field, Strict, ValidationError, model_validator

from .base import (
    DNS_LABEL_PATTERN,
    Bool,
    ConfigModel,
    Given,
    Int,
    with_defaults,
)
from .errors import Allowed, Invalid, Rule, matches, raise_all
from .exposure import ExposureConfig, Scheme
from .names import DEFAULT_MODEL_URI, MONITORING_NAMESPACE, PROMETHEUS_URL

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .addons import AddonsConfig

_DNS_LABEL = re.compile(DNS_LABEL_PATTERN)


class Accelerator(enum.StrEnum):
    """Where the model runs: ``gpu`` (CUDA image, one ``nvidia.com/gpu``) or ``cpu``."""

    GPU = "gpu"
    CPU = "cpu"


class Autoscaler(enum.StrEnum):
    """``keda``: ScaledObject on queue/in-flight/GPU metrics (default on GPU; allows scale to zero).
    ``hpa``: seed ch6's CPU HorizontalPodAutoscaler (default on CPU). ``none``: fixed ``replicas``."""

    KEDA = "keda"
    HPA = "hpa"
    NONE = "none"


def _model_uri(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme not in ("https", "s3", "file") or not parsed.path.endswith(".gguf"):
        raise Invalid("an https://, s3:// or file:// URI of a .gguf file")
    if parsed.scheme == "s3" and (not parsed.netloc or parsed.path in ("", "/")):
        raise Invalid("s3://<bucket>/<key>.gguf")
    return uri


def _prometheus_url(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def parse_quantity(value: str) -> float:
    """Quantity -> base units (cores or bytes), enough to compare a request with its limit."""
    m = re.match(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti)?$", value)
    if not m:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    scale = {None: 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[m.group(2)]
    return float(m.group(1)) * scale


CpuQuantity = Annotated[
    str, Strict(), matches(r"\d+(\.\d{1,3})?|\d+m", "a Kubernetes quantity such as '4', '2.5' or '500m'")
]
MemoryQuantity = Annotated[
    str, Strict(), matches(r"\d+(Mi|Gi)", "a Kubernetes quantity such as '16Gi' or '512Mi'")
]
DnsLabel = Annotated[
    str,
    Strict(),
    matches(DNS_LABEL_PATTERN, "a DNS label: lower-case letters, digits and '-', at most 40 characters"),
]


class ModelConfig(ConfigModel):
    """The GGUF the init container fetches (``python -m model_server fetch``) before the server starts."""

    path = "inference.model"

    uri: Annotated[str, Strict(), Rule(_model_uri, "an https://, s3:// or file:// URI of a .gguf file")] = (
        Field(
            DEFAULT_MODEL_URI,
            description="`https://` (Hugging Face `resolve` URLs), `s3://bucket/key` (read through the pod's "
            "Pod Identity role, which gets read access to exactly this object) or a `file://` path in the "
            "image. Default: the seed's Llama-2-7B-Chat Q2_K.",
        )
    )
    sha256: Annotated[str, Strict(), matches(r"[0-9a-f]{64}", "64 lower-case hex digits")] | None = Field(
        None, description="Verified after download when given."
    )
    size_gib: Int = Field(
        3,
        ge=1,
        le=200,
        alias="sizeGiB",
        description="The file's size in GiB, rounded up: sizes the model volume (+1 GiB for the download's "
        "temporary file) and the startup budget.",
    )

    @property
    def file_name(self) -> str:
        return urlparse(self.uri).path.rsplit("/", 1)[-1]

    @property
    def s3_bucket(self) -> str | None:
        parsed = urlparse(self.uri)
        return parsed.netloc if parsed.scheme == "s3" else None

    @property
    def s3_key(self) -> str | None:
        parsed = urlparse(self.uri)
        return parsed.path.lstrip("/") if parsed.scheme == "s3" else None


class ResourcesConfig(ConfigModel):
    """Requests/limits of the server container. Memory request == limit (no overcommit for a model that
    lives in RAM). Defaults per accelerator: GPU (g6.2xlarge: 8 vCPU, 32 GiB) 3/6 CPU, 16Gi; CPU 2/4, 8Gi."""

    path = "inference.resources"

    cpu_request: CpuQuantity = Field(
        "3", description="CPU request.", json_schema_extra={"defaultDoc": "`3` (gpu), `2` (cpu)"}
    )
    cpu_limit: CpuQuantity = Field(
        "6",
        description="CPU limit, at least the request.",
        json_schema_extra={"defaultDoc": "`6` (gpu), `4` (cpu)"},
    )
    memory: MemoryQuantity = Field(
        "16Gi",
        description="Memory request and limit.",
        json_schema_extra={"defaultDoc": "`16Gi` (gpu), `8Gi` (cpu)"},
    )

    @model_validator(mode="after")
    def _limit_covers_request(self) -> ResourcesConfig:
        if parse_quantity(self.cpu_limit) < parse_quantity(self.cpu_request):
            raise Invalid(
                f"a quantity >= inference.resources.cpuRequest ({self.cpu_request})",
                key="inference.resources.cpuLimit",
                value=self.cpu_limit,
            )
        return self


#: Resources per accelerator (the defaults of ``inference.resources``).
DEFAULT_RESOURCES: Mapping[Accelerator, ResourcesConfig] = {
    Accelerator.GPU: ResourcesConfig(cpu_request="3", cpu_limit="6", memory="16Gi"),
    Accelerator.CPU: ResourcesConfig(cpu_request="2", cpu_limit="4", memory="8Gi"),
}
GPU_RESOURCES = DEFAULT_RESOURCES[Accelerator.GPU]
CPU_RESOURCES = DEFAULT_RESOURCES[Accelerator.CPU]


@dataclass(frozen=True)
class Setting:
    """``Annotated`` metadata of a server key: the model server setting it sets (a field of
    ``model_server.settings.Settings``), passed to the container as ``MODEL_SERVER_<FIELD>``."""

    field: str

    @property
    def variable(self) -> str:
        return f"MODEL_SERVER_{self.field.upper()}"


LogLevel = Literal["debug", "info", "warning", "error"]


class ServerConfig(ConfigModel):
    """The model server in each pod (llama.cpp with continuous batching). Each key sets one model server
    setting (docs/model_server.md); the chart passes every one of them explicitly."""

    path = "inference.server"

    max_concurrency: Annotated[Int, Setting("max_concurrency")] = Field(
        4, ge=1, le=256, description="Sequences decoded together per replica (continuous-batching slots)."
    )
    max_queue: Annotated[Int, Setting("max_queue")] = Field(
        16,
        ge=0,
        le=100_000,
        description="Requests waiting for a slot per replica; beyond it the server answers 429 "
        "(with Retry-After).",
    )
    context_tokens: Annotated[Int, Setting("n_ctx")] = Field(
        2048, ge=16, le=1_048_576, description="Context (KV cache) tokens per sequence slot."
    )
    batch_tokens: Annotated[Int, Setting("n_batch")] = Field(
        512, ge=8, le=65_536, description="Most tokens submitted to one llama.cpp decode step."
    )
    threads: Annotated[Int, Setting("n_threads")] = Field(
        6,
        ge=1,
        le=1024,
        description="llama.cpp CPU threads, at most the CPU limit (more only spin against CPU throttling).",
        json_schema_extra={"defaultDoc": "`inference.resources.cpuLimit`, rounded up"},
    )
    default_max_tokens: Annotated[Int, Setting("default_max_tokens")] = Field(
        1000, ge=1, description="Tokens generated when a request sets no `max_tokens` (the seed's 1000)."
    )
    max_tokens_limit: Annotated[Int, Setting("max_tokens_limit")] = Field(
        1024, ge=1, description="Most tokens any request may ask for (also bounded by the context)."
    )
    drain_timeout_seconds: Annotated[Int, Setting("drain_timeout_s")] = Field(
        60,
        ge=0,
        le=3600,
        description="On SIGTERM the server finishes in-flight requests for this long (also the NLB's "
        "deregistration delay).",
    )
    log_level: Annotated[LogLevel, Setting("log_level")] = Field(
        "info", description="The server's log level."
    )

    def environment(self) -> dict[str, str]:
        """These settings as the model server's environment: ``MODEL_SERVER_<FIELD>`` -> value."""
        env = {}
        for name, field in type(self).model_fields.items():
            (setting,) = [m for m in field.metadata if isinstance(m, Setting)]
            value = getattr(self, name)
            env[setting.variable] = str(value).lower() if isinstance(value, bool) else str(value)
        return env


class InferenceExposureConfig(ExposureConfig):
    """The ``<name>-svc`` LoadBalancer Service: an NLB (IP targets) through the AWS Load Balancer Controller.

    ``internet-facing`` requires ``sourceRanges`` (explicit client CIDRs, enforced by the NLB's security
    group); ``0.0.0.0/0`` is refused unless ``allowAnySource`` is set. ``certificateArn`` moves the listener
    to 443 with TLS ending at the NLB; ``env=prod`` refuses internet-facing without it, and an
    internet-facing service always requires the API key (``inference.apiKey``).
    """

    path = "inference.exposure"


class KedaConfig(ConfigModel):
    """ScaledObject triggers (Prometheus queries over this deployment's pods) and pacing.

    Scale out when, per replica, more than ``queuePerReplica`` requests wait (``llamacpp:requests_deferred``)
    or more than ``inFlightPerReplica`` are processing (``llamacpp:requests_processing``), or when the
    pods' average ``DCGM_FI_DEV_GPU_UTIL`` exceeds ``gpuUtilization`` percent (GPU only).
    """

    path = "inference.autoscaling.keda"

    queue_per_replica: Int = Field(2, ge=1, le=1000, description="Waiting requests per replica.")
    in_flight_per_replica: Int = Field(4, ge=1, le=1000, description="Requests in progress per replica.")
    gpu_utilization: Int = Field(70, ge=1, le=100, description="Average GPU utilisation, percent (GPU only).")
    polling_interval_seconds: Int = Field(15, ge=5, le=600, description="Seconds between trigger queries.")
    cooldown_seconds: Int = Field(
        300,
        ge=30,
        le=86400,
        description="Seconds after the last active trigger before scaling to `minReplicas` 0.",
    )


class AutoscalingConfig(ConfigModel):
    """``mode``, replica bounds and the HPA CPU target.

    ``hpa`` uses seed ch6's numbers: min 1, max 5, average CPU 70%, scale-down stabilisation 180 s and at
    most 50% per 15 s, scale-up without stabilisation and at most 2 pods per 15 s (selectPolicy Max).
    """

    path = "inference.autoscaling"

    mode: Autoscaler = Field(
        Autoscaler.KEDA,
        description="`keda` (queue, in-flight and GPU triggers; allows scale to zero), `hpa` (seed ch6's CPU "
        "HorizontalPodAutoscaler) or `none` (fixed `replicas`).",
        json_schema_extra={
            "defaultDoc": "`keda` on GPU with KEDA, `kubePrometheusStack` and the DCGM exporter installed "
            "(on CPU without the exporter), else `hpa`"
        },
    )
    min_replicas: Int = Field(
        1,
        ge=0,
        le=100,
        description="Fewest replicas; 0 (scale to zero: Karpenter removes the idle GPU node) only with "
        "`keda`, and never in `env=prod` (at least 2 there: one replica survives a node's disruption).",
        json_schema_extra={"defaultDoc": "`2` in `env=prod`, else `1`"},
    )
    max_replicas: Int = Field(5, ge=1, le=100, description="Most replicas, at least `minReplicas`.")
    cpu_utilization: Int = Field(70, ge=1, le=100, description="The HPA's average CPU target, percent.")
    keda: KedaConfig = Field(default_factory=KedaConfig, description="KEDA's triggers (table below).")

    @model_validator(mode="after")
    def _replica_bounds(self) -> AutoscalingConfig:
        if self.min_replicas == 0 and self.mode is not Autoscaler.KEDA:
            raise Invalid(
                "an integer >= 1 unless inference.autoscaling.mode is 'keda' "
                "(only KEDA scales to and from zero)",
                key="inference.autoscaling.minReplicas",
                value=0,
            )
        if self.max_replicas < self.min_replicas:
            raise Invalid(
                f"an integer from max(1, inference.autoscaling.minReplicas ({self.min_replicas})) to 100",
                key="inference.autoscaling.maxReplicas",
                value=self.max_replicas,
            )
        return self


class VpaConfig(ConfigModel):
    """Optional VerticalPodAutoscaler in recommendation mode only (``updateMode: Off``).

    Seed ch6: VPA acting on pods (Auto/Recreate/Initial) together with an HPA (KEDA makes one) fights it
    over the same pods, and evicting a GPU pod re-downloads the model. Recommendations are safe.
    """

    path = "inference.vpa"

    enabled: Bool = Field(
        True,
        description="Render the VerticalPodAutoscaler (`kubectl describe vpa` shows its recommendation); "
        "needs `addons.vpa.enabled` (its CRDs and recommender).",
        json_schema_extra={"defaultDoc": "`addons.vpa.enabled`"},
    )
    update_mode: Annotated[
        Literal["Off"],
        Allowed(
            "'Off' (recommendations only: a VPA that evicts pods conflicts with the HPA/KEDA autoscaler on "
            "the same pods)"
        ),
    ] = Field("Off", description="Recommendations only.")


class ApiKeyConfig(ConfigModel):
    """Optional bearer-token auth. The key lives in a Kubernetes Secret ``secretName`` (key ``api-key``) that
    you create (docs/runbook.md), never in the CloudFormation template; the server reads it from a mounted
    file (``MODEL_SERVER_API_KEY_FILE``)."""

    path = "inference.apiKey"

    enabled: Bool = Field(
        False,
        description="Require `Authorization: Bearer <key>` on the API; required with an internet-facing NLB.",
        json_schema_extra={
            "defaultDoc": "`true` when `inference.exposure.scheme` is `internet-facing`, else `false`"
        },
    )
    secret_name: DnsLabel = Field(
        "my-llama-api-key",
        description="The Kubernetes Secret holding the key.",
        json_schema_extra={"defaultDoc": "`<inference.name>-api-key`"},
    )


class MonitoringConfig(ConfigModel):
    """Prometheus integration: ServiceMonitor for ``/metrics``, Grafana dashboard ConfigMap (label
    ``grafana_dashboard: "1"`` for the sidecar), the Prometheus namespace allowed through the NetworkPolicy
    and the server address KEDA queries. Defaults match kube-prometheus-stack installed as release
    ``kube-prometheus-stack`` in namespace ``monitoring``."""

    path = "inference.monitoring"

    service_monitor: Bool = Field(
        True,
        description="Render a ServiceMonitor for `/metrics`.",
        json_schema_extra={"defaultDoc": "`true` unless `addons.metrics.backend` is `none`"},
    )
    dashboard: Bool = Field(
        True,
        description="Render the Grafana dashboard ConfigMap.",
        json_schema_extra={"defaultDoc": "`true` with `kubePrometheusStack` and Grafana"},
    )
    prometheus_namespace: Annotated[
        str, Strict(), matches(DNS_LABEL_PATTERN, "a DNS label: lower-case letters, digits and '-'")
    ] = Field(
        MONITORING_NAMESPACE, description="Namespace of Prometheus (allowed through the NetworkPolicy)."
    )
    prometheus_url: Annotated[
        str, Strict(), Rule(_prometheus_url, "an http:// or https:// URL of the Prometheus server")
    ] = Field(PROMETHEUS_URL, description="The Prometheus server KEDA's triggers query.")


def _namespace(value: str) -> bool:
    return bool(_DNS_LABEL.fullmatch(value)) and not value.startswith("kube-")


def keda_available(addons: AddonsConfig | None, accelerator: Accelerator) -> bool:
    """Whether the add-ons install what KEDA's triggers need for ``accelerator``."""
    if addons is None:
        return True
    from .addons import MetricsBackend

    return (
        addons.keda.enabled
        and addons.metrics.backend is MetricsBackend.KUBE_PROMETHEUS_STACK
        and (accelerator is Accelerator.CPU or addons.dcgm_exporter.enabled)
    )


class InferenceConfig(ConfigModel):
    """The inference service. ``name`` (seed: ``my-llama``) names the Deployment; the Service is
    ``<name>-svc``. ``replicas`` applies only with ``autoscaling.mode: none``.

    A terminating pod keeps serving for ``preStopSeconds`` while the NLB deregisters it, then the server
    drains for ``server.drainTimeoutSeconds``; ``terminationGracePeriodSeconds`` covers both.
    ``startupTimeoutSeconds`` is the startup probe's budget for loading the model (checked against its size).
    """

    path = "inference"

    name: Annotated[
        str,
        Strict(),
        matches(
            DNS_LABEL_PATTERN, "a DNS label of at most 40 characters: lower-case letters, digits and '-'"
        ),
    ] = Field("my-llama", description="Deployment name (seed: `my-llama`); the Service is `<name>-svc`.")
    namespace: Annotated[
        str,
        Strict(),
        Rule(_namespace, "a DNS label (lower-case letters, digits, '-') not starting with 'kube-'"),
    ] = Field("llama", description="Namespace of the service (Pod Security `restricted`).")
    accelerator: Accelerator = Field(
        Accelerator.GPU, description="`gpu` (CUDA image, one `nvidia.com/gpu` per pod) or `cpu`."
    )
    replicas: Int = Field(
        1,
        ge=1,
        le=100,
        description="Fixed replica count (only with `autoscaling.mode: none`); at least 2 in `env=prod`.",
        json_schema_extra={"defaultDoc": "`2` in `env=prod`, else `1`"},
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="The model (table below).")
    resources: ResourcesConfig = Field(
        default_factory=ResourcesConfig, description="The server container's resources (table below)."
    )
    server: ServerConfig = Field(default_factory=ServerConfig, description="The model server (table below).")
    exposure: InferenceExposureConfig = Field(
        default_factory=InferenceExposureConfig, description="The NLB (table below)."
    )
    autoscaling: AutoscalingConfig = Field(
        default_factory=AutoscalingConfig, description="Autoscaling (table below)."
    )
    vpa: VpaConfig = Field(default_factory=VpaConfig, description="VerticalPodAutoscaler (table below).")
    api_key: ApiKeyConfig = Field(
        default_factory=ApiKeyConfig, description="Bearer-token auth (table below)."
    )
    monitoring: MonitoringConfig = Field(
        default_factory=MonitoringConfig, description="Prometheus (table below)."
    )
    pre_stop_seconds: Int = Field(
        15,
        ge=0,
        le=300,
        description="A terminating pod keeps serving this long while the NLB deregisters it.",
    )
    startup_timeout_seconds: Int = Field(
        1200,
        ge=60,
        le=7200,
        description="The startup probe's budget for loading the model and warming up; with 600 s more for "
        "a GPU node and the download it is the Deployment's progress deadline. At least what `model.sizeGiB` "
        "needs (see below).",
    )
    termination_grace_seconds: Int = Field(
        85,
        ge=0,
        le=7200,
        alias="terminationGracePeriodSeconds",
        description="A terminating pod's grace period (also the NLB's deregistration delay): at least "
        "`preStopSeconds` + `server.drainTimeoutSeconds`; at most 100 when the serving capacity can be spot "
        "(a spot interruption gives 120 s notice, 20 s of which Karpenter needs to start the drain).",
        json_schema_extra={"defaultDoc": "`preStopSeconds` + `server.drainTimeoutSeconds` + 10"},
    )
    zone_spread: Literal["DoNotSchedule", "ScheduleAnyway"] = Field(
        "DoNotSchedule",
        description="Spread of the pods over zones (maxSkew 1): `DoNotSchedule` keeps replicas in different "
        "zones (`minDomains` 2: a second replica never joins the first one's zone) and leaves a pod Pending "
        "rather than break that; `ScheduleAnyway` only prefers it (a GPU type offered in one zone only).",
    )
    registry_scan_on_push: Bool = Field(
        False,
        description="Create the account's ECR registry scanning configuration (BASIC, scan on push for the "
        "CDK asset repositories `cdk-*-container-assets-*`). One per account and region: it replaces "
        "whatever registry scanning is set there (Inspector enhanced scanning too), and two environments "
        "with it on overwrite each other. Off: the account's registry scanning applies (docs/runbook.md).",
    )

    @classmethod
    def dependent_defaults(cls, given: Given) -> Mapping[str, Any]:
        accelerator: Accelerator = given.value("accelerator")
        addons: AddonsConfig | None = given.context.get("addons")
        # KEDA on GPU when what its triggers query is installed; the seed's HPA on CPU.
        keda = accelerator is Accelerator.GPU and keda_available(addons, accelerator)
        resources = DEFAULT_RESOURCES[accelerator].model_dump(by_alias=True)
        try:
            cpu_limit = ResourcesConfig.model_validate(
                with_defaults(given.raw("resources"), resources)
            ).cpu_limit
        except ValidationError:
            cpu_limit = resources["cpuLimit"]  # the bad value is reported by the resources section
        drain = given.value("server").drain_timeout_seconds
        # env=prod (config/app.py passes it): two replicas at least, so a node's disruption keeps one.
        fewest = PRODUCTION_MIN_REPLICAS if given.context.get("production") else 1
        internet_facing = given.value("exposure").internet_facing
        return {
            "resources": resources,
            "server": {"threads": math.ceil(parse_quantity(cpu_limit))},
            "replicas": fewest,
            "autoscaling": {"mode": Autoscaler.KEDA if keda else Autoscaler.HPA, "minReplicas": fewest},
            "apiKey": {"secretName": f"{given.value('name')}-api-key", "enabled": internet_facing},
            "monitoring": _monitoring_defaults(addons),
            # Seed ch6 has VPAs: on wherever the VPA add-on installs its CRDs and recommender.
            "vpa": {} if addons is None else {"enabled": addons.vpa.enabled},
            "terminationGracePeriodSeconds": given.value("pre_stop_seconds") + drain + GRACE_MARGIN_SECONDS,
        }

    @model_validator(mode="after")
    def _consistent(self) -> InferenceConfig:
        raise_all(
            [
                *self._server_problems(),
                *self._shutdown_problems(),
                *self._startup_problems(),
                *self._exposure_problems(),
            ]
        )
        return self

    def _exposure_problems(self) -> list[Invalid]:
        if self.exposure.scheme is not Scheme.INTERNET_FACING or self.api_key.enabled:
            return []
        return [
            Invalid(
                "true when inference.exposure.scheme is 'internet-facing': an endpoint reachable from the "
                f"internet requires the bearer token (create the Secret {self.api_key.secret_name!r} first: "
                "docs/runbook.md)",
                key="inference.apiKey.enabled",
                value=False,
            )
        ]

    def _server_problems(self) -> list[Invalid]:
        server, keda = self.server, self.autoscaling.keda
        threads = math.ceil(parse_quantity(self.resources.cpu_limit))
        problems = []
        if server.threads > threads:
            problems.append(
                Invalid(
                    f"an integer from 1 to {threads} (inference.resources.cpuLimit "
                    f"{self.resources.cpu_limit}, rounded up): more threads than the CPU limit only spin "
                    "against CPU throttling",
                    key="inference.server.threads",
                    value=server.threads,
                )
            )
        if self.autoscaling.mode is Autoscaler.KEDA and keda.in_flight_per_replica > server.max_concurrency:
            # A replica never has more requests in flight than it decodes together: the trigger would
            # never fire. Blame the key the user set.
            target = keda.in_flight_per_replica
            lowered = "max_concurrency" in server.model_fields_set
            if lowered and "in_flight_per_replica" not in keda.model_fields_set:
                problem = Invalid(
                    f"an integer >= inference.autoscaling.keda.inFlightPerReplica ({target}), or lower that "
                    "target too: KEDA scales out on the requests in flight per replica",
                    key="inference.server.maxConcurrency",
                    value=server.max_concurrency,
                )
            else:
                problem = Invalid(
                    f"an integer from 1 to inference.server.maxConcurrency ({server.max_concurrency}): a "
                    "replica never has more requests in flight than it decodes together, so a higher target "
                    "never scales out",
                    key="inference.autoscaling.keda.inFlightPerReplica",
                    value=target,
                )
            problems.append(problem)
        return problems

    def _shutdown_problems(self) -> list[Invalid]:
        needed = self.pre_stop_seconds + self.server.drain_timeout_seconds
        if self.termination_grace_seconds >= needed:
            return []
        return [
            Invalid(
                f"an integer >= {needed}: inference.preStopSeconds ({self.pre_stop_seconds}) + "
                f"inference.server.drainTimeoutSeconds ({self.server.drain_timeout_seconds}), or the kubelet "
                "kills requests still in flight",
                key="inference.terminationGracePeriodSeconds",
                value=self.termination_grace_seconds,
            )
        ]

    def _startup_problems(self) -> list[Invalid]:
        size = self.model.size_gib
        load, download = startup_seconds(size), download_seconds(size)
        needed = max(load, load + download - NODE_LAUNCH_SECONDS)
        if self.startup_timeout_seconds >= needed:
            return []
        return [
            Invalid(
                f"an integer >= {needed} for a {size} GiB model (inference.model.sizeGiB): loading it takes "
                f"about {load} s (the startup probe) and downloading it {download} s (within the progress "
                f"deadline, startupTimeoutSeconds + {NODE_LAUNCH_SECONDS} s), at {LOAD_MIB_PER_SECOND} MiB/s "
                f"from disk and {DOWNLOAD_MIB_PER_SECOND} MiB/s from the model's store",
                key="inference.startupTimeoutSeconds",
                value=self.startup_timeout_seconds,
            )
        ]

    @property
    def service_name(self) -> str:
        return f"{self.name}-svc"

    @property
    def fewest_replicas(self) -> int:
        """The replicas that always run: the autoscaler's minimum, or ``replicas`` without one."""
        return self.replicas if self.autoscaling.mode is Autoscaler.NONE else self.autoscaling.min_replicas

    @property
    def most_replicas(self) -> int:
        """The replicas that may run at once outside a rollout: the autoscaler's maximum, or ``replicas``."""
        return self.replicas if self.autoscaling.mode is Autoscaler.NONE else self.autoscaling.max_replicas

    @property
    def fewest_replicas_key(self) -> str:
        """The key that sets :attr:`fewest_replicas` (what an error about it names)."""
        if self.autoscaling.mode is Autoscaler.NONE:
            return "inference.replicas"
        return "inference.autoscaling.minReplicas"


#: Seconds of grace beyond preStop + drain: the kubelet's SIGKILL must never race the drain's end. After the
#: drain timeout the server cancels what is left (waits up to 5 s) and uvicorn closes its connections (up to
#: 5 s more): model_server/server.py.
GRACE_MARGIN_SECONDS = 10
#: Fewest replicas in env=prod: one replica keeps serving while another's node is disrupted.
PRODUCTION_MIN_REPLICAS = 2
#: Conservative rates for the startup budgets: reading a GGUF from the pod's disk into memory, and
#: downloading it from Hugging Face or S3 (one stream).
LOAD_MIB_PER_SECOND = 100
DOWNLOAD_MIB_PER_SECOND = 50
#: Fixed part of the startup: process start, context allocation, warm-up decode.
WARMUP_SECONDS = 120
#: What the Deployment's progress deadline adds to the startup budget: a GPU node from Karpenter, the pull.
NODE_LAUNCH_SECONDS = 600


def startup_seconds(size_gib: int) -> int:
    """The startup probe's budget a model of ``size_gib`` needs: load plus warm-up."""
    return WARMUP_SECONDS + math.ceil(size_gib * 1024 / LOAD_MIB_PER_SECOND)


def download_seconds(size_gib: int) -> int:
    """How long the init container's download of a model of ``size_gib`` may take."""
    return math.ceil(size_gib * 1024 / DOWNLOAD_MIB_PER_SECOND)


def _monitoring_defaults(addons: AddonsConfig | None) -> dict[str, bool]:
    if addons is None:
        return {}
    from .addons import MetricsBackend

    backend = addons.metrics.backend
    return {
        "serviceMonitor": backend is not MetricsBackend.NONE,
        "dashboard": backend is MetricsBackend.KUBE_PROMETHEUS_STACK and addons.metrics.grafana,
    }


def addon_problems(config: InferenceConfig, addons: AddonsConfig) -> list[Invalid]:
    """What the service uses that the add-ons do not install: each names the key to change."""
    from .addons import MetricsBackend

    problems = []
    if not addons.load_balancer_controller.enabled:
        problems.append(
            Invalid(
                "true: the inference Service is an NLB provisioned by the AWS Load Balancer Controller",
                key="addons.loadBalancerController.enabled",
                value=False,
            )
        )
    gpu = config.accelerator is Accelerator.GPU
    if gpu and not addons.nvidia_device_plugin.enabled:
        problems.append(
            Invalid(
                "true when inference.accelerator is 'gpu' (nodes advertise nvidia.com/gpu through it)",
                key="addons.nvidiaDevicePlugin.enabled",
                value=False,
            )
        )
    backend = addons.metrics.backend
    if config.autoscaling.mode is Autoscaler.KEDA:
        mode = "inference.autoscaling.mode"
        if not addons.keda.enabled:
            problems.append(
                Invalid("'hpa' or 'none' while addons.keda.enabled is false", key=mode, value="keda")
            )
        elif backend is not MetricsBackend.KUBE_PROMETHEUS_STACK:
            problems.append(
                Invalid(
                    f"'hpa' or 'none' while addons.metrics.backend is {backend.value!r} "
                    "(KEDA's triggers query the in-cluster Prometheus of 'kubePrometheusStack')",
                    key=mode,
                    value="keda",
                )
            )
        if gpu and not addons.dcgm_exporter.enabled:
            problems.append(
                Invalid(
                    "true when inference.autoscaling.mode is 'keda' on GPU (the GPU utilisation trigger)",
                    key="addons.dcgmExporter.enabled",
                    value=False,
                )
            )
    if config.monitoring.service_monitor and backend is MetricsBackend.NONE:
        problems.append(
            Invalid(
                "false while addons.metrics.backend is 'none'",
                key="inference.monitoring.serviceMonitor",
                value=True,
            )
        )
    if config.monitoring.dashboard and (
        backend is not MetricsBackend.KUBE_PROMETHEUS_STACK or not addons.metrics.grafana
    ):
        problems.append(
            Invalid(
                "false unless addons.metrics.backend is 'kubePrometheusStack' "
                "with addons.metrics.grafana true",
                key="inference.monitoring.dashboard",
                value=True,
            )
        )
    if config.vpa.enabled and not addons.vpa.enabled:
        problems.append(
            Invalid(
                "false while addons.vpa.enabled is false (the VerticalPodAutoscaler CRDs and recommender "
                "come from that add-on)",
                key="inference.vpa.enabled",
                value=True,
            )
        )
    return problems
