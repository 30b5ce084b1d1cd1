"""``inference`` section: the llama inference service on the cluster (chart ``charts/inference.py``).

Every field has a default, so ``"inference": {}`` deploys seed ch3's ``my-llama`` service done for
production: on a GPU, internal NLB, KEDA autoscaling, ServiceMonitor and dashboard. Validation happens
when a dataclass is constructed (``__post_init__``), so a chart built from hand-written props fails the
same way as a bad ``cdk.json``: a :class:`ConfigError` naming the dotted context key and what is allowed.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from ._parse import Section, check_cidr
from .errors import ConfigError

#: The seed's model (ch2/ch3): Llama 2 7B chat, Q2_K quantisation (2.83 GB), from Hugging Face.
DEFAULT_MODEL_URI = (
    "https://huggingface.co/TheBloke/Llama-2-7B-Chat-GGUF/resolve/main/llama-2-7b-chat.Q2_K.gguf"
)

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CPU = re.compile(r"^(\d+(\.\d{1,3})?|\d+m)$")
_MEMORY = re.compile(r"^\d+(Mi|Gi)$")


class Accelerator(enum.Enum):
    """Where the model runs: ``gpu`` (CUDA image, one ``nvidia.com/gpu``) or ``cpu``."""

    GPU = "gpu"
    CPU = "cpu"


class Autoscaler(enum.Enum):
    """``keda``: ScaledObject on queue/in-flight/GPU metrics (default on GPU; allows scale to zero).
    ``hpa``: seed ch6's CPU HorizontalPodAutoscaler (default on CPU). ``none``: fixed ``replicas``."""

    KEDA = "keda"
    HPA = "hpa"
    NONE = "none"


class Scheme(enum.Enum):
    """NLB scheme. ``internal`` (default) is reachable from the VPC only."""

    INTERNAL = "internal"
    INTERNET_FACING = "internet-facing"


