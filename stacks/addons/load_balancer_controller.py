"""AWS Load Balancer Controller (chart 3.5.0) with its official IAM policy, through Pod Identity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from constructs import Construct

from config.addons import LOAD_BALANCER_CONTROLLER_CHART, AddonsConfig
from stacks.addons.contract import AddonContext, ClusterAddon, HelmRelease
from stacks.addons.pod_identity import PodIdentityRole
from stacks.common import acknowledge

#: The controller's official policy for this chart version (upstream docs/install/iam_policy.json at v3.5.0),
#: shipped with the app so synth needs nothing outside the repository. A test keeps it equal to the
#: upstream reference copy; replace it together with LOAD_BALANCER_CONTROLLER_CHART.
POLICY_FILE = Path(__file__).resolve().parent / "policies" / "aws-load-balancer-controller-v3.5.0.json"
NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "aws-load-balancer-controller"

RELEASE = HelmRelease(
    chart="aws-load-balancer-controller",
    repository="https://aws.github.io/eks-charts",
    version=LOAD_BALANCER_CONTROLLER_CHART,
    namespace=NAMESPACE,
    release="aws-load-balancer-controller",
    # Its webhooks intercept Services/Ingresses of later releases: they must be serving first.
    timeout=Duration.minutes(5),
)


def official_policy() -> dict[str, Any]:
    if not POLICY_FILE.is_file():
        raise FileNotFoundError(f"AWS Load Balancer Controller IAM policy not found: {POLICY_FILE}")
    policy: dict[str, Any] = json.loads(POLICY_FILE.read_text(encoding="utf-8"))
    return policy


def wildcard_findings(policy: dict[str, Any]) -> list[str]:
    """cdk-nag AwsSolutions-IAM5 finding ids of the wildcard resources and actions in ``policy``."""
    found: list[str] = []
    for statement in policy["Statement"]:
        for kind, key in (("Resource", "Resource"), ("Action", "Action")):
            values = statement.get(key, [])
            for value in [values] if isinstance(values, str) else values:
                finding = f"AwsSolutions-IAM5[{kind}::{value}]"
                if "*" in value and finding not in found:
                    found.append(finding)
    return found


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
            # minimize=False: upstream statements verbatim (cdk.json sets aws-iam:minimizePolicies).
            document=iam.PolicyDocument(
                minimize=False,
                statements=[iam.PolicyStatement.from_json(st) for st in official_policy()["Statement"]],
            ),
            description=f"AWS Load Balancer Controller v{LOAD_BALANCER_CONTROLLER_CHART} (official policy)",
            roles=[identity.role],
        )
        for finding in wildcard_findings(official_policy()):
            acknowledge(
                self.policy,
                finding,
                "the controller's official IAM policy for this version, unchanged: it creates and tags load "
                "balancers, target groups, listeners and security groups whose ARNs exist only at runtime; "
                "mutations are conditioned on the elbv2.k8s.aws/cluster tag as upstream ships it",
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
