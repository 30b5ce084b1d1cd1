"""InferenceStack template tests: resources, explicit dependency order, outputs, image asset, IAM, validators.

The default app comes from the session fixture ``synthesized`` (tests/conftest.py: one synth with
cdk-nag). Two more synths (without nag) cover the seed HPA on the GPU nodegroup with an S3 model, and
the CPU variant.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from config import ConfigError, load_config
from config.names import SEED_PREDICT_BODY
from stacks.inference.stack import MANIFEST_GROUPS
from tests.conftest import Synthesized, cdk_json_context, synth_app
from tests.helpers.cfn import cfn_lint, unacknowledged

KUBE = "Custom::AWSCDK-EKS-KubernetesResource"

#: Logical IDs of the applied manifests: renaming one replaces (deletes and re-applies) its objects.
LOGICAL_IDS = {
    "Base": "Base93336DB5",
    "Workload": "Workload692FF5F4",
    "Service": "ServiceDBC79909",
    "Autoscaling": "Autoscaling049141F1",
    "Monitoring": "Monitoring19FB5217",
    "Endpoint": "EndpointEEF1FD8F",
}


def manifest_of(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """The objects of a KubernetesResource; CloudFormation tokens (image URI) become ``<token>``."""
    value = resource["Properties"]["Manifest"]
    if isinstance(value, dict):
        parts = value["Fn::Join"][1]
        value = "".join(p if isinstance(p, str) else "<token>" for p in parts)
    return json.loads(value)


def kinds(template: dict[str, Any], logical_id: str) -> list[str]:
    return [m["kind"] for m in manifest_of(template["Resources"][logical_id])]


@pytest.fixture(scope="module")
def template(synthesized: Synthesized) -> dict[str, Any]:
    return synthesized.template("Inference")


@pytest.fixture(scope="module")
def assets(synthesized: Synthesized) -> dict[str, Any]:
    return json.loads((Path(synthesized.outdir) / "Inference.assets.json").read_text())


@pytest.fixture(scope="module")
def nodegroup_hpa(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synth_app(
        tmp_path_factory.mktemp("inference-nodegroup"),
        {
            "compute.gpuCapacity": "nodegroup",
            "inference.autoscaling.mode": "hpa",
            "inference.model.uri": "s3://team-models/llama/llama-2-7b-chat.Q4_K_M.gguf",
            "inference.exposure.scheme": "internet-facing",
            "inference.exposure.sourceRanges": ["203.0.113.0/24"],
        },
        nag=False,
    )


@pytest.fixture(scope="module")
def cpu(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synth_app(tmp_path_factory.mktemp("inference-cpu"), {"inference.accelerator": "cpu"}, nag=False)


def test_manifests_and_pinned_logical_ids(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    for logical_id in LOGICAL_IDS.values():
        assert logical_id in resources
    assert kinds(template, LOGICAL_IDS["Base"]) == ["Namespace", "ServiceAccount"]
    assert kinds(template, LOGICAL_IDS["Workload"]) == ["Deployment", "PodDisruptionBudget", "NetworkPolicy"]
    assert kinds(template, LOGICAL_IDS["Service"]) == ["Service"]
    assert kinds(template, LOGICAL_IDS["Autoscaling"]) == ["ScaledObject", "VerticalPodAutoscaler"]
    assert kinds(template, LOGICAL_IDS["Monitoring"]) == ["ServiceMonitor", "ConfigMap"]
    assert sorted(k for g in MANIFEST_GROUPS.values() for k in g) == sorted(
        {k for g in MANIFEST_GROUPS.values() for k in g}
    )  # no kind in two groups


def test_in_stack_dependency_order(template: dict[str, Any]) -> None:
    res = template["Resources"]
    ids = LOGICAL_IDS
    assert res[ids["Base"]].get("DependsOn") is None
    assert res[ids["Service"]]["DependsOn"] == [ids["Base"]]
    # The NLB's hostname is in the Service's status once the controller has made the NLB, its target
    # group and the TargetGroupBinding ...
    assert res[ids["Endpoint"]]["DependsOn"] == [ids["Service"]]
    # ... and only then are the pods created: each gets the target-health readiness gate, so a rollout
    # never stops an old pod while its replacement's NLB target is still `initial`.
    assert sorted(res[ids["Workload"]]["DependsOn"]) == sorted([ids["Base"], ids["Service"], ids["Endpoint"]])
    assert res[ids["Autoscaling"]]["DependsOn"] == [ids["Workload"]]
    assert res[ids["Monitoring"]]["DependsOn"] == [ids["Base"]]
    (namespace, _) = manifest_of(res[ids["Base"]])
    assert namespace["metadata"]["labels"]["elbv2.k8s.aws/pod-readiness-gate-inject"] == "enabled"


def test_cross_stack_dependencies_on_the_addons(synthesized: Synthesized) -> None:
    stack = synthesized.stacks.inference
    installed = synthesized.stacks.addons.installed

    def deps(group: str) -> list[Any]:
        return stack.manifests[group].node.dependencies

    # NodePool (inside the Karpenter add-on) and the device plugin before the workload ...
    assert installed.karpenter in deps("Workload")
    assert installed.nvidia_device_plugin in deps("Workload")
    # ... the LB controller before the Service, KEDA (and its metrics) before the ScaledObject ...
    assert installed.load_balancer_controller in deps("Service")
    for addon in (installed.keda, installed.metrics, installed.dcgm_exporter, installed.vpa):
        assert addon is not None and addon in deps("Autoscaling")
    assert installed.metrics in deps("Monitoring")
    # ... which CloudFormation sees as a stack dependency: Inference deploys after Addons and is
    # destroyed before it (the Service and its NLB go while the controller still runs).
    artifact = next(s for s in synthesized.assembly.stacks if s.hierarchical_id == "Inference")
    assert {d.id for d in artifact.dependencies} >= {"Addons", "Cluster"}


def test_endpoint_from_service_status(template: dict[str, Any]) -> None:
    Template.from_json(template).has_resource_properties(
        "Custom::AWSCDK-EKS-KubernetesObjectValue",
        {
            "ObjectType": "service",
            "ObjectName": "my-llama-svc",
            "ObjectNamespace": "llama",
            "JsonPath": ".status.loadBalancer.ingress[0].hostname",
            "TimeoutSeconds": 600,
        },
    )


def test_outputs(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    endpoint = {"Fn::GetAtt": [LOGICAL_IDS["Endpoint"], "Value"]}
    assert outputs["EndpointHostname"]["Value"] == endpoint
    assert outputs["EndpointUrl"]["Value"] == {"Fn::Join": ["", ["http://", endpoint]]}
    curl = outputs["PredictCurl"]["Value"]["Fn::Join"][1]
    assert curl[0] == "curl -X POST http://"
    assert curl[1] == endpoint
    assert curl[2] == f"/predict -H \"Content-Type: application/json\" -d '{SEED_PREDICT_BODY}' | jq ."
    # The seed's body, byte for byte, is valid JSON.
    assert json.loads(SEED_PREDICT_BODY)["prompt"] == "Create a poem about humanity?"
    image = outputs["ImageUri"]["Value"]["Fn::Sub"]
    assert image.startswith(
        "111111111111.dkr.ecr.us-west-2.${AWS::URLSuffix}/cdk-hnb659fds-container-assets-111111111111-us-west-2:"
    )


def test_workload_uses_the_image_asset(template: dict[str, Any]) -> None:
    (deployment, *_) = manifest_of(template["Resources"][LOGICAL_IDS["Workload"]])
    spec = deployment["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"] == "<token>"
    assert spec["initContainers"][0]["image"] == "<token>"
    assert spec["nodeSelector"] == {"karpenter.sh/nodepool": "eks-gpu-np"}
    join = template["Resources"][LOGICAL_IDS["Workload"]]["Properties"]["Manifest"]["Fn::Join"][1]
    tokens = [p for p in join if not isinstance(p, str)]
    assert tokens and all("Fn::Sub" in t and "container-assets" in t["Fn::Sub"] for t in tokens)


def test_cuda_image_asset_for_linux_amd64(assets: dict[str, Any]) -> None:
    # The model server's image; the chat UI's is tests/stacks/inference/test_chat_ui_stack.py's.
    (image,) = [
        i for i in assets["dockerImages"].values() if i["displayName"].startswith("llama model server")
    ]
    assert image["source"]["platform"] == "linux/amd64"
    assert image["source"]["dockerBuildArgs"] == {
        "BUILDER_IMAGE": "nvidia/cuda:12.6.3-devel-ubuntu24.04",
        "BASE_IMAGE": "nvidia/cuda:12.6.3-runtime-ubuntu24.04",
        "GGML_CUDA": "on",
    }
    # The staged build context honours model_server/.dockerignore and carries the Dockerfile.
    (dest,) = image["destinations"].values()
    assert dest["repositoryName"].startswith("cdk-hnb659fds-container-assets-")


def test_registry_scanning_is_left_to_the_account_by_default(template: dict[str, Any]) -> None:
    # One setting per account and region: an environment's stack must not override Inspector enhanced
    # scanning or fight another environment over it.
    Template.from_json(template).resource_count_is("AWS::ECR::RegistryScanningConfiguration", 0)


@pytest.mark.parametrize("scan_on_push", [True, False])
def test_registry_scan_on_push_only_when_asked(scan_on_push: bool) -> None:
    import aws_cdk as cdk

    from stacks.inference.image import ModelServerImage

    stack = cdk.Stack(cdk.App(), "Image")
    ModelServerImage(stack, "ModelServerImage", gpu=False, scan_on_push=scan_on_push)
    t = Template.from_stack(stack)
    t.resource_count_is("AWS::ECR::RegistryScanningConfiguration", 1 if scan_on_push else 0)
    if scan_on_push:
        t.has_resource_properties(
            "AWS::ECR::RegistryScanningConfiguration",
            {
                "ScanType": "BASIC",
                "Rules": [
                    {
                        "ScanFrequency": "SCAN_ON_PUSH",
                        "RepositoryFilters": [
                            {"Filter": "cdk-*-container-assets-*", "FilterType": "WILDCARD"}
                        ],
                    }
                ],
            },
        )


def test_no_s3_role_for_an_https_model(template: dict[str, Any]) -> None:
    t = Template.from_json(template)
    t.resource_count_is("AWS::IAM::Role", 0)
    t.resource_count_is("AWS::EKS::PodIdentityAssociation", 0)


def test_cfn_lint_clean(synthesized: Synthesized) -> None:
    assert cfn_lint(Path(synthesized.outdir) / "Inference.template.json") == []


def test_cdk_nag_clean(synthesized: Synthesized) -> None:
    assert any(f.plugin.startswith("NIST") for f in synthesized.findings)  # the nag packs did run
    assert [str(f) for f in unacknowledged(synthesized.findings, "AwsSolutions", "Inference/")] == []


# --- variants -----------------------------------------------------------------------------------------


def test_nodegroup_hpa_s3_variant(nodegroup_hpa: Synthesized) -> None:
    template = nodegroup_hpa.template("Inference")
    t = Template.from_json(template)
    assert kinds(template, LOGICAL_IDS["Autoscaling"]) == ["HorizontalPodAutoscaler", "VerticalPodAutoscaler"]
    (deployment, *_) = manifest_of(template["Resources"][LOGICAL_IDS["Workload"]])
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {"llama-eks/node-class": "gpu"}
    (service,) = manifest_of(template["Resources"][LOGICAL_IDS["Service"]])
    assert service["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    # Read-only access to exactly the model object, through Pod Identity for llama/my-llama.
    t.has_resource_properties(
        "AWS::EKS::PodIdentityAssociation", {"Namespace": "llama", "ServiceAccount": "my-llama"}
    )
    t.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": [
                    {
                        "Sid": "ReadModelObject",
                        "Effect": "Allow",
                        "Action": "s3:GetObject",
                        "Resource": "arn:aws:s3:::team-models/llama/llama-2-7b-chat.Q4_K_M.gguf",
                    },
                    {
                        "Sid": "ListModelKey",
                        "Effect": "Allow",
                        "Action": "s3:ListBucket",
                        "Resource": "arn:aws:s3:::team-models",
                        "Condition": {"StringEquals": {"s3:prefix": ["llama/llama-2-7b-chat.Q4_K_M.gguf"]}},
                    },
                ],
            }
        },
    )
    # The pods start only after the association exists (credentials are injected at pod creation).
    association = next(
        k for k, v in template["Resources"].items() if v["Type"] == "AWS::EKS::PodIdentityAssociation"
    )
    assert association in template["Resources"][LOGICAL_IDS["Workload"]]["DependsOn"]
    # The GPU nodegroup (ClusterStack) is a dependency of the workload.
    stack = nodegroup_hpa.stacks.inference
    assert nodegroup_hpa.stacks.cluster.gpu_nodegroup in stack.manifests["Workload"].node.dependencies
    autoscaling_deps = stack.manifests["Autoscaling"].node.dependencies
    assert stack.manifests["Workload"] in autoscaling_deps
    addons = nodegroup_hpa.stacks.addons.installed
    installed = {c for c in vars(addons).values() if c is not None}
    # No KEDA: of the add-ons, only the VPA's (the CRDs of the VPA in the same manifest).
    assert set(autoscaling_deps) & installed == {addons.vpa}
    assert cfn_lint(Path(nodegroup_hpa.outdir) / "Inference.template.json") == []


def test_cpu_variant(cpu: Synthesized) -> None:
    assets = json.loads((Path(cpu.outdir) / "Inference.assets.json").read_text())
    (image,) = [i for i in assets["dockerImages"].values() if i["displayName"] == "llama model server (CPU)"]
    assert image["source"].get("dockerBuildArgs", {}) == {}
    assert image["source"]["platform"] == "linux/amd64"
    template = cpu.template("Inference")
    (deployment, *_) = manifest_of(template["Resources"][LOGICAL_IDS["Workload"]])
    spec = deployment["spec"]["template"]["spec"]
    assert "nodeSelector" not in spec and "tolerations" not in spec
    assert kinds(template, LOGICAL_IDS["Autoscaling"]) == ["HorizontalPodAutoscaler", "VerticalPodAutoscaler"]
    warnings = [text for level, text in cpu.messages("Inference") if "warning" in level.lower()]
    assert any("no CPU node pool is configured" in str(w) for w in warnings)


# --- config against the add-ons (no synth) -------------------------------------------------------------


def _load(overrides: dict[str, Any]) -> Any:
    return load_config({**cdk_json_context(), **overrides})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"addons.keda.enabled": False, "inference.autoscaling.mode": "keda"},
            "Invalid config 'inference.autoscaling.mode': 'keda'. Allowed: 'hpa' or 'none' while "
            "addons.keda.enabled is false.",
        ),
        (
            {
                "addons.metrics.backend": "amp",
                "addons.metrics.grafana": False,
                "inference.autoscaling.mode": "keda",
            },
            "Invalid config 'inference.autoscaling.mode': 'keda'. Allowed: 'hpa' or 'none' while "
            "addons.metrics.backend is 'amp' (KEDA's triggers query the in-cluster Prometheus of "
            "'kubePrometheusStack').",
        ),
        (
            {"addons.loadBalancerController.enabled": False},
            "Invalid config 'addons.loadBalancerController.enabled': False. Allowed: true: the inference "
            "Service is an NLB provisioned by the AWS Load Balancer Controller.",
        ),
        (
            {"addons.nvidiaDevicePlugin.enabled": False},
            "Invalid config 'addons.nvidiaDevicePlugin.enabled': False. Allowed: true when "
            "inference.accelerator is 'gpu' (nodes advertise nvidia.com/gpu through it).",
        ),
        (
            {"addons.dcgmExporter.enabled": False, "inference.autoscaling.mode": "keda"},
            "Invalid config 'addons.dcgmExporter.enabled': False. Allowed: true when "
            "inference.autoscaling.mode is 'keda' on GPU (the GPU utilisation trigger).",
        ),
        (
            {"addons.vpa.enabled": False, "inference.vpa.enabled": True},
            "Invalid config 'inference.vpa.enabled': True. Allowed: false while addons.vpa.enabled is false "
            "(the VerticalPodAutoscaler CRDs and recommender come from that add-on).",
        ),
    ],
)
def test_inference_needs_its_addons(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(overrides)
    assert str(err.value) == message


def test_defaults_follow_the_installed_addons() -> None:
    assert _load({}).inference.autoscaling.mode.value == "keda"
    assert _load({"addons.keda.enabled": False}).inference.autoscaling.mode.value == "hpa"
    assert _load({"addons.dcgmExporter.enabled": False}).inference.autoscaling.mode.value == "hpa"
    amp = _load({"addons.metrics.backend": "amp"}).inference
    assert amp.autoscaling.mode.value == "hpa"
    assert (amp.monitoring.service_monitor, amp.monitoring.dashboard) == (True, False)
    none = _load(
        {"addons.metrics.backend": "none", "addons.dcgmExporter.enabled": False}
    ).inference.monitoring
    assert (none.service_monitor, none.dashboard) == (False, False)


def test_bad_inference_key_fails_load() -> None:
    with pytest.raises(ConfigError) as err:
        _load({"inference.exposure.scheme": "internet-facing"})
    assert err.value.key == "inference.exposure.sourceRanges"


def test_match_is_used_for_the_seed_service(template: dict[str, Any]) -> None:
    # The Service manifest string carries the seed's NLB annotations and port mapping.
    Template.from_json(template).has_resource_properties(
        KUBE, {"Manifest": Match.string_like_regexp(r'"kind":"Service".*aws-load-balancer-type":"external"')}
    )


# --- disruption and rollouts: env=prod (the session's second synth, tests/stacks/conftest.py VARIANT) ------


def test_prod_serving_survives_a_node_disruption(variant: Synthesized) -> None:
    resources = variant.template("Inference")["Resources"]
    deployment, pdb, _ = manifest_of(resources[LOGICAL_IDS["Workload"]])
    scaled_object, _vpa = manifest_of(resources[LOGICAL_IDS["Autoscaling"]])
    # Two replicas at least, never both in one zone, and no voluntary eviction of the last ready one.
    assert scaled_object["spec"]["minReplicaCount"] == 2
    assert scaled_object["spec"]["fallback"]["replicas"] == 2
    zone = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
    assert (zone["topologyKey"], zone["whenUnsatisfiable"], zone["minDomains"]) == (
        "topology.kubernetes.io/zone",
        "DoNotSchedule",
        2,
    )
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
    # A spot interruption's 2-minute notice covers preStop + drain (+ Karpenter's reaction).
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 85
    # The GPU nodegroup has one node per replica and nothing adds one: pods are replaced in place, one at a
    # time, while the other replica serves.
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_dev_serving_defaults(template: dict[str, Any]) -> None:
    deployment, pdb, _ = manifest_of(template["Resources"][LOGICAL_IDS["Workload"]])
    scaled_object, _vpa = manifest_of(template["Resources"][LOGICAL_IDS["Autoscaling"]])
    assert scaled_object["spec"]["minReplicaCount"] == 1
    assert pdb["spec"]["maxUnavailable"] == 1  # one replica: drains are not blocked (dev)
    # Karpenter launches a node for the extra pod of a rollout.
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


@pytest.mark.parametrize(
    ("overrides", "rollout"),
    [
        ({}, (1, 0)),
        ({"compute.gpuCapacity": "nodegroup"}, (0, 1)),  # one node, one replica: in place (dev)
        ({"compute.gpuCapacity": "nodegroup", "compute.gpuNodegroup.desiredSize": 2}, (1, 0)),
        ({"inference.accelerator": "cpu"}, (1, 0)),
    ],
)
def test_rollout_fits_the_capacity(overrides: dict[str, Any], rollout: tuple[int, int]) -> None:
    import aws_cdk as cdk
    from constructs import Construct

    from stacks.addons.stack import InstalledAddons
    from stacks.platform import inference_placement

    root = cdk.App()
    addon = Construct(root, "Addon")
    installed = InstalledAddons(
        karpenter=addon,
        load_balancer_controller=addon,
        metrics=addon,
        nvidia_device_plugin=addon,
        dcgm_exporter=addon,
        keda=addon,
        vpa=addon,
    )
    placement = inference_placement(_load(overrides), addons=installed, gpu_nodegroup=Construct(root, "Ng"))
    assert (placement.rollout.max_surge, placement.rollout.max_unavailable) == rollout
