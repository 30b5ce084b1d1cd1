"""The VerticalPodAutoscaler add-on's objects (VPA 1.7.1, seed ch6), recommender only.

The VPAs of this product run with ``updateMode: Off`` (recommendations; an evicting VPA fights the HPA
and KEDA over the same pods), so of upstream's three components only the recommender is installed: no
updater (it evicts pods), no admission controller (it rewrites pod requests at creation, a webhook).

* :class:`VpaCrds`: the ``verticalpodautoscalers`` and ``verticalpodautoscalercheckpoints`` CRDs, the
  unchanged upstream file vendored in ``charts/crds/`` (synth reads nothing outside the repository).
* :class:`VpaRecommender`: ServiceAccount ``vpa-recommender``, the ClusterRoles of upstream's
  ``deploy/vpa-rbac.yaml`` that bind the recommender (narrowed to what its 1.7.1 code calls, see
  :data:`RECOMMENDER_RULES`), their bindings, and the Deployment (upstream's ``recommender-deployment.yaml``
  on the system nodes, with restricted Pod Security).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import cdk8s
from cdk8s_plus_30 import k8s
from constructs import Construct

from config.addons import VPA_VERSION

#: The vendored CRDs (charts/crds/README.md: upstream tag and path).
CRD_FILE = Path(__file__).resolve().parent / "crds" / "autoscaling.k8s.io_verticalpodautoscalers.yaml"
CRD_NAMES = (
    "verticalpodautoscalercheckpoints.autoscaling.k8s.io",
    "verticalpodautoscalers.autoscaling.k8s.io",
)

RECOMMENDER = "vpa-recommender"
RECOMMENDER_IMAGE = f"registry.k8s.io/autoscaling/vpa-recommender:{VPA_VERSION}"
#: The recommender's metrics and health port (its ``--address`` default) and upstream's name for it.
METRICS_PORT = 8942
METRICS_PORT_NAME = "prometheus"
#: upstream's ``runAsUser: 65534 # nobody``.
NOBODY = 65534

_READ = ("get", "list", "watch")

#: ClusterRole suffix -> rules (api groups, resources, verbs), as upstream's vpa-rbac.yaml grants them to
#: the recommender, narrowed to what the 1.7.1 recommender calls (least privilege):
#: * ``poc.autoscaling.k8s.io`` (the pre-v1 API group, no CRD of it exists) is left out;
#: * ``vpa-actor`` is shared upstream with the updater: the recommender only watches events (OOM evictions,
#:   never writes one) and never reads nodes or limitranges (the updater and admission controller do);
#: * no leader-election lease Role: one replica, ``--leader-elect`` off (its default).
RECOMMENDER_RULES: Mapping[str, tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...]] = (
    MappingProxyType(
        {
            # Pod usage from the metrics API (metrics-server).
            "metrics-reader": ((("metrics.k8s.io",), ("pods",), ("get", "list")),),
            "actor": (
                (("",), ("pods",), _READ),
                (("",), ("events",), _READ),
                (("autoscaling.k8s.io",), ("verticalpodautoscalers",), _READ),
            ),
            # Writes the recommendation into the VPA's status.
            "status-actor": (
                (("autoscaling.k8s.io",), ("verticalpodautoscalers/status",), ("get", "patch")),
            ),
            # Persists its histograms (survives restarts) and garbage-collects those of deleted VPAs.
            "checkpoint-actor": (
                (
                    ("autoscaling.k8s.io",),
                    ("verticalpodautoscalercheckpoints",),
                    ("get", "list", "watch", "create", "patch", "delete"),
                ),
                (("",), ("namespaces",), ("get", "list")),
            ),
            # Resolves a VPA's targetRef (any scalable kind) to the pods it selects.
            "target-reader": (
                (("*",), ("*/scale",), ("get", "watch")),
                (("",), ("replicationcontrollers",), _READ),
                (("apps",), ("daemonsets", "deployments", "replicasets", "statefulsets"), _READ),
                (("batch",), ("jobs", "cronjobs"), _READ),
            ),
        }
    )
)

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class VpaCrds(cdk8s.Chart):
    """The two VPA CRDs of release :data:`~config.addons.VPA_VERSION`, exactly as upstream ships them."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self.include = cdk8s.Include(self, "Crds", url=str(CRD_FILE))
        names = tuple(o.metadata.name for o in self.include.api_objects)
        if names != CRD_NAMES:  # a vendored file of another shape must be reviewed, not applied
            raise ValueError(f"VpaCrds: {CRD_FILE.name} holds {names}; expected {CRD_NAMES}")


@dataclass(frozen=True)
class VpaRecommenderProps:
    """The recommender. Defaults: upstream's namespace ``kube-system``, image and resources (requests
    50m CPU / 500Mi, limits 200m / 1000Mi); ``node_selector``: the system nodes (required: a controller
    never runs on the nodes it watches scale)."""

    node_selector: Mapping[str, str]
    namespace: str = "kube-system"
    image: str = RECOMMENDER_IMAGE
    cpu_request: str = "50m"
    memory_request: str = "500Mi"
    cpu_limit: str = "200m"
    memory_limit: str = "1000Mi"
    labels: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType(
            {
                "app": RECOMMENDER,
                "app.kubernetes.io/name": "vertical-pod-autoscaler",
                "app.kubernetes.io/component": "recommender",
                "app.kubernetes.io/version": VPA_VERSION,
                "app.kubernetes.io/part-of": "llama-eks",
            }
        )
    )


