"""The inference chart, field by field (cdk8s Testing; no cluster)."""

from __future__ import annotations

import json

import pytest

from config.errors import ConfigError
from config.inference import InferenceConfig
from tests.charts.manifests import (
    CERTIFICATE_ARN,
    IMAGE,
    Manifests,
    by_kind,
    config_of,
    one,
    pod_spec,
    render,
)

SEL = 'namespace="llama",pod=~"my-llama-[a-z0-9]+-[a-z0-9]+"'


def server(manifests: Manifests) -> dict:
    (container,) = pod_spec(manifests)["containers"]
    assert container["name"] == "server"
    return container


def env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def test_default_renders_the_full_gpu_keda_service(default: Manifests) -> None:
    assert [(m["kind"], m["metadata"]["name"]) for m in default] == [
        ("Namespace", "llama"),
        ("ServiceAccount", "my-llama"),
        ("Deployment", "my-llama"),
        ("PodDisruptionBudget", "my-llama"),
        ("Service", "my-llama-svc"),
        ("NetworkPolicy", "my-llama"),
        ("ScaledObject", "my-llama"),
        ("VerticalPodAutoscaler", "my-llama"),
        ("ServiceMonitor", "my-llama"),
        ("ConfigMap", "my-llama-dashboard"),
    ]
    for m in default:
        if m["kind"] == "Namespace":
            assert "namespace" not in m["metadata"]
        elif m["kind"] == "ConfigMap":
            assert m["metadata"]["namespace"] == "monitoring"
        else:
            assert m["metadata"]["namespace"] == "llama"


def test_namespace_enforces_restricted_pod_security_and_nlb_readiness_gates(default: Manifests) -> None:
    labels = one(default, "Namespace")["metadata"]["labels"]
    assert labels == {
        **{f"pod-security.kubernetes.io/{m}": "restricted" for m in ("enforce", "audit", "warn")},
        # The LB controller's pod webhook selects namespaces by exactly this label (chart 3.5.0 default).
        "elbv2.k8s.aws/pod-readiness-gate-inject": "enabled",
    }


