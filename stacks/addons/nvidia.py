"""NVIDIA device plugin and DCGM exporter: DaemonSets on GPU nodes only, tolerating the GPU taint."""

from __future__ import annotations

from typing import Any

import cdk8s
from aws_cdk import Duration
from aws_cdk import aws_eks_v2 as eks
from constructs import Construct

from config.addons import DCGM_EXPORTER_CHART, NVIDIA_DEVICE_PLUGIN_CHART, AddonsConfig
from config.names import GPU_TAINT_EFFECT, GPU_TAINT_KEY, MONITORING_NAMESPACE, NODE_CLASS_LABEL
from imports.com.coreos import monitoring
from stacks.addons.contract import AddonContext, ClusterAddon, HelmRelease

#: GPU nodes carry this label (managed GPU nodegroup and Karpenter's eks-gpu-np alike).
GPU_AFFINITY: dict[str, Any] = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": NODE_CLASS_LABEL, "operator": "In", "values": ["gpu"]}]}
            ]
        }
    }
}
GPU_TOLERATIONS: list[dict[str, str]] = [
    {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": GPU_TAINT_EFFECT}
]

DEVICE_PLUGIN = HelmRelease(
    chart="nvidia-device-plugin",
    repository="https://nvidia.github.io/k8s-device-plugin",
    version=NVIDIA_DEVICE_PLUGIN_CHART,
    namespace="kube-system",
    release="nvidia-device-plugin",
    # A DaemonSet with zero GPU nodes at install time is ready at once; 5 minutes covers a GPU nodegroup.
    timeout=Duration.minutes(5),
)
DCGM_NAMESPACE = MONITORING_NAMESPACE
DCGM = HelmRelease(
    chart="dcgm-exporter",
    repository="https://nvidia.github.io/dcgm-exporter/helm-charts",
    version=DCGM_EXPORTER_CHART,
    namespace=DCGM_NAMESPACE,
    release="dcgm-exporter",
    timeout=Duration.minutes(5),
)


class NvidiaDevicePluginAddon(ClusterAddon):
    """Advertises ``nvidia.com/gpu`` on GPU nodes (the AL2023 NVIDIA AMI has drivers, not the plugin)."""

    name = "nvidiaDevicePlugin"

    def enabled(self, config: AddonsConfig) -> bool:
        return config.nvidia_device_plugin.enabled

    def deploy(self, scope: Construct, ctx: AddonContext) -> Construct:
        self.chart = DEVICE_PLUGIN.install(
            scope,
            "NvidiaDevicePlugin",
            ctx.cluster,
            values={
                "affinity": GPU_AFFINITY,
                "tolerations": GPU_TOLERATIONS,
                "priorityClassName": "system-node-critical",
            },
        )
        return self.chart


class DcgmServiceMonitor(cdk8s.Chart):
    """ServiceMonitor for the DCGM exporter's ``metrics`` port (typed from the prometheus-operator CRD)."""

    def __init__(self, scope: Construct, construct_id: str, *, namespace: str, release: str) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self.monitor = monitoring.ServiceMonitor(
            self,
            "ServiceMonitor",
            metadata=cdk8s.ApiObjectMetadata(name="dcgm-exporter", namespace=namespace),
            spec=monitoring.ServiceMonitorSpec(
                selector=monitoring.ServiceMonitorSpecSelector(
                    match_labels={
                        "app.kubernetes.io/name": "dcgm-exporter",
                        "app.kubernetes.io/instance": release,
                    }
                ),
                namespace_selector=monitoring.ServiceMonitorSpecNamespaceSelector(match_names=[namespace]),
                endpoints=[
                    monitoring.ServiceMonitorSpecEndpoints(port="metrics", path="/metrics", interval="15s")
                ],
            ),
        )


class DcgmExporterAddon(ClusterAddon):
    """GPU utilisation, memory, power and temperature per GPU, scraped through a ServiceMonitor."""

    name = "dcgmExporter"
    requires = ("metrics",)

    def enabled(self, config: AddonsConfig) -> bool:
        return config.dcgm_exporter.enabled

    def deploy(self, scope: Construct, ctx: AddonContext) -> Construct:
        root = Construct(scope, "DcgmExporter")
        self.chart = DCGM.install(
            root,
            "Chart",
            ctx.cluster,
            values={
                "affinity": GPU_AFFINITY,
                "tolerations": GPU_TOLERATIONS,
                # The chart's own ServiceMonitor is untyped; ours is schema-checked (DcgmServiceMonitor).
                "serviceMonitor": {"enabled": False},
            },
        )
        self.monitor_chart = DcgmServiceMonitor(
            ctx.cdk8s_app, "DcgmServiceMonitor", namespace=DCGM_NAMESPACE, release=DCGM.release
        )
        self.monitor = eks.KubernetesManifest(
            root, "ServiceMonitor", cluster=ctx.cluster, manifest=self.monitor_chart.to_json()
        )
        self.monitor.node.add_dependency(self.chart)
        return root
