"""AddonsStack: Helm releases (pins, values, timeouts), order, custom resources, validators, alternatives."""

from __future__ import annotations

import itertools
import json

import kubernetes_validate
import pytest
from aws_cdk.assertions import Match, Template

from config.addons import (
    DCGM_EXPORTER_CHART,
    KARPENTER_VERSION,
    KEDA_CHART,
    KUBE_PROMETHEUS_STACK_CHART,
    LOAD_BALANCER_CONTROLLER_CHART,
    NVIDIA_DEVICE_PLUGIN_CHART,
)
from tests.helpers.cfn import cfn_lint, unacknowledged
from tests.helpers.crd_schema import REPO, served_schemas, validate
from tests.stacks.addons._cfn import helm_releases, kubectl_invocation_timeouts, manifests, one, resources

SYSTEM = {"llama-eks/node-class": "system"}
GPU_TOLERATION = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


@pytest.fixture(scope="module")
def addons(synthesized):
    return synthesized.template("Addons")


@pytest.fixture(scope="module")
def releases(addons):
    return helm_releases(addons)


def test_releases_are_pinned_with_deliberate_timeouts(releases):
    pins = {
        name: (
            r.get("Repository"),
            r["Chart"],
            r["Version"],
            r["Namespace"],
            r["Timeout"],
            r["Wait"],
            r["Atomic"],
        )
        for name, r in releases.items()
    }
    assert pins == {
        "karpenter-crd": (
            "oci://public.ecr.aws/karpenter/karpenter-crd",
            "karpenter-crd",
            KARPENTER_VERSION,
            "kube-system",
            "180s",
            True,
            True,
        ),
        "karpenter": (
            "oci://public.ecr.aws/karpenter/karpenter",
            "karpenter",
            KARPENTER_VERSION,
            "kube-system",
            "300s",
            True,
            True,
        ),
        "aws-load-balancer-controller": (
            "https://aws.github.io/eks-charts",
            "aws-load-balancer-controller",
            LOAD_BALANCER_CONTROLLER_CHART,
            "kube-system",
            "300s",
            True,
            True,
        ),
        "kube-prometheus-stack": (
            "https://prometheus-community.github.io/helm-charts",
            "kube-prometheus-stack",
            KUBE_PROMETHEUS_STACK_CHART,
            "monitoring",
            "360s",
            True,
            True,
        ),
        "nvidia-device-plugin": (
            "https://nvidia.github.io/k8s-device-plugin",
            "nvidia-device-plugin",
            NVIDIA_DEVICE_PLUGIN_CHART,
            "kube-system",
            "300s",
            True,
            True,
        ),
        "dcgm-exporter": (
            "https://nvidia.github.io/dcgm-exporter/helm-charts",
            "dcgm-exporter",
            DCGM_EXPORTER_CHART,
            "monitoring",
            "300s",
            True,
            True,
        ),
        "keda": ("https://kedacore.github.io/charts", "keda", KEDA_CHART, "keda", "300s", True, True),
    }
    assert (KARPENTER_VERSION, KEDA_CHART, LOAD_BALANCER_CONTROLLER_CHART) == ("1.14.1", "2.20.2", "3.5.0")


@pytest.mark.parametrize("variant", ["synthesized", "alternative"])
def test_every_release_and_its_atomic_rollback_fit_one_kubectl_handler_invocation(request, variant):
    """Helm runs inside one invocation of the kubectl handler Lambda (and of the provider framework's
    onEvent Lambda that calls it). With --atomic a failed release waits --timeout, then rolls back and
    waits up to --timeout again; both, plus the handler's own work, must end before the Lambda is killed
    (else CloudFormation waits an hour for a response and the release is left half-done)."""
    from stacks.addons.contract import HANDLER_OVERHEAD

    app = request.getfixturevalue(variant)
    by_stack_name = {s.stack_name: s.template for s in app.assembly.stacks}
    checked = []
    for stack_name, template in by_stack_name.items():
        for logical_id, res in resources(template, "Custom::AWSCDK-EKS-HelmChart").items():
            props = res["Properties"]
            timeouts = kubectl_invocation_timeouts(by_stack_name, props["ServiceToken"])
            assert sorted(timeouts.values()) == [900, 900]  # the Lambda maximum, as aws-eks-v2 sets it
            limit = min(timeouts.values())
            assert props["Timeout"].endswith("s"), logical_id  # an explicit timeout, never Helm's default
            timeout = int(props["Timeout"].removesuffix("s"))
            assert props["Atomic"] is True and props["Wait"] is True, logical_id
            assert 2 * timeout + HANDLER_OVERHEAD.to_seconds() <= limit, (stack_name, logical_id, timeout)
            checked.append(props["Release"])
    assert len(checked) == (7 if variant == "synthesized" else 5)


