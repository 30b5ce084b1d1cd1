"""KEDA (event-driven autoscaling, seed ch6): ScaledObjects scale inference on queue depth or metrics."""

from __future__ import annotations

from aws_cdk import Duration
from constructs import Construct

from config.addons import KEDA_CHART, AddonsConfig
from stacks.addons.contract import AddonContext, ClusterAddon, HelmRelease

RELEASE = HelmRelease(
    chart="keda",
    repository="https://kedacore.github.io/charts",
    version=KEDA_CHART,  # the version of ../shared/crds/keda.sh_*.yaml
    namespace="keda",
    release="keda",
    # Operator, metrics API server and admission webhooks must be ready before ScaledObjects arrive.
    timeout=Duration.minutes(5),
)


class KedaAddon(ClusterAddon):
    name = "keda"

    def enabled(self, config: AddonsConfig) -> bool:
        return config.keda.enabled

    def deploy(self, scope: Construct, ctx: AddonContext) -> Construct:
        selector = dict(ctx.system_node_selector)
        self.chart = RELEASE.install(
            scope,
            "Keda",
            ctx.cluster,
            values={
                "nodeSelector": selector,
                "operator": {"replicaCount": 2},
                "metricsServer": {"replicaCount": 2},
                "webhooks": {"replicaCount": 2},
            },
        )
        return self.chart
