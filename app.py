#!/usr/bin/env python3
"""CDK entry point: read the configuration once from cdk.json context, then compose the stacks.

npx cdk synth                                  # env "dev" (cdk.json "env")
npx cdk synth -c env=prod                      # another named environment
npx cdk synth -c cluster.kubernetesVersion=1.34  # one key overridden
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import aws_cdk as cdk
from constructs import Construct

from config import NODE_CLASS_LABEL, AppConfig, ConfigError
from stacks.addons.stack import AddonsStack
from stacks.cluster_stack import ClusterStack
from stacks.inference_stack import InferenceStack, inference_placement
from stacks.network_stack import NetworkStack
from stacks.pipeline_app import build as build_for_mode


@dataclass(frozen=True)
class Stacks:
    """The stacks of one deployment, for later stacks (and tests) to build on."""

    network: NetworkStack
    cluster: ClusterStack
    addons: AddonsStack
    inference: InferenceStack


def build_app(scope: Construct, config: AppConfig, *, today: datetime.date | None = None) -> Stacks:
    """Compose every stack of one deployment under ``scope`` (a ``cdk.App`` or a ``cdk.Stage``).

    Construct IDs are fixed ("Network", "Cluster"); CloudFormation stack names carry the cluster name, so
    two environments can live in one account. ``today`` (default: the real date) drives the Kubernetes
    support warning.
    """
    account = config.aws.account or os.environ.get("CDK_DEFAULT_ACCOUNT")
    env = cdk.Environment(account=account, region=config.aws.region)
    prefix = config.stack_prefix
    network = NetworkStack(
        scope,
        "Network",
        config=config.network,
        cluster_name=config.cluster.name,
        env=env,
        stack_name=f"{prefix}-network",
        description=f"VPC of EKS cluster {config.cluster.name} ({config.env_name})",
    )
    cluster = ClusterStack(
        scope,
        "Cluster",
        vpc=network.vpc,
        cluster_config=config.cluster,
        compute_config=config.compute,
        today=today or datetime.date.today(),
        env=env,
        stack_name=f"{prefix}-cluster",
        description=f"EKS cluster {config.cluster.name} ({config.env_name})",
    )
    cluster.add_stack_dependency(network)
    addons = AddonsStack(
        scope,
        "Addons",
        cluster=cluster.cluster,
        cluster_name=config.cluster.name,
        kubernetes_version=config.cluster.kubernetes_version,
        vpc=network.vpc,
        config=config.addons,
        system_node_selector={NODE_CLASS_LABEL: "system"},
        tags={**config.tags, "llama-eks/provisioner": "karpenter"},
        env=env,
        stack_name=f"{prefix}-addons",
        description=f"Cluster add-ons of EKS cluster {config.cluster.name} ({config.env_name})",
    )
    addons.add_stack_dependency(cluster)
    inference = InferenceStack(
        scope,
        "Inference",
        cluster=cluster.cluster,
        config=config.inference,
        vpc_cidr=config.network.vpc_cidr,
        **inference_placement(config, addons=addons, gpu_nodegroup=cluster.gpu_nodegroup),
        env=env,
        stack_name=f"{prefix}-inference",
        description=f"Llama inference service on EKS cluster {config.cluster.name} ({config.env_name})",
    )
    inference.add_stack_dependency(addons)
    for stack in (network, cluster, addons, inference):
        for key, value in config.tags.items():
            cdk.Tags.of(stack).add(key, value)
    return Stacks(network=network, cluster=cluster, addons=addons, inference=inference)


def main(app: cdk.App | None = None) -> None:
    """Entry point of ``cdk.json``'s app command (the CLI passes context through the environment)."""
    app = app or cdk.App()
    try:
        # deployMode "direct": build_app's stacks; "pipeline": only the PipelineStack, whose stages
        # call build_app (stacks/pipeline_app.py). Never both.
        build_for_mode(app, app.node.get_all_context(), build_app)
    except ConfigError as err:
        raise SystemExit(f"cdk.json / -c context: {err}") from None
    app.synth()


if __name__ == "__main__":
    main()
