"""Metrics: kube-prometheus-stack (Prometheus operator v0.93, Prometheus, Grafana) or Amazon Managed
Prometheus (the in-cluster Prometheus scrapes and remote-writes to an AMP workspace; no Grafana).

Either way the prometheus-operator CRDs (ServiceMonitor, PodMonitor, PrometheusRule) exist, so charts
emit the same monitors. Prometheus selects every ServiceMonitor/PodMonitor/PrometheusRule in the cluster,
not only those labelled with the Helm release.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Duration
from aws_cdk import aws_aps as aps
from aws_cdk import aws_iam as iam
from constructs import Construct

from config.addons import KUBE_PROMETHEUS_STACK_CHART, AddonsConfig, MetricsBackend
from config.names import MONITORING_NAMESPACE, PROMETHEUS_RELEASE
from stacks.addons.contract import AddonContext, ClusterAddon, HelmRelease
from stacks.addons.pod_identity import PodIdentityRole

NAMESPACE = MONITORING_NAMESPACE
PROMETHEUS_SERVICE_ACCOUNT = "prometheus"

RELEASE = HelmRelease(
    chart="kube-prometheus-stack",
    repository="https://prometheus-community.github.io/helm-charts",
    version=KUBE_PROMETHEUS_STACK_CHART,
    namespace=NAMESPACE,
    release=PROMETHEUS_RELEASE,
    # Ten large CRDs plus operator, Prometheus, Alertmanager, Grafana, node-exporter: the longest release.
    timeout=Duration.minutes(15),
)


class MetricsAddon(ClusterAddon):
    name = "metrics"

    def enabled(self, config: AddonsConfig) -> bool:
        return config.metrics.backend is not MetricsBackend.NONE

    def deploy(self, scope: Construct, ctx: AddonContext) -> Construct:
        cfg = ctx.config.metrics
        root = Construct(scope, "Metrics")
        selector = dict(ctx.system_node_selector)
        prometheus_spec: dict[str, Any] = {
            "retention": cfg.retention,
            "serviceMonitorSelectorNilUsesHelmValues": False,
            "podMonitorSelectorNilUsesHelmValues": False,
            "ruleSelectorNilUsesHelmValues": False,
            "nodeSelector": selector,
        }
        prometheus: dict[str, Any] = {
            "serviceAccount": {"create": True, "name": PROMETHEUS_SERVICE_ACCOUNT},
            "prometheusSpec": prometheus_spec,
        }
        self.workspace: aps.CfnWorkspace | None = None
        self.identity: PodIdentityRole | None = None
        if cfg.backend is MetricsBackend.AMP:
            self.workspace = aps.CfnWorkspace(root, "Workspace", alias=f"{ctx.cluster_name}-metrics")
            self.identity = PodIdentityRole(
                root,
                "PrometheusIdentity",
                cluster=ctx.cluster,
                namespace=NAMESPACE,
                service_account=PROMETHEUS_SERVICE_ACCOUNT,
                description=f"Prometheus of EKS cluster {ctx.cluster_name}: remote write to AMP",
            )
            iam.ManagedPolicy(
                root,
                "RemoteWritePolicy",
                description="Prometheus remote write into this cluster's AMP workspace only",
                statements=[
                    iam.PolicyStatement(actions=["aps:RemoteWrite"], resources=[self.workspace.attr_arn])
                ],
                roles=[self.identity.role],
            )
            prometheus_spec["remoteWrite"] = [
                {
                    "url": f"{self.workspace.attr_prometheus_endpoint}api/v1/remote_write",
                    "sigv4": {"region": ctx.region},
                }
            ]
            CfnOutput(
                root,
                "AmpQueryEndpoint",
                value=self.workspace.attr_prometheus_endpoint,
                description="Amazon Managed Prometheus endpoint (SigV4 queries, e.g. Amazon Managed Grafana)",
            )
        self.chart = RELEASE.install(
            root,
            "Chart",
            ctx.cluster,
            values={
                "prometheus": prometheus,
                # The grafana subchart reads its values only when installed: no dead keys otherwise.
                "grafana": {"enabled": True, "nodeSelector": selector} if cfg.grafana else {"enabled": False},
                "alertmanager": {"alertmanagerSpec": {"nodeSelector": selector}},
                "prometheusOperator": {"nodeSelector": selector},
                "kube-state-metrics": {"nodeSelector": selector},
                # node-exporter runs on every node, GPU nodes included.
                "prometheus-node-exporter": {"tolerations": [{"operator": "Exists"}]},
            },
        )
        if self.identity is not None:
            self.chart.node.add_dependency(self.identity)
        return root
