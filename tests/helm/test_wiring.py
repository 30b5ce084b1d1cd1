"""What ties the releases to each other and to the app: read from the rendered charts and the templates.

* Pod Identity: each association's namespace/service account is a ServiceAccount a release renders, used
  by its pods, without an IRSA annotation, and the release waits for the association;
* Karpenter: the controller's settings are the cluster's name and the interruption queue;
* Prometheus: every ServiceMonitor the app applies is selected by the Prometheus the chart renders and
  selects a Service with its port; KEDA's Prometheus address is that Prometheus' Service;
* DCGM: the metric and label names the KEDA query uses are the ones the exporter's chart configures;
* every custom resource the app applies has its CRD installed by a release it waits for, and is valid
  against that CRD;
* the metrics stack: Grafana's sidecars load the dashboards and datasources the chart renders (and the
  datasources reach their Services); every ServiceMonitor a chart renders is selected and finds its
  Service and port;
* the DaemonSets GPU nodes need (device plugin, DCGM exporter, node-exporter) fit every kind of GPU node.

Checks that need objects of a subchart missing from the charts folder are skipped with the reason.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from typing import Any

import pytest
import yaml

from tests.helm.conftest import HelmVariant, skip_unproven
from tests.helpers import kube_schema
from tests.helpers.crd_schema import CrdSet, CrdValidationError
from tests.helpers.helm import manifests, node_unschedulable_reasons, placeholder, selector_matches

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
    """A CRD comes from a release (the chart's crds/ or templates) or from a manifest the app applies itself
    (the VPA add-on's vendored CRDs); in the same stack the custom resource waits for it, across stacks the
    stack dependency orders them."""
    objects = list(manifests(helm_variant.templates))
    applied_crds = [(s, i, o) for s, i, _, o in objects if o["kind"] == "CustomResourceDefinition"]
    crds = CrdSet([*(crd for r in helm_variant.releases for crd in r.crds), *(o for *_, o in applied_crds)])
    # (apiVersion, kind) -> (stack, logical id, what installs it)
    owner: dict[tuple[str, str], tuple[str, str, str]] = {}
    installed_by = [
        (crd, (r.release.stack, r.release.logical_id, str(r.release)))
        for r in helm_variant.releases
        for crd in r.crds
    ]
    installed_by += [(crd, (s, i, f"manifest {s}/{i}")) for s, i, crd in applied_crds]
    for crd, installer in installed_by:
        for version in crd["spec"]["versions"]:
            owner[(f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])] = installer
    problems, count = [], 0
    for stack, logical_id, ancestors, obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        if kube_schema.is_builtin(*key, helm_variant.kube_version):
            continue
        count += 1
        if key not in owner:
            problems.append(f"{stack}/{logical_id} {obj['kind']}: nothing installs its CRD")
            continue
        owner_stack, owner_id, what = owner[key]
        if stack == owner_stack and owner_id not in ancestors:
            problems.append(f"{stack}/{logical_id} {obj['kind']}: does not wait for {what}")
        try:
            crds.validate(obj)
        except CrdValidationError as err:
            problems.append(f"{stack}/{logical_id}: {err}")
    assert count >= 2
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- the metrics stack and its subcharts
#
# kube-prometheus-stack renders Grafana, kube-state-metrics and node-exporter through subcharts: where
# the charts folder lacks one, what needs its objects is skipped with the reason (skip_unproven).


def service_at(v: HelmVariant, url: str, default_namespace: str) -> list[dict[str, Any]]:
    """The Services an in-cluster URL (``http://<name>[.<namespace>[.svc...]]:<port>/``) reaches."""
    parts = urllib.parse.urlsplit(url)
    name, *rest = parts.hostname.split(".")
    namespace = rest[0] if rest else default_namespace
    port = parts.port or {"http": 80, "https": 443}[parts.scheme]
    return [
        svc
        for ns, svc in services(v)
        if ns == namespace
        and svc["metadata"]["name"] == name
        and port in {p["port"] for p in svc["spec"]["ports"]}
    ]


def sidecar_loads(env: dict[str, str], own_namespace: str, rendered, document) -> bool:
    """Whether a kiwigrid k8s-sidecar (Grafana's dashboard/datasource loader) with ``env`` picks up an
    object: kind per RESOURCE, namespace per NAMESPACE (``ALL``, a list, or its own), label LABEL with
    LABEL_VALUE (any value when unset)."""
    obj = document.obj
    kinds = {"configmap": {"ConfigMap"}, "secret": {"Secret"}, "both": {"ConfigMap", "Secret"}}
    if obj["kind"] not in kinds[env.get("RESOURCE", "configmap")]:
        return False
    namespaces = env.get("NAMESPACE", own_namespace)
    if namespaces != "ALL" and namespace_of(obj, rendered.release.namespace) not in namespaces.split(","):
        return False
    labels = obj["metadata"].get("labels") or {}
    return env["LABEL"] in labels and env.get("LABEL_VALUE") in (None, labels[env["LABEL"]])


#: Variants that install Grafana (metrics.grafana on with the kubePrometheusStack backend).
GRAFANA_VARIANTS = ["default", "prod"]


@pytest.mark.parametrize("name", GRAFANA_VARIANTS)
def test_grafana_loads_the_dashboards_and_datasources_the_stack_renders(helm_variants, name: str):
    v = helm_variants(name)
    kps = v.release("kube-prometheus-stack")
    assert kps.release.values["grafana"]["enabled"] is True, f"{name} no longer installs Grafana"
    skip_unproven(
        [m for m in kps.incomplete if m.name == "grafana"],
        f"[{name}] Grafana (its Deployment, sidecars) and the dashboards it would load are not rendered",
    )
    (grafana,) = [
        o
        for o in kps.objects
        if o["kind"] == "Deployment"
        and o["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == "grafana"
    ]
    own_namespace = namespace_of(grafana, kps.release.namespace)
    sidecars = {c["name"]: env_of(c) for c in grafana["spec"]["template"]["spec"]["containers"]}
    stack = [d for d in kps.documents if d.obj["kind"] == "ConfigMap" and "/templates/grafana/" in d.source]
    dashboards = [d for d in stack if "/dashboards" in d.source]
    datasources = [d for d in stack if "datasources" in d.source]
    assert len(dashboards) > 10 and datasources, [d.source for d in stack]
    for sidecar, wanted in (("grafana-sc-dashboard", dashboards), ("grafana-sc-datasources", datasources)):
        env = sidecars[sidecar]
        unloaded = [
            d.obj["metadata"]["name"] for d in wanted if not sidecar_loads(env, own_namespace, kps, d)
        ]
        assert not unloaded, (
            f"{sidecar} (LABEL={env.get('LABEL')}={env.get('LABEL_VALUE')}) misses {unloaded}"
        )
    sources = [
        source
        for d in datasources
        for text in d.obj["data"].values()
        for source in yaml.safe_load(text).get("datasources") or []
    ]
    assert {s["type"] for s in sources} >= {"prometheus"}
    for source in sources:
        reached = service_at(v, source["url"], own_namespace)
        assert len(reached) == 1, f"datasource {source['name']}: no Service at {source['url']}"
        if source["type"] == "prometheus":
            assert reached[0]["spec"]["selector"].get("app.kubernetes.io/name") == "prometheus"


def cluster_services(v: HelmVariant) -> list[tuple[str, dict[str, Any]]]:
    """Services ServiceMonitors select that no release renders: the API server's ``default/kubernetes``
    and the kubelet Service prometheus-operator maintains (its ``--kubelet-service`` argument)."""
    out = [
        (
            "default",
            {
                "metadata": {
                    "name": "kubernetes",
                    "labels": {"component": "apiserver", "provider": "kubernetes"},
                },
                "spec": {"ports": [{"name": "https", "port": 443}]},
            },
        )
    ]
    for _, obj in v.objects:
        for container in (pod_spec(obj) or {}).get("containers", []):
            for arg in container.get("args") or []:
                if arg.startswith("--kubelet-service="):
                    namespace, name = arg.split("=", 1)[1].split("/")
                    labels = {"app.kubernetes.io/name": "kubelet", "k8s-app": "kubelet"}
                    ports = [("https-metrics", 10250), ("http-metrics", 10255), ("cadvisor", 4194)]
                    out.append(
                        (
                            namespace,
                            {
                                "metadata": {"name": name, "labels": labels},
                                "spec": {"ports": [{"name": n, "port": p} for n, p in ports]},
                            },
                        )
                    )
    return out


def test_every_service_monitor_the_releases_render_is_scraped(helm_variant: HelmVariant):
    """Each ServiceMonitor a chart renders is selected by the Prometheus and selects one Service that has
    its endpoints' ports (the stack's exporters, the operator, the control plane services)."""
    kps = helm_variant.release("kube-prometheus-stack")
    (prometheus,) = [o for o in kps.objects if o["kind"] == "Prometheus"]
    spec = prometheus["spec"]
    candidates = services(helm_variant) + cluster_services(helm_variant)
    monitors = [(r, o) for r, o in helm_variant.objects if o["kind"] == "ServiceMonitor"]
    # Without the subcharts: alertmanager, coredns, apiserver, kubelet, operator, prometheus (EKS's control
    # plane and kube-proxy are not monitored: test_nothing_eks_runs_for_us_is_monitored_or_alerted_on).
    assert len(monitors) >= 6, [o["metadata"]["name"] for _, o in monitors]
    problems = []
    for rendered, monitor in monitors:
        name, namespace = monitor["metadata"]["name"], namespace_of(monitor, rendered.release.namespace)
        if not selector_matches(spec.get("serviceMonitorSelector"), monitor["metadata"].get("labels") or {}):
            problems.append(f"{name}: not selected by {spec.get('serviceMonitorSelector')}")
        if not selector_matches(
            spec.get("serviceMonitorNamespaceSelector"), namespace_labels(helm_variant, namespace)
        ):
            problems.append(f"{name}: namespace {namespace} not selected")
        within = (monitor["spec"].get("namespaceSelector") or {}).get("matchNames") or [namespace]
        matched = [
            svc
            for ns, svc in candidates
            if ns in within
            and selector_matches(monitor["spec"]["selector"], svc["metadata"].get("labels") or {})
        ]
        if len(matched) != 1:
            problems.append(f"{name}: selects {len(matched)} Services in {within}")
            continue
        ports = {p.get("name") for p in matched[0]["spec"]["ports"]}
        problems += [
            f"{name}: no port {e['port']} on Service {matched[0]['metadata']['name']}"
            for e in monitor["spec"]["endpoints"]
            if e.get("port") not in ports
        ]
    assert not problems, f"[{helm_variant.name}]\n" + "\n".join(problems)
    skip_unproven(
        {m: ["its ServiceMonitors and Services"] for m in kps.incomplete},
        f"[{helm_variant.name}] the {len(monitors)} rendered ServiceMonitors are scraped; those of missing "
        "subcharts are not rendered",
    )


#: What EKS runs for us (no scrape target) or binds to 127.0.0.1 (kube-proxy), and the absent() alerts that
#: would fire forever for them.
EKS_UNSCRAPABLE = ("kube-controller-manager", "kube-scheduler", "kube-etcd", "kube-proxy")
ABSENT_ALERTS = {"KubeControllerManagerDown", "KubeSchedulerDown", "KubeProxyDown", "etcdMembersDown"}


def test_nothing_eks_runs_for_us_is_monitored_or_alerted_on(helm_variant: HelmVariant):
    kps = helm_variant.release("kube-prometheus-stack")
    names = [o["metadata"]["name"] for o in kps.objects]
    assert not [n for n in names if n.endswith(tuple(f"-{c}" for c in EKS_UNSCRAPABLE))], names
    rules = [o for o in kps.objects if o["kind"] == "PrometheusRule"]
    alerts = {r["alert"] for o in rules for g in o["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert len(alerts) > 50  # the chart's other default alerts are all there
    assert not alerts & ABSENT_ALERTS
    assert not [a for a in alerts if a.startswith("etcd")]
    # What EKS does expose stays monitored.
    assert {"KubeAPIDown", "KubeletDown"} <= alerts


def test_prometheus_keeps_its_data_on_the_encrypted_gp3_volume(helm_variant: HelmVariant):
    kps = helm_variant.release("kube-prometheus-stack")
    (prometheus,) = [o for o in kps.objects if o["kind"] == "Prometheus"]
    spec = prometheus["spec"]
    claim = spec["storage"]["volumeClaimTemplate"]["spec"]
    app_classes = [o for *_, o in app_objects(helm_variant, "StorageClass")]
    assert [c["metadata"]["name"] for c in app_classes] == [claim["storageClassName"]]
    (storage_class,) = app_classes
    assert (
        storage_class["provisioner"] == "ebs.csi.aws.com"
        and storage_class["parameters"]["encrypted"] == "true"
    )
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"
    assert spec["resources"]["requests"]["memory"] == spec["resources"]["limits"]["memory"]
    (alertmanager,) = [o for o in kps.objects if o["kind"] == "Alertmanager"]
    assert alertmanager["spec"]["resources"]["requests"]


def test_grafanas_admin_password_is_generated(helm_variant: HelmVariant):
    """No password in the values or the chart: the Grafana chart generates one into its Secret, which the
    Deployment reads (two renders differ: it is random, not a default)."""
    kps = helm_variant.release("kube-prometheus-stack")
    if not kps.release.values["grafana"]["enabled"]:
        assert not [o for o in kps.objects if "grafana" in o["metadata"]["name"] and o["kind"] == "Secret"]
        return  # AMP: no Grafana, no password
    missing = [m for m in kps.incomplete if m.name == "grafana"]
    skip_unproven(missing, f"[{helm_variant.name}] Grafana's admin Secret is not rendered")
    (secret,) = [
        o
        for o in kps.objects
        if o["kind"] == "Secret" and o["metadata"]["name"] == "kube-prometheus-stack-grafana"
    ]
    password = base64.b64decode(secret["data"]["admin-password"]).decode()
    assert len(password) == 40 and password.isalnum() and password != "prom-operator"
    (grafana,) = [
        o for o in kps.objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("grafana")
    ]
    env = {e["name"]: e for c in grafana["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
    assert env["GF_SECURITY_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "kube-prometheus-stack-grafana",
        "key": "admin-password",
    }


# ---------------------------------------------------------------- DaemonSets that must run on GPU nodes


def gpu_nodes(v: HelmVariant) -> list[tuple[str, dict[str, str], list[dict[str, str]]]]:
    """(what, labels, taints) of each kind of GPU node the app creates: Karpenter NodePools and managed
    nodegroups labelled ``llama-eks/node-class=gpu`` (labels a node gets from single-valued ``In``
    requirements, or ``kubernetes.io/os``/``arch`` of the nodegroup's AMI type, included)."""
    out = []
    for *_, pool in app_objects(v, "NodePool"):
        template = pool["spec"]["template"]
        labels = dict(template.get("metadata", {}).get("labels") or {})
        for req in template["spec"].get("requirements") or []:
            if req["operator"] == "In" and len(req.get("values") or []) == 1:
                labels[req["key"]] = req["values"][0]
        out.append((f"NodePool {pool['metadata']['name']}", labels, template["spec"].get("taints") or []))
    effects = {
        "NO_SCHEDULE": "NoSchedule",
        "NO_EXECUTE": "NoExecute",
        "PREFER_NO_SCHEDULE": "PreferNoSchedule",
    }
    for _, logical_id, nodegroup in resources(v.templates, "AWS::EKS::Nodegroup"):
        props = nodegroup["Properties"]
        labels = {
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "arm64" if "ARM" in props.get("AmiType", "") else "amd64",
            **(props.get("Labels") or {}),
        }
        taints = [
            {"key": t["Key"], "value": t.get("Value", ""), "effect": effects[t["Effect"]]}
            for t in props.get("Taints") or []
        ]
        out.append((f"nodegroup {logical_id}", labels, taints))
    return [node for node in out if node[1].get("llama-eks/node-class") == "gpu"]


#: DaemonSets the GPU nodes need: the template (Source) each is rendered from.
GPU_DAEMONSETS = {
    "nvidia-device-plugin": "nvidia-device-plugin/templates/daemonset-device-plugin.yml",
    "dcgm-exporter": "dcgm-exporter/templates/daemonset.yaml",
    # node metrics of every node, GPU nodes included (the app sets node-exporter's tolerations for it)
    "kube-prometheus-stack": "kube-prometheus-stack/charts/prometheus-node-exporter/templates/daemonset.yaml",
}


@pytest.mark.parametrize("release", GPU_DAEMONSETS)
def test_gpu_daemonsets_schedule_on_every_kind_of_gpu_node(helm_variant: HelmVariant, release: str):
    source = GPU_DAEMONSETS[release]
    rendered = helm_variant.release(release)
    subchart = source.split("/charts/")[1].split("/")[0] if "/charts/" in source else None
    skip_unproven(
        [m for m in rendered.incomplete if m.name == subchart],
        f"[{helm_variant.name}] the DaemonSet of {source} is not rendered",
    )
    (daemonset,) = [d.obj for d in rendered.documents if d.source == source and d.obj["kind"] == "DaemonSet"]
    nodes = gpu_nodes(helm_variant)
    assert nodes, "no GPU NodePool or nodegroup in the templates"
    pod = daemonset["spec"]["template"]["spec"]
    problems = {what: node_unschedulable_reasons(pod, labels, taints) for what, labels, taints in nodes}
    assert not any(problems.values()), f"{daemonset['metadata']['name']} cannot run on: {problems}"