def test_a_release_timeout_without_room_for_the_rollback_fails_in_the_constructor():
    from aws_cdk import Duration

    from stacks.addons.contract import HelmRelease, max_release_timeout

    assert max_release_timeout().to_seconds() == 390  # (900 s - 120 s) / 2
    HelmRelease("c", "https://example.com", "1.0.0", "ns", "r", timeout=Duration.seconds(390))
    with pytest.raises(ValueError) as info:
        HelmRelease("c", "https://example.com", "1.0.0", "ns", "r", timeout=Duration.minutes(15))
    assert str(info.value) == (
        "HelmRelease r: timeout 900 s is invalid; allowed: 1 to 390 s (twice the timeout, for --atomic's "
        "rollback, plus 120 s must fit the kubectl handler's 900 s)"
    )


def test_karpenter_values_point_at_cluster_and_queue(addons, releases, synthesized):
    queue_id, _ = one(addons, "AWS::SQS::Queue", "KarpenterInterruptionQueue")
    karpenter = releases["karpenter"]
    assert karpenter["Values"] == {
        "settings": {
            "clusterName": synthesized.config.cluster.name,
            "interruptionQueue": f"<{queue_id}.QueueName>",
        },
        "serviceAccount": {"create": True, "name": "karpenter"},
        "replicas": 2,
        "nodeSelector": SYSTEM,
        "controller": {
            "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
        },
    }
    # The kubectl handler ignores SkipCrds: no release relies on it (see the CRD ownership tests).
    assert not [name for name, r in releases.items() if "SkipCrds" in r]


def test_load_balancer_controller_values_and_official_policy(addons, releases, synthesized):
    # The VPC object crosses from the network stack (an output of it, resolved at deploy).
    vpc_id = releases["aws-load-balancer-controller"]["Values"].pop("vpcId")
    assert vpc_id.startswith(f"<{synthesized.config.stack_prefix}-network:") and "Vpc" in vpc_id
    assert releases["aws-load-balancer-controller"]["Values"] == {
        "clusterName": synthesized.config.cluster.name,
        "region": "us-west-2",
        "serviceAccount": {"create": True, "name": "aws-load-balancer-controller"},
        "replicaCount": 2,
        "nodeSelector": SYSTEM,
    }

    from config.addons import LOAD_BALANCER_CONTROLLER_CHART
    from stacks.addons.load_balancer_controller import POLICY_FILE

    # The shipped copy is the upstream policy of the pinned chart version, unchanged.
    reference = REPO.parent / "shared/reference/aws-load-balancer-controller-iam-policy.json"
    official = json.loads(reference.read_text())
    assert json.loads(POLICY_FILE.read_text()) == official
    assert POLICY_FILE.name == f"aws-load-balancer-controller-v{LOAD_BALANCER_CONTROLLER_CHART}.json"
    _, policy = one(addons, "AWS::IAM::ManagedPolicy", "LoadBalancerControllerPolicy")
    actual = policy["Properties"]["PolicyDocument"]["Statement"]

    def norm(s):
        return {
            k: sorted(v) if isinstance(v, list) else ([v] if k in ("Action", "Resource") else v)
            for k, v in s.items()
        }

    assert [norm(s) for s in actual] == [norm(s) for s in official["Statement"]]
    Template.from_json(addons).has_resource_properties(
        "AWS::EKS::PodIdentityAssociation",
        {"Namespace": "kube-system", "ServiceAccount": "aws-load-balancer-controller"},
    )


