"""The one contract every cluster add-on implements (cdk-eks-blueprints style).

An add-on says whether the configuration enables it, which other add-ons it needs, and deploys itself
into the AddonsStack. Conflicts between add-ons are configuration errors (``config/``);
the stack re-checks ``requires`` so a wrong registry fails synth with the add-on names.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import cdk8s
from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from constructs import Construct

from config.addons import AddonsConfig

#: The kubectl handler and its provider framework are Lambda functions: one invocation runs 15 minutes at
#: most (aws-eks-v2's KubectlProvider sets both to the Lambda maximum). A release's Helm command must end
#: inside it, or CloudFormation waits an hour for a response that never comes.
KUBECTL_HANDLER_TIMEOUT = Duration.minutes(15)
#: What one invocation spends besides Helm's own waiting: `aws eks update-kubeconfig`, the ECR login and
#: chart pull of an OCI release, Lambda start-up in the VPC, Helm's broken-pipe retries.
HANDLER_OVERHEAD = Duration.minutes(2)


def max_release_timeout(handler_timeout: Duration = KUBECTL_HANDLER_TIMEOUT) -> Duration:
    """The longest ``--timeout`` a release may have inside one handler invocation of ``handler_timeout``.

    With ``--atomic`` a failed install or upgrade first waits up to ``--timeout`` for its resources, then
    Helm rolls back (uninstalls a first install) and waits up to ``--timeout`` again: twice the timeout
    plus :data:`HANDLER_OVERHEAD` must fit (15 min -> 6.5 min).
    """
    spare = handler_timeout.to_seconds() - HANDLER_OVERHEAD.to_seconds()
    return Duration.seconds(int(spare) // 2)


@dataclass
class AddonContext:
    """What add-ons receive: the cluster objects and the validated config."""

    cluster: eks.Cluster
    cluster_name: str
    #: ``cluster.kubernetesVersion`` (the AMI parameters of Karpenter's nodes name it).
    kubernetes_version: str
    vpc: ec2.IVpc
    region: str
    config: AddonsConfig
    #: Tags for resources the add-ons create outside CloudFormation (Karpenter's instances).
    tags: Mapping[str, str]
    #: Node selector of the system nodegroup: controllers run there, never on nodes they manage.
    system_node_selector: Mapping[str, str]
    #: One cdk8s app for every typed manifest the add-ons emit (charts are rendered into manifests).
    cdk8s_app: cdk8s.App = field(default_factory=cdk8s.App)


@dataclass(frozen=True)
class HelmRelease:
    """A pinned Helm release and how long CloudFormation waits for it.

    ``wait``: Helm waits until the release's Deployments/DaemonSets are ready, so a failure surfaces as a
    failed stack (and rollback), not as a broken cluster after a green deploy. ``atomic`` (= ``wait``):
    Helm rolls a failed release back itself. ``timeout`` leaves room for that rollback inside the kubectl
    handler's 15 minutes (:func:`max_release_timeout`, 6.5 min); a longer one fails here.
    """

    chart: str
    repository: str
    version: str
    namespace: str
    release: str
    timeout: Duration
    wait: bool = True

    def __post_init__(self) -> None:
        limit, timeout = max_release_timeout().to_seconds(), self.timeout.to_seconds()
        if not 0 < timeout <= limit:
            raise ValueError(
                f"HelmRelease {self.release}: timeout {timeout} s is invalid; allowed: 1 to {limit} s "
                f"(twice the timeout, for --atomic's rollback, plus {HANDLER_OVERHEAD.to_seconds()} s must "
                f"fit the kubectl handler's {KUBECTL_HANDLER_TIMEOUT.to_seconds()} s)"
            )

    def install(
        self, scope: Construct, construct_id: str, cluster: eks.ICluster, values: dict[str, Any]
    ) -> eks.HelmChart:
        return eks.HelmChart(
            scope,
            construct_id,
            cluster=cluster,
            chart=self.chart,
            repository=self.repository,
            version=self.version,
            namespace=self.namespace,
            release=self.release,
            values=values,
            wait=self.wait,
            # atomic: a failed install/upgrade is rolled back by Helm, so a retry starts clean.
            atomic=self.wait,
            timeout=self.timeout,
            create_namespace=True,
        )


class ClusterAddon(abc.ABC):
    """One add-on. Subclasses set ``name`` (the config key) and ``requires`` (other add-ons' names)."""

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def enabled(self, config: AddonsConfig) -> bool: ...

    @abc.abstractmethod
    def deploy(self, scope: Construct, ctx: AddonContext) -> Construct:
        """Create the add-on under ``scope``; return its root construct (dependants wait for all of it)."""
