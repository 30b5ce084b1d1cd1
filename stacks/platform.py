"""One environment's platform: the network, cluster, add-ons and inference stacks, composed in one place.

``app.py`` (a laptop ``cdk deploy``) and the pipeline's ``LlamaStage`` both call :func:`build_app`, so both
deploy one definition with the same construct IDs and CloudFormation stack names.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import aws_cdk as cdk
from constructs import Construct, IConstruct

from charts.inference import Rollout
from config import AppConfig
from config.compute import GpuCapacity
from config.inference import Accelerator, Autoscaler
from config.names import GENERAL_NODEPOOL_NAME, GPU_NODEPOOL_NAME, NODE_CLASS_LABEL, NODEPOOL_LABEL
from stacks.addons.stack import AddonsStack, InstalledAddons
from stacks.cluster.stack import ClusterStack
from stacks.inference.stack import InferenceStack, Placement
from stacks.network.stack import NetworkStack


@dataclass(frozen=True)
class Stacks:
    """The stacks of one deployment, for later stacks (and tests) to build on."""

    network: NetworkStack
    cluster: ClusterStack
    addons: AddonsStack
    inference: InferenceStack


def build_app(
    scope: Construct,
    config: AppConfig,
    *,
    default_account: str | None = None,
    today: datetime.date | None = None,
) -> Stacks:
    """Compose every stack of one deployment under ``scope`` (a ``cdk.App`` or a ``cdk.Stage``).

    Construct IDs are fixed ("Network", "Cluster", ...); CloudFormation stack names carry the cluster name,
    so two environments can live in one account. The account is ``aws.account``, else ``default_account``
    (the CLI's, which ``app.py`` passes), else none (environment-agnostic). ``today`` (default: the real
    date) drives the Kubernetes support warning.
    """
    env = cdk.Environment(account=config.aws.account or default_account, region=config.aws.region)
    prefix, name, env_name = config.stack_prefix, config.cluster.name, config.env_name
    network = NetworkStack(
        scope,
        "Network",
        config=config.network,
        cluster_name=name,
        env=env,
        stack_name=f"{prefix}-network",
        description=f"VPC of EKS cluster {name} ({env_name})",
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
        description=f"EKS cluster {name} ({env_name})",
    )
    cluster.add_stack_dependency(network)
    addons = AddonsStack(
        scope,
        "Addons",
        cluster=cluster.cluster,
        cluster_name=name,
        kubernetes_version=config.cluster.kubernetes_version,
        vpc=network.vpc,
        config=config.addons,
        system_node_selector={NODE_CLASS_LABEL: "system"},
        tags={**config.tags, "llama-eks/provisioner": "karpenter"},
        env=env,
        stack_name=f"{prefix}-addons",
        description=f"Cluster add-ons of EKS cluster {name} ({env_name})",
    )
    addons.add_stack_dependency(cluster)
    inference = InferenceStack(
        scope,
        "Inference",
        cluster=cluster.cluster,
        config=config.inference,
        vpc_cidr=config.network.vpc_cidr,
        placement=inference_placement(config, addons=addons.installed, gpu_nodegroup=cluster.gpu_nodegroup),
        chat_ui=config.chat_ui,
        env=env,
        stack_name=f"{prefix}-inference",
        description=f"Llama inference service on EKS cluster {name} ({env_name})",
    )
    inference.add_stack_dependency(addons)
    for stack in (network, cluster, addons, inference):
        for key, value in config.tags.items():
            cdk.Tags.of(stack).add(key, value)
    return Stacks(network=network, cluster=cluster, addons=addons, inference=inference)


def inference_placement(
    config: AppConfig, *, addons: InstalledAddons, gpu_nodegroup: IConstruct | None
) -> Placement:
    """Where the inference pods run, what each manifest group waits for and how a rollout fits the
    capacity, from what is installed.

    The configuration has already checked that what the service uses is installed (config/app.py); a
    missing add-on here is a bug, and fails synth naming it.
    """
    inference = config.inference
    capacity: tuple[IConstruct, ...]
    # CPU work (the CPU model server, the chat UI): the general-purpose NodePool when there is one, else any
    # untainted node (the system nodegroup).
    general_pool = config.addons.karpenter.enabled and config.addons.karpenter.general_purpose_pool
    cpu_selector: dict[str, str] = {NODEPOOL_LABEL: GENERAL_NODEPOOL_NAME} if general_pool else {}
    cpu_capacity: tuple[IConstruct, ...] = (_need(addons.karpenter, "karpenter"),) if general_pool else ()
    rollout = Rollout()  # one extra pod during a rollout: Karpenter launches a node for it
    if inference.accelerator is Accelerator.GPU:
        device_plugin = _need(addons.nvidia_device_plugin, "nvidiaDevicePlugin")
        if config.compute.gpu_capacity is GpuCapacity.KARPENTER:
            selector = {NODEPOOL_LABEL: GPU_NODEPOOL_NAME}
            capacity = (_need(addons.karpenter, "karpenter"), device_plugin)
        else:
            selector = {NODE_CLASS_LABEL: "gpu"}
            capacity = (_need(gpu_nodegroup, "the ClusterStack's GPU nodegroup"), device_plugin)
            if config.compute.gpu_nodegroup.desired_size <= inference.fewest_replicas:
                # No free GPU node for an extra pod (nothing adds nodes to a managed nodegroup here): replace
                # pods in place, one at a time (config/app.py guarantees a node per replica).
                rollout = Rollout(max_surge=0, max_unavailable=1)
    elif general_pool:
        selector, capacity = cpu_selector, cpu_capacity
    else:
        selector, capacity = {}, ()

    autoscaler: tuple[IConstruct, ...] = ()
    if inference.autoscaling.mode is Autoscaler.KEDA:
        autoscaler = (_need(addons.keda, "keda"), _need(addons.metrics, "metrics"))
        if inference.accelerator is Accelerator.GPU:
            autoscaler += (_need(addons.dcgm_exporter, "dcgmExporter"),)
    monitoring = inference.monitoring.service_monitor or inference.monitoring.dashboard
    chat_ui = config.chat_ui
    vpa = inference.vpa.enabled or (chat_ui.enabled and chat_ui.vpa.enabled)
    return Placement(
        node_selector=selector,
        after_capacity=capacity,
        after_load_balancer_controller=(_need(addons.load_balancer_controller, "loadBalancerController"),),
        after_autoscaler=autoscaler,
        after_vpa=(_need(addons.vpa, "vpa"),) if vpa else (),
        after_metrics=(_need(addons.metrics, "metrics"),) if monitoring else (),
        rollout=rollout,
        ui_node_selector=cpu_selector,
        after_ui_capacity=cpu_capacity,
    )


def _need(construct: IConstruct | None, what: str) -> IConstruct:
    if construct is None:
        raise ValueError(f"the inference stack needs {what}, which this build does not create")
    return construct
