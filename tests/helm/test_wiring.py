"""What ties the releases to each other and to the app: read from the rendered charts and the templates.

* Pod Identity: each association's namespace/service account is a ServiceAccount a release renders, used
  by its pods, without an IRSA annotation, and the release waits for the association;
* Karpenter: the controller's settings are the cluster's name and the interruption queue;
* Prometheus: every ServiceMonitor the app applies is selected by the Prometheus the chart renders and
  selects a Service with its port; KEDA's Prometheus address is that Prometheus' Service;
* DCGM: the metric and label names the KEDA query uses are the ones the exporter's chart configures;
* every custom resource the app applies has its CRD installed by a release it waits for, and is valid
  against that CRD.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

import pytest

from tests.helm.conftest import HelmVariant
from tests.helpers import kube_schema
from tests.helpers.crd_schema import CrdValidationError
from tests.helpers.helm import manifests, placeholder, selector_matches

WORKLOAD_KINDS = {"Deployment", "DaemonSet", "StatefulSet", "Job"}


def resources(templates: dict[str, Any], type_: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (stack, logical_id, res)
        for stack, template in templates.items()
        for logical_id, res in template.get("Resources", {}).items()
        if res["Type"] == type_
    ]


def cluster_name(templates: dict[str, Any]) -> str:
    ((_, _, cluster),) = resources(templates, "AWS::EKS::Cluster")
    return cluster["Properties"]["Name"]


def namespace_of(obj: dict[str, Any], default: str) -> str:
    return obj.get("metadata", {}).get("namespace") or default


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj.get("kind") in WORKLOAD_KINDS:
        return obj["spec"]["template"]["spec"]
    return None


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


# ---------------------------------------------------------------- Pod Identity


def test_pod_identity_associations_match_the_service_accounts_releases_render(helm_variant: HelmVariant):
    associations = resources(helm_variant.templates, "AWS::EKS::PodIdentityAssociation")
    assert associations, "no Pod Identity association in the templates"
    for _, association_id, association in associations:
        namespace = association["Properties"]["Namespace"]
        account = association["Properties"]["ServiceAccount"]
        owners = [
            (r, obj)
            for r, obj in helm_variant.objects
            if obj["kind"] == "ServiceAccount"
            and obj["metadata"]["name"] == account
            and namespace_of(obj, r.release.namespace) == namespace
        ]
        assert len(owners) == 1, (
            f"{namespace}/{account} ({association_id}): rendered by {len(owners)} releases"
        )
        ((rendered, service_account),) = owners
        annotations = service_account["metadata"].get("annotations") or {}
        assert "eks.amazonaws.com/role-arn" not in annotations, f"{namespace}/{account} carries an IRSA role"
        users = [
            obj["metadata"]["name"]
            for obj in rendered.objects
            if namespace_of(obj, rendered.release.namespace) == namespace
            and (
                (pod_spec(obj) or {}).get("serviceAccountName") == account
                # prometheus-operator's Prometheus runs its pods as spec.serviceAccountName
                or (obj["kind"] == "Prometheus" and obj["spec"].get("serviceAccountName") == account)
            )
        ]
        assert users, f"no pod of {rendered.release} runs as {namespace}/{account}"
        assert association_id in rendered.release.ancestors, (
            f"{rendered.release} does not wait for the Pod Identity association {association_id}: "
            "its pods could start without AWS credentials"
        )


def test_each_variant_has_the_expected_pod_identities(helm_variant: HelmVariant):
    found = {
        (a["Properties"]["Namespace"], a["Properties"]["ServiceAccount"])
        for _, _, a in resources(helm_variant.templates, "AWS::EKS::PodIdentityAssociation")
    }
    expected = {("kube-system", "aws-load-balancer-controller")}
    if "karpenter" in helm_variant.rendered:
        expected.add((helm_variant.release("karpenter").release.namespace, "karpenter"))
    if helm_variant.name == "amp-nodegroup":
        expected.add(("monitoring", "prometheus"))
    assert found == expected


# ---------------------------------------------------------------- Karpenter and the load balancer controller


@pytest.mark.parametrize("name", ["default", "prod"])
def test_karpenter_settings_are_the_cluster_and_its_interruption_queue(helm_variants, name: str):
    v = helm_variants(name)
    karpenter = v.release("karpenter")
    # The interruption queue: the one queue EventBridge rules deliver to.
    queues = {logical_id for _, logical_id, _ in resources(v.templates, "AWS::SQS::Queue")}
    targets = {
        t["Arn"]["Fn::GetAtt"][0]
        for _, _, rule in resources(v.templates, "AWS::Events::Rule")
        for t in rule["Properties"].get("Targets", [])
        if t["Arn"].get("Fn::GetAtt", [None])[0] in queues
    }
    assert len(targets) == 1, targets
    (queue_id,) = targets
    (deployment,) = [o for o in karpenter.objects if o["kind"] == "Deployment"]
    (controller,) = deployment["spec"]["template"]["spec"]["containers"]
    env = env_of(controller)
    assert env["CLUSTER_NAME"] == cluster_name(v.templates)
    assert env["INTERRUPTION_QUEUE"] == placeholder({"Fn::GetAtt": [queue_id, "QueueName"]})


def test_load_balancer_controller_flags_are_the_cluster_and_region(helm_variant: HelmVariant):
    lbc = helm_variant.release("aws-load-balancer-controller")
    (deployment,) = [o for o in lbc.objects if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"] if "=" in a)
    assert args["cluster-name"] == cluster_name(helm_variant.templates)
    assert args["aws-region"] == "us-west-2"


# ---------------------------------------------------------------- Prometheus, ServiceMonitors, KEDA


def app_objects(v: HelmVariant, kind: str | None = None) -> list[tuple[str, str, frozenset[str], dict]]:
    return [m for m in manifests(v.templates) if kind is None or m[3]["kind"] == kind]


def namespace_labels(v: HelmVariant, namespace: str) -> dict[str, str]:
    """Labels of a namespace: the API server's ``kubernetes.io/metadata.name`` plus the app's own."""
    labels = {"kubernetes.io/metadata.name": namespace}
    for *_, obj in app_objects(v, "Namespace"):
        if obj["metadata"]["name"] == namespace:
            labels |= obj["metadata"].get("labels") or {}
    return labels


def services(v: HelmVariant) -> list[tuple[str, dict[str, Any]]]:
    """(namespace, Service) of every Service the releases and the app create."""
    out = [(namespace_of(o, r.release.namespace), o) for r, o in v.objects if o["kind"] == "Service"]
    out += [(namespace_of(o, "default"), o) for *_, o in app_objects(v, "Service")]
    return out


def test_prometheus_selects_every_service_monitor_of_the_app(helm_variant: HelmVariant):
    kps = helm_variant.release("kube-prometheus-stack")
    (prometheus,) = [o for o in kps.objects if o["kind"] == "Prometheus"]
    spec = prometheus["spec"]
    monitors = app_objects(helm_variant, "ServiceMonitor")
    assert {m[3]["metadata"]["name"] for m in monitors} == {"dcgm-exporter", "my-llama"}
    for *_, monitor in monitors:
        name, namespace = monitor["metadata"]["name"], monitor["metadata"]["namespace"]
        assert selector_matches(
            spec.get("serviceMonitorSelector"), monitor["metadata"].get("labels") or {}
        ), f"ServiceMonitor {namespace}/{name} is not selected by {spec.get('serviceMonitorSelector')}"
        assert selector_matches(
            spec.get("serviceMonitorNamespaceSelector"), namespace_labels(helm_variant, namespace)
        ), f"namespace {namespace} is not selected by {spec.get('serviceMonitorNamespaceSelector')}"


def test_every_service_monitor_of_the_app_selects_a_service_with_its_port(helm_variant: HelmVariant):
    for *_, monitor in app_objects(helm_variant, "ServiceMonitor"):
        spec = monitor["spec"]
        namespaces = (spec.get("namespaceSelector") or {}).get("matchNames") or [
            monitor["metadata"]["namespace"]
        ]
        matched = [
            svc
            for ns, svc in services(helm_variant)
            if ns in namespaces and selector_matches(spec["selector"], svc["metadata"].get("labels") or {})
        ]
        assert len(matched) == 1, (
            f"ServiceMonitor {monitor['metadata']['name']} selects {len(matched)} Services"
        )
        ports = {p.get("name") for p in matched[0]["spec"]["ports"]}
        for endpoint in spec["endpoints"]:
            assert endpoint["port"] in ports, (
                f"{monitor['metadata']['name']}: no port {endpoint['port']} in {ports}"
            )


def scaled_object_triggers(v: HelmVariant) -> list[dict[str, Any]]:
    (scaled,) = [o for *_, o in app_objects(v, "ScaledObject")]
    return [t for t in scaled["spec"]["triggers"] if t["type"] == "prometheus"]


#: Variants whose inference autoscaling is KEDA (with AMP the default mode is the HPA: no ScaledObject).
KEDA_VARIANTS = ["default", "prod"]


@pytest.mark.parametrize("name", KEDA_VARIANTS)
def test_keda_queries_the_prometheus_service_the_chart_renders(helm_variants, name: str):
    helm_variant = helm_variants(name)
    for trigger in scaled_object_triggers(helm_variant):
        url = urllib.parse.urlsplit(trigger["metadata"]["serverAddress"])
        name, namespace, *_ = url.hostname.split(".")
        matches = [
            svc
            for ns, svc in services(helm_variant)
            if ns == namespace
            and svc["metadata"]["name"] == name
            and url.port in {p["port"] for p in svc["spec"]["ports"]}
        ]
        assert len(matches) == 1, f"{trigger['name']}: no Service {namespace}/{name} with port {url.port}"
        assert matches[0]["spec"]["selector"].get("app.kubernetes.io/name") == "prometheus"


# ---------------------------------------------------------------- DCGM metric and label names

#: Labels dcgm-exporter puts on every metric (GPU identity) and, in Kubernetes mode
#: (DCGM_EXPORTER_KUBERNETES=true), the pod using the GPU (dcgm-exporter README, "Kubernetes").
DCGM_GPU_LABELS = {"gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"}
DCGM_POD_LABELS = {"namespace", "pod", "container"}
#: Target labels Prometheus sets for a ServiceMonitor endpoint: exporter labels of the same name are
#: renamed to exported_<name> unless the endpoint honors labels.
TARGET_LABELS = {"namespace", "pod", "container", "service", "endpoint", "job", "instance"}

_METRIC = re.compile(r"\b(DCGM_[A-Z0-9_]+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def dcgm_counters(v: HelmVariant) -> set[str]:
    """Metrics the exporter collects: the CSV its ``-f`` argument names, from the ConfigMap mounted there."""
    dcgm = v.release("dcgm-exporter")
    (daemonset,) = [o for o in dcgm.objects if o["kind"] == "DaemonSet"]
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    path = args[args.index("-f") + 1]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == path]
    (volume,) = [vol for vol in pod["volumes"] if vol["name"] == mount["name"]]
    (item,) = [i for i in volume["configMap"]["items"] if i["path"] == mount["subPath"]]
    (configmap,) = [
        o
        for o in dcgm.objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == volume["configMap"]["name"]
    ]
    lines = configmap["data"][item["key"]].splitlines()
    return {
        line.split(",")[0].strip() for line in lines if line.strip() and not line.lstrip().startswith("#")
    }


def dcgm_scraped_labels(v: HelmVariant) -> set[str]:
    dcgm = v.release("dcgm-exporter")
    (daemonset,) = [o for o in dcgm.objects if o["kind"] == "DaemonSet"]
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    exporter = set(DCGM_GPU_LABELS)
    if env_of(container).get("DCGM_EXPORTER_KUBERNETES") == "true":
        exporter |= DCGM_POD_LABELS
    (monitor,) = [o for *_, o in app_objects(v, "ServiceMonitor") if o["metadata"]["name"] == "dcgm-exporter"]
    honor = any(e.get("honorLabels") for e in monitor["spec"]["endpoints"])
    return {label if honor or label not in TARGET_LABELS else f"exported_{label}" for label in exporter}


@pytest.mark.parametrize("name", KEDA_VARIANTS)
def test_keda_dcgm_query_uses_metric_and_label_names_the_exporter_provides(helm_variants, name: str):
    helm_variant = helm_variants(name)
    used = [m for t in scaled_object_triggers(helm_variant) for m in _METRIC.finditer(t["metadata"]["query"])]
    assert used, "no DCGM metric in the KEDA triggers"
    counters, labels = dcgm_counters(helm_variant), dcgm_scraped_labels(helm_variant)
    assert "DCGM_FI_DEV_GPU_UTIL" in counters
    for match in used:
        assert match[1] in counters, f"{match[1]} is not among the exporter's counters"
        names = set(_MATCHER.findall(match[2]))
        assert names <= labels, f"{match[0]}: labels {sorted(names - labels)} are not on scraped DCGM metrics"
        assert {"exported_namespace", "exported_pod"} <= names, match[0]


# ---------------------------------------------------------------- the app's custom resources


def test_app_custom_resources_have_their_crd_installed_before_them(helm_variant: HelmVariant):
    crds = helm_variant.crd_set
    owner: dict[tuple[str, str], str] = {}
    for r in helm_variant.releases:
        for crd in r.crds:
            for version in crd["spec"]["versions"]:
                owner[(f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])] = r.release
    problems, count = [], 0
    for stack, logical_id, ancestors, obj in manifests(helm_variant.templates):
        key = (obj["apiVersion"], obj["kind"])
        if kube_schema.is_builtin(*key, helm_variant.kube_version):
            continue
        count += 1
        if key not in owner:
            problems.append(f"{stack}/{logical_id} {obj['kind']}: no release installs its CRD")
            continue
        release = owner[key]
        if stack == release.stack and release.logical_id not in ancestors:
            problems.append(f"{stack}/{logical_id} {obj['kind']}: does not wait for {release}")
        try:
            crds.validate(obj)
        except CrdValidationError as err:
            problems.append(f"{stack}/{logical_id}: {err}")
    assert count >= 2
    assert not problems, "\n".join(problems)
