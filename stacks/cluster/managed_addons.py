"""EKS managed add-ons: the cluster's networking, DNS, pod identity and resource metrics."""

from __future__ import annotations

from aws_cdk import aws_eks_v2 as eks
from constructs import Construct, IDependable

#: Add-ons nodes need before they can become Ready (created before any nodegroup).
BEFORE_NODES = ("vpc-cni", "kube-proxy", "eks-pod-identity-agent")
#: Add-ons whose pods need nodes to run on (created after the system nodegroup, else they stay DEGRADED).
AFTER_NODES = ("coredns", "metrics-server")

#: Configuration values per add-on (the add-on's JSON schema: `aws eks describe-addon-configuration`).
#: vpc-cni: its network policy agent enforces Kubernetes NetworkPolicies (the inference chart's among them);
#: without it they are accepted and silently ignored. The EKS schema takes the string "true".
CONFIGURATION: dict[str, dict[str, str]] = {"vpc-cni": {"enableNetworkPolicy": "true"}}

_IDS = {
    "vpc-cni": "VpcCni",
    "kube-proxy": "KubeProxy",
    "coredns": "CoreDns",
    "metrics-server": "MetricsServer",
}


class ManagedAddons(Construct):
    """Creates the configured EKS managed add-ons at the version EKS defaults to for the cluster version,
    with :data:`CONFIGURATION` (vpc-cni enforces NetworkPolicies).

    ``eks-pod-identity-agent`` is the cluster's own lazily created add-on
    (``cluster.eks_pod_identity_agent``), so service accounts that use Pod Identity share it instead of
    creating a second one.
    Call :meth:`after_nodes` with the system nodegroup to order CoreDNS and metrics-server after it.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, cluster: eks.Cluster, names: tuple[str, ...]
    ) -> None:
        super().__init__(scope, construct_id)
        self.addons: dict[str, eks.IAddon] = {}
        for name in names:
            if name == "eks-pod-identity-agent":
                addon = cluster.eks_pod_identity_agent
                assert addon is not None  # created on first access
            else:
                addon = eks.Addon(
                    self,
                    _IDS[name],
                    cluster=cluster,
                    addon_name=name,
                    preserve_on_delete=False,
                    configuration_values=CONFIGURATION.get(name),
                )
            self.addons[name] = addon

    def before_nodes(self) -> list[eks.IAddon]:
        return [a for n, a in self.addons.items() if n in BEFORE_NODES]

    def after_nodes(self, nodes: IDependable) -> None:
        for name, addon in self.addons.items():
            if name in AFTER_NODES:
                addon.node.add_dependency(nodes)