def _quantity(key: str, value: str, pattern: re.Pattern[str], example: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise ConfigError(key, value, f"a Kubernetes quantity such as {example}")
    return value


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _DNS_LABEL.match(name):
        raise ConfigError(
            "inference.name", name, "a DNS label of at most 40 characters: lower-case letters, digits and '-'"
        )
    return name


def _parse_quantity(value: str) -> float:
    """Quantity -> base units (cores or bytes), enough to compare a request with its limit."""
    m = re.match(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti)?$", value)
    assert m, value
    scale = {None: 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[m.group(2)]
    return float(m.group(1)) * scale


@dataclass(frozen=True)
class ModelConfig:
    """The GGUF the init container fetches (``python -m model_server fetch``) before the server starts.

    ``uri``: ``https://`` (Hugging Face ``resolve`` URLs), ``s3://bucket/key`` (read through the pod's
    Pod Identity role, which gets read access to exactly this object) or a ``file://`` path baked into
    the image. Default: the seed's Llama-2-7B-Chat Q2_K. ``sha256``: verified after download when given.
    ``size_gib``: the file's size rounded up; sizes the emptyDir (size + 1 GiB for the temp file slack).
    """

    uri: str = DEFAULT_MODEL_URI
    sha256: str | None = None
    size_gib: int = 3

    def __post_init__(self) -> None:
        parsed = urlparse(self.uri)
        if parsed.scheme not in ("https", "s3", "file") or not parsed.path.endswith(".gguf"):
            raise ConfigError(
                "inference.model.uri", self.uri, "an https://, s3:// or file:// URI of a .gguf file"
            )
        if parsed.scheme == "s3" and (not parsed.netloc or parsed.path in ("", "/")):
            raise ConfigError("inference.model.uri", self.uri, "s3://<bucket>/<key>.gguf")
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            raise ConfigError("inference.model.sha256", self.sha256, "64 lower-case hex digits")
        if not 1 <= self.size_gib <= 200:
            raise ConfigError("inference.model.sizeGiB", self.size_gib, "an integer from 1 to 200")

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


@dataclass(frozen=True)
class ResourcesConfig:
    """Requests/limits of the server container. Memory request == limit (no overcommit for a model
    that lives in RAM). Defaults per accelerator: GPU (g6.2xlarge: 8 vCPU, 32 GiB) 3/6 CPU, 16Gi;
    CPU 2/4 CPU, 8Gi."""

    cpu_request: str
    cpu_limit: str
    memory: str

    def __post_init__(self) -> None:
        _quantity("inference.resources.cpuRequest", self.cpu_request, _CPU, "'4', '2.5' or '500m'")
        _quantity("inference.resources.cpuLimit", self.cpu_limit, _CPU, "'4', '2.5' or '500m'")
        _quantity("inference.resources.memory", self.memory, _MEMORY, "'16Gi' or '512Mi'")
        if _parse_quantity(self.cpu_limit) < _parse_quantity(self.cpu_request):
            raise ConfigError(
                "inference.resources.cpuLimit",
                self.cpu_limit,
                f"a quantity >= inference.resources.cpuRequest ({self.cpu_request})",
            )


GPU_RESOURCES = ResourcesConfig(cpu_request="3", cpu_limit="6", memory="16Gi")
CPU_RESOURCES = ResourcesConfig(cpu_request="2", cpu_limit="4", memory="8Gi")


@dataclass(frozen=True)
class ExposureConfig:
    """The ``<name>-svc`` LoadBalancer Service (NLB through the AWS Load Balancer Controller).

    ``scheme`` internal by default. ``internet-facing`` requires ``source_ranges`` (explicit client
    CIDRs, written to ``loadBalancerSourceRanges``); ``0.0.0.0/0`` is refused unless
    ``allow_any_source`` is set, so an open endpoint is always a deliberate choice.
    """

    scheme: Scheme = Scheme.INTERNAL
    source_ranges: tuple[str, ...] = ()
    allow_any_source: bool = False

    def __post_init__(self) -> None:
        for cidr in self.source_ranges:
            check_cidr("inference.exposure.sourceRanges", cidr)
            if ipaddress.ip_network(cidr).prefixlen == 0 and not self.allow_any_source:
                raise ConfigError(
                    "inference.exposure.sourceRanges",
                    cidr,
                    "client CIDRs narrower than /0 (set inference.exposure.allowAnySource "
                    "to true to open the endpoint to the whole internet)",
                )
        if self.scheme is Scheme.INTERNET_FACING and not self.source_ranges:
            raise ConfigError(
                "inference.exposure.sourceRanges",
                list(self.source_ranges),
                "a non-empty list of client CIDRs when inference.exposure.scheme is 'internet-facing'",
            )


@dataclass(frozen=True)
class KedaConfig:
    """ScaledObject triggers (Prometheus queries over this deployment's pods) and pacing.

    Scale out when, per replica, more than ``queue_per_replica`` requests wait
    (``llamacpp:requests_deferred``) or more than ``in_flight_per_replica`` are processing
    (``llamacpp:requests_processing``), or when the pods' average ``DCGM_FI_DEV_GPU_UTIL`` exceeds
    ``gpu_utilization`` percent (GPU only). ``cooldown_seconds`` after the last active trigger before
    scaling to ``minReplicas`` 0; ``polling_interval_seconds`` between queries.
    """

    queue_per_replica: int = 2
    in_flight_per_replica: int = 4
    gpu_utilization: int = 70
    polling_interval_seconds: int = 15
    cooldown_seconds: int = 300

    def __post_init__(self) -> None:
        for key, value, lo, hi in (
            ("queuePerReplica", self.queue_per_replica, 1, 1000),
            ("inFlightPerReplica", self.in_flight_per_replica, 1, 1000),
            ("gpuUtilization", self.gpu_utilization, 1, 100),
            ("pollingIntervalSeconds", self.polling_interval_seconds, 5, 600),
            ("cooldownSeconds", self.cooldown_seconds, 30, 86400),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(f"inference.autoscaling.keda.{key}", value, f"an integer from {lo} to {hi}")


@dataclass(frozen=True)
class AutoscalingConfig:
    """``mode`` (default ``keda`` on GPU, ``hpa`` on CPU), replica bounds and the HPA CPU target.

    ``hpa`` uses seed ch6's numbers: min 1, max 5, average CPU 70%, scale-down stabilisation 180 s and
    at most 50% per 15 s, scale-up without stabilisation and at most 2 pods per 15 s (selectPolicy Max).
    ``min_replicas`` 0 (scale to zero, so Karpenter removes the idle GPU node) only with ``keda``.
    """

    mode: Autoscaler = Autoscaler.KEDA
    min_replicas: int = 1
    max_replicas: int = 5
    cpu_utilization: int = 70
    keda: KedaConfig = field(default_factory=KedaConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= 100:
            raise ConfigError(
                "inference.autoscaling.minReplicas", self.min_replicas, "an integer from 0 to 100"
            )
        if self.min_replicas == 0 and self.mode is not Autoscaler.KEDA:
            raise ConfigError(
                "inference.autoscaling.minReplicas",
                0,
                "an integer >= 1 unless inference.autoscaling.mode is 'keda' "
                "(only KEDA scales to and from zero)",
            )
        if not 1 <= self.max_replicas <= 100 or self.max_replicas < self.min_replicas:
            raise ConfigError(
                "inference.autoscaling.maxReplicas",
                self.max_replicas,
                f"an integer from max(1, inference.autoscaling.minReplicas ({self.min_replicas})) to 100",
            )
        if not 1 <= self.cpu_utilization <= 100:
            raise ConfigError(
                "inference.autoscaling.cpuUtilization", self.cpu_utilization, "an integer from 1 to 100"
            )


@dataclass(frozen=True)
class VpaConfig:
    """Optional VerticalPodAutoscaler in recommendation mode only (``updateMode: Off``).

    Seed ch6: VPA acting on pods (Auto/Recreate/Initial) together with an HPA (KEDA makes one) fights
    it over the same pods, and evicting a GPU pod re-downloads the model. Recommendations are safe.
    """

    enabled: bool = False
    update_mode: str = "Off"

    def __post_init__(self) -> None:
        if self.update_mode != "Off":
            raise ConfigError(
                "inference.vpa.updateMode",
                self.update_mode,
                "'Off' (recommendations only: a VPA that evicts pods conflicts with the "
                "HPA/KEDA autoscaler on the same pods)",
            )


@dataclass(frozen=True)
class ApiKeyConfig:
    """Optional bearer-token auth. The key lives in a Kubernetes Secret ``secret_name`` (key
    ``api-key``) that you create (docs/runbook.md), never in the CloudFormation template; the server
    reads it from a mounted file (``MODEL_SERVER_API_KEY_FILE``). Default: off."""

    enabled: bool = False
    secret_name: str = "my-llama-api-key"

    def __post_init__(self) -> None:
        if not _DNS_LABEL.match(self.secret_name):
            raise ConfigError(
                "inference.apiKey.secretName",
                self.secret_name,
                "a DNS label: lower-case letters, digits and '-', at most 40 characters",
            )


@dataclass(frozen=True)
class MonitoringConfig:
    """Prometheus integration: ServiceMonitor for ``/metrics``, Grafana dashboard ConfigMap (label
    ``grafana_dashboard: "1"`` for the sidecar), the Prometheus namespace allowed through the
    NetworkPolicy and the server address KEDA queries. Defaults match kube-prometheus-stack installed
    as release ``kube-prometheus-stack`` in namespace ``monitoring``."""

    service_monitor: bool = True
    dashboard: bool = True
    prometheus_namespace: str = "monitoring"
    prometheus_url: str = "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"

    def __post_init__(self) -> None:
        if not _DNS_LABEL.match(self.prometheus_namespace):
            raise ConfigError(
                "inference.monitoring.prometheusNamespace",
                self.prometheus_namespace,
                "a DNS label: lower-case letters, digits and '-'",
            )
        parsed = urlparse(self.prometheus_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(
                "inference.monitoring.prometheusUrl",
                self.prometheus_url,
                "an http:// or https:// URL of the Prometheus server",
            )


@dataclass(frozen=True)
class InferenceConfig:
    """The inference service. ``name`` (seed: ``my-llama``) names the Deployment; the Service is
    ``<name>-svc``. ``replicas`` applies only with ``autoscaling.mode: none``.

    ``drain_timeout_seconds`` is the server's own drain (``MODEL_SERVER_DRAIN_TIMEOUT_S``);
    ``pre_stop_seconds`` keeps a terminating pod serving while the NLB deregisters it; the grace
    period is their sum plus 5 s. ``startup_timeout_seconds`` bounds download + load + warm-up.
    """

    name: str = "my-llama"
    namespace: str = "llama"
    accelerator: Accelerator = Accelerator.GPU
    replicas: int = 1
    model: ModelConfig = field(default_factory=ModelConfig)
    resources: ResourcesConfig | None = None
    exposure: ExposureConfig = field(default_factory=ExposureConfig)
    autoscaling: AutoscalingConfig | None = None
    vpa: VpaConfig = field(default_factory=VpaConfig)
    api_key: ApiKeyConfig | None = None
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    drain_timeout_seconds: int = 60
    pre_stop_seconds: int = 15
    startup_timeout_seconds: int = 1200

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not _DNS_LABEL.match(self.namespace) or self.namespace.startswith("kube-"):
            raise ConfigError(
                "inference.namespace",
                self.namespace,
                "a DNS label (lower-case letters, digits, '-') not starting with 'kube-'",
            )
        if not 1 <= self.replicas <= 100:
            raise ConfigError("inference.replicas", self.replicas, "an integer from 1 to 100")
        for key, value, lo, hi in (
            ("drainTimeoutSeconds", self.drain_timeout_seconds, 0, 3600),
            ("preStopSeconds", self.pre_stop_seconds, 0, 300),
            ("startupTimeoutSeconds", self.startup_timeout_seconds, 60, 7200),
        ):
            if not lo <= value <= hi:
                raise ConfigError(f"inference.{key}", value, f"an integer from {lo} to {hi}")
        # Accelerator-dependent defaults, filled in here so every consumer sees resolved values.
        if self.resources is None:
            object.__setattr__(
                self, "resources", GPU_RESOURCES if self.accelerator is Accelerator.GPU else CPU_RESOURCES
            )
        if self.autoscaling is None:
            mode = Autoscaler.KEDA if self.accelerator is Accelerator.GPU else Autoscaler.HPA
            object.__setattr__(self, "autoscaling", AutoscalingConfig(mode=mode))
        if self.api_key is None:
            object.__setattr__(self, "api_key", ApiKeyConfig(secret_name=f"{self.name}-api-key"))

    @property
    def service_name(self) -> str:
        return f"{self.name}-svc"

    @property
    def termination_grace_seconds(self) -> int:
        return self.pre_stop_seconds + self.drain_timeout_seconds + 5


def from_section(s: Section, addons: Any = None) -> InferenceConfig:
    """Read the ``inference`` context section (camelCase keys); unknown keys are errors.

    ``addons`` (the ``AddonsConfig``, when known) adapts the defaults of keys left unset to what is
    installed: ``autoscaling.mode`` is ``keda`` on GPU only with KEDA, the in-cluster Prometheus
    (``kubePrometheusStack``) and, on GPU, the DCGM exporter, else ``hpa``; ``monitoring.dashboard`` only
    with Grafana; ``monitoring.serviceMonitor`` only with a metrics backend. Values set explicitly are
    kept and checked by :func:`check_against_addons`.
    """
    d = InferenceConfig()
    accelerator = Accelerator(
        s.string("accelerator", d.accelerator.value, choices=[a.value for a in Accelerator])
    )
    name = _check_name(s.string("name", d.name))

    m = s.section("model")
    sha = m.raw("sha256", None)
    model = ModelConfig(
        uri=m.string("uri", d.model.uri),
        sha256=m.string("sha256") if sha is not None else None,
        size_gib=m.integer("sizeGiB", d.model.size_gib, minimum=1, maximum=200),
    )
    m.reject_unknown()

    r = s.section("resources")
    rd = GPU_RESOURCES if accelerator is Accelerator.GPU else CPU_RESOURCES
    resources = ResourcesConfig(
        cpu_request=r.string("cpuRequest", rd.cpu_request),
        cpu_limit=r.string("cpuLimit", rd.cpu_limit),
        memory=r.string("memory", rd.memory),
    )
    r.reject_unknown()

    e = s.section("exposure")
    exposure = ExposureConfig(
        scheme=Scheme(e.string("scheme", d.exposure.scheme.value, choices=[x.value for x in Scheme])),
        source_ranges=e.string_list("sourceRanges", [], non_empty=False),
        allow_any_source=e.boolean("allowAnySource", False),
    )
    e.reject_unknown()

    a = s.section("autoscaling")
    default_mode = Autoscaler.KEDA if accelerator is Accelerator.GPU else Autoscaler.HPA
    if addons is not None and not _keda_available(addons, accelerator):
        default_mode = Autoscaler.HPA
    ad = AutoscalingConfig()
    k = a.section("keda")
    kd = KedaConfig()
    keda = KedaConfig(
        queue_per_replica=k.integer("queuePerReplica", kd.queue_per_replica, minimum=1, maximum=1000),
        in_flight_per_replica=k.integer(
            "inFlightPerReplica", kd.in_flight_per_replica, minimum=1, maximum=1000
        ),
        gpu_utilization=k.integer("gpuUtilization", kd.gpu_utilization, minimum=1, maximum=100),
        polling_interval_seconds=k.integer(
            "pollingIntervalSeconds", kd.polling_interval_seconds, minimum=5, maximum=600
        ),
        cooldown_seconds=k.integer("cooldownSeconds", kd.cooldown_seconds, minimum=30, maximum=86400),
    )
    k.reject_unknown()
    autoscaling = AutoscalingConfig(
        mode=Autoscaler(a.string("mode", default_mode.value, choices=[x.value for x in Autoscaler])),
        min_replicas=a.integer("minReplicas", ad.min_replicas, minimum=0, maximum=100),
        max_replicas=a.integer("maxReplicas", ad.max_replicas, minimum=1, maximum=100),
        cpu_utilization=a.integer("cpuUtilization", ad.cpu_utilization, minimum=1, maximum=100),
        keda=keda,
    )
    a.reject_unknown()

    v = s.section("vpa")
    vpa = VpaConfig(enabled=v.boolean("enabled", False), update_mode=v.string("updateMode", "Off"))
    v.reject_unknown()

    ak = s.section("apiKey")
    api_key = ApiKeyConfig(
        enabled=ak.boolean("enabled", False), secret_name=ak.string("secretName", f"{name}-api-key")
    )
    ak.reject_unknown()

    mo = s.section("monitoring")
    md = MonitoringConfig()
    backend = addons.metrics.backend.value if addons is not None else "kubePrometheusStack"
    grafana = addons.metrics.grafana if addons is not None else True
    monitoring = MonitoringConfig(
        service_monitor=mo.boolean("serviceMonitor", md.service_monitor and backend != "none"),
        dashboard=mo.boolean("dashboard", md.dashboard and backend == "kubePrometheusStack" and grafana),
        prometheus_namespace=mo.string("prometheusNamespace", md.prometheus_namespace),
        prometheus_url=mo.string("prometheusUrl", md.prometheus_url),
    )
    mo.reject_unknown()

    config = InferenceConfig(
        name=name,
        namespace=s.string("namespace", d.namespace),
        accelerator=accelerator,
        replicas=s.integer("replicas", d.replicas, minimum=1, maximum=100),
        model=model,
        resources=resources,
        exposure=exposure,
        autoscaling=autoscaling,
        vpa=vpa,
        api_key=api_key,
        monitoring=monitoring,
        drain_timeout_seconds=s.integer(
            "drainTimeoutSeconds", d.drain_timeout_seconds, minimum=0, maximum=3600
        ),
        pre_stop_seconds=s.integer("preStopSeconds", d.pre_stop_seconds, minimum=0, maximum=300),
        startup_timeout_seconds=s.integer(
            "startupTimeoutSeconds", d.startup_timeout_seconds, minimum=60, maximum=7200
        ),
    )
    s.reject_unknown()
    return config


def _keda_available(addons: Any, accelerator: Accelerator) -> bool:
    return (
        addons.keda.enabled
        and addons.metrics.backend.value == "kubePrometheusStack"
        and (accelerator is Accelerator.CPU or addons.dcgm_exporter.enabled)
    )


def check_against_addons(config: InferenceConfig, addons: Any, *, gpu_capacity: str) -> None:
    """Cross-section rules: what the service uses must be installed by the add-ons.

    ``addons`` is the ``AddonsConfig`` (typed loosely here to keep this module free of the add-ons'
    imports). Raises :class:`ConfigError` naming the add-on key to switch on, or the inference key to
    change.
    """
    if not addons.load_balancer_controller.enabled:
        raise ConfigError(
            "addons.loadBalancerController.enabled",
            False,
            "true: the inference Service is an NLB provisioned by the AWS Load Balancer Controller",
        )
    backend = addons.metrics.backend.value
    if config.accelerator is Accelerator.GPU:
        if not addons.nvidia_device_plugin.enabled:
            raise ConfigError(
                "addons.nvidiaDevicePlugin.enabled",
                False,
                "true when inference.accelerator is 'gpu' (nodes advertise nvidia.com/gpu through it)",
            )
        if gpu_capacity == "karpenter" and not addons.karpenter.enabled:
            raise ConfigError(
                "addons.karpenter.enabled", False, "true when compute.gpuCapacity is 'karpenter'"
            )
    if config.autoscaling.mode is Autoscaler.KEDA:
        if not addons.keda.enabled:
            raise ConfigError(
                "inference.autoscaling.mode", "keda", "'hpa' or 'none' while addons.keda.enabled is false"
            )
        if backend != "kubePrometheusStack":
            raise ConfigError(
                "inference.autoscaling.mode",
                "keda",
                f"'hpa' or 'none' while addons.metrics.backend is {backend!r} (KEDA's triggers query the "
                "in-cluster Prometheus of 'kubePrometheusStack')",
            )
        if config.accelerator is Accelerator.GPU and not addons.dcgm_exporter.enabled:
            raise ConfigError(
                "addons.dcgmExporter.enabled",
                False,
                "true when inference.autoscaling.mode is 'keda' on GPU (the GPU utilisation trigger)",
            )
    if config.monitoring.service_monitor and backend == "none":
        raise ConfigError(
            "inference.monitoring.serviceMonitor", True, "false while addons.metrics.backend is 'none'"
        )
    if config.monitoring.dashboard and (backend != "kubePrometheusStack" or not addons.metrics.grafana):
        raise ConfigError(
            "inference.monitoring.dashboard",
            True,
            "false unless addons.metrics.backend is 'kubePrometheusStack' with addons.metrics.grafana true",
        )
    if config.vpa.enabled:
        raise ConfigError(
            "inference.vpa.enabled",
            True,
            "false: no add-on installs the VerticalPodAutoscaler recommender and CRDs yet (the chart can "
            "render the recommendation-only VPA once one does)",
        )
