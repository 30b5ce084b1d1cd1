"""The llama inference service (seed ch3's ``my-llama`` + ``my-llama-svc``, done for production).

A cdk8s chart, unit-tested on its own (tests/charts/) and applied to the cluster by the InferenceStack.
Kinds that cdk8s-plus-30 has are built with it (Namespace, ServiceAccount, Deployment, Service,
NetworkPolicy, HorizontalPodAutoscaler, ConfigMap); PodDisruptionBudget uses the raw ``k8s`` API of
cdk8s-plus-30; KEDA, Prometheus Operator and VPA objects use the typed constructs generated into
``imports/`` from ../shared/crds.

Fields cdk8s-plus-30 cannot express (extended resources such as ``nvidia.com/gpu``, topology spread
constraints, the native ``sleep`` preStop action, pod-level seccomp) are added with JSON patches on
the Deployment; the tests pin each of them in the rendered YAML.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import cdk8s
import cdk8s_plus_30 as kplus
from cdk8s_plus_30 import k8s
from constructs import Construct

from charts.exposure import PORT_NAME, Exposure
from config.base import CIDR_ALLOWED, is_ipv4_cidr
from config.errors import ConfigError
from config.inference import Accelerator, Autoscaler, InferenceConfig
from config.names import (
    GPU_NODEPOOL_NAME,
    GPU_RESOURCE,
    GPU_TAINT_EFFECT,
    GPU_TAINT_KEY,
    NODEPOOL_LABEL,
    SERVICE_MONITOR_LABELS,
)
from imports.com.coreos import monitoring
from imports.io.k8s import autoscaling as vpa
from imports.sh import keda

#: The server's port (model_server default; seed ch2/ch3).
SERVER_PORT = 5000
#: The Service's port without TLS (seed ch3: 80 -> 5000); 443 with TLS (charts/exposure.py).
SERVICE_PORT = 80
#: Non-root user of the model server image (model_server/Dockerfile).
RUN_AS_USER = 10001
#: Where the init container writes the model and the server reads it.
MODEL_DIR = "/models"
#: Mount path of the API key Secret; the server reads ``MODEL_SERVER_API_KEY_FILE``.
API_KEY_DIR = "/var/run/secrets/model-server"
#: EKS Pod Identity agent on every node: credentials for S3 model downloads come from here.
POD_IDENTITY_AGENT_CIDR = "169.254.170.23/32"
#: Karpenter GPU NodePool of the add-ons (charts/karpenter.py, seed ch6).
DEFAULT_GPU_NODE_SELECTOR: Mapping[str, str] = MappingProxyType({NODEPOOL_LABEL: GPU_NODEPOOL_NAME})
#: Label kube-prometheus-stack's default ``serviceMonitorSelector`` matches (the Helm release name).
DEFAULT_SERVICE_MONITOR_LABELS: Mapping[str, str] = MappingProxyType(SERVICE_MONITOR_LABELS)
#: Grafana sidecar's default dashboard label.
DASHBOARD_LABEL = ("grafana_dashboard", "1")
DASHBOARD_FILE = Path(__file__).parent / "dashboards" / "llama.json"
#: The AWS Load Balancer Controller's webhook adds the NLB target-health readiness gate to pods created in
#: namespaces with this label (once the Service's TargetGroupBinding exists).
READINESS_GATE_INJECT_LABEL = ("elbv2.k8s.aws/pod-readiness-gate-inject", "enabled")
#: Failed Prometheus queries in a row (one per polling interval) before KEDA's fallback holds the replicas.
KEDA_FALLBACK_FAILURES = 3
ZONE_KEY = "topology.kubernetes.io/zone"
HOSTNAME_KEY = "kubernetes.io/hostname"


#: Seed ch6's HPA scaling behaviour (the model's and the chat UI's HPAs): scale down by at most half every
#: 15 s after 180 s of stable load, scale up at once by at most 2 pods every 15 s.
SEED_HPA_SCALE_DOWN = kplus.ScalingRules(
    stabilization_window=cdk8s.Duration.seconds(180),
    policies=[kplus.ScalingPolicy(replicas=kplus.Replicas.percent(50), duration=cdk8s.Duration.seconds(15))],
)
SEED_HPA_SCALE_UP = kplus.ScalingRules(
    stabilization_window=cdk8s.Duration.seconds(0),
    strategy=kplus.ScalingStrategy.MAX_CHANGE,
    policies=[kplus.ScalingPolicy(replicas=kplus.Replicas.absolute(2), duration=cdk8s.Duration.seconds(15))],
)


@dataclass(frozen=True)
class Rollout:
    """The Deployment's rolling update. Default: one extra pod at a time, none taken away before its
    replacement is ready (needs capacity for one more GPU pod: Karpenter launches a node). Without spare
    capacity (a GPU nodegroup without a free node) ``max_surge=0, max_unavailable=1`` replaces pods in
    place."""

    max_surge: int = 1
    max_unavailable: int = 0

    def __post_init__(self) -> None:
        if self.max_surge < 0 or self.max_unavailable < 0 or self.max_surge + self.max_unavailable == 0:
            raise ConfigError(
                "inference.rollout",
                {"maxSurge": self.max_surge, "maxUnavailable": self.max_unavailable},
                "non-negative maxSurge and maxUnavailable, not both 0",
            )


@dataclass(frozen=True)
class InferenceChartProps:
    """Everything the chart renders. ``config``: the validated ``inference`` section. ``image``: the
    model server image URI (the InferenceStack passes the DockerImageAsset's URI).

    ``vpc_cidr``: clients allowed by the NetworkPolicy and the internal NLB (default the seed VPC
    ``10.0.0.0/16``). ``gpu_node_selector``: node labels of the GPU capacity (default the Karpenter
    NodePool ``eks-gpu-np``; with ``gpuCapacity: nodegroup`` the stack passes the nodegroup's label);
    GPU pods also tolerate ``gpu_taint_key`` (``nvidia.com/gpu``, NoSchedule). ``cpu_node_selector``:
    node labels for the CPU variant (default none: any untainted node).
    ``service_monitor_labels``: labels Prometheus selects ServiceMonitors by. ``rollout``: the rolling
    update (default: surge one pod, take none away first). ``client_pod_labels``: labels of in-namespace
    client pods the NetworkPolicy admits to the server port (the chat UI's, charts/chat_ui.py; default none).
    """

    config: InferenceConfig
    image: str
    vpc_cidr: str = "10.0.0.0/16"
    gpu_node_selector: Mapping[str, str] = field(default_factory=lambda: DEFAULT_GPU_NODE_SELECTOR)
    gpu_taint_key: str = GPU_TAINT_KEY
    cpu_node_selector: Mapping[str, str] = field(default_factory=dict)
    service_monitor_labels: Mapping[str, str] = field(default_factory=lambda: DEFAULT_SERVICE_MONITOR_LABELS)
    rollout: Rollout = field(default_factory=Rollout)
    client_pod_labels: tuple[Mapping[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.config, InferenceConfig):
            raise ConfigError("inference", self.config, "an InferenceConfig")
        if not isinstance(self.image, str) or not self.image:
            raise ConfigError("inference.image", self.image, "a container image URI")
        if not is_ipv4_cidr(self.vpc_cidr):
            raise ConfigError("network.vpcCidr", self.vpc_cidr, CIDR_ALLOWED)
        if not isinstance(self.rollout, Rollout):
            raise ConfigError("inference.rollout", self.rollout, "a Rollout")
        if any(not labels for labels in self.client_pod_labels):
            # An empty podSelector would admit every pod of the namespace.
            raise ConfigError(
                "inference.clientPodLabels", list(self.client_pod_labels), "non-empty label sets"
            )
        if self.config.accelerator is Accelerator.GPU and not self.gpu_node_selector:
            raise ConfigError(
                "compute.gpuCapacity",
                dict(self.gpu_node_selector),
                "a GPU capacity with node labels to select (Karpenter NodePool or nodegroup)",
            )


class InferenceChart(cdk8s.Chart):
    """Namespace, ServiceAccount, Deployment, PDB, Service (NLB), NetworkPolicy, autoscaler (HPA or KEDA
    ScaledObject), optional VPA (recommendations only), ServiceMonitor and Grafana dashboard.

    Attributes used by the InferenceStack to order deployment: ``service`` (needs the Load Balancer
    Controller), ``scaled_object`` (needs KEDA), ``deployment`` (needs the GPU NodePool),
    ``service_monitor`` (needs the Prometheus Operator CRDs).
    """

    def __init__(self, scope: Construct, id: str, props: InferenceChartProps, **kwargs: Any) -> None:
        if not isinstance(props, InferenceChartProps):
            raise ConfigError("inference", props, "InferenceChartProps")
        c = props.config
        super().__init__(scope, id, namespace=c.namespace, disable_resource_name_hashes=True, **kwargs)
        self.props = props
        self.config = c
        self.app_labels = {"app": c.name}
        self.scaled_object: keda.ScaledObject | None = None
        self.hpa: kplus.HorizontalPodAutoscaler | None = None
        self.vpa: vpa.VerticalPodAutoscaler | None = None
        self.service_monitor: monitoring.ServiceMonitor | None = None
        self.dashboard: kplus.ConfigMap | None = None
        self.api_key_secret_name = c.api_key.secret_name if c.api_key.enabled else None
        self.exposure = Exposure(
            config=c.exposure,
            vpc_cidr=props.vpc_cidr,
            health_check_path="/readyz",
            deregistration_delay_seconds=c.termination_grace_seconds,
        )

        # Pods carrying the seed's label ``app: <name>``; Service, NetworkPolicy and PDB select on it.
        self._pods: kplus.Pods | None = None
        self.namespace_obj = kplus.Namespace(
            self,
            "Namespace",
            metadata=cdk8s.ApiObjectMetadata(
                name=c.namespace,
                labels={
                    # Pod Security Admission: reject anything weaker than "restricted" in this namespace.
                    **{
                        f"pod-security.kubernetes.io/{mode}": "restricted"
                        for mode in ("enforce", "audit", "warn")
                    },
                    # Pods are Ready only once their NLB target is healthy: a rollout never stops an old pod
                    # while its replacement's target is still `initial`.
                    READINESS_GATE_INJECT_LABEL[0]: READINESS_GATE_INJECT_LABEL[1],
                },
            ),
        )
        # The chart's default namespace must not leak onto a cluster-scoped object.
        cdk8s.ApiObject.of(self.namespace_obj).add_json_patch(cdk8s.JsonPatch.remove("/metadata/namespace"))
        self.service_account = kplus.ServiceAccount(
            self,
            "ServiceAccount",
            metadata=cdk8s.ApiObjectMetadata(name=c.name, labels=self.app_labels),
            # Pod Identity needs no token in the pod; the server never calls the Kubernetes API.
            automount_token=False,
        )
        self.deployment = self._deployment()
        self.pdb = self._pdb()
        self.service = self._service()
        self.network_policy = self._network_policy()
        self._autoscaling()
        if c.vpa.enabled:
            self.vpa = self._vpa()
        if c.monitoring.service_monitor:
            self.service_monitor = self._service_monitor()
        if c.monitoring.dashboard:
            self.dashboard = self._dashboard()

    # --- workload ---------------------------------------------------------------------------------

    def _fetch_env(self) -> dict[str, str]:
        """The init container's settings (``model_server fetch``): where the model comes from and goes."""
        c = self.config
        env = {
            "MODEL_SERVER_MODEL_URI": c.model.uri,
            "MODEL_SERVER_MODEL_DIR": MODEL_DIR,
            "MODEL_SERVER_MODEL_PATH": f"{MODEL_DIR}/{c.model.file_name}",
        }
        if c.model.sha256:
            env["MODEL_SERVER_MODEL_SHA256"] = c.model.sha256
        return env

    def _server_env(self) -> dict[str, str]:
        """The server container's settings (``model_server.settings.Settings``): what the chart decides
        (model file, listen address, GPU offload, API key file), then every ``inference.server`` key."""
        c = self.config
        env = {
            "MODEL_SERVER_MODEL_PATH": f"{MODEL_DIR}/{c.model.file_name}",
            "MODEL_SERVER_HOST": "0.0.0.0",
            "MODEL_SERVER_PORT": str(SERVER_PORT),
            # All layers on the GPU when there is one, none otherwise.
            "MODEL_SERVER_N_GPU_LAYERS": "-1" if c.accelerator is Accelerator.GPU else "0",
            **c.server.environment(),
        }
        if c.api_key.enabled:
            env["MODEL_SERVER_API_KEY_FILE"] = f"{API_KEY_DIR}/api-key"
        return env

    def _security_context(self) -> kplus.ContainerSecurityContextProps:
        return kplus.ContainerSecurityContextProps(
            ensure_non_root=True,
            user=RUN_AS_USER,
            group=RUN_AS_USER,
            privileged=False,
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            capabilities=kplus.ContainerSecutiryContextCapabilities(drop=[kplus.Capability.ALL]),
            seccomp_profile=kplus.SeccompProfile(type=kplus.SeccompProfileType.RUNTIME_DEFAULT),
        )

    def _deployment(self) -> kplus.Deployment:
        c = self.config
        gpu = c.accelerator is Accelerator.GPU
        model_volume = kplus.Volume.from_empty_dir(
            self, "ModelVolume", "models", size_limit=cdk8s.Size.gibibytes(c.model.size_gib + 1)
        )
        tmp_volume = kplus.Volume.from_empty_dir(self, "TmpVolume", "tmp", size_limit=cdk8s.Size.gibibytes(1))
        mounts = [
            kplus.VolumeMount(path=MODEL_DIR, volume=model_volume),
            kplus.VolumeMount(path="/tmp", volume=tmp_volume),
        ]
        volumes = [model_volume, tmp_volume]

        server_mounts = list(mounts)
        if c.api_key.enabled:
            key_volume = kplus.Volume.from_secret(
                self,
                "ApiKeyVolume",
                kplus.Secret.from_secret_name(self, "ApiKeySecret", c.api_key.secret_name),
                name="api-key",
                default_mode=0o440,
            )
            volumes.append(key_volume)
            server_mounts.append(kplus.VolumeMount(path=API_KEY_DIR, volume=key_volume, read_only=True))

        ephemeral = cdk8s.Size.gibibytes(c.model.size_gib + 2)
        quantities = {
            part: {"cpu": cpu, "memory": c.resources.memory, "ephemeral-storage": f"{c.model.size_gib + 2}Gi"}
            for part, cpu in (("requests", c.resources.cpu_request), ("limits", c.resources.cpu_limit))
        }
        resources = kplus.ContainerResources(
            cpu=kplus.CpuResources(
                request=kplus.Cpu.units(_cores(c.resources.cpu_request)),
                limit=kplus.Cpu.units(_cores(c.resources.cpu_limit)),
            ),
            memory=kplus.MemoryResources(request=_size(c.resources.memory), limit=_size(c.resources.memory)),
            ephemeral_storage=kplus.EphemeralStorageResources(request=ephemeral, limit=ephemeral),
        )
        # Startup covers load + warm-up (the download is the init container's, before any probe runs).
        startup_period = 10
        deployment = kplus.Deployment(
            self,
            "Deployment",
            metadata=cdk8s.ApiObjectMetadata(name=c.name, labels=self.app_labels),
            pod_metadata=cdk8s.ApiObjectMetadata(labels=self.app_labels),
            select=False,
            replicas=c.replicas if c.autoscaling.mode is Autoscaler.NONE else None,
            service_account=self.service_account,
            automount_service_account_token=False,
            security_context=kplus.PodSecurityContextProps(
                ensure_non_root=True,
                user=RUN_AS_USER,
                group=RUN_AS_USER,
                fs_group=RUN_AS_USER,
            ),
            termination_grace_period=cdk8s.Duration.seconds(c.termination_grace_seconds),
            # Download (init container) + load + warm-up, with 10 minutes to spare for node launch.
            progress_deadline=cdk8s.Duration.seconds(c.startup_timeout_seconds + 600),
            strategy=kplus.DeploymentStrategy.rolling_update(
                max_surge=kplus.PercentOrAbsolute.absolute(self.props.rollout.max_surge),
                max_unavailable=kplus.PercentOrAbsolute.absolute(self.props.rollout.max_unavailable),
            ),
            volumes=volumes,
            init_containers=[
                kplus.ContainerProps(
                    name="fetch-model",
                    image=self.props.image,
                    # Asset tags are content hashes: a pulled tag never changes.
                    image_pull_policy=kplus.ImagePullPolicy.IF_NOT_PRESENT,
                    # The image's entrypoint (tini -> python -m model_server) with the fetch subcommand.
                    args=["fetch"],
                    env_variables=_env_values(self._fetch_env()),
                    volume_mounts=mounts,
                    security_context=self._security_context(),
                    resources=kplus.ContainerResources(
                        cpu=kplus.CpuResources(request=kplus.Cpu.millis(500), limit=kplus.Cpu.units(2)),
                        memory=kplus.MemoryResources(
                            request=cdk8s.Size.mebibytes(512), limit=cdk8s.Size.gibibytes(1)
                        ),
                        ephemeral_storage=kplus.EphemeralStorageResources(request=ephemeral, limit=ephemeral),
                    ),
                )
            ],
            containers=[
                kplus.ContainerProps(
                    name="server",
                    image=self.props.image,
                    # Asset tags are content hashes: a pulled tag never changes.
                    image_pull_policy=kplus.ImagePullPolicy.IF_NOT_PRESENT,
                    args=["serve"],
                    ports=[kplus.ContainerPort(number=SERVER_PORT, name="http")],
                    env_variables=_env_values(self._server_env()),
                    volume_mounts=server_mounts,
                    security_context=self._security_context(),
                    resources=resources,
                    startup=kplus.Probe.from_http_get(
                        "/readyz",
                        port=SERVER_PORT,
                        period_seconds=cdk8s.Duration.seconds(startup_period),
                        failure_threshold=max(1, c.startup_timeout_seconds // startup_period),
                        timeout_seconds=cdk8s.Duration.seconds(5),
                    ),
                    readiness=kplus.Probe.from_http_get(
                        "/readyz",
                        port=SERVER_PORT,
                        period_seconds=cdk8s.Duration.seconds(5),
                        failure_threshold=2,
                        timeout_seconds=cdk8s.Duration.seconds(3),
                    ),
                    liveness=kplus.Probe.from_http_get(
                        "/healthz",
                        port=SERVER_PORT,
                        period_seconds=cdk8s.Duration.seconds(10),
                        failure_threshold=6,
                        timeout_seconds=cdk8s.Duration.seconds(5),
                    ),
                )
            ],
        )
        deployment.select(kplus.LabelSelector.of(labels=self.app_labels))
        self._pods = kplus.Pods.select(self, "Pods", labels=self.app_labels)
        if c.autoscaling.mode is Autoscaler.KEDA:
            # KEDA's HPA owns .spec.replicas; never let a re-apply reset it (or wake a scaled-to-zero pod).
            deployment.mark_has_autoscaler()

        patches = [
            # Keep serving while the NLB deregisters the pod, then the server drains (SIGTERM).
            cdk8s.JsonPatch.add(
                "/spec/template/spec/containers/0/lifecycle",
                {"preStop": {"sleep": {"seconds": c.pre_stop_seconds}}},
            ),
            cdk8s.JsonPatch.add(
                "/spec/template/spec/securityContext/seccompProfile", {"type": "RuntimeDefault"}
            ),
            cdk8s.JsonPatch.add("/spec/template/spec/topologySpreadConstraints", self._topology_spread()),
        ]
        if gpu:
            patches += [
                # cdk8s-plus has no extended resources (nvidia.com/gpu): the whole block is replaced.
                cdk8s.JsonPatch.replace(
                    "/spec/template/spec/containers/0/resources",
                    # The patch runs before the typed k8s serializer, which reads quantities as {"value": ..}.
                    {
                        part: {k: {"value": v} for k, v in {**q, GPU_RESOURCE: 1}.items()}
                        for part, q in quantities.items()
                    },
                ),
                cdk8s.JsonPatch.add(
                    "/spec/template/spec/tolerations",
                    [{"key": self.props.gpu_taint_key, "operator": "Exists", "effect": GPU_TAINT_EFFECT}],
                ),
                cdk8s.JsonPatch.add("/spec/template/spec/nodeSelector", dict(self.props.gpu_node_selector)),
            ]
        elif self.props.cpu_node_selector:
            patches.append(
                cdk8s.JsonPatch.add("/spec/template/spec/nodeSelector", dict(self.props.cpu_node_selector))
            )
        cdk8s.ApiObject.of(deployment).add_json_patch(*patches)
        return deployment

    def _topology_spread(self) -> list[dict[str, Any]]:
        """Replicas in different zones (``inference.zoneSpread``), then on different nodes (preferred).

        Counted per revision (``matchLabelKeys: pod-template-hash``): during a rollout the new pods spread
        among themselves instead of around the old ones they replace. ``minDomains: 2``: while fewer than
        two zones hold a replica, a second one may not join the first one's zone (kube-scheduler only
        knows zones with nodes; Karpenter then launches a node in another zone).
        """
        selector = {
            "labelSelector": {"matchLabels": dict(self.app_labels)},
            "matchLabelKeys": ["pod-template-hash"],
        }
        zone: dict[str, Any] = {
            "maxSkew": 1,
            "topologyKey": ZONE_KEY,
            "whenUnsatisfiable": self.config.zone_spread,
            **selector,
        }
        if self.config.zone_spread == "DoNotSchedule":
            zone["minDomains"] = 2  # only valid with DoNotSchedule
        node = {"maxSkew": 1, "topologyKey": HOSTNAME_KEY, "whenUnsatisfiable": "ScheduleAnyway", **selector}
        return [zone, node]

    def _pdb(self) -> k8s.KubePodDisruptionBudget:
        # Two replicas or more: minAvailable 1, so no voluntary disruption (drain, Karpenter, upgrade) takes
        # the last ready one. A single replica (dev): maxUnavailable 1, as minAvailable 1 over one pod would
        # block every node drain forever.
        budget: dict[str, k8s.IntOrString] = (
            {"min_available": k8s.IntOrString.from_number(1)}
            if self.config.fewest_replicas >= 2
            else {"max_unavailable": k8s.IntOrString.from_number(1)}
        )
        return k8s.KubePodDisruptionBudget(
            self,
            "PodDisruptionBudget",
            metadata=k8s.ObjectMeta(name=self.config.name, labels=self.app_labels),
            spec=k8s.PodDisruptionBudgetSpec(
                selector=k8s.LabelSelector(match_labels=self.app_labels),
                # A pod that is not Ready serves nothing: evicting it never costs availability.
                unhealthy_pod_eviction_policy="AlwaysAllow",
                **budget,
            ),
        )

    # --- exposure ---------------------------------------------------------------------------------

    def _service(self) -> kplus.Service:
        c = self.config
        assert self._pods is not None
        return self.exposure.service(
            self,
            "Service",
            name=c.service_name,
            labels={"app": c.service_name},
            selector=self._pods,
            target_port=SERVER_PORT,
        )

    def _network_policy(self) -> kplus.NetworkPolicy:
        c = self.config
        port = [kplus.NetworkPolicyPort.tcp(SERVER_PORT)]
        prometheus = kplus.Namespaces.select(
            self, "PrometheusNamespace", names=[c.monitoring.prometheus_namespace]
        )
        # The NLB (client traffic and health checks: its VPC addresses, charts/exposure.py) and in-VPC
        # clients. KEDA needs nothing here: its triggers query Prometheus, never the pods.
        nlb = self.exposure.ingress_peers(self, "VpcCidr")
        # In-namespace clients by their pods' labels (the chat UI): a policy sees the pod behind the Service.
        clients = [
            kplus.Pods.select(self, f"ClientPods{i}" if i else "ClientPods", labels=dict(labels))
            for i, labels in enumerate(self.props.client_pod_labels)
        ]
        any_ip = kplus.NetworkPolicyIpBlock.any_ipv4(self, "AnyIpv4")
        agent = kplus.NetworkPolicyIpBlock.ipv4(self, "PodIdentityAgent", POD_IDENTITY_AGENT_CIDR)
        return kplus.NetworkPolicy(
            self,
            "NetworkPolicy",
            metadata=cdk8s.ApiObjectMetadata(name=c.name, labels=self.app_labels),
            selector=self._pods,
            ingress=kplus.NetworkPolicyTraffic(
                default=kplus.NetworkPolicyTrafficDefault.DENY,
                rules=[
                    *(kplus.NetworkPolicyRule(peer=peer, ports=port) for peer in nlb),
                    kplus.NetworkPolicyRule(peer=prometheus, ports=port),
                    *(kplus.NetworkPolicyRule(peer=client, ports=port) for client in clients),
                ],
            ),
            egress=kplus.NetworkPolicyTraffic(
                default=kplus.NetworkPolicyTrafficDefault.DENY,
                rules=[
                    kplus.NetworkPolicyRule(
                        peer=any_ip, ports=[kplus.NetworkPolicyPort.udp(53), kplus.NetworkPolicyPort.tcp(53)]
                    ),
                    # Model download: Hugging Face / S3 over HTTPS.
                    kplus.NetworkPolicyRule(peer=any_ip, ports=[kplus.NetworkPolicyPort.tcp(443)]),
                    # S3 credentials from the node's EKS Pod Identity agent (HTTP, link-local).
                    kplus.NetworkPolicyRule(peer=agent, ports=[kplus.NetworkPolicyPort.tcp(80)]),
                ],
            ),
        )

    # --- autoscaling ------------------------------------------------------------------------------

    def _autoscaling(self) -> None:
        a = self.config.autoscaling
        if a.mode is Autoscaler.HPA:
            # Seed ch6, number for number.
            self.hpa = kplus.HorizontalPodAutoscaler(
                self,
                "HorizontalPodAutoscaler",
                metadata=cdk8s.ApiObjectMetadata(name=self.config.name, labels=self.app_labels),
                target=self.deployment,
                min_replicas=a.min_replicas,
                max_replicas=a.max_replicas,
                metrics=[
                    kplus.Metric.resource_cpu(kplus.MetricTarget.average_utilization(a.cpu_utilization))
                ],
                scale_down=SEED_HPA_SCALE_DOWN,
                scale_up=SEED_HPA_SCALE_UP,
            )
        elif a.mode is Autoscaler.KEDA:
            self.scaled_object = self._scaled_object()

    def _selector(self) -> str:
        c = self.config
        # ReplicaSet pods are named <deployment>-<hash>-<suffix>; the namespace pins it to this service.
        return f'namespace="{c.namespace}",pod=~"{c.name}-[a-z0-9]+-[a-z0-9]+"'

    def _scaled_object(self) -> keda.ScaledObject:
        c = self.config
        a = c.autoscaling
        k = a.keda
        url = c.monitoring.prometheus_url
        sel = self._selector()

        def trigger(
            name: str, query: str, threshold: int, metric_type: str, activation: int = 0
        ) -> keda.ScaledObjectSpecTriggers:
            return keda.ScaledObjectSpecTriggers(
                type="prometheus",
                name=name,
                metric_type=metric_type,
                metadata={
                    "serverAddress": url,
                    "query": query,
                    "threshold": str(threshold),
                    "activationThreshold": str(activation),
                    "ignoreNullValues": "true",
                },
            )

        triggers = [
            # AverageValue: KEDA divides by the replica count, so thresholds are per replica.
            trigger(
                "queue-depth",
                f"sum(llamacpp:requests_deferred{{{sel}}})",
                k.queue_per_replica,
                "AverageValue",
            ),
            trigger(
                "in-flight",
                f"sum(llamacpp:requests_processing{{{sel}}})",
                k.in_flight_per_replica,
                "AverageValue",
            ),
        ]
        if c.accelerator is Accelerator.GPU:
            # DCGM exporter reports the GPU's pod as exported_pod/exported_namespace (honorLabels off).
            gpu_sel = f'exported_namespace="{c.namespace}",exported_pod=~"{c.name}-[a-z0-9]+-[a-z0-9]+"'
            triggers.append(
                trigger(
                    "gpu-utilization", f"avg(DCGM_FI_DEV_GPU_UTIL{{{gpu_sel}}})", k.gpu_utilization, "Value"
                )
            )
        policy = keda.ScaledObjectSpecAdvancedHorizontalPodAutoscalerConfigBehavior
        return keda.ScaledObject(
            self,
            "ScaledObject",
            metadata=cdk8s.ApiObjectMetadata(name=c.name, labels=self.app_labels),
            spec=keda.ScaledObjectSpec(
                scale_target_ref=keda.ScaledObjectSpecScaleTargetRef(
                    api_version="apps/v1", kind="Deployment", name=c.name
                ),
                min_replica_count=a.min_replicas,
                max_replica_count=a.max_replicas,
                polling_interval=k.polling_interval_seconds,
                cooldown_period=k.cooldown_seconds,
                fallback=self._keda_fallback(),
                advanced=keda.ScaledObjectSpecAdvanced(
                    horizontal_pod_autoscaler_config=keda.ScaledObjectSpecAdvancedHorizontalPodAutoscalerConfig(
                        name=f"keda-hpa-{c.name}",
                        # The seed's HPA behaviour: slow, bounded scale-down; fast scale-up.
                        behavior=policy(
                            scale_down=keda.ScaledObjectSpecAdvancedHorizontalPodAutoscalerConfigBehaviorScaleDown(
                                stabilization_window_seconds=180,
                                policies=[
                                    keda.ScaledObjectSpecAdvancedHorizontalPodAutoscalerConfigBehaviorScaleDownPolicies(
                                        type="Percent", value=50, period_seconds=15
                                    )
                                ],
                            ),
                            scale_up=keda.ScaledObjectSpecAdvancedHorizontalPodAutoscalerConfigBehaviorScaleUp(
                                stabilization_window_seconds=0,
                                select_policy="Max",
                                policies=[
                                    keda.ScaledObjectSpecAdvancedHorizontalPodAutoscalerConfigBehaviorScaleUpPolicies(
                                        type="Pods", value=2, period_seconds=15
                                    )
                                ],
                            ),
                        ),
                    ),
                ),
                triggers=triggers,
            ),
        )

    def _keda_fallback(self) -> keda.ScaledObjectSpecFallback:
        """When Prometheus cannot be queried (restart, outage) for ``KEDA_FALLBACK_FAILURES`` polls in a row,
        hold the replicas that run (``currentReplicasIfHigher``: never fewer, at least ``replicas``) instead
        of scaling on nothing. Every trigger queries Prometheus, so all fail together; KEDA 2.20 falls back
        for ``AverageValue`` and ``Value`` triggers alike.

        ``replicas`` is at least 1: with ``minReplicaCount: 0`` and a fallback of 0, KEDA treats failing
        triggers as idle and scales the service to zero (keda v2.20.2 pkg/scaling/executor). Empty answers
        (no series: scaled to zero, or a Prometheus without data yet) are not failures
        (``ignoreNullValues``): they read as 0, so a service at zero stays there.
        """
        return keda.ScaledObjectSpecFallback(
            failure_threshold=KEDA_FALLBACK_FAILURES,
            replicas=max(1, self.config.autoscaling.min_replicas),
            behavior=keda.ScaledObjectSpecFallbackBehavior.CURRENT_REPLICAS_IF_HIGHER,
        )

    def _vpa(self) -> vpa.VerticalPodAutoscaler:
        c = self.config
        return vpa.VerticalPodAutoscaler(
            self,
            "VerticalPodAutoscaler",
            metadata=cdk8s.ApiObjectMetadata(name=c.name, labels=self.app_labels),
            spec=vpa.VerticalPodAutoscalerSpec(
                target_ref=vpa.VerticalPodAutoscalerSpecTargetRef(
                    api_version="apps/v1", kind="Deployment", name=c.name
                ),
                # Recommendations only (seed ch6): an evicting VPA fights the HPA/KEDA over the same pods.
                update_policy=vpa.VerticalPodAutoscalerSpecUpdatePolicy(
                    update_mode=vpa.VerticalPodAutoscalerSpecUpdatePolicyUpdateMode.OFF
                ),
                resource_policy=vpa.VerticalPodAutoscalerSpecResourcePolicy(
                    container_policies=[
                        vpa.VerticalPodAutoscalerSpecResourcePolicyContainerPolicies(
                            container_name="server", controlled_resources=["cpu", "memory"]
                        ),
                    ]
                ),
            ),
        )

    # --- observability ----------------------------------------------------------------------------

    def _service_monitor(self) -> monitoring.ServiceMonitor:
        c = self.config
        return monitoring.ServiceMonitor(
            self,
            "ServiceMonitor",
            metadata=cdk8s.ApiObjectMetadata(
                name=c.name, labels={**self.app_labels, **self.props.service_monitor_labels}
            ),
            spec=monitoring.ServiceMonitorSpec(
                selector=monitoring.ServiceMonitorSpecSelector(match_labels={"app": c.service_name}),
                namespace_selector=monitoring.ServiceMonitorSpecNamespaceSelector(match_names=[c.namespace]),
                endpoints=[
                    monitoring.ServiceMonitorSpecEndpoints(
                        port=PORT_NAME, path="/metrics", interval="15s", scrape_timeout="10s"
                    )
                ],
            ),
        )

    def _dashboard(self) -> kplus.ConfigMap:
        c = self.config
        dashboard = json.loads(DASHBOARD_FILE.read_text())
        dashboard["title"] = f"Llama inference: {c.namespace}/{c.name}"
        dashboard["uid"] = f"llama-{c.namespace}-{c.name}"[:40]
        text = json.dumps(dashboard, indent=1, sort_keys=True)
        text = text.replace("@NAMESPACE@", c.namespace).replace("@NAME@", c.name)
        return kplus.ConfigMap(
            self,
            "Dashboard",
            metadata=cdk8s.ApiObjectMetadata(
                name=f"{c.name}-dashboard",
                # The Grafana sidecar watches its own namespace (kube-prometheus-stack default).
                namespace=c.monitoring.prometheus_namespace,
                labels={**self.app_labels, DASHBOARD_LABEL[0]: DASHBOARD_LABEL[1]},
            ),
            data={f"{c.name}.json": text},
        )


def _env_values(env: Mapping[str, str]) -> dict[str, kplus.EnvValue]:
    return {name: kplus.EnvValue.from_value(value) for name, value in env.items()}


def _cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def _size(quantity: str) -> cdk8s.Size:
    units = {
        "Ki": cdk8s.Size.kibibytes,
        "Mi": cdk8s.Size.mebibytes,
        "Gi": cdk8s.Size.gibibytes,
        "Ti": cdk8s.Size.tebibytes,
    }
    for suffix, make in units.items():
        if quantity.endswith(suffix):
            return make(float(quantity[: -len(suffix)]))
    raise ConfigError("inference.resources.memory", quantity, "a quantity in Ki, Mi, Gi or Ti such as '16Gi'")
