"""VerticalPodAutoscaler (seed ch6): the CRDs and the recommender, rendered with cdk8s (charts/vpa.py).

Recommendations only: the product's VPAs (``inference.vpa``, ``chatUi.vpa``) run with ``updateMode: Off``,
so neither the updater (it evicts pods) nor the admission controller (a webhook that rewrites requests) is
installed. No Helm release: upstream publishes none at this version, and the manifests are few.

Two manifests: ``Crds`` first, then ``Recommender`` (it lists VPAs and checkpoints from its first start);
``cdk destroy`` removes them in reverse, after the InferenceStack's VPAs are gone.
"""

from __future__ import annotations

from aws_cdk import aws_eks_v2 as eks
from constructs import Construct

from charts.vpa import VpaCrds, VpaRecommender, VpaRecommenderProps
from config.addons import AddonsConfig
from stacks.addons.contract import AddonContext, ClusterAddon


class VpaAddon(ClusterAddon):
    name = "vpa"

    def enabled(self, config: AddonsConfig) -> bool:
        return config.vpa.enabled

    def deploy(self, scope: Construct, ctx: AddonContext) -> Construct:
        root = Construct(scope, "Vpa")
        self.crd_chart = VpaCrds(ctx.cdk8s_app, "VpaCrds")
        self.crds = eks.KubernetesManifest(
            root, "Crds", cluster=ctx.cluster, manifest=self.crd_chart.to_json()
        )
        self.recommender_chart = VpaRecommender(
            ctx.cdk8s_app,
            "VpaRecommender",
            props=VpaRecommenderProps(node_selector=dict(ctx.system_node_selector)),
        )
        self.recommender = eks.KubernetesManifest(
            root, "Recommender", cluster=ctx.cluster, manifest=self.recommender_chart.to_json()
        )
        self.recommender.node.add_dependency(self.crds)
        return root