class VpaRecommender(cdk8s.Chart):
    """ServiceAccount, ClusterRoles and bindings, Deployment of the VPA recommender. Invalid props fail
    here."""

    def __init__(self, scope: Construct, construct_id: str, *, props: VpaRecommenderProps) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        if not _DNS_LABEL.fullmatch(props.namespace):
            raise ValueError(
                f"VpaRecommenderProps.namespace: {props.namespace!r} is invalid; allowed: a DNS label"
            )
        if not props.node_selector:
            raise ValueError(
                "VpaRecommenderProps.node_selector: {} is invalid; allowed: the system nodes' labels "
                "(the recommender must not run on the nodes it sizes)"
            )
        self.props = props
        labels = dict(props.labels)
        self.service_account = k8s.KubeServiceAccount(
            self,
            "ServiceAccount",
            metadata=k8s.ObjectMeta(name=RECOMMENDER, namespace=props.namespace, labels=labels),
        )
        self.cluster_roles: dict[str, k8s.KubeClusterRole] = {}
        self.bindings: dict[str, k8s.KubeClusterRoleBinding] = {}
        for suffix, rules in RECOMMENDER_RULES.items():
            name = f"{RECOMMENDER}:{suffix}"
            cid = "".join(part.capitalize() for part in suffix.split("-"))
            self.cluster_roles[suffix] = k8s.KubeClusterRole(
                self,
                f"{cid}Role",
                metadata=k8s.ObjectMeta(name=name, labels=labels),
                rules=[
                    k8s.PolicyRule(api_groups=list(groups), resources=list(resources), verbs=list(verbs))
                    for groups, resources, verbs in rules
                ],
            )
            self.bindings[suffix] = k8s.KubeClusterRoleBinding(
                self,
                f"{cid}Binding",
                metadata=k8s.ObjectMeta(name=name, labels=labels),
                role_ref=k8s.RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=name),
                subjects=[k8s.Subject(kind="ServiceAccount", name=RECOMMENDER, namespace=props.namespace)],
            )
        self.deployment = self._deployment(labels)

    def _deployment(self, labels: dict[str, str]) -> k8s.KubeDeployment:
        props = self.props
        selector = {"app": RECOMMENDER}
        probe = k8s.HttpGetAction(
            path="/health-check", port=k8s.IntOrString.from_string(METRICS_PORT_NAME), scheme="HTTP"
        )
        return k8s.KubeDeployment(
            self,
            "Deployment",
            metadata=k8s.ObjectMeta(name=RECOMMENDER, namespace=props.namespace, labels=labels),
            spec=k8s.DeploymentSpec(
                replicas=1,
                # No leader election (one replica): a rolling update would run two recommenders writing
                # the same checkpoints and statuses for a while. Recommendations pause for a restart only.
                strategy=k8s.DeploymentStrategy(type="Recreate"),
                selector=k8s.LabelSelector(match_labels=selector),
                template=k8s.PodTemplateSpec(
                    metadata=k8s.ObjectMeta(labels=labels),
                    spec=k8s.PodSpec(
                        service_account_name=RECOMMENDER,
                        node_selector=dict(props.node_selector),
                        security_context=k8s.PodSecurityContext(
                            run_as_non_root=True,
                            run_as_user=NOBODY,
                            run_as_group=NOBODY,
                            seccomp_profile=k8s.SeccompProfile(type="RuntimeDefault"),
                        ),
                        containers=[
                            k8s.Container(
                                name="recommender",
                                image=props.image,
                                image_pull_policy="IfNotPresent",
                                ports=[
                                    k8s.ContainerPort(
                                        name=METRICS_PORT_NAME, container_port=METRICS_PORT, protocol="TCP"
                                    )
                                ],
                                resources=k8s.ResourceRequirements(
                                    requests={
                                        "cpu": k8s.Quantity.from_string(props.cpu_request),
                                        "memory": k8s.Quantity.from_string(props.memory_request),
                                    },
                                    limits={
                                        "cpu": k8s.Quantity.from_string(props.cpu_limit),
                                        "memory": k8s.Quantity.from_string(props.memory_limit),
                                    },
                                ),
                                liveness_probe=k8s.Probe(
                                    http_get=probe,
                                    initial_delay_seconds=5,
                                    period_seconds=10,
                                    failure_threshold=3,
                                ),
                                readiness_probe=k8s.Probe(
                                    http_get=probe, period_seconds=10, failure_threshold=3
                                ),
                                security_context=k8s.SecurityContext(
                                    allow_privilege_escalation=False,
                                    capabilities=k8s.Capabilities(drop=["ALL"]),
                                    read_only_root_filesystem=True,
                                    run_as_non_root=True,
                                    run_as_user=NOBODY,
                                    run_as_group=NOBODY,
                                    seccomp_profile=k8s.SeccompProfile(type="RuntimeDefault"),
                                ),
                            )
                        ],
                    ),
                ),
            ),
        )
