"""Every Helm release of every configuration variant, rendered from its real upstream chart.

For each ``Custom::AWSCDK-EKS-HelmChart`` in the synthesized templates: the chart at the pinned version
is in ../shared/charts; ``helm lint`` and ``helm template`` pass with exactly the values CloudFormation
carries (intrinsics as placeholders, tests/helpers/helm.py), ``--kube-version`` of the cluster and
``--api-versions`` of the CRDs installed before; every rendered object is valid (kubernetes-validate,
strict, at the cluster's version; custom resources against the CRDs the charts install); every values
key the app sets changes the output. A chart whose subcharts are missing from the charts folder renders
without them; keys only they could read are skipped with the reason (tests/helm/conftest.py).
"""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest

from tests.helm.conftest import HelmVariant, RenderedRelease, skip_unproven
from tests.helpers import kube_schema
from tests.helpers.crd_schema import CrdValidationError, served_schemas
from tests.helpers.helm import HelmError, MissingDependency, UnreadKey, merged, owners

ALL_RELEASES = {
    "karpenter-crd",
    "karpenter",
    "aws-load-balancer-controller",
    "kube-prometheus-stack",
    "nvidia-device-plugin",
    "dcgm-exporter",
    "keda",
}
#: The releases each variant installs (a variant that silently drops one fails here).
EXPECTED_RELEASES = {
    "default": ALL_RELEASES,
    "prod": ALL_RELEASES,
    "amp-nodegroup": ALL_RELEASES - {"karpenter-crd", "karpenter"},
}


def test_every_release_renders_from_its_pinned_chart(helm_variant: HelmVariant) -> None:
    # (a release that does not render fails every test of its variant, in the fixture, with the reason)
    assert helm_variant.errors == {}
    assert set(helm_variant.rendered) == EXPECTED_RELEASES[helm_variant.name]
    for rendered in helm_variant.releases:
        assert rendered.objects, f"{rendered.release} rendered nothing"


def test_helm_lint_passes_with_the_release_values(helm_variant: HelmVariant) -> None:
    requests = [r.request for r in helm_variant.releases]
    results = helm_variant.helm.lint_many(requests)
    failures = [
        f"{r.release}: {out}"
        for r, out in zip(helm_variant.releases, results, strict=True)
        if isinstance(out, HelmError)
    ]
    assert not failures, f"[{helm_variant.name}] helm lint:\n" + "\n".join(failures)
    assert all("0 chart(s) failed" in out for out in results)


def test_api_versions_are_those_of_crds_installed_before(helm_variants) -> None:
    default = helm_variants("default")
    api = {r.release.name: set(r.request.api_versions) for r in default.releases}
    assert api["karpenter-crd"] == set()
    # karpenter-crd is an ancestor of karpenter; kube-prometheus-stack installs its own crds/ first.
    assert {"karpenter.sh/v1", "karpenter.sh/v1/NodePool", "karpenter.k8s.aws/v1"} <= api["karpenter"]
    assert "monitoring.coreos.com/v1/ServiceMonitor" in api["kube-prometheus-stack"]
    assert {"monitoring.coreos.com/v1", "karpenter.sh/v1"} <= api["dcgm-exporter"]
    # KEDA's CRDs are templates of its own chart: only later releases could see them.
    assert not any(a.startswith("keda.sh/") for a in api["keda"])


# ---------------------------------------------------------------- every rendered object is valid

_VALID: dict[tuple[str, str], str | None] = {}


def _validate_builtin(obj: dict, version: str) -> str | None:
    key = (json.dumps(obj, sort_keys=True), version)
    if key not in _VALID:
        try:
            kube_schema.validate(obj, version)
            _VALID[key] = None
        except kubernetes_validate.SchemaNotFoundError:
            _VALID[key] = "no schema: neither a built-in kind of this Kubernetes version nor a CRD installed"
        except kubernetes_validate.ValidationError as err:
            path = "/".join(str(p) for p in err.caught.absolute_path)
            _VALID[key] = f"{path}: {err.caught.message[:300]}"
    return _VALID[key]


def test_every_rendered_object_is_schema_valid(helm_variant: HelmVariant) -> None:
    crds = helm_variant.crd_set
    problems, counted = [], {"builtin": 0, "custom": 0}
    for rendered, obj in helm_variant.objects:
        ident = f"{rendered.release.name}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        if (obj.get("apiVersion"), obj.get("kind")) in crds:
            counted["custom"] += 1
            try:
                crds.validate(obj)
            except CrdValidationError as err:
                problems.append(f"{ident}: {err}")
        else:
            counted["builtin"] += 1
            error = _validate_builtin(obj, helm_variant.kube_version)
            if error:
                problems.append(f"{ident} ({obj.get('apiVersion')}): {error}")
    assert not problems, f"[{helm_variant.name}] invalid rendered objects:\n" + "\n".join(problems)
    assert counted["builtin"] > 50 and counted["custom"] > 10, counted


def _differences(a: object, b: object, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d for k in sorted(a.keys() | b.keys()) for d in _differences(a.get(k), b.get(k), f"{path}.{k}")
        ]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: {a!r} -> {b!r}"]