def test_service_account_has_no_token(default: Manifests) -> None:
    sa = one(default, "ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    assert pod_spec(default)["serviceAccountName"] == "my-llama"
    assert pod_spec(default)["automountServiceAccountToken"] is False


def test_deployment_seed_names_selector_and_rollout(default: Manifests) -> None:
    d = one(default, "Deployment")
    assert d["metadata"]["name"] == "my-llama"
    assert d["spec"]["selector"] == {"matchLabels": {"app": "my-llama"}}
    assert d["spec"]["template"]["metadata"]["labels"]["app"] == "my-llama"
    # KEDA owns the replica count: a re-apply must not reset it (nor wake a scaled-to-zero service).
    assert "replicas" not in d["spec"]
    assert d["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    assert d["spec"]["progressDeadlineSeconds"] == 1200 + 600


def test_init_container_fetches_model_into_sized_empty_dir(default: Manifests) -> None:
    spec = pod_spec(default)
    (init,) = spec["initContainers"]
    assert init["name"] == "fetch-model"
    assert init["image"] == IMAGE
    assert "command" not in init  # the image's entrypoint: tini -> python -m model_server
    assert init["args"] == ["fetch"]
    assert env(init) == {
        "MODEL_SERVER_MODEL_URI": "https://huggingface.co/TheBloke/Llama-2-7B-Chat-GGUF/resolve/main/"
        "llama-2-7b-chat.Q2_K.gguf",
        "MODEL_SERVER_MODEL_DIR": "/models",
        "MODEL_SERVER_MODEL_PATH": "/models/llama-2-7b-chat.Q2_K.gguf",
    }
    assert {"mountPath": "/models", "name": "models"} in init["volumeMounts"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    # Model size (3 GiB) + 1 GiB for the download's temp file; ephemeral request covers it all.
    assert volumes["models"] == {"name": "models", "emptyDir": {"sizeLimit": "4096Mi"}}
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {"sizeLimit": "1024Mi"}}
    assert server(default)["resources"]["requests"]["ephemeral-storage"] == "5Gi"


def test_server_container_port_env_and_resources(default: Manifests) -> None:
    c = server(default)
    assert c["image"] == IMAGE
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["args"] == ["serve"]
    assert c["ports"] == [{"containerPort": 5000, "name": "http"}]
    e = env(c)
    assert e["MODEL_SERVER_PORT"] == "5000"
    assert e["MODEL_SERVER_HOST"] == "0.0.0.0"
    assert e["MODEL_SERVER_DRAIN_TIMEOUT_S"] == "60"
    assert e["MODEL_SERVER_N_GPU_LAYERS"] == "-1"
    assert e["MODEL_SERVER_MODEL_PATH"] == "/models/llama-2-7b-chat.Q2_K.gguf"
    assert "MODEL_SERVER_API_KEY_FILE" not in e
    assert c["resources"] == {
        "requests": {"cpu": "3", "memory": "16Gi", "ephemeral-storage": "5Gi", "nvidia.com/gpu": 1},
        "limits": {"cpu": "6", "memory": "16Gi", "ephemeral-storage": "5Gi", "nvidia.com/gpu": 1},
    }


def test_probes_cover_load_and_split_liveness_from_readiness(default: Manifests) -> None:
    c = server(default)
    startup = c["startupProbe"]
    assert startup["httpGet"] == {"path": "/readyz", "port": 5000, "scheme": "HTTP"}
    # 1200 s startup budget (load + warm-up) at one probe per 10 s.
    assert startup["periodSeconds"] * startup["failureThreshold"] == 1200
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["livenessProbe"]["periodSeconds"] * c["livenessProbe"]["failureThreshold"] == 60


def target_group_attributes(manifests: Manifests) -> dict[str, str]:
    text = one(manifests, "Service")["metadata"]["annotations"][
        "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"
    ]
    return dict(pair.split("=", 1) for pair in text.split(","))


@pytest.mark.parametrize("variant", ["gpu-keda", "prod"])
def test_graceful_shutdown_fits_a_spot_interruption(rendered: dict[str, Manifests], variant: str) -> None:
    m = rendered[variant]
    grace = pod_spec(m)["terminationGracePeriodSeconds"]
    pre_stop = server(m)["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = int(env(server(m))["MODEL_SERVER_DRAIN_TIMEOUT_S"])
    assert (pre_stop, drain, grace) == (15, 60, 85)
    # The server's drain and what follows it (cancel <= 5 s, connections closed <= 5 s) end before SIGKILL ...
    assert grace >= pre_stop + drain + 10
    # ... and all of it fits in a spot interruption's 2-minute notice, less Karpenter's reaction (20 s).
    assert grace <= 120 - 20
    # The NLB keeps a deregistered pod's connections for as long as the pod may still be draining them.
    assert target_group_attributes(m)["deregistration_delay.timeout_seconds"] == str(grace)


def test_grace_period_follows_config() -> None:
    m = render(config_of({"server": {"drainTimeoutSeconds": 300}, "preStopSeconds": 20}))
    assert pod_spec(m)["terminationGracePeriodSeconds"] == 330
    assert server(m)["lifecycle"]["preStop"] == {"sleep": {"seconds": 20}}
    assert target_group_attributes(m)["deregistration_delay.timeout_seconds"] == "330"


@pytest.mark.parametrize("container", ["server", "fetch-model"])
def test_restricted_security_context(default: Manifests, container: str) -> None:
    spec = pod_spec(default)
    c = next(x for x in spec["containers"] + spec["initContainers"] if x["name"] == container)
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["securityContext"]["fsGroup"] == 10001


def test_gpu_scheduling_targets_the_karpenter_nodepool(default: Manifests) -> None:
    spec = pod_spec(default)
    assert spec["nodeSelector"] == {"karpenter.sh/nodepool": "eks-gpu-np"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_gpu_scheduling_on_the_managed_nodegroup() -> None:
    m = render(InferenceConfig(), gpu_node_selector={"llama-eks/node-class": "gpu"})
    assert pod_spec(m)["nodeSelector"] == {"llama-eks/node-class": "gpu"}


def test_cpu_node_selector() -> None:
    pool = {"karpenter.sh/nodepool": "general-purpose"}
    m = render(config_of({"accelerator": "cpu"}), cpu_node_selector=pool)
    assert pod_spec(m)["nodeSelector"] == {"karpenter.sh/nodepool": "general-purpose"}
    assert "tolerations" not in pod_spec(m)


@pytest.mark.parametrize("variant", ["gpu-keda", "prod", "cpu"])
def test_replicas_spread_over_zones_then_nodes(rendered: dict[str, Manifests], variant: str) -> None:
    zone, node = pod_spec(rendered[variant])["topologySpreadConstraints"]
    per_revision = {
        "labelSelector": {"matchLabels": {"app": "my-llama"}},
        "matchLabelKeys": ["pod-template-hash"],
    }
    # Required: a zone's outage never takes every replica; a second replica never joins the first one's
    # zone, even where kube-scheduler sees nodes in one zone only (minDomains).
    assert zone == {
        "maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule",
        "minDomains": 2,
        **per_revision,
    }
    assert node == {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        **per_revision,
    }


def test_zone_spread_can_be_a_preference() -> None:
    zone, _ = pod_spec(render(config_of({"zoneSpread": "ScheduleAnyway"})))["topologySpreadConstraints"]
    assert zone["whenUnsatisfiable"] == "ScheduleAnyway"
    assert "minDomains" not in zone  # the API server refuses minDomains without DoNotSchedule


@pytest.mark.parametrize(
    ("variant", "budget"), [("prod", {"minAvailable": 1}), ("minimal", {"minAvailable": 1})]
)
def test_pdb_keeps_one_replica_of_two_or_more(
    rendered: dict[str, Manifests], variant: str, budget: dict
) -> None:
    assert one(rendered[variant], "PodDisruptionBudget")["spec"] == {
        **budget,
        "selector": {"matchLabels": {"app": "my-llama"}},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }


@pytest.mark.parametrize("variant", ["gpu-keda", "public-scale-to-zero"])
def test_pdb_of_a_single_replica_never_blocks_a_drain(rendered: dict[str, Manifests], variant: str) -> None:
    # minAvailable 1 over one pod would refuse every eviction: node drains and upgrades would hang.
    assert one(rendered[variant], "PodDisruptionBudget")["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": {"app": "my-llama"}},
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }


def test_prod_runs_two_replicas_at_least(rendered: dict[str, Manifests]) -> None:
    spec = one(rendered["prod"], "ScaledObject")["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 5)
    # KEDA's fallback holds at least the floor while Prometheus cannot be queried.
    assert spec["fallback"]["replicas"] == 2


def test_rollout_strategy_follows_the_capacity() -> None:
    from charts.inference import Rollout

    surge = render(InferenceConfig())
    assert one(surge, "Deployment")["spec"]["strategy"]["rollingUpdate"] == {
        "maxSurge": 1,
        "maxUnavailable": 0,
    }
    in_place = render(InferenceConfig(), rollout=Rollout(max_surge=0, max_unavailable=1))
    assert one(in_place, "Deployment")["spec"]["strategy"]["rollingUpdate"] == {
        "maxSurge": 0,
        "maxUnavailable": 1,
    }
    with pytest.raises(ConfigError) as err:
        Rollout(max_surge=0, max_unavailable=0)
    assert str(err.value) == (
        "Invalid config 'inference.rollout': {'maxSurge': 0, 'maxUnavailable': 0}. "
        "Allowed: non-negative maxSurge and maxUnavailable, not both 0."
    )


def test_service_is_an_internal_nlb_80_to_5000(default: Manifests) -> None:
    svc = one(default, "Service")
    assert svc["metadata"]["labels"] == {"app": "my-llama-svc"}
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["selector"] == {"app": "my-llama"}
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 5000}]
    assert svc["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/16"]
    ann = svc["metadata"]["annotations"]
    p = "service.beta.kubernetes.io/aws-load-balancer-"
    assert ann[p + "type"] == "external"
    assert ann[p + "scheme"] == "internal"
    assert ann[p + "nlb-target-type"] == "ip"
    assert ann[p + "healthcheck-path"] == "/readyz"
    assert ann[p + "healthcheck-protocol"] == "HTTP"
    assert target_group_attributes(default)["preserve_client_ip.enabled"] == "false"
    assert not any(key.startswith(p + "ssl-") for key in ann)  # no TLS without a certificate


def test_tls_listener_on_443_with_a_tls13_policy(rendered: dict[str, Manifests]) -> None:
    m = rendered["prod-public-tls"]
    svc = one(m, "Service")
    ann = svc["metadata"]["annotations"]
    p = "service.beta.kubernetes.io/aws-load-balancer-"
    assert ann[p + "scheme"] == "internet-facing"
    assert ann[p + "ssl-cert"] == CERTIFICATE_ARN
    assert ann[p + "ssl-ports"] == "443"
    assert ann[p + "ssl-negotiation-policy"] == "ELBSecurityPolicy-TLS13-1-2-PQ-2025-09"
    # One listener, TLS: no plain-text port on an internet-facing NLB.
    assert svc["spec"]["ports"] == [{"name": "http", "port": 443, "protocol": "TCP", "targetPort": 5000}]
    assert svc["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24", "198.51.100.0/24"]
    # Internet-facing: the API key is on (its default there) and mounted.
    assert env(server(m))["MODEL_SERVER_API_KEY_FILE"] == "/var/run/secrets/model-server/api-key"
    # Prometheus still scrapes the pods by the Service port's name.
    assert one(m, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "http"


def test_internet_facing_only_with_explicit_cidrs(rendered: dict[str, Manifests]) -> None:
    svc = one(rendered["public-scale-to-zero"], "Service")
    assert svc["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-scheme"] == (
        "internet-facing"
    )
    assert svc["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    for variant, manifests in rendered.items():
        ranges = one(manifests, "Service")["spec"]["loadBalancerSourceRanges"]
        assert "0.0.0.0/0" not in ranges, variant


def test_network_policy(default: Manifests) -> None:
    np = one(default, "NetworkPolicy")["spec"]
    assert np["podSelector"] == {"matchLabels": {"app": "my-llama"}}
    assert sorted(np["policyTypes"]) == ["Egress", "Ingress"]
    assert np["ingress"] == [
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/16"}}], "ports": [{"port": 5000, "protocol": "TCP"}]},
        {
            "from": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                    "podSelector": {},
                }
            ],
            "ports": [{"port": 5000, "protocol": "TCP"}],
        },
    ]
    egress = {
        (p["protocol"], p["port"], r["to"][0]["ipBlock"]["cidr"]) for r in np["egress"] for p in r["ports"]
    }
    assert egress == {
        ("UDP", 53, "0.0.0.0/0"),
        ("TCP", 53, "0.0.0.0/0"),
        ("TCP", 443, "0.0.0.0/0"),
        ("TCP", 80, "169.254.170.23/32"),
    }


def test_scaled_object_triggers_and_pacing(default: Manifests) -> None:
    so = one(default, "ScaledObject")
    spec = so["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "my-llama"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 5)
    assert (spec["pollingInterval"], spec["cooldownPeriod"]) == (15, 300)
    triggers = {t["name"]: t for t in spec["triggers"]}
    assert set(triggers) == {"queue-depth", "in-flight", "gpu-utilization"}
    assert all(t["type"] == "prometheus" for t in triggers.values())
    assert all(
        t["metadata"]["serverAddress"] == "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
        for t in triggers.values()
    )
    q = triggers["queue-depth"]
    assert q["metadata"]["query"] == f"sum(llamacpp:requests_deferred{{{SEL}}})"
    assert (q["metadata"]["threshold"], q["metricType"]) == ("2", "AverageValue")
    f = triggers["in-flight"]
    assert f["metadata"]["query"] == f"sum(llamacpp:requests_processing{{{SEL}}})"
    assert (f["metadata"]["threshold"], f["metricType"]) == ("4", "AverageValue")
    g = triggers["gpu-utilization"]
    assert g["metadata"]["query"] == (
        'avg(DCGM_FI_DEV_GPU_UTIL{exported_namespace="llama",exported_pod=~"my-llama-[a-z0-9]+-[a-z0-9]+"})'
    )
    # Utilisation is already an average over the pods: compared as a value, not divided per replica.
    assert (g["metadata"]["threshold"], g["metricType"]) == ("70", "Value")
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior == {
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


def test_scale_to_zero(rendered: dict[str, Manifests]) -> None:
    spec = one(rendered["public-scale-to-zero"], "ScaledObject")["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 3)
    # A fallback of 0 would let KEDA read failing triggers as idle and scale the service to zero.
    assert spec["fallback"]["replicas"] == 1


def test_keda_holds_the_replicas_when_prometheus_fails(default: Manifests) -> None:
    spec = one(default, "ScaledObject")["spec"]
    assert spec["fallback"] == {"failureThreshold": 3, "replicas": 1, "behavior": "currentReplicasIfHigher"}
    # KEDA 2.20 needs one trigger that is not cpu/memory for a fallback; every trigger queries Prometheus,
    # so a Prometheus outage fails them all together and the fallback holds what runs.
    assert {t["type"] for t in spec["triggers"]} == {"prometheus"}
    # Empty answers are zeros, not failures: a service scaled to zero has no series and must stay there.
    assert all(t["metadata"]["ignoreNullValues"] == "true" for t in spec["triggers"])


def test_hpa_is_the_seed_ch6_hpa(rendered: dict[str, Manifests]) -> None:
    m = rendered["gpu-hpa"]
    assert by_kind(m, "ScaledObject") == []
    hpa = one(m, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "my-llama"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 5)
    assert spec["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
        }
    ]
    down, up = spec["behavior"]["scaleDown"], spec["behavior"]["scaleUp"]
    assert down["stabilizationWindowSeconds"] == 180
    assert down["policies"] == [{"type": "Percent", "value": 50, "periodSeconds": 15}]
    assert down.get("selectPolicy", "Max") == "Max"  # Kubernetes' default; the seed leaves it unset
    assert up == {
        "stabilizationWindowSeconds": 0,
        "policies": [{"type": "Pods", "value": 2, "periodSeconds": 15}],
        "selectPolicy": "Max",
    }
    assert "replicas" not in one(m, "Deployment")["spec"]


def test_cpu_variant(rendered: dict[str, Manifests]) -> None:
    m = rendered["cpu"]
    spec = pod_spec(m)
    assert "nodeSelector" not in spec and "tolerations" not in spec
    c = server(m)
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    assert env(c)["MODEL_SERVER_N_GPU_LAYERS"] == "0"
    assert c["resources"]["requests"]["cpu"] == "2"
    # CPU default autoscaler: the seed's HPA.
    assert by_kind(m, "HorizontalPodAutoscaler") and not by_kind(m, "ScaledObject")


def test_fixed_replicas_without_autoscaler(rendered: dict[str, Manifests]) -> None:
    m = rendered["minimal"]
    assert one(m, "Deployment")["spec"]["replicas"] == 2
    kinds = {x["kind"] for x in m}
    assert not kinds & {"HorizontalPodAutoscaler", "ScaledObject", "ServiceMonitor", "ConfigMap"}


def test_vpa_recommendation_only(rendered: dict[str, Manifests]) -> None:
    v = one(rendered["everything"], "VerticalPodAutoscaler")
    assert v["apiVersion"] == "autoscaling.k8s.io/v1"
    assert v["spec"]["targetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "my-llama"}
    assert v["spec"]["updatePolicy"] == {"updateMode": "Off"}


def test_api_key_mounted_from_secret(rendered: dict[str, Manifests]) -> None:
    m = rendered["everything"]
    c = server(m)
    assert env(c)["MODEL_SERVER_API_KEY_FILE"] == "/var/run/secrets/model-server/api-key"
    assert {"mountPath": "/var/run/secrets/model-server", "name": "api-key", "readOnly": True} in c[
        "volumeMounts"
    ]
    vol = next(v for v in pod_spec(m)["volumes"] if v["name"] == "api-key")
    assert vol["secret"]["secretName"] == "my-llama-api-key"
    # The key itself never enters the manifests (nor the CloudFormation template).
    assert by_kind(m, "Secret") == []


def test_s3_model_with_checksum(rendered: dict[str, Manifests]) -> None:
    m = rendered["everything"]
    e = env(pod_spec(m)["initContainers"][0])
    assert e["MODEL_SERVER_MODEL_URI"] == "s3://models-bucket/llama/llama-2-7b-chat.Q4_K_M.gguf"
    assert e["MODEL_SERVER_MODEL_SHA256"] == "a" * 64
    assert e["MODEL_SERVER_MODEL_PATH"] == "/models/llama-2-7b-chat.Q4_K_M.gguf"
    volumes = {v["name"]: v for v in pod_spec(m)["volumes"]}
    assert volumes["models"]["emptyDir"]["sizeLimit"] == "6144Mi"


def test_service_monitor(default: Manifests) -> None:
    sm = one(default, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["selector"] == {"matchLabels": {"app": "my-llama-svc"}}
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["llama"]}
    assert sm["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    ]
    # The endpoint names the Service's port, which targets the server's port.
    assert one(default, "Service")["spec"]["ports"][0]["name"] == "http"


def test_dashboard_configmap(default: Manifests) -> None:
    cm = one(default, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = cm["data"].values()
    dashboard = json.loads(text)
    assert dashboard["uid"] == "llama-llama-my-llama"
    titles = [p["title"] for p in dashboard["panels"]]
    assert titles == [
        "Requests per second",
        "Requests in flight / queued",
        "Time to first token",
        "Inter-token latency",
        "Output tokens per second",
        "GPU utilisation",
        "GPU memory used",
        "Replicas",
    ]
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert "@" not in text  # every placeholder substituted
    assert any("llamacpp:requests_deferred" in e and SEL in e for e in exprs)
    assert any("DCGM_FI_DEV_GPU_UTIL" in e for e in exprs)


def test_renamed_service_follows_name() -> None:
    m = render(config_of({"name": "chat", "namespace": "serving"}))
    assert one(m, "Service")["metadata"]["name"] == "chat-svc"
    assert one(m, "Service")["spec"]["selector"] == {"app": "chat"}
    assert one(m, "ScaledObject")["spec"]["triggers"][0]["metadata"]["query"] == (
        'sum(llamacpp:requests_deferred{namespace="serving",pod=~"chat-[a-z0-9]+-[a-z0-9]+"})'
    )


def test_props_are_validated_in_the_constructor() -> None:
    with pytest.raises(ConfigError) as err:
        render(InferenceConfig(), vpc_cidr="10.0.0.1/16")
    assert str(err.value) == (
        "Invalid config 'network.vpcCidr': '10.0.0.1/16'. "
        "Allowed: an IPv4 CIDR with host bits zero, such as 10.0.0.0/16."
    )
    with pytest.raises(ConfigError) as err:
        render(InferenceConfig(), gpu_node_selector={})
    assert err.value.key == "compute.gpuCapacity"
