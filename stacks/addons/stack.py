"""AddonsStack: the cluster add-ons, composed from one module per add-on behind one contract.

A separate stack (not part of ClusterStack): add-ons change far more often than the control plane,
their Helm releases can be rolled back without touching the cluster, and ``cdk destroy`` removes them
(and, through Karpenter's NodePools, every node Karpenter launched) before the cluster goes. The
``Teardown`` step (``teardown.py``) makes sure of it: on destroy it terminates what Karpenter left running
and deletes the load balancers the LB controller left behind, before Karpenter's controller goes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from constructs import Construct

from config import ConfigError
from config.addons import AddonsConfig
from stacks.addons.contract import AddonContext, ClusterAddon
from stacks.addons.ebs_csi import EbsCsiDriverAddon
from stacks.addons.karpenter import KarpenterAddon
from stacks.addons.keda import KedaAddon
from stacks.addons.load_balancer_controller import LoadBalancerControllerAddon
from stacks.addons.metrics import MetricsAddon
from stacks.addons.nvidia import DcgmExporterAddon, NvidiaDevicePluginAddon
from stacks.addons.teardown import ClusterTeardown
from stacks.addons.vpa import VpaAddon


def default_addons() -> list[ClusterAddon]:
    """Every add-on, in install order: the EBS CSI driver first (so that on destroy it goes last, after the
    volumes of deleted claims are gone), Karpenter (it provides nodes), the LB controller (its webhooks
    intercept Services of the releases after it), then the rest; the VPA last (nothing in the cluster needs
    it to run, and on destroy it goes first, after the InferenceStack's VPAs)."""
    return [
        EbsCsiDriverAddon(),
        KarpenterAddon(),
        LoadBalancerControllerAddon(),
        MetricsAddon(),
        NvidiaDevicePluginAddon(),
        DcgmExporterAddon(),
        KedaAddon(),
        VpaAddon(),
    ]


@dataclass(frozen=True)
class InstalledAddons:
    """What the AddonsStack installed: each add-on's root construct (workloads that need the add-on wait for
    all of it), or None when the configuration switches it off. Field names are the config keys in
    snake_case."""

    ebs_csi_driver: Construct | None = None
    karpenter: Construct | None = None
    load_balancer_controller: Construct | None = None
    metrics: Construct | None = None
    nvidia_device_plugin: Construct | None = None
    dcgm_exporter: Construct | None = None
    keda: Construct | None = None
    vpa: Construct | None = None

    @classmethod
    def of(cls, installed: Mapping[str, Construct]) -> InstalledAddons:
        """From add-on name (``ClusterAddon.name``, the config key) -> root construct."""
        by_key = {_config_key(f.name): f.name for f in fields(cls)}
        unknown = sorted(set(installed) - set(by_key))
        if unknown:
            raise ValueError(f"InstalledAddons has no field for the add-ons {unknown}: add one")
        return cls(**{by_key[name]: construct for name, construct in installed.items()})


def _config_key(field_name: str) -> str:
    head, *rest = field_name.split("_")
    return head + "".join(part.capitalize() for part in rest)


class AddonsStack(Stack):
    """Installs the enabled add-ons into ``cluster`` one after another (each waits for the previous).

    ``cluster_name`` must be the literal name (Karpenter's IAM condition keys embed it),
    ``kubernetes_version`` the cluster's (Karpenter's AMI parameters name it). The configuration
    is already validated, Karpenter against the Kubernetes version included (config/app.py). ``addons``
    lets tests inject a registry. ``installed`` is what later stacks wait for.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.Cluster,
        cluster_name: str,
        kubernetes_version: str,
        vpc: ec2.IVpc,
        config: AddonsConfig,
        system_node_selector: Mapping[str, str],
        tags: Mapping[str, str] | None = None,
        addons: Sequence[ClusterAddon] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        registry = list(addons) if addons is not None else default_addons()
        enabled = [a for a in registry if a.enabled(config)]
        names = {a.name for a in enabled}
        for addon in enabled:
            missing = [r for r in addon.requires if r not in names]
            if missing:
                raise ConfigError(f"addons.{addon.name}.enabled", True, f"false, or enable {missing} too")

        self.ctx = AddonContext(
            cluster=cluster,
            cluster_name=cluster_name,
            kubernetes_version=kubernetes_version,
            vpc=vpc,
            region=self.region,
            config=config,
            tags=dict(tags or {}),
            system_node_selector=dict(system_node_selector),
        )
        self.addons: dict[str, ClusterAddon] = {}
        roots: dict[str, Construct] = {}
        previous: Construct | None = None
        for addon in enabled:
            construct = addon.deploy(self, self.ctx)
            # One release at a time through the kubectl handler; on destroy the reverse order.
            if previous is not None:
                construct.node.add_dependency(previous)
            roots[addon.name] = construct
            self.addons[addon.name] = addon
            previous = construct
        self.installed = InstalledAddons.of(roots)

        # Destroy-time cleanup of GPU instances and load balancers (teardown.py). On destroy it runs after
        # the InferenceStack and Karpenter's NodePools are deleted, while Karpenter's controller still runs.
        karpenter = self.addons.get(KarpenterAddon.name)
        karpenter = karpenter if isinstance(karpenter, KarpenterAddon) else None
        self.teardown = ClusterTeardown(
            self,
            "Teardown",
            cluster_name=cluster_name,
            vpc=vpc,
            runs_after_deletion_of=[karpenter.node_pools] if karpenter else [],
            runs_before_deletion_of=(
                [karpenter.controller.chart, karpenter.node_role.access_entry] if karpenter else []
            ),
        )
