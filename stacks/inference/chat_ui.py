"""The chat UI on the cluster: its image (``DockerImageAsset`` of ``chat_ui/``) and ``ChatUiChart`` applied
through the cluster in the model's namespace, ordered like the model's manifests:

* ``Service`` (the UI's NLB) after the model's ``Base`` (the namespace) and the AWS Load Balancer
  Controller; ``Endpoint`` waits for the NLB's hostname (the controller has created the TargetGroupBinding)
* ``Workload`` (ServiceAccount, Deployment, PDB, NetworkPolicy) after the ``Endpoint``, so every UI pod gets
  the NLB target-health readiness gate, and after the CPU capacity it runs on
* ``Autoscaling`` (the seed's HPA; the VPA when enabled) after the Workload, and with the VPA after the VPA
  add-on (its CRDs)

``cdk destroy`` deletes them before the model's ``Base`` (the namespace) and while the controller still runs,
so the controller removes the UI's NLB through the Service's finalizer.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cdk8s
from aws_cdk import Duration
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_eks_v2 as eks
from constructs import Construct, IConstruct

from charts.chat_ui import ChatUiChart, ChatUiChartProps, ModelEndpoint
from config.chat_ui import ChatUiConfig
from config.names import CHAT_UI_SERVICE

CHAT_UI_DIR = Path(__file__).resolve().parents[2] / "chat_ui"

#: Manifest group -> the kinds it applies. Every rendered object belongs to exactly one group.
CHAT_UI_MANIFEST_GROUPS: dict[str, tuple[str, ...]] = {
    "Service": ("Service",),
    "Workload": ("ServiceAccount", "Deployment", "PodDisruptionBudget", "NetworkPolicy"),
    "Autoscaling": ("HorizontalPodAutoscaler", "VerticalPodAutoscaler"),
}

ENDPOINT_TIMEOUT = Duration.minutes(10)


class ChatUiImage(Construct):
    """``DockerImageAsset`` of ``chat_ui/Dockerfile`` for linux/amd64 (a CPU image: no model inside). It
    lands in the CDK bootstrap's container-assets repository next to the model server's image (same scanning
    rules, ``inference.registryScanOnPush``)."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.asset = ecr_assets.DockerImageAsset(
            self,
            "Asset",
            directory=str(CHAT_UI_DIR),
            platform=ecr_assets.Platform.LINUX_AMD64,
            display_name="llama chat UI",
        )
        self.image_uri: str = self.asset.image_uri


class ChatUi(Construct):
    """The chat UI in front of ``model``, in ``namespace`` (the model's).

    ``after_namespace``: the manifest that creates the namespace (and the API key Secret's home).
    ``after_load_balancer_controller``: before the Service. ``after_capacity``: before the Workload (the CPU
    NodePool when there is one). ``after_vpa``: before the VPA (the VPA add-on). ``node_selector``: the CPU
    nodes the UI runs on (default: any untainted node). Exposes ``endpoint_hostname`` (the NLB's DNS name)
    and ``url`` (the page's URL).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.ICluster,
        config: ChatUiConfig,
        namespace: str,
        model: ModelEndpoint,
        vpc_cidr: str,
        after_namespace: IConstruct,
        after_load_balancer_controller: tuple[IConstruct, ...] = (),
        after_capacity: tuple[IConstruct, ...] = (),
        after_vpa: tuple[IConstruct, ...] = (),
        node_selector: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        self.image = ChatUiImage(self, "Image")
        self.chart = ChatUiChart(
            cdk8s.App(),
            "ChatUi",
            ChatUiChartProps(
                config=config,
                image=self.image.image_uri,
                namespace=namespace,
                model=model,
                vpc_cidr=vpc_cidr,
                node_selector=dict(node_selector or {}),
            ),
        )
        grouped: dict[str, list[dict[str, Any]]] = {group: [] for group in CHAT_UI_MANIFEST_GROUPS}
        for manifest in self.chart.to_json():
            group = next(
                (g for g, kinds in CHAT_UI_MANIFEST_GROUPS.items() if manifest["kind"] in kinds), None
            )
            if group is None:  # a new kind in the chart must be placed deliberately
                raise ValueError(f"ChatUi: no manifest group for kind {manifest['kind']!r}")
            grouped[group].append(manifest)
        self.manifests: dict[str, eks.KubernetesManifest] = {
            group: eks.KubernetesManifest(self, group, cluster=cluster, manifest=objects)
            for group, objects in grouped.items()
            if objects
        }

        service = self.manifests["Service"]
        service.node.add_dependency(after_namespace, *after_load_balancer_controller)
        endpoint = eks.KubernetesObjectValue(
            self,
            "Endpoint",
            cluster=cluster,
            object_type="service",
            object_name=CHAT_UI_SERVICE,
            object_namespace=namespace,
            json_path=".status.loadBalancer.ingress[0].hostname",
            timeout=ENDPOINT_TIMEOUT,
        )
        endpoint.node.add_dependency(service)
        self.endpoint_hostname: str = endpoint.value
        workload = self.manifests["Workload"]
        workload.node.add_dependency(after_namespace, service, endpoint, *after_capacity)
        self.manifests["Autoscaling"].node.add_dependency(workload)
        if self.chart.vpa is not None:
            self.manifests["Autoscaling"].node.add_dependency(*after_vpa)

        exposure = config.exposure
        # Ports 80 and 443 are the scheme's own: the URL needs no port.
        self.url = f"{exposure.url_scheme}://{exposure.domain_name or self.endpoint_hostname}"
