"""The chat UI chart (charts/chat_ui.py): seed ch6's objects, schema-validated, with the seed's HPA and VPA
numbers, restricted Pod Security, and NetworkPolicies that let the UI reach the model and nothing more.

Every variant (tests/charts/chat_ui_manifests.py) validates against kubernetes-validate's strict schemas of
every supported Kubernetes version and the VPA CRD of ../shared/crds.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from charts.chat_ui import ChatUiChartProps, ModelEndpoint
from charts.inference import SERVER_PORT
from config.chat_ui import ChatUiConfig
from config.errors import ConfigError
from config.inference import InferenceConfig
from config.names import CHAT_UI_POD_LABELS
from config.versions import SUPPORTED_VERSIONS
from tests.charts.chat_ui_manifests import MODEL, NAMESPACE, VARIANTS, config_of, render
from tests.charts.manifests import IMAGE, Manifests, by_kind, one, pod_spec
from tests.charts.manifests import render as render_inference
from tests.helpers import crd_schema
from tests.helpers.netpol import Source, admitted

#: Seed ch6's chatbot-ui-hpa.yaml (spec), number for number, and the behaviour block the chapter adds.
SEED_HPA_SPEC = {
    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chatbot-ui-deployment"},
    "minReplicas": 1,
    "maxReplicas": 5,
    "metrics": [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
        }
    ],
}
SEED_HPA_BEHAVIOR = {
    "scaleDown": {
        "stabilizationWindowSeconds": 180,
        "policies": [{"type": "Percent", "value": 50, "periodSeconds": 15}],
    },
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "policies": [{"type": "Pods", "value": 2, "periodSeconds": 15}],
        "selectPolicy": "Max",
    },
}
#: Seed ch6's chatbot-ui-vpa.yaml (spec) with updateMode "Off" instead of "Auto" (the chapter's own advice
#: when an HPA scales the same pods).
SEED_VPA_SPEC = {
    "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chatbot-ui-deployment"},
    "updatePolicy": {"updateMode": "Off"},
    "resourcePolicy": {
        "containerPolicies": [
            {
                "containerName": "*",
                "minAllowed": {"cpu": "1000m", "memory": "2Gi"},
                "maxAllowed": {"cpu": "2000m", "memory": "4Gi"},
                "controlledValues": "RequestsAndLimits",
            }
        ]
    },
}
#: A pod address outside the VPC's primary CIDR (EKS custom networking: pods in a secondary 100.64/10 CIDR),
#: so only a podSelector rule, never the NLB's VPC ipBlock, can admit it.
POD_IP = "100.64.12.34"
UI_POD = Source(ip=POD_IP, namespace=NAMESPACE, labels=dict(CHAT_UI_POD_LABELS))
NLB = Source(ip="10.0.130.8")


def container(manifests: Manifests) -> dict[str, Any]:
    (c,) = pod_spec(manifests)["containers"]
    return c


def env(manifests: Manifests) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(manifests)["env"]}


# --- validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_core_objects_validate_strictly(
    rendered_chat_ui: dict[str, Manifests], variant: str, version: str
) -> None:
    core = [m for m in rendered_chat_ui[variant] if m["kind"] != "VerticalPodAutoscaler"]
    assert {m["kind"] for m in core} == {
        "ServiceAccount",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "NetworkPolicy",
        "HorizontalPodAutoscaler",
    }
    for manifest in core:
        assert kubernetes_validate.validate(manifest, version, strict=True) == version


def test_vpa_validates_against_its_crd(rendered_chat_ui: dict[str, Manifests]) -> None:
    crd_schema.validate(one(rendered_chat_ui["vpa"], "VerticalPodAutoscaler"))
    broken = copy.deepcopy(one(rendered_chat_ui["vpa"], "VerticalPodAutoscaler"))
    broken["spec"]["updatePolicy"]["updateMode"] = "Sometimes"
    with pytest.raises(crd_schema.CrdValidationError):
        crd_schema.validate(broken)


def test_every_object_in_the_models_namespace(rendered_chat_ui: dict[str, Manifests]) -> None:
    for manifests in rendered_chat_ui.values():
        assert {m["metadata"]["namespace"] for m in manifests} == {NAMESPACE}
        assert not by_kind(manifests, "Namespace")  # the inference chart owns it (restricted Pod Security)


# --- seed ch6's objects -----------------------------------------------------------------------------------


def test_seed_names(rendered_chat_ui: dict[str, Manifests]) -> None:
    m = rendered_chat_ui["vpa"]
    assert one(m, "Deployment")["metadata"]["name"] == "chatbot-ui-deployment"
    assert one(m, "Service")["metadata"]["name"] == "chatbot-ui-service"
    assert one(m, "HorizontalPodAutoscaler")["metadata"]["name"] == "chatbot-ui-hpa"
    assert one(m, "VerticalPodAutoscaler")["metadata"]["name"] == "chatbot-ui-vpa"


@pytest.mark.parametrize("variant", ["default", "public", "vpa"])
def test_hpa_is_the_seeds(rendered_chat_ui: dict[str, Manifests], variant: str) -> None:
    hpa = one(rendered_chat_ui[variant], "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = dict(hpa["spec"])
    behavior = spec.pop("behavior")
    assert spec == SEED_HPA_SPEC
    # cdk8s-plus spells out the scale-down selectPolicy the API defaults to (Max).
    assert behavior == {
        **SEED_HPA_BEHAVIOR,
        "scaleDown": {**SEED_HPA_BEHAVIOR["scaleDown"], "selectPolicy": "Max"},
    }


def test_prod_hpa_keeps_two_replicas(rendered_chat_ui: dict[str, Manifests]) -> None:
    spec = one(rendered_chat_ui["prod-public-tls"], "HorizontalPodAutoscaler")["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 5)
    assert spec["metrics"] == SEED_HPA_SPEC["metrics"]
    # Two replicas: no voluntary disruption takes the last ready one.
    assert one(rendered_chat_ui["prod-public-tls"], "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    # One replica (dev): a drain may take it (minAvailable 1 over one pod would block every drain).
    assert one(rendered_chat_ui["default"], "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_hpa_follows_the_config() -> None:
    m = render(config_of({"autoscaling": {"minReplicas": 2, "maxReplicas": 9, "cpuUtilization": 60}}))
    spec = one(m, "HorizontalPodAutoscaler")["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 9)
    assert spec["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}


def test_vpa_is_the_seeds_in_recommendation_mode(rendered_chat_ui: dict[str, Manifests]) -> None:
    # On by default (the seed has it; config/app.py turns it off with the VPA add-on), off on request.
    for variant in ("default", "vpa"):
        vpa = one(rendered_chat_ui[variant], "VerticalPodAutoscaler")
        assert vpa["apiVersion"] == "autoscaling.k8s.io/v1"
        assert vpa["spec"] == SEED_VPA_SPEC
    assert not by_kind(render(config_of({"vpa": {"enabled": False}})), "VerticalPodAutoscaler")


def test_the_deployment_leaves_replicas_to_the_hpa(rendered_chat_ui: dict[str, Manifests]) -> None:
    # A re-apply of the manifest must never reset what the HPA scaled to.
    assert "replicas" not in one(rendered_chat_ui["default"], "Deployment")["spec"]


# --- the pod ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_restricted_pod_security(rendered_chat_ui: dict[str, Manifests], variant: str) -> None:
    m = rendered_chat_ui[variant]
    spec = pod_spec(m)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == "chatbot-ui"
    assert one(m, "ServiceAccount")["automountServiceAccountToken"] is False
    sc = container(m)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert "initContainers" not in spec and "hostNetwork" not in {k for k, v in spec.items() if v}


def test_read_only_root_with_a_writable_tmp(rendered_chat_ui: dict[str, Manifests]) -> None:
    m = rendered_chat_ui["default"]
    mounts = {v["mountPath"]: v["name"] for v in container(m)["volumeMounts"]}
    assert mounts == {"/tmp": "tmp"}  # Gradio writes /tmp/gradio (GRADIO_TEMP_DIR)
    (tmp,) = pod_spec(m)["volumes"]
    assert tmp == {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}


def test_probes_and_graceful_stop(rendered_chat_ui: dict[str, Manifests]) -> None:
    c = container(rendered_chat_ui["default"])
    assert c["ports"] == [{"containerPort": 7860, "name": "http"}]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"  # the UI's own: up while the model loads
    assert c["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert {p["httpGet"]["port"] for p in (c["livenessProbe"], c["readinessProbe"], c["startupProbe"])} == {
        7860
    }
    # Keeps serving while the NLB deregisters it, then the app's 10 s drain, then a margin before SIGKILL.
    assert c["lifecycle"] == {"preStop": {"sleep": {"seconds": 15}}}
    spec = pod_spec(rendered_chat_ui["default"])
    assert spec["terminationGracePeriodSeconds"] == 30
    ann = one(rendered_chat_ui["default"], "Service")["metadata"]["annotations"]
    assert (
        "deregistration_delay.timeout_seconds=30"
        in ann["service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"]
    )


def test_resources_make_the_hpa_meaningful(rendered_chat_ui: dict[str, Manifests]) -> None:
    resources = container(rendered_chat_ui["default"])["resources"]
    # The HPA's utilisation is usage / request: a CPU request is what makes 70 % mean something.
    assert resources["requests"] == {"cpu": "250m", "memory": "512Mi", "ephemeral-storage": "1Gi"}
    assert resources["limits"] == {"cpu": "1000m", "memory": "512Mi", "ephemeral-storage": "1Gi"}
    custom = render(config_of({"resources": {"cpuRequest": "500m", "cpuLimit": "2", "memory": "1Gi"}}))
    resources = container(custom)["resources"]
    assert (resources["requests"]["cpu"], resources["limits"]["cpu"], resources["limits"]["memory"]) == (
        "500m",
        "2000m",
        "1024Mi",
    )


def test_environment_points_at_the_model(rendered_chat_ui: dict[str, Manifests]) -> None:
    assert env(rendered_chat_ui["default"]) == {
        "CHAT_UI_MODEL_URL": "http://my-llama-svc.llama.svc.cluster.local:80",
        "CHAT_UI_HOST": "0.0.0.0",
        "CHAT_UI_PORT": "7860",
        "CHAT_UI_TITLE": "Llama chat",
        "CHAT_UI_MAX_TOKENS": "512",
    }
    # An empty system prompt is passed on (no system message); a title of the operator's.
    custom = env(rendered_chat_ui["vpa"])
    assert (custom["CHAT_UI_SYSTEM_PROMPT"], custom["CHAT_UI_TITLE"]) == ("", "Team chat")


def test_api_key_from_the_models_secret(rendered_chat_ui: dict[str, Manifests]) -> None:
    m = rendered_chat_ui["prod-public-tls"]
    assert env(m)["CHAT_UI_API_KEY_FILE"] == "/var/run/secrets/chat-ui/api-key"
    assert "CHAT_UI_API_KEY" not in env(m)  # never the key itself in the manifest
    key = next(v for v in pod_spec(m)["volumes"] if v["name"] == "api-key")
    assert key["secret"]["secretName"] == "my-llama-api-key"
    assert key["secret"]["items"] == [{"key": "api-key", "path": "api-key"}]
    mount = next(v for v in container(m)["volumeMounts"] if v["name"] == "api-key")
    assert mount == {"mountPath": "/var/run/secrets/chat-ui", "name": "api-key", "readOnly": True}
    # Without a key on the model, nothing is mounted.
    assert "CHAT_UI_API_KEY_FILE" not in env(rendered_chat_ui["default"])


def test_amd64_nodes_and_the_given_pool() -> None:
    assert pod_spec(render())["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
    pooled = render(node_selector={"karpenter.sh/nodepool": "general-purpose"})
    assert pod_spec(pooled)["nodeSelector"] == {
        "karpenter.sh/nodepool": "general-purpose",
        "kubernetes.io/arch": "amd64",
    }
    assert "tolerations" not in pod_spec(pooled)  # never on the tainted GPU nodes


# --- exposure -----------------------------------------------------------------------------------------------


def test_internal_nlb_port_80_by_default(rendered_chat_ui: dict[str, Manifests]) -> None:
    svc = one(rendered_chat_ui["default"], "Service")
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 7860}]
    assert svc["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/16"]
    ann = svc["metadata"]["annotations"]
    assert ann["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internal"
    assert ann["service.beta.kubernetes.io/aws-load-balancer-healthcheck-path"] == "/readyz"
    assert "service.beta.kubernetes.io/aws-load-balancer-ssl-cert" not in ann


def test_internet_facing_with_tls(rendered_chat_ui: dict[str, Manifests]) -> None:
    svc = one(rendered_chat_ui["prod-public-tls"], "Service")
    assert svc["spec"]["ports"] == [{"name": "http", "port": 443, "protocol": "TCP", "targetPort": 7860}]
    assert svc["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24", "198.51.100.0/24"]
    ann = svc["metadata"]["annotations"]
    assert ann["service.beta.kubernetes.io/aws-load-balancer-scheme"] == "internet-facing"
    assert ann["service.beta.kubernetes.io/aws-load-balancer-ssl-ports"] == "443"
    assert ann["service.beta.kubernetes.io/aws-load-balancer-ssl-cert"].startswith("arn:aws:acm:us-west-2:")
    public = one(rendered_chat_ui["public"], "Service")
    assert public["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    assert public["spec"]["ports"][0]["port"] == 80


# --- network policies ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_ui_admits_the_nlb_only(rendered_chat_ui: dict[str, Manifests], variant: str) -> None:
    m = rendered_chat_ui[variant]
    deployment = one(m, "Deployment")
    assert admitted(m, deployment, NLB, 7860)
    assert not admitted(m, deployment, NLB, 22)
    # A pod of the cluster (outside the VPC CIDR), here or elsewhere, gets no path around the NLB.
    assert not admitted(m, deployment, Source(ip=POD_IP, namespace=NAMESPACE, labels={"app": "x"}), 7860)
    assert not admitted(m, deployment, Source(ip=POD_IP, namespace="default", labels={}), 7860)


def test_ui_reaches_dns_and_the_model_pods_only(rendered_chat_ui: dict[str, Manifests]) -> None:
    policy = one(rendered_chat_ui["default"], "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Egress", "Ingress"]
    assert policy["spec"]["egress"] == [
        {
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
            "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
        },
        # The model's pods on the server port: a policy sees the pod behind the Service's address.
        {
            "ports": [{"port": SERVER_PORT, "protocol": "TCP"}],
            "to": [{"podSelector": {"matchLabels": {"app": "my-llama"}}}],
        },
    ]


def test_models_policy_admits_the_ui_and_nothing_more() -> None:
    config = InferenceConfig.load({"namespace": NAMESPACE})
    before = render_inference(config)
    after = render_inference(config, client_pod_labels=(CHAT_UI_POD_LABELS,))
    model = one(after, "Deployment")
    # The UI's pods reach the model's port, from any pod address ...
    assert admitted(after, model, UI_POD, SERVER_PORT)
    assert not admitted(before, model, UI_POD, SERVER_PORT)
    # ... and only that port ...
    assert not admitted(after, model, UI_POD, 22)
    # ... and no other pod gains a path: other labels, or the UI's labels in another namespace.
    for other in (
        Source(ip=POD_IP, namespace=NAMESPACE, labels={"app": "something-else"}),
        Source(ip=POD_IP, namespace="default", labels=dict(CHAT_UI_POD_LABELS)),
    ):
        assert not admitted(after, model, other, SERVER_PORT)
    # What already had a path keeps it, unchanged.
    assert (
        one(before, "NetworkPolicy")["spec"]["ingress"] == one(after, "NetworkPolicy")["spec"]["ingress"][:-1]
    )


def test_ui_egress_matches_the_models_service() -> None:
    # The UI's egress rule selects exactly the model Service's selector, on the port the Service forwards to:
    # the VPC CNI's network policy controller then also admits the Service's ClusterIP and port (it resolves
    # Services whose selector the rule's podSelector matches, and maps the target port to the Service port).
    inference = render_inference(InferenceConfig.load({"namespace": NAMESPACE}))
    model, service = one(inference, "Deployment"), one(inference, "Service")
    rule = one(render(), "NetworkPolicy")["spec"]["egress"][1]
    selector = rule["to"][0]["podSelector"]["matchLabels"]
    assert selector == service["spec"]["selector"]
    assert selector.items() <= model["spec"]["template"]["metadata"]["labels"].items()
    assert [p["port"] for p in rule["ports"]] == [p["targetPort"] for p in service["spec"]["ports"]]


# --- bad props ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: ModelEndpoint(url="https://my-llama-svc:443", pod_labels={"app": "my-llama"}, port=5000),
            "Invalid config 'chatUi.modelUrl': 'https://my-llama-svc:443'. Allowed: an http:// URL of the "
            "model's Service.",
        ),
        (
            lambda: ModelEndpoint(url="http://my-llama-svc:80", pod_labels={}, port=5000),
            "Invalid config 'chatUi.modelPodLabels': {}. Allowed: the model pods' labels.",
        ),
        (
            lambda: ChatUiChartProps(config=ChatUiConfig(), image=IMAGE, namespace="Llama", model=MODEL),
            "Invalid config 'inference.namespace': 'Llama'. Allowed: a DNS label.",
        ),
        (
            lambda: ChatUiChartProps(
                config=ChatUiConfig.load({"enabled": False}), image=IMAGE, namespace=NAMESPACE, model=MODEL
            ),
            "Invalid config 'chatUi.enabled': False. Allowed: true to render the chat UI (false: no chart).",
        ),
        (
            lambda: ChatUiChartProps(
                config=ChatUiConfig(), image=IMAGE, namespace=NAMESPACE, model=MODEL, vpc_cidr="10.0.0.1/16"
            ),
            None,
        ),
    ],
)
def test_bad_props_fail_in_the_constructor(make: Any, message: str | None) -> None:
    with pytest.raises(ConfigError) as err:
        make()
    if message is not None:
        assert str(err.value) == message
    else:
        assert str(err.value).startswith("Invalid config 'network.vpcCidr': '10.0.0.1/16'.")
