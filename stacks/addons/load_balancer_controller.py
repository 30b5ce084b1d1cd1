"""AWS Load Balancer Controller (chart 3.5.0) with its official IAM policy, through Pod Identity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.addons.contract import AddonContext, ClusterAddon, HelmRelease
from stacks.addons.pod_identity import PodIdentityRole
from stacks.config.addons import LOAD_BALANCER_CONTROLLER_CHART, AddonsConfig

#: The controller's official policy for this version (docs/install/iam_policy.json at v3.5.0), as data.
POLICY_FILE = Path(__file__).resolve().parents[2].parent / "shared/reference/aws-load-balancer-controller-iam-policy.json"
NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "aws-load-balancer-controller"

RELEASE = HelmRelease(
    chart="aws-load-balancer-controller",
    repository="https://aws.github.io/eks-charts",
    version=LOAD_BALANCER_CONTROLLER_CHART,
    namespace=NAMESPACE,
    release="aws-load-balancer-controller",
    # Its webhooks intercept Services/Ingresses of later releases: they must be serving first.
    timeout=Duration.minutes(10),
)


def official_policy() -> dict[str, Any]:
    if not POLICY_FILE.is_file():
        raise FileNotFoundError(f"AWS Load Balancer Controller IAM policy not found: {POLICY_FILE}")
    return json.loads(POLICY_FILE.read_text(encoding="utf-8"))


class LoadBalancerControllerAddon(ClusterAddon):
    name = "loadBalancerController"

    def enabled(self, config: AddonsConfig) -> bool:
        return config.load_balancer_controller.enabled

    def deploy(self, scope: Construct, ctx: AddonContext) -> Construct:
        root = Construct(scope, "LoadBalancerController")
        identity = PodIdentityRole(
            root,
            "Identity",
            cluster=ctx.cluster,
            namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT,
            description=f"AWS Load Balancer Controller of EKS cluster {ctx.cluster_name}",
        )
        self.policy = iam.ManagedPolicy(
            root,
            "Policy",
            document=iam.PolicyDocument.from_json(official_policy()),
            description=f"AWS Load Balancer Controller v{LOAD_BALANCER_CONTROLLER_CHART} (official policy)",
            roles=[identity.role],
        )
        self.identity = identity
        self.chart = RELEASE.install(
            root,
            "Chart",
            ctx.cluster,
            values={
                "clusterName": ctx.cluster_name,
                "region": ctx.region,
                "vpcId": ctx.vpc.vpc_id,
                "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT},
                "replicaCount": 2,
                "nodeSelector": dict(ctx.system_node_selector),
            },
        )
        self.chart.node.add_dependency(identity)
        self.chart.node.add_dependency(self.policy)
        return root