def test_gpu_daemonsets_run_only_on_gpu_nodes_and_tolerate_the_taint(releases):
    gpu_affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "llama-eks/node-class", "operator": "In", "values": ["gpu"]}
                        ]
                    }
                ]
            }
        }
    }
    for name in ("nvidia-device-plugin", "dcgm-exporter"):
        values = releases[name]["Values"]
        assert values["affinity"] == gpu_affinity, name
        assert values["tolerations"] == GPU_TOLERATION, name
    assert releases["dcgm-exporter"]["Values"]["serviceMonitor"] == {"enabled": False}


def test_kube_prometheus_stack_selects_every_monitor(releases):
    spec = releases["kube-prometheus-stack"]["Values"]["prometheus"]["prometheusSpec"]
    assert spec["serviceMonitorSelectorNilUsesHelmValues"] is False
    assert spec["podMonitorSelectorNilUsesHelmValues"] is False
    assert spec["ruleSelectorNilUsesHelmValues"] is False
    assert spec["retention"] == "15d"
    assert "remoteWrite" not in spec
    assert releases["kube-prometheus-stack"]["Values"]["grafana"]["enabled"] is True


def test_install_order_is_a_chain_and_nodepools_follow_the_controller(addons, releases):
    order = [
        "karpenter",
        "aws-load-balancer-controller",
        "kube-prometheus-stack",
        "nvidia-device-plugin",
        "dcgm-exporter",
        "keda",
    ]
    for before, after in itertools.pairwise(order):
        assert releases[before]["LogicalId"] in releases[after]["DependsOn"], (before, after)
    assert releases["karpenter-crd"]["LogicalId"] in releases["karpenter"]["DependsOn"]
    nodepools_id, nodepools = one(addons, "Custom::AWSCDK-EKS-KubernetesResource", "KarpenterNodePools")
    access_entry_id, _ = one(addons, "AWS::EKS::AccessEntry", "KarpenterNodeRoleAccessEntry")
    # Created after (deleted before) the controller and the node access entry: `cdk destroy` removes the
    # NodePools while Karpenter still runs and terminates its nodes.
    assert set(nodepools["DependsOn"]) >= {releases["karpenter"]["LogicalId"], access_entry_id}
    # ...and before (deleted after) everything installed later.
    assert nodepools_id in releases["aws-load-balancer-controller"]["DependsOn"]
    # The controller starts with its identity, permissions and queue in place.
    karpenter_deps = set(releases["karpenter"]["DependsOn"])
    assert {
        k for k in resources(addons, "AWS::IAM::ManagedPolicy") if k.startswith("KarpenterController")
    } <= karpenter_deps
    assert one(addons, "AWS::EKS::PodIdentityAssociation", "KarpenterControllerIdentity")[0] in karpenter_deps
    assert one(addons, "AWS::SQS::Queue", "KarpenterInterruptionQueue")[0] in karpenter_deps


def test_every_manifest_validates_strictly_against_its_crd_or_the_kubernetes_schema(addons, synthesized):
    docs = [doc for docs in manifests(addons).values() for doc in docs]
    kinds = sorted((d["apiVersion"], d["kind"], d["metadata"]["name"]) for d in docs)
    vpa_roles = ["actor", "checkpoint-actor", "metrics-reader", "status-actor", "target-reader"]
    assert kinds == sorted(
        [
            (
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "verticalpodautoscalercheckpoints.autoscaling.k8s.io",
            ),
            (
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "verticalpodautoscalers.autoscaling.k8s.io",
            ),
            ("apps/v1", "Deployment", "vpa-recommender"),
            ("karpenter.k8s.aws/v1", "EC2NodeClass", "default"),
            ("karpenter.sh/v1", "NodePool", "eks-gpu-np"),
            ("monitoring.coreos.com/v1", "ServiceMonitor", "dcgm-exporter"),
            *[("rbac.authorization.k8s.io/v1", "ClusterRole", f"vpa-recommender:{r}") for r in vpa_roles],
            *[
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", f"vpa-recommender:{r}")
                for r in vpa_roles
            ],
            ("storage.k8s.io/v1", "StorageClass", "gp3-encrypted"),
            ("v1", "ServiceAccount", "vpa-recommender"),
        ]
    )
    crd_apis = {api for api, _ in served_schemas()}
    version = synthesized.config.cluster.kubernetes_version
    for doc in docs:
        if doc["apiVersion"] in crd_apis:
            validate(doc)
        else:
            assert kubernetes_validate.validate(doc, version, strict=True) == version


