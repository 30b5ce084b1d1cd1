"""The chat UI in front of the model (seed ch6's ``chatbot-ui-deployment``, done for production).

A cdk8s chart of its own, unit-tested on its own (tests/charts/test_chat_ui_chart.py) and applied to the
cluster by the InferenceStack (stacks/inference/chat_ui.py). It renders into the model's namespace (the
inference chart creates it, with restricted Pod Security and the NLB readiness-gate label):

* ServiceAccount ``chatbot-ui`` (no token: the UI never calls the Kubernetes API)
* Deployment ``chatbot-ui-deployment``: the ``chat_ui`` image, non-root, read-only root file system with
  ``/tmp`` an ``emptyDir`` (Gradio writes ``/tmp/gradio``), probes on the app's ``/healthz`` and
  ``/readyz``, the model's API key Secret mounted when the model requires one
* Service ``chatbot-ui-service``: an NLB through the shared exposure (charts/exposure.py), port 80 -> the
  app (443 with TLS ending at the NLB)
* HorizontalPodAutoscaler ``chatbot-ui-hpa`` (seed ch6, number for number), optional VerticalPodAutoscaler
  ``chatbot-ui-vpa`` (recommendations only), PodDisruptionBudget ``chatbot-ui-pdb``
* NetworkPolicy ``chatbot-ui``: in from the NLB only; out to DNS and the model's pods only
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlparse

import cdk8s
import cdk8s_plus_30 as kplus
from cdk8s_plus_30 import k8s
from constructs import Construct

from charts.exposure import Exposure
from charts.inference import SEED_HPA_SCALE_DOWN, SEED_HPA_SCALE_UP
from config.base import CIDR_ALLOWED, DNS_LABEL_PATTERN, is_ipv4_cidr
from config.chat_ui import ChatUiConfig
from config.errors import ConfigError
from config.inference import parse_quantity
from config.names import (
    CHAT_UI_DEPLOYMENT,
    CHAT_UI_HPA,
    CHAT_UI_NAME,
    CHAT_UI_POD_LABELS,
    CHAT_UI_SERVICE,
    CHAT_UI_VPA,
)
from imports.io.k8s import autoscaling as vpa

#: The app's port (chat_ui/Dockerfile, ``CHAT_UI_PORT``).
UI_PORT = 7860
#: Non-root user of the chat UI image (chat_ui/Dockerfile).
RUN_AS_USER = 10001
#: Mount path of the model's API key Secret; the app reads ``CHAT_UI_API_KEY_FILE``.
API_KEY_DIR = "/var/run/secrets/chat-ui"
#: The key of the model's API key Secret (the model server reads the same one).
API_KEY_SECRET_KEY = "api-key"
#: A terminating pod keeps serving this long while the NLB deregisters it (its target turns ``draining``
#: and new connections stop arriving), as the model's pods do.
PRE_STOP_SECONDS = 15
#: After SIGTERM the app lets open answers stream for up to 10 s, then exits (chat_ui/__main__.py).
SHUTDOWN_SECONDS = 10
#: The kubelet's SIGKILL must never race the app's own shutdown.
GRACE_MARGIN_SECONDS = 5
TERMINATION_GRACE_SECONDS = PRE_STOP_SECONDS + SHUTDOWN_SECONDS + GRACE_MARGIN_SECONDS
#: Gradio's temp directory lives in /tmp (the page takes no uploads: small).
TMP_SIZE_MIB = 256
#: Ephemeral storage request and limit: /tmp and the logs.
EPHEMERAL_GIB = 1
#: Seed ch6's VPA bounds (``chatbot-ui-vpa.yaml``); with ``updateMode: Off`` they clamp the recommendation
#: only (the unclamped one is the status' ``uncappedTarget``).
VPA_MIN_ALLOWED: Mapping[str, str] = {"cpu": "1000m", "memory": "2Gi"}
VPA_MAX_ALLOWED: Mapping[str, str] = {"cpu": "2000m", "memory": "4Gi"}
ZONE_KEY = "topology.kubernetes.io/zone"
HOSTNAME_KEY = "kubernetes.io/hostname"
#: The image is built for linux/amd64 (stacks/inference/chat_ui.py): never scheduled on a Graviton node.
ARCH_SELECTOR: Mapping[str, str] = MappingProxyType({"kubernetes.io/arch": "amd64"})


@dataclass(frozen=True)
class ModelEndpoint:
    """Where the UI finds the model: ``url``, the model Service's in-cluster base URL (plain HTTP on the
    Service's port); ``pod_labels`` and ``port``, the model's pods and container port (a NetworkPolicy sees
    the pod behind the Service, after its address translation); ``api_key_secret``, the Secret holding the
    model's API key (key ``api-key``), or None when the model requires none."""

    url: str
    pod_labels: Mapping[str, str]
    port: int
    api_key_secret: str | None = None

    def __post_init__(self) -> None:
        parsed = urlparse(self.url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ConfigError("chatUi.modelUrl", self.url, "an http:// URL of the model's Service")
        if not self.pod_labels:
            raise ConfigError("chatUi.modelPodLabels", dict(self.pod_labels), "the model pods' labels")
        if not 1 <= self.port <= 65535:
            raise ConfigError("chatUi.modelPort", self.port, "a port from 1 to 65535")


@dataclass(frozen=True)
class ChatUiChartProps:
    """Everything the chart renders. ``config``: the validated ``chatUi`` section. ``image``: the chat UI
    image URI (the InferenceStack passes its DockerImageAsset's URI). ``namespace``: the model's namespace
    (``inference.namespace``; the inference chart creates it). ``model``: where the model is.
    ``vpc_cidr``: the VPC (the internal NLB's source range, and where the NLB's addresses come from).
    ``node_selector``: labels of the CPU nodes the UI runs on (default none: any untainted node; the pods
    always select ``kubernetes.io/arch: amd64``, the image's platform)."""

    config: ChatUiConfig
    image: str
    namespace: str
    model: ModelEndpoint
    vpc_cidr: str = "10.0.0.0/16"
    node_selector: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.config, ChatUiConfig):
            raise ConfigError("chatUi", self.config, "a ChatUiConfig")
        if not self.config.enabled:
            raise ConfigError("chatUi.enabled", False, "true to render the chat UI (false: no chart)")
        if not isinstance(self.image, str) or not self.image:
            raise ConfigError("chatUi.image", self.image, "a container image URI")
        if not re.fullmatch(DNS_LABEL_PATTERN, self.namespace):
            raise ConfigError("inference.namespace", self.namespace, "a DNS label")
        if not isinstance(self.model, ModelEndpoint):
            raise ConfigError("chatUi.model", self.model, "a ModelEndpoint")
        if not is_ipv4_cidr(self.vpc_cidr):
            raise ConfigError("network.vpcCidr", self.vpc_cidr, CIDR_ALLOWED)


