"""InferenceStack: the llama inference service on the cluster (its own stack: app releases never touch the
platform stacks).

Composes the model server image (DockerImageAsset), the model's S3 read access (Pod Identity) and the
cdk8s ``InferenceChart`` applied through the cluster as five manifests with explicit dependencies:

* ``Base`` (Namespace, with the NLB readiness-gate label; ServiceAccount)
* ``Service`` (the NLB) after the AWS Load Balancer Controller; ``Endpoint`` waits for the NLB's hostname,
  which the controller writes after it has created the NLB, its target group and TargetGroupBinding
* ``Workload`` (Deployment, PDB, NetworkPolicy) after the ``Endpoint``, so every pod is created after the
  TargetGroupBinding and gets the NLB target-health readiness gate (zero-downtime rollouts: an old pod
  stops only when its replacement is a healthy NLB target), and after the GPU capacity (Karpenter
  NodePools or the GPU nodegroup), the NVIDIA device plugin and the Pod Identity association
* ``Autoscaling`` (ScaledObject or HPA; the VPA) after the Workload, KEDA and Prometheus, and with a VPA
  after the VPA add-on (its CRDs)
* ``Monitoring`` (ServiceMonitor, Grafana dashboard) after Prometheus

Dependencies on add-on constructs make this stack depend on the AddonsStack, so ``cdk destroy`` deletes
this stack first: the pods go (before Karpenter's NodePools), then the Service (the controller removes the
NLB, its target groups and security groups through the Service's finalizer) while the controller still
runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cdk8s
from aws_cdk import Annotations, CfnOutput, Duration, Stack
from aws_cdk import aws_eks_v2 as eks
from constructs import Construct, IConstruct

from charts.chat_ui import ModelEndpoint
from charts.inference import SERVER_PORT, InferenceChart, InferenceChartProps, Rollout
from config.chat_ui import ChatUiConfig
from config.inference import Accelerator, Autoscaler, InferenceConfig
from config.names import CHAT_UI_POD_LABELS, CHAT_UI_SERVICE, SEED_PREDICT_BODY
from stacks.inference.chat_ui import ChatUi
from stacks.inference.image import ModelServerImage
from stacks.inference.model_access import ModelAccess

#: Manifest group -> the kinds it applies. Every rendered object belongs to exactly one group.
MANIFEST_GROUPS: dict[str, tuple[str, ...]] = {
    "Base": ("Namespace", "ServiceAccount"),
    "Workload": ("Deployment", "PodDisruptionBudget", "NetworkPolicy"),
    "Service": ("Service",),
    "Autoscaling": ("HorizontalPodAutoscaler", "ScaledObject", "VerticalPodAutoscaler"),
    "Monitoring": ("ServiceMonitor", "ConfigMap"),
}

ENDPOINT_TIMEOUT = Duration.minutes(10)


def predict_curl(url: str, *, api_key: bool) -> str:
    """The seed's curl to /predict at base ``url`` (a bearer token header when the API key is on)."""
    auth = ' -H "Authorization: Bearer $API_KEY"' if api_key else ""
    return (
        f'curl -X POST {url}/predict -H "Content-Type: application/json"{auth} '
        f"-d '{SEED_PREDICT_BODY}' | jq ."
    )


@dataclass(frozen=True)
class Placement:
    """Where the pods run and what each manifest group waits for.

    ``node_selector``: labels of the nodes the pods run on (GPU NodePool or nodegroup, a CPU pool, or none).
    ``after_capacity``: before the Deployment (NodePools or the GPU nodegroup, the NVIDIA device plugin);
    ``after_load_balancer_controller``: before the Service; ``after_autoscaler``: before the ScaledObject
    or HPA (KEDA, Prometheus, the DCGM exporter); ``after_vpa``: before a VerticalPodAutoscaler, of the model
    or the chat UI (the VPA add-on: its CRDs); ``after_metrics``: before the ServiceMonitor and dashboard.
    ``rollout``: the Deployment's rolling update, as the capacity allows (``Rollout``).
    ``ui_node_selector`` / ``after_ui_capacity``: the CPU nodes of the chat UI and what creates them (the
    general-purpose NodePool, or none: any untainted node such as the system nodegroup).
    """

    node_selector: Mapping[str, str] = field(default_factory=dict)
    rollout: Rollout = field(default_factory=Rollout)
    after_capacity: tuple[IConstruct, ...] = ()
    after_load_balancer_controller: tuple[IConstruct, ...] = ()
    after_autoscaler: tuple[IConstruct, ...] = ()
    after_vpa: tuple[IConstruct, ...] = ()
    after_metrics: tuple[IConstruct, ...] = ()
    ui_node_selector: Mapping[str, str] = field(default_factory=dict)
    after_ui_capacity: tuple[IConstruct, ...] = ()