#: Where the CRDs the charts install differ from ../shared/crds (the upstream projects' own CRD files).
#: keda 2.20.2's chart bounds the HPA stabilization windows its config/crd/bases file leaves open; the
#: app's custom resources are validated against the installed CRDs too (test_wiring.py).
KNOWN_DIFFERENCES = {
    ("keda.sh/v1alpha1", "ScaledObject"): [
        f".properties.spec.properties.advanced.properties.horizontalPodAutoscalerConfig.properties.behavior"
        f".properties.{direction}.properties.stabilizationWindowSeconds.{bound}: None -> {value}"
        for direction in ("scaleDown", "scaleUp")
        for bound, value in (("maximum", 3600), ("minimum", 0))
    ]
}


def test_the_crds_charts_install_are_the_shared_crds(helm_variants) -> None:
    """The app's custom resources are validated against ../shared/crds elsewhere (tests/charts,
    tests/stacks/addons): those must be what the pinned charts install, apart from
    :data:`KNOWN_DIFFERENCES`."""
    installed = helm_variants("default").crd_set.schemas
    shared = served_schemas()
    differ = {
        key: _differences(schema, installed[key])
        for key, schema in shared.items()
        if key in installed and installed[key] != schema
    }
    assert differ == KNOWN_DIFFERENCES
    # VPA is not an add-on of this app: its CRD in ../shared/crds comes from the VPA project itself.
    assert {k for _, k in set(shared) - set(installed)} == {
        "VerticalPodAutoscaler",
        "VerticalPodAutoscalerCheckpoint",
    }


# ---------------------------------------------------------------- every values key is read


def unread_report(variant: str, rendered: RenderedRelease, keys: list[UnreadKey]) -> str:
    return "\n".join(
        f"[{variant}] {rendered.release}: values key '{key}' changes nothing in the rendered chart "
        "(misspelt, moved, or not read by this chart version with these values)"
        for key in keys
    )


def check_values_keys(variant: HelmVariant, rendered: RenderedRelease, values: Any | None = None) -> None:
    """Fail naming every values key that changes nothing; then skip (with the missing subcharts' reasons)
    if keys that only a missing subchart could read (:func:`owners`) were left unproven."""
    unread = variant.unread_keys(rendered, values)
    unproven = {key: owners(key.path, rendered.incomplete) for key in unread}
    keys = [key for key in unread if not unproven[key]]
    assert not keys, unread_report(variant.name, rendered, keys)
    by_subchart: dict[MissingDependency, list[str]] = {}
    for key, found in unproven.items():
        for missing in found:
            by_subchart.setdefault(missing, []).append(str(key))
    skip_unproven(
        by_subchart,
        f"[{variant.name}] {rendered.release}: the chart's own keys are read; these cannot be proven read "
        "without the subcharts that may read them",
    )


RELEASES_BY_VARIANT = [(v, r) for v, names in EXPECTED_RELEASES.items() for r in sorted(names)]


@pytest.mark.parametrize(
    ("name", "release"), RELEASES_BY_VARIANT, ids=[f"{v}-{r}" for v, r in RELEASES_BY_VARIANT]
)
def test_every_values_key_changes_the_rendered_output(helm_variants, name: str, release: str) -> None:
    variant = helm_variants(name)
    check_values_keys(variant, variant.release(release))


@pytest.mark.parametrize(
    ("typo", "expected"),
    [
        # top-level: the chart's key is `replicas`
        (lambda v: {**{k: x for k, x in v.items() if k != "replicas"}, "replica": 2}, ["replica"]),
        # nested: `controller.resources` misspelt drops every leaf below it
        (
            lambda v: {**v, "controller": {"resource": v["controller"]["resources"]}},
            [
                "controller.resource.requests.cpu",
                "controller.resource.requests.memory",
                "controller.resource.limits.memory",
            ],
        ),
    ],
    ids=["top-level", "nested"],
)
def test_a_misspelt_values_key_fails_with_its_name(helm_variants, typo, expected) -> None:
    default = helm_variants("default")
    rendered = default.release("karpenter")
    values = typo(rendered.release.values)
    keys = default.unread_keys(rendered, values)
    assert [str(k) for k in keys] == expected
    report = unread_report("default", rendered, keys)
    for key in expected:
        assert f"values key '{key}' changes nothing" in report


def test_a_misspelt_key_of_a_chart_lacking_subcharts_still_fails(helm_variants) -> None:
    """A misspelt key of kube-prometheus-stack's own fails whether or not its subcharts are in the charts
    folder; one under a subchart's key fails when the subchart is there and is unproven (skipped, with
    the subchart's reason) when it is not."""
    default = helm_variants("default")
    rendered = default.release("kube-prometheus-stack")
    values = merged(
        rendered.release.values,
        {"prometheus": {"prometheusSpec": {"retentoin": "1d"}}, "grafana": {"nodeSelectr": {"a": "b"}}},
    )
    with pytest.raises(AssertionError) as failed:
        check_values_keys(default, rendered, values)
    report = str(failed.value)
    assert "values key 'prometheus.prometheusSpec.retentoin' changes nothing" in report
    grafana_missing = any(m.name == "grafana" for m in rendered.incomplete)
    assert ("values key 'grafana.nodeSelectr.a' changes nothing" in report) is not grafana_missing
    if grafana_missing:
        unproven = [k for k in default.unread_keys(rendered, values) if owners(k.path, rendered.incomplete)]
        assert "grafana.nodeSelectr.a" in map(str, unproven)