class ChatUiChart(cdk8s.Chart):
    """ServiceAccount, Deployment, PDB, NetworkPolicy, Service (NLB), HPA and optional VPA of the chat UI.

    Attributes used by the InferenceStack to order deployment: ``service``, ``deployment``, ``hpa``,
    ``vpa``.
    """

    def __init__(self, scope: Construct, id: str, props: ChatUiChartProps, **kwargs: Any) -> None:
        if not isinstance(props, ChatUiChartProps):
            raise ConfigError("chatUi", props, "ChatUiChartProps")
        super().__init__(scope, id, namespace=props.namespace, disable_resource_name_hashes=True, **kwargs)
        self.props = props
        self.config = c = props.config
        self.app_labels = dict(CHAT_UI_POD_LABELS)
        self.exposure = Exposure(
            config=c.exposure,
            vpc_cidr=props.vpc_cidr,
            # The UI's own readiness: 200 once started, whatever the model's state (the page tells users).
            health_check_path="/readyz",
            deregistration_delay_seconds=TERMINATION_GRACE_SECONDS,
        )
        self.service_account = kplus.ServiceAccount(
            self,
            "ServiceAccount",
            metadata=cdk8s.ApiObjectMetadata(name=CHAT_UI_NAME, labels=self.app_labels),
            automount_token=False,
        )
        self.deployment = self._deployment()
        self.pods = kplus.Pods.select(self, "Pods", labels=self.app_labels)
        self.pdb = self._pdb()
        self.service = self.exposure.service(
            self,
            "Service",
            name=CHAT_UI_SERVICE,
            labels={"app": CHAT_UI_SERVICE},
            selector=self.pods,
            target_port=UI_PORT,
        )
        self.network_policy = self._network_policy()
        self.hpa = self._hpa()
        self.vpa: vpa.VerticalPodAutoscaler | None = self._vpa() if c.vpa.enabled else None

    # --- workload ---------------------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        """The app's settings (``chat_ui.settings.Settings``, ``CHAT_UI_*``): every one the chart decides."""
        c, model = self.config, self.props.model
        env = {
            "CHAT_UI_MODEL_URL": model.url,
            "CHAT_UI_HOST": "0.0.0.0",
            "CHAT_UI_PORT": str(UI_PORT),
            "CHAT_UI_TITLE": c.title,
            "CHAT_UI_MAX_TOKENS": str(c.max_tokens),
        }
        if c.system_prompt is not None:
            env["CHAT_UI_SYSTEM_PROMPT"] = c.system_prompt
        if model.api_key_secret is not None:
            env["CHAT_UI_API_KEY_FILE"] = f"{API_KEY_DIR}/{API_KEY_SECRET_KEY}"
        return env

    def _deployment(self) -> kplus.Deployment:
        c, model = self.config, self.props.model
        tmp = kplus.Volume.from_empty_dir(
            self, "TmpVolume", "tmp", size_limit=cdk8s.Size.mebibytes(TMP_SIZE_MIB)
        )
        volumes = [tmp]
        mounts = [kplus.VolumeMount(path="/tmp", volume=tmp)]
        if model.api_key_secret is not None:
            key = kplus.Volume.from_secret(
                self,
                "ApiKeyVolume",
                kplus.Secret.from_secret_name(self, "ApiKeySecret", model.api_key_secret),
                name="api-key",
                items={API_KEY_SECRET_KEY: kplus.PathMapping(path=API_KEY_SECRET_KEY)},
                default_mode=0o440,
            )
            volumes.append(key)
            mounts.append(kplus.VolumeMount(path=API_KEY_DIR, volume=key, read_only=True))
        r = c.resources
        # /tmp plus the container's logs (cdk8s-plus renders ephemeral storage in whole GiB).
        ephemeral = cdk8s.Size.gibibytes(EPHEMERAL_GIB)

        def probe(path: str, period: int, failures: int) -> kplus.Probe:
            # 5 s: the UI's /readyz asks the model's /readyz with a 3 s timeout.
            return kplus.Probe.from_http_get(
                path,
                port=UI_PORT,
                period_seconds=cdk8s.Duration.seconds(period),
                failure_threshold=failures,
                timeout_seconds=cdk8s.Duration.seconds(5),
            )

        deployment = kplus.Deployment(
            self,
            "Deployment",
            metadata=cdk8s.ApiObjectMetadata(name=CHAT_UI_DEPLOYMENT, labels=self.app_labels),
            pod_metadata=cdk8s.ApiObjectMetadata(labels=self.app_labels),
            select=False,
            service_account=self.service_account,
            automount_service_account_token=False,
            security_context=kplus.PodSecurityContextProps(
                ensure_non_root=True, user=RUN_AS_USER, group=RUN_AS_USER, fs_group=RUN_AS_USER
            ),
            termination_grace_period=cdk8s.Duration.seconds(TERMINATION_GRACE_SECONDS),
            # A new pod is ready in seconds; 5 minutes covers a node launch for it.
            progress_deadline=cdk8s.Duration.seconds(300),
            strategy=kplus.DeploymentStrategy.rolling_update(
                max_surge=kplus.PercentOrAbsolute.absolute(1),
                max_unavailable=kplus.PercentOrAbsolute.absolute(0),
            ),
            volumes=volumes,
            containers=[
                kplus.ContainerProps(
                    name="chat-ui",
                    image=self.props.image,
                    # Asset tags are content hashes: a pulled tag never changes.
                    image_pull_policy=kplus.ImagePullPolicy.IF_NOT_PRESENT,
                    ports=[kplus.ContainerPort(number=UI_PORT, name="http")],
                    env_variables={k: kplus.EnvValue.from_value(v) for k, v in self.environment().items()},
                    volume_mounts=mounts,
                    security_context=kplus.ContainerSecurityContextProps(
                        ensure_non_root=True,
                        user=RUN_AS_USER,
                        group=RUN_AS_USER,
                        privileged=False,
                        allow_privilege_escalation=False,
                        read_only_root_filesystem=True,
                        capabilities=kplus.ContainerSecutiryContextCapabilities(drop=[kplus.Capability.ALL]),
                        seccomp_profile=kplus.SeccompProfile(type=kplus.SeccompProfileType.RUNTIME_DEFAULT),
                    ),
                    resources=kplus.ContainerResources(
                        cpu=kplus.CpuResources(
                            request=kplus.Cpu.millis(_millicores(r.cpu_request)),
                            limit=kplus.Cpu.millis(_millicores(r.cpu_limit)),
                        ),
                        memory=kplus.MemoryResources(
                            request=_mebibytes(r.memory), limit=_mebibytes(r.memory)
                        ),
                        ephemeral_storage=kplus.EphemeralStorageResources(request=ephemeral, limit=ephemeral),
                    ),
                    # Start-up: importing Gradio takes seconds (more under a CPU limit); 2 minutes at most.
                    startup=probe("/readyz", 2, 60),
                    readiness=probe("/readyz", 5, 2),
                    liveness=probe("/healthz", 10, 3),
                )
            ],
        )
        deployment.select(kplus.LabelSelector.of(labels=self.app_labels))
        # The HPA owns .spec.replicas: a re-apply never resets it.
        deployment.mark_has_autoscaler()
        cdk8s.ApiObject.of(deployment).add_json_patch(
            # Keep serving while the NLB deregisters the pod; then SIGTERM (open answers get 10 s).
            cdk8s.JsonPatch.add(
                "/spec/template/spec/containers/0/lifecycle",
                {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
            ),
            cdk8s.JsonPatch.add(
                "/spec/template/spec/securityContext/seccompProfile", {"type": "RuntimeDefault"}
            ),
            cdk8s.JsonPatch.add("/spec/template/spec/topologySpreadConstraints", self._topology_spread()),
            cdk8s.JsonPatch.add(
                "/spec/template/spec/nodeSelector", {**self.props.node_selector, **ARCH_SELECTOR}
            ),
        )
        return deployment

    def _topology_spread(self) -> list[dict[str, Any]]:
        """Replicas preferably in different zones, then on different nodes (never left Pending for it: a
        UI replica is cheap and any node will do)."""
        selector = {
            "labelSelector": {"matchLabels": dict(self.app_labels)},
            "matchLabelKeys": ["pod-template-hash"],
        }
        return [
            {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway", **selector}
            for key in (ZONE_KEY, HOSTNAME_KEY)
        ]

    def _pdb(self) -> k8s.KubePodDisruptionBudget:
        # Two replicas or more: no voluntary disruption takes the last ready one. One replica (dev):
        # maxUnavailable 1, as minAvailable 1 over one pod would block every node drain.
        budget: dict[str, k8s.IntOrString] = (
            {"min_available": k8s.IntOrString.from_number(1)}
            if self.config.autoscaling.min_replicas >= 2
            else {"max_unavailable": k8s.IntOrString.from_number(1)}
        )
        return k8s.KubePodDisruptionBudget(
            self,
            "PodDisruptionBudget",
            metadata=k8s.ObjectMeta(name=f"{CHAT_UI_NAME}-pdb", labels=self.app_labels),
            spec=k8s.PodDisruptionBudgetSpec(
                selector=k8s.LabelSelector(match_labels=self.app_labels),
                unhealthy_pod_eviction_policy="AlwaysAllow",
                **budget,
            ),
        )

    def _network_policy(self) -> kplus.NetworkPolicy:
        model = self.props.model
        port = [kplus.NetworkPolicyPort.tcp(UI_PORT)]
        any_ip = kplus.NetworkPolicyIpBlock.any_ipv4(self, "AnyIpv4")
        model_pods = kplus.Pods.select(self, "ModelPods", labels=dict(model.pod_labels))
        return kplus.NetworkPolicy(
            self,
            "NetworkPolicy",
            metadata=cdk8s.ApiObjectMetadata(name=CHAT_UI_NAME, labels=self.app_labels),
            selector=self.pods,
            ingress=kplus.NetworkPolicyTraffic(
                default=kplus.NetworkPolicyTrafficDefault.DENY,
                # The NLB (clients and health checks): its VPC addresses (charts/exposure.py).
                rules=[
                    kplus.NetworkPolicyRule(peer=p, ports=port)
                    for p in self.exposure.ingress_peers(self, "VpcCidr")
                ],
            ),
            egress=kplus.NetworkPolicyTraffic(
                default=kplus.NetworkPolicyTrafficDefault.DENY,
                rules=[
                    # DNS, wherever the cluster's resolver runs (CoreDNS, a node-local cache).
                    kplus.NetworkPolicyRule(
                        peer=any_ip, ports=[kplus.NetworkPolicyPort.udp(53), kplus.NetworkPolicyPort.tcp(53)]
                    ),
                    # The model: its pods' port (a policy sees the pod behind the Service's address).
                    kplus.NetworkPolicyRule(peer=model_pods, ports=[kplus.NetworkPolicyPort.tcp(model.port)]),
                ],
            ),
        )

    # --- autoscaling ------------------------------------------------------------------------------

    def _hpa(self) -> kplus.HorizontalPodAutoscaler:
        a = self.config.autoscaling
        # Seed ch6's chatbot-ui-hpa, number for number, with its optional scaling behaviour.
        return kplus.HorizontalPodAutoscaler(
            self,
            "HorizontalPodAutoscaler",
            metadata=cdk8s.ApiObjectMetadata(name=CHAT_UI_HPA, labels=self.app_labels),
            target=self.deployment,
            min_replicas=a.min_replicas,
            max_replicas=a.max_replicas,
            metrics=[kplus.Metric.resource_cpu(kplus.MetricTarget.average_utilization(a.cpu_utilization))],
            scale_down=SEED_HPA_SCALE_DOWN,
            scale_up=SEED_HPA_SCALE_UP,
        )

    def _vpa(self) -> vpa.VerticalPodAutoscaler:
        policy = vpa.VerticalPodAutoscalerSpecResourcePolicyContainerPolicies
        low = vpa.VerticalPodAutoscalerSpecResourcePolicyContainerPoliciesMinAllowed
        high = vpa.VerticalPodAutoscalerSpecResourcePolicyContainerPoliciesMaxAllowed
        controlled = vpa.VerticalPodAutoscalerSpecResourcePolicyContainerPoliciesControlledValues
        # Seed ch6's chatbot-ui-vpa with updateMode "Off" instead of "Auto": recommendations only, because an
        # evicting VPA fights the HPA over the same pods (the seed's own advice).
        return vpa.VerticalPodAutoscaler(
            self,
            "VerticalPodAutoscaler",
            metadata=cdk8s.ApiObjectMetadata(name=CHAT_UI_VPA, labels=self.app_labels),
            spec=vpa.VerticalPodAutoscalerSpec(
                target_ref=vpa.VerticalPodAutoscalerSpecTargetRef(
                    api_version="apps/v1", kind="Deployment", name=CHAT_UI_DEPLOYMENT
                ),
                update_policy=vpa.VerticalPodAutoscalerSpecUpdatePolicy(
                    update_mode=vpa.VerticalPodAutoscalerSpecUpdatePolicyUpdateMode.OFF
                ),
                resource_policy=vpa.VerticalPodAutoscalerSpecResourcePolicy(
                    container_policies=[
                        policy(
                            container_name="*",
                            min_allowed={k: low.from_string(v) for k, v in VPA_MIN_ALLOWED.items()},
                            max_allowed={k: high.from_string(v) for k, v in VPA_MAX_ALLOWED.items()},
                            controlled_values=controlled.REQUESTS_AND_LIMITS,
                        )
                    ]
                ),
            ),
        )


def _millicores(quantity: str) -> int:
    return round(parse_quantity(quantity) * 1000)


def _mebibytes(quantity: str) -> cdk8s.Size:
    return cdk8s.Size.mebibytes(parse_quantity(quantity) / 2**20)
