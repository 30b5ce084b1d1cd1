"""The chat UI in the InferenceStack (stacks/inference/chat_ui.py): its image asset, its manifests in
deployment order, its outputs, and ``chatUi.enabled: false`` removing all of it.

The default app is the session fixture ``synthesized`` (cdk-nag and cfn-lint run on it in
test_inference_stack.py / tests/stacks/test_validation.py); one more synth (without nag) has the UI off and
one the UI internet-facing with TLS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from config.names import CHAT_UI_POD_LABELS
from stacks.inference.chat_ui import CHAT_UI_DIR, CHAT_UI_MANIFEST_GROUPS
from tests.conftest import Synthesized, synth_app
from tests.helpers.cfn import cfn_lint
from tests.stacks.inference.test_inference_stack import LOGICAL_IDS, manifest_of

CERT = "arn:aws:acm:us-west-2:111111111111:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
#: Logical IDs of the UI's applied manifests: renaming one replaces (deletes and re-applies) its objects.
UI_IDS = {
    "Service": "ChatUiService4EBDFAAC",
    "Workload": "ChatUiWorkloadBE780851",
    "Autoscaling": "ChatUiAutoscalingEF4C0247",
    "Endpoint": "ChatUiEndpointB63BE7C5",
}
UI_OUTPUTS = {"ChatUiUrl", "ChatUiPortForward", "ChatUiImageUri"}


def images(outdir: str | Path) -> dict[str, dict[str, Any]]:
    """Container image assets of the Inference stack by display name."""
    assets = json.loads((Path(outdir) / "Inference.assets.json").read_text())
    return {image["displayName"]: image for image in assets["dockerImages"].values()}


def kinds_and_names(resource: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["kind"], m["metadata"]["name"]) for m in manifest_of(resource)]


@pytest.fixture(scope="module")
def template(synthesized: Synthesized) -> dict[str, Any]:
    return synthesized.template("Inference")


@pytest.fixture(scope="module")
def without_ui(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synth_app(tmp_path_factory.mktemp("chat-ui-off"), {"chatUi.enabled": False}, nag=False)


@pytest.fixture(scope="module")
def public_tls(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synth_app(
        tmp_path_factory.mktemp("chat-ui-public"),
        {
            "chatUi.exposure.scheme": "internet-facing",
            "chatUi.exposure.sourceRanges": "203.0.113.0/24",
            "chatUi.exposure.certificateArn": CERT,
            "chatUi.exposure.domainName": "chat.example.com",
            "inference.apiKey.enabled": True,
        },
        nag=False,
    )


def test_manifests_and_pinned_logical_ids(template: dict[str, Any]) -> None:
    res = template["Resources"]
    assert kinds_and_names(res[UI_IDS["Service"]]) == [("Service", "chatbot-ui-service")]
    assert kinds_and_names(res[UI_IDS["Workload"]]) == [
        ("ServiceAccount", "chatbot-ui"),
        ("Deployment", "chatbot-ui-deployment"),
        ("PodDisruptionBudget", "chatbot-ui-pdb"),
        ("NetworkPolicy", "chatbot-ui"),
    ]
    assert kinds_and_names(res[UI_IDS["Autoscaling"]]) == [
        ("HorizontalPodAutoscaler", "chatbot-ui-hpa"),
        ("VerticalPodAutoscaler", "chatbot-ui-vpa"),
    ]
    for resource_id in (UI_IDS["Service"], UI_IDS["Workload"], UI_IDS["Autoscaling"]):
        assert {m["metadata"]["namespace"] for m in manifest_of(res[resource_id])} == {"llama"}
    kinds = [k for group in CHAT_UI_MANIFEST_GROUPS.values() for k in group]
    assert len(kinds) == len(set(kinds))  # no kind in two groups


def test_deployment_order(template: dict[str, Any]) -> None:
    res = template["Resources"]
    base = LOGICAL_IDS["Base"]  # the model's namespace (restricted Pod Security, readiness-gate label)
    assert res[UI_IDS["Service"]]["DependsOn"] == [base]
    assert res[UI_IDS["Endpoint"]]["DependsOn"] == [UI_IDS["Service"]]
    # Pods after the NLB's TargetGroupBinding exists: every UI pod gets the target-health readiness gate.
    assert sorted(res[UI_IDS["Workload"]]["DependsOn"]) == sorted(
        [base, UI_IDS["Service"], UI_IDS["Endpoint"]]
    )
    assert res[UI_IDS["Autoscaling"]]["DependsOn"] == [UI_IDS["Workload"]]


def test_service_after_the_load_balancer_controller(synthesized: Synthesized) -> None:
    ui = synthesized.stacks.inference.chat_ui
    installed = synthesized.stacks.addons.installed
    assert ui is not None
    assert installed.load_balancer_controller in ui.manifests["Service"].node.dependencies


def test_endpoint_from_the_ui_service_status(template: dict[str, Any]) -> None:
    Template.from_json(template).has_resource_properties(
        "Custom::AWSCDK-EKS-KubernetesObjectValue",
        {
            "ObjectType": "service",
            "ObjectName": "chatbot-ui-service",
            "ObjectNamespace": "llama",
            "JsonPath": ".status.loadBalancer.ingress[0].hostname",
            "TimeoutSeconds": 600,
        },
    )


def test_image_asset(synthesized: Synthesized, template: dict[str, Any]) -> None:
    image = images(synthesized.outdir)["llama chat UI"]
    assert image["source"]["platform"] == "linux/amd64"
    assert "dockerBuildArgs" not in image["source"]  # the Dockerfile's defaults: a CPU image
    (dest,) = image["destinations"].values()
    assert dest["repositoryName"].startswith("cdk-hnb659fds-container-assets-")
    # The staged build context is chat_ui/ (its .dockerignore applied): the Dockerfile and the app.
    staged = Path(synthesized.outdir) / image["source"]["directory"]
    assert sorted(p.name for p in staged.iterdir()) == sorted(
        p.name for p in CHAT_UI_DIR.iterdir() if p.name != "__pycache__"
    )
    # The Deployment runs exactly this asset's image.
    (_, deployment, *_) = manifest_of(template["Resources"][UI_IDS["Workload"]])
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "<token>"
    join = template["Resources"][UI_IDS["Workload"]]["Properties"]["Manifest"]["Fn::Join"][1]
    (token,) = [p for p in join if not isinstance(p, str)]
    asset_hash = next(
        h for h, i in _raw_images(synthesized.outdir).items() if i["displayName"] == "llama chat UI"
    )
    assert token["Fn::Sub"].endswith(f":{asset_hash}")


def _raw_images(outdir: str | Path) -> dict[str, dict[str, Any]]:
    return json.loads((Path(outdir) / "Inference.assets.json").read_text())["dockerImages"]


def test_outputs(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    hostname = {"Fn::GetAtt": [UI_IDS["Endpoint"], "Value"]}
    assert outputs["ChatUiUrl"]["Value"] == {"Fn::Join": ["", ["http://", hostname]]}
    assert "internal NLB" in outputs["ChatUiUrl"]["Description"]
    assert (
        outputs["ChatUiPortForward"]["Value"]
        == "kubectl -n llama port-forward svc/chatbot-ui-service 7860:80"
    )
    assert outputs["ChatUiImageUri"]["Value"]["Fn::Sub"].startswith(
        "111111111111.dkr.ecr.us-west-2.${AWS::URLSuffix}/cdk-hnb659fds-container-assets-111111111111-us-west-2:"
    )


def test_ui_talks_to_the_model_service_in_cluster(template: dict[str, Any]) -> None:
    (_, deployment, *_) = manifest_of(template["Resources"][UI_IDS["Workload"]])
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CHAT_UI_MODEL_URL"] == "http://my-llama-svc.llama.svc.cluster.local:80"
    assert "CHAT_UI_API_KEY_FILE" not in env  # the model requires no key by default (internal NLB)
    # Default placement: the general-purpose pool is off, so any untainted amd64 node (the system nodegroup).
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/arch": "amd64"}


def test_models_network_policy_admits_the_ui(template: dict[str, Any]) -> None:
    (_, _, policy) = manifest_of(template["Resources"][LOGICAL_IDS["Workload"]])
    assert policy["kind"] == "NetworkPolicy"
    assert policy["spec"]["ingress"][-1] == {
        "from": [{"podSelector": {"matchLabels": dict(CHAT_UI_POD_LABELS)}}],
        "ports": [{"port": 5000, "protocol": "TCP"}],
    }


def test_public_ui_with_tls(public_tls: Synthesized) -> None:
    template = public_tls.template("Inference")
    outputs = template["Outputs"]
    assert outputs["ChatUiUrl"]["Value"] == "https://chat.example.com"
    assert outputs["ChatUiUrl"]["Description"] == (
        "The chat UI's page (HTTPS on port 443, internet-facing NLB, reachable from "
        "chatUi.exposure.sourceRanges; point chat.example.com at the NLB)"
    )
    assert outputs["ChatUiPortForward"]["Value"].endswith(" 7860:443")
    (service,) = manifest_of(template["Resources"][UI_IDS["Service"]])
    assert service["spec"]["ports"][0]["port"] == 443
    assert service["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    ann = service["metadata"]["annotations"]
    assert ann["service.beta.kubernetes.io/aws-load-balancer-ssl-cert"] == CERT
    # The model requires its key: the UI mounts the same Secret the model server reads.
    (_, deployment, *_) = manifest_of(template["Resources"][UI_IDS["Workload"]])
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    key = next(v for v in volumes if v["name"] == "api-key")
    assert key["secret"]["secretName"] == "my-llama-api-key"
    assert cfn_lint(Path(public_tls.outdir) / "Inference.template.json") == []


def test_disabled_removes_every_ui_object(without_ui: Synthesized, template: dict[str, Any]) -> None:
    with_ui = template
    template = without_ui.template("Inference")
    resources = template["Resources"]
    assert not [r for r in resources if r.startswith("ChatUi")]
    assert not UI_OUTPUTS & set(template["Outputs"])
    text = json.dumps(template)
    assert "chatbot-ui" not in text and "CHAT_UI_" not in text
    # Only the model server's image is left to build.
    assert list(images(without_ui.outdir)) == ["llama model server (CUDA)"]
    assert without_ui.stacks.inference.chat_ui is None
    # The model's NetworkPolicy is the one without the UI's rule, and otherwise the same.
    (_, _, policy) = manifest_of(resources[LOGICAL_IDS["Workload"]])
    (_, _, policy_with_ui) = manifest_of(with_ui["Resources"][LOGICAL_IDS["Workload"]])
    assert policy["spec"]["ingress"] == policy_with_ui["spec"]["ingress"][:-1]
    assert "chatbot-ui" in json.dumps(policy_with_ui)
    # The model's own objects are untouched.
    for group in ("Base", "Workload", "Service", "Autoscaling", "Monitoring", "Endpoint"):
        assert LOGICAL_IDS[group] in resources