@pytest.mark.parametrize("variant", ["synthesized", "alternative"])
def test_every_custom_resource_of_every_stack_validates(request, variant):
    """Whatever stack emits a custom resource (add-ons, inference, ...), its CRD's schema holds."""
    app = request.getfixturevalue(variant)
    crd_apis = {api for api, _ in served_schemas()}
    checked = 0
    for template in app.templates.values():
        for docs in manifests(template).values():
            for doc in docs:
                if doc.get("apiVersion") in crd_apis:
                    validate(doc)
                    checked += 1
    assert checked >= (3 if variant == "synthesized" else 1)


def test_nodepool_and_nodeclass_as_deployed(addons, synthesized):
    docs = {d["kind"]: d for docs in manifests(addons).values() for d in docs}
    node_role_id, _ = one(addons, "AWS::IAM::Role", "KarpenterNodeRole")
    nodeclass = docs["EC2NodeClass"]["spec"]
    cluster = synthesized.config.cluster.name
    assert nodeclass["role"] == f"<{node_role_id}>"
    assert nodeclass["amiSelectorTerms"] == [{"alias": "al2023@v20260828"}]
    assert nodeclass["subnetSelectorTerms"] == [{"tags": {"karpenter.sh/discovery": cluster}}]
    assert nodeclass["securityGroupSelectorTerms"] == [{"tags": {"karpenter.sh/discovery": cluster}}]
    assert nodeclass["tags"] == {
        "project": "llama-eks",
        "environment": "dev",
        "llama-eks/provisioner": "karpenter",
        "karpenter.sh/discovery": cluster,
    }
    pool = docs["NodePool"]["spec"]
    assert pool["template"]["spec"]["requirements"][:2] == [
        {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": ["g6"]},
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot", "on-demand"]},
    ]
    assert pool["limits"] == {"cpu": 256, "nvidia.com/gpu": 8}


def test_cfn_lint_is_clean(addons):
    assert cfn_lint(addons) == []


def test_cdk_nag_is_clean_and_every_acknowledgement_has_a_reason(synthesized):
    assert unacknowledged(synthesized.findings, "", "Addons/") == []
    acks = [a for a in synthesized.acknowledgements if a.construct_path.startswith("/Addons/")]
    # The reviewed set: a new acknowledgement is a decision to review, not a reflex.
    assert sorted({(a.construct_path, a.rule.split("[")[0]) for a in acks}) == [
        ("/Addons/EbsCsiDriver/Role", "AwsSolutions-IAM4"),
        ("/Addons/Karpenter/Controller/IamIntegrationPolicy", "AwsSolutions-IAM5"),
        ("/Addons/Karpenter/Controller/NodeLifecyclePolicy", "AwsSolutions-IAM5"),
        ("/Addons/Karpenter/Controller/ResourceDiscoveryPolicy", "AwsSolutions-IAM5"),
        ("/Addons/Karpenter/Controller/ZonalShiftPolicy", "AwsSolutions-IAM5"),
        ("/Addons/Karpenter/Interruption/Queue", "AwsSolutions-SQS3"),
        ("/Addons/Karpenter/NodeRole/Role", "AwsSolutions-IAM4"),
        ("/Addons/LoadBalancerController/Policy", "AwsSolutions-IAM5"),
        # Destroy-time cleanup (teardown.py): its functions, tag-scoped ARNs, the Provider framework.
        ("/Addons/Teardown", "NIST.800.53.R5-LambdaConcurrency"),
        ("/Addons/Teardown", "NIST.800.53.R5-LambdaDLQ"),
        ("/Addons/Teardown", "NIST.800.53.R5-LambdaInsideVPC"),
        ("/Addons/Teardown/IsCompletePolicy", "AwsSolutions-IAM5"),
        ("/Addons/Teardown/Logs", "NIST.800.53.R5-CloudWatchLogGroupEncrypted"),
        ("/Addons/Teardown/Provider", "AwsSolutions-IAM4"),
        ("/Addons/Teardown/Provider", "AwsSolutions-IAM5"),
        ("/Addons/Teardown/Provider", "AwsSolutions-L1"),
        ("/Addons/Teardown/Provider", "AwsSolutions-SF1"),
        ("/Addons/Teardown/Provider", "AwsSolutions-SF2"),
        ("/Addons/Teardown/Provider", "NIST.800.53.R5-IAMNoInlinePolicy"),
    ]
    assert all(len(a.reason) >= 80 for a in acks)


def test_default_config_uses_karpenter_and_no_gpu_nodegroup(synthesized):
    assert synthesized.config.compute.gpu_capacity.value == "karpenter"
    cluster = Template.from_json(synthesized.template("Cluster"))
    nodegroups = cluster.find_resources("AWS::EKS::Nodegroup")
    assert len(nodegroups) == 1  # the system nodegroup only
    cluster.has_resource_properties(
        "AWS::EKS::Nodegroup", {"Labels": Match.object_like({"llama-eks/node-class": "system"})}
    )


def test_nodegroup_alternative_synthesizes_without_karpenter_and_with_amp(alternative):
    addons = alternative.template("Addons")
    assert not [k for k in addons["Resources"] if k.startswith("Karpenter")]
    assert set(helm_releases(addons)) == {
        "aws-load-balancer-controller",
        "kube-prometheus-stack",
        "nvidia-device-plugin",
        "dcgm-exporter",
        "keda",
    }
    cluster = Template.from_json(alternative.template("Cluster"))
    cluster.has_resource_properties(
        "AWS::EKS::Nodegroup",
        {
            "Labels": Match.object_like({"llama-eks/node-class": "gpu"}),
            "Taints": [{"Key": "nvidia.com/gpu", "Value": "true", "Effect": "NO_SCHEDULE"}],
        },
    )
    workspace_id, _ = one(addons, "AWS::APS::Workspace", "MetricsWorkspace")
    values = helm_releases(addons)["kube-prometheus-stack"]["Values"]
    assert values["grafana"]["enabled"] is False
    assert values["prometheus"]["prometheusSpec"]["remoteWrite"] == [
        {"url": f"<{workspace_id}.PrometheusEndpoint>api/v1/remote_write", "sigv4": {"region": "us-west-2"}}
    ]
    Template.from_json(addons).has_resource_properties(
        "AWS::IAM::ManagedPolicy",
        {
            "PolicyDocument": {
                "Statement": [
                    {
                        "Action": "aps:RemoteWrite",
                        "Effect": "Allow",
                        "Resource": {"Fn::GetAtt": [workspace_id, "Arn"]},
                    }
                ]
            }
        },
    )
    Template.from_json(addons).has_resource_properties(
        "AWS::EKS::PodIdentityAssociation", {"Namespace": "monitoring", "ServiceAccount": "prometheus"}
    )
    assert cfn_lint(addons) == []
    assert unacknowledged(alternative.findings, "", "Addons/") == []


def test_stack_rejects_an_addon_whose_requirement_is_missing():
    import aws_cdk as cdk

    from config import AddonsConfig, ConfigError
    from stacks.addons.nvidia import DcgmExporterAddon
    from stacks.addons.stack import AddonsStack

    with pytest.raises(ConfigError) as info:
        AddonsStack(
            cdk.App(),
            "Addons",
            cluster=None,  # never reached: the contract check runs first
            cluster_name="c",
            kubernetes_version="1.35",
            vpc=None,
            config=AddonsConfig(),
            system_node_selector={},
            addons=[DcgmExporterAddon()],
        )
    assert str(info.value) == (
        "Invalid config 'addons.dcgmExporter.enabled': True. Allowed: false, or enable ['metrics'] too."
    )