class InferenceStack(Stack):
    """The inference service on ``cluster``.

    The image (``ModelServerImage``) is built here; the model's S3 access (``ModelAccess``) is made when
    the model is on S3. ``vpc_cidr``: the VPC's CIDR (NetworkPolicy, internal NLB source range).
    ``placement``: the nodes and what each manifest group waits for (``stacks.platform.inference_placement``).
    The ECR registry scanning rule is created only with ``inference.registryScanOnPush`` (account-wide).
    ``chat_ui``: the chat UI in front of the model (``ChatUi``, in the model's namespace), none when absent
    or disabled.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.Cluster,
        config: InferenceConfig,
        vpc_cidr: str,
        placement: Placement,
        chat_ui: ChatUiConfig | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        ui = chat_ui if chat_ui is not None and chat_ui.enabled else None
        # The model's NetworkPolicy admits the UI's pods (nothing else gains a path to the model).
        clients = (CHAT_UI_POD_LABELS,) if ui is not None else ()

        gpu = config.accelerator is Accelerator.GPU
        self.config = config
        self.image = ModelServerImage(
            self, "ModelServerImage", gpu=gpu, scan_on_push=config.registry_scan_on_push
        )

        self.model_access: ModelAccess | None = None
        if config.model.s3_bucket:
            self.model_access = ModelAccess(
                self,
                "ModelAccess",
                cluster=cluster,
                namespace=config.namespace,
                service_account=config.name,
                bucket=config.model.s3_bucket,
                key=config.model.s3_key or "",
            )

        selector = dict(placement.node_selector)
        image = self.image.image_uri
        rollout = placement.rollout
        common: dict[str, Any] = {
            "config": config,
            "image": image,
            "vpc_cidr": vpc_cidr,
            "rollout": rollout,
            "client_pod_labels": clients,
        }
        props = (
            InferenceChartProps(**common, gpu_node_selector=selector)
            if gpu
            else InferenceChartProps(**common, cpu_node_selector=selector)
        )
        self.chart = InferenceChart(cdk8s.App(), "Inference", props)
        manifests = self.chart.to_json()
        grouped: dict[str, list[dict[str, Any]]] = {group: [] for group in MANIFEST_GROUPS}
        for manifest in manifests:
            group = next((g for g, kinds in MANIFEST_GROUPS.items() if manifest["kind"] in kinds), None)
            if group is None:  # a new kind in the chart must be placed deliberately
                raise ValueError(f"InferenceStack: no manifest group for kind {manifest['kind']!r}")
            grouped[group].append(manifest)

        self.manifests: dict[str, eks.KubernetesManifest] = {}
        for group, objects in grouped.items():
            if objects:
                self.manifests[group] = eks.KubernetesManifest(self, group, cluster=cluster, manifest=objects)

        base = self.manifests["Base"]
        workload = self.manifests["Workload"]
        service = self.manifests["Service"]
        service.node.add_dependency(base, *placement.after_load_balancer_controller)

        # The NLB's hostname appears in the Service's status only after the controller has created the NLB,
        # its target group and the TargetGroupBinding: pods created after it get the readiness gate.
        endpoint = eks.KubernetesObjectValue(
            self,
            "Endpoint",
            cluster=cluster,
            object_type="service",
            object_name=config.service_name,
            object_namespace=config.namespace,
            json_path=".status.loadBalancer.ingress[0].hostname",
            timeout=ENDPOINT_TIMEOUT,
        )
        endpoint.node.add_dependency(service)
        self.endpoint_hostname: str = endpoint.value

        workload.node.add_dependency(base, service, endpoint, *placement.after_capacity)
        if self.model_access is not None:
            # Pod Identity injects credentials only into pods created after the association exists.
            workload.node.add_dependency(self.model_access.association)
        if "Autoscaling" in self.manifests:
            self.manifests["Autoscaling"].node.add_dependency(workload, *placement.after_autoscaler)
            if any(m["kind"] == "VerticalPodAutoscaler" for m in grouped["Autoscaling"]):
                self.manifests["Autoscaling"].node.add_dependency(*placement.after_vpa)
        if "Monitoring" in self.manifests:
            self.manifests["Monitoring"].node.add_dependency(base, *placement.after_metrics)

        if not gpu and not selector:
            Annotations.of(self).add_warning_v2(
                "llama-eks:inferenceCpuPlacement",
                "inference.accelerator is 'cpu' and no CPU node pool is configured: the pods need "
                f"{config.resources.cpu_request} CPU / {config.resources.memory} and schedule on the system "
                "nodegroup only if it has room (enable addons.karpenter.generalPurposePool).",
            )

        self.chat_ui: ChatUi | None = None
        if ui is not None:
            self.chat_ui = ChatUi(
                self,
                "ChatUi",
                cluster=cluster,
                config=ui,
                namespace=config.namespace,
                model=ModelEndpoint(
                    # In-cluster: plain HTTP on the Service's port (TLS, when on, ends at the NLB).
                    url=f"http://{config.service_name}.{config.namespace}.svc.cluster.local:{config.exposure.port}",
                    pod_labels={"app": config.name},
                    port=SERVER_PORT,
                    api_key_secret=config.api_key.secret_name if config.api_key.enabled else None,
                ),
                vpc_cidr=vpc_cidr,
                after_namespace=base,
                after_load_balancer_controller=placement.after_load_balancer_controller,
                after_capacity=placement.after_ui_capacity,
                after_vpa=placement.after_vpa,
                node_selector=placement.ui_node_selector,
            )

        self._warnings(config, placement)
        self._outputs(config)
        if self.chat_ui is not None:
            self._chat_ui_outputs(config, self.chat_ui)

    def _warnings(self, config: InferenceConfig, placement: Placement) -> None:
        exposure = config.exposure
        if exposure.internet_facing and not exposure.tls:
            Annotations.of(self).add_warning_v2(
                "llama-eks:inferencePlaintext",
                "inference.exposure.scheme is 'internet-facing' without inference.exposure.certificateArn: "
                "the API key and prompts cross the internet in clear text (refused in env=prod).",
            )
        if placement.rollout.max_unavailable and config.fewest_replicas < 2:
            Annotations.of(self).add_warning_v2(
                "llama-eks:inferenceRolloutInPlace",
                "no capacity for an extra GPU pod during a rollout (compute.gpuNodegroup.desiredSize equals "
                "the replicas): pods are replaced in place, so a rollout of a single replica is an outage. "
                "Raise compute.gpuNodegroup.desiredSize by one for zero-downtime rollouts.",
            )

    def _chat_ui_outputs(self, config: InferenceConfig, chat_ui: ChatUi) -> None:
        exposure = chat_ui.config.exposure
        if exposure.internet_facing and not exposure.tls:
            Annotations.of(self).add_warning_v2(
                "llama-eks:chatUiPlaintext",
                "chatUi.exposure.scheme is 'internet-facing' without chatUi.exposure.certificateArn: "
                "questions and answers cross the internet in clear text (refused in env=prod).",
            )
        reach = (
            "internet-facing NLB, reachable from chatUi.exposure.sourceRanges"
            if exposure.internet_facing
            else "internal NLB: reachable from inside the VPC; from a laptop use ChatUiPortForward"
        )
        CfnOutput(
            self,
            "ChatUiUrl",
            value=chat_ui.url,
            description=f"The chat UI's page ({exposure.url_scheme.upper()} on port {exposure.port}, {reach}"
            + (f"; point {exposure.domain_name} at the NLB" if exposure.domain_name else "")
            + ")",
        )
        CfnOutput(
            self,
            "ChatUiPortForward",
            value=f"kubectl -n {config.namespace} port-forward svc/{CHAT_UI_SERVICE} 7860:{exposure.port}",
            description="Open the chat UI at http://127.0.0.1:7860 through the Kubernetes API (any scheme)",
        )
        CfnOutput(self, "ChatUiImageUri", value=chat_ui.image.image_uri, description="Chat UI image in ECR")

    def _outputs(self, config: InferenceConfig) -> None:
        exposure = config.exposure
        # Ports 80 and 443 are the scheme's own: the URL needs no port.
        self.endpoint_url = f"{exposure.url_scheme}://{exposure.domain_name or self.endpoint_hostname}"
        scope_note = (
            "internet-facing NLB, reachable from inference.exposure.sourceRanges"
            if exposure.internet_facing
            else "internal NLB: reachable from inside the VPC (or kubectl port-forward, docs/runbook.md)"
        )
        CfnOutput(
            self,
            "EndpointHostname",
            value=self.endpoint_hostname,
            description=f"DNS name of the {scope_note}",
        )
        CfnOutput(
            self,
            "EndpointUrl",
            value=self.endpoint_url,
            description=f"Base URL of the service ({exposure.url_scheme.upper()} on port {exposure.port}"
            + (f"; point {exposure.domain_name} at EndpointHostname" if exposure.domain_name else "")
            + ")",
        )
        CfnOutput(self, "ImageUri", value=self.image.image_uri, description="Model server image in ECR")
        CfnOutput(
            self,
            "PredictCurl",
            value=predict_curl(self.endpoint_url, api_key=config.api_key.enabled),
            description=f"Seed ch3's test request to /predict on port {exposure.port} ({scope_note})",
        )
        CfnOutput(
            self,
            "ScaleCommand",
            value=f"kubectl -n {config.namespace} get deploy,pods,scaledobject,hpa -l app={config.name}",
            description="Inspect replicas and autoscaling"
            + (" (KEDA may scale to zero)" if config.autoscaling.mode is Autoscaler.KEDA else ""),
        )
