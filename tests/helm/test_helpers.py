"""The Helm test helpers on their own (no synth): placeholders, values leaves, the unread-key search,
nondeterministic output, selectors and scheduling, helm output parsing, chart lookup, charts lacking
subcharts (with real helm on a tiny parent/subchart pair), the cached validator."""

from __future__ import annotations

import dataclasses
import json
import shutil
import textwrap
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.helm.conftest import require_charts, skip_unproven
from tests.helpers import kube_schema
from tests.helpers.helm import (
    ChartNotFound,
    ChartToRender,
    Dependency,
    HelmError,
    MissingDependency,
    RenderRequest,
    UnreadKey,
    changed,
    chart_path,
    chart_to_render,
    coalesced,
    crd_api_versions,
    dependencies,
    dependency_enabled,
    disabling_values,
    documents,
    dotted,
    leaves,
    mask,
    merged,
    node_unschedulable_reasons,
    owners,
    placeholder,
    resolve,
    selector_matches,
    tolerates,
    unread_keys,
    volatile_keys,
)

# ---------------------------------------------------------------- intrinsics


def test_intrinsics_become_deterministic_placeholders() -> None:
    assert resolve({"Ref": "AWS::Region"}) == "us-west-2"
    assert resolve({"Ref": "NetworkVpc7FB7348F"}) == "ref-networkvpc7fb7348f"
    assert resolve({"Fn::GetAtt": ["Queue630CFBDB", "QueueName"]}) == "queue630cfbdb-queuename"
    assert resolve({"Fn::GetAtt": ["Workspace", "PrometheusEndpoint"]}) == "https://workspace.example.com/"
    assert resolve({"Fn::GetAtt": ["Role", "Arn"]}) == "arn:aws:placeholder:us-west-2:111111111111:role"
    assert (
        resolve({"Fn::GetStackOutput": {"OutputName": "PublishOutputRefVpc"}}) == "output-publishoutputrefvpc"
    )
    joined = {"Fn::Join": ["", ['{"q":"', {"Fn::GetAtt": ["Q", "QueueName"]}, '"}']]}
    assert json.loads(resolve(joined)) == {"q": "q-queuename"}
    assert resolve({"Fn::Sub": "1.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}/${Repo}:${Img.Tag}"}) == (
        "1.dkr.ecr.us-west-2.amazonaws.com/ref-repo:img-tag"
    )
    assert resolve({"Fn::Sub": ["${A}-x", {"A": {"Ref": "B"}}]}) == "ref-b-x"
    assert resolve({"a": [{"Ref": "X"}], "b": 1}) == {"a": ["ref-x"], "b": 1}
    assert placeholder({"Ref": "X"}) == resolve({"Ref": "X"})


def test_an_unknown_intrinsic_fails_with_its_name() -> None:
    with pytest.raises(ValueError, match=r"Fn::Select: add one to tests/helpers/helm.py"):
        resolve({"x": {"Fn::Select": [0, ["a"]]}})


# ---------------------------------------------------------------- values leaves and the unread-key search


def test_leaves_cover_nested_dicts_lists_and_empty_containers() -> None:
    values = {"a": {"b": 1, "c/d": ["x", {"e": True}]}, "f": {}, "g": []}
    assert [(dotted(p), v) for p, v in leaves(values)] == [
        ("a.b", 1),
        ('a["c/d"][0]', "x"),
        ('a["c/d"][1].e', True),
        ("f", {}),
        ("g", []),
    ]


def test_changed_values_differ_in_kind_appropriate_ways() -> None:
    assert changed(True, "-m") is False
    assert changed(2, "-m") == 3
    assert changed(0.5, "-m") == 2.0
    assert changed("system", "-m") == "system-m"
    assert changed({}, "-m") is changed(None, "-m")  # removal


def fake_chart(reads: dict[str, object]):
    """A renderer reading only some keys: strings verbatim or upper-cased, booleans as conditions, and
    ``strict`` makes it fail for any value but its own."""

    def render(values: dict) -> str | HelmError:
        if "strict" in reads and values.get("strict") != reads["strict"]:
            return HelmError("invalid strict")
        out = []
        if "name" in reads:
            out.append(f"name: {values.get('name')}")
        if "upper" in reads:
            out.append(f"upper: {str(values.get('upper')).upper()}")
        if "flag" in reads and values.get("flag"):
            out.append("flagged")
        if "removable" in reads and "removable" in values:
            out.append("removable is set")
        if "count" in reads:
            out.append(f"count: {values.get('count')}")
        if "many" in reads:
            out.append(f"many: {values.get('many', 0) > 1}")
        return "\n".join(out)

    def render_many(values_list: list[dict]) -> list[str | HelmError]:
        return [render(v) for v in values_list]

    return render_many


def test_unread_keys_names_exactly_the_keys_the_chart_ignores() -> None:
    values = {
        "name": "a",
        "upper": "b",
        "flag": True,
        "strict": "s",
        "ignored": "c",
        "off": False,
        "nested": {"x": 1},
    }
    chart = fake_chart({"name": 1, "upper": 1, "flag": 1, "strict": "s"})
    assert [str(k) for k in unread_keys(values, chart)] == ["ignored", "off", "nested.x"]


def test_integers_are_found_by_a_unique_number_or_by_their_effect() -> None:
    calls: list[dict] = []
    chart = fake_chart({"count": 1, "many": 1, "name": 1})

    def recording(values_list: list[dict]) -> list[str | HelmError]:
        calls.extend(values_list)
        return chart(values_list)

    keys = unread_keys({"count": 2, "many": 2, "name": "907001", "unused": 3}, recording)
    assert [str(k) for k in keys] == ["unused"]
    together = calls[1]
    # the sentinel skips a number the base output already holds (the name prints 907001)
    assert together["count"] == 907002 and together["unused"] == 907004
    # `many` is only compared (> 1): its sentinel proves nothing, so it was changed on its own, to 3 -> no
    # change either (3 > 1), then removed (0 > 1 is false): read.
    assert {"count": 2, "many": 3, "name": "907001", "unused": 3} in calls


def test_a_key_read_only_by_its_presence_counts_through_removal() -> None:
    # `removable` is an empty dict: nothing to change, so it is removed, and that changes the output.
    chart = fake_chart({"removable": 1, "name": 1})
    assert unread_keys({"removable": {}, "name": "n"}, chart) == []
    assert [str(k) for k in unread_keys({"nope": {}, "name": "n"}, chart)] == ["nope"]


def test_generated_output_is_normalized_before_comparing() -> None:
    import itertools

    counter = itertools.count()
    chart = fake_chart({"name": 1})

    def random_token(values_list: list[dict]) -> list[str | HelmError]:
        return [f"{out}\ntoken: {next(counter)}" for out in chart(values_list)]

    values = {"name": "n", "off": False}
    # every render differs, so without normalizing an unread boolean would look read
    assert unread_keys(values, random_token) == []
    keys = unread_keys(values, random_token, normalize=lambda text: mask(text, frozenset({"token:"})))
    assert [str(k) for k in keys] == ["off"]


def test_unread_keys_needs_a_base_render() -> None:
    with pytest.raises(HelmError):
        unread_keys({"strict": "other"}, fake_chart({"strict": "s"}))


def test_unread_keys_of_empty_values_is_empty() -> None:
    assert unread_keys({}, fake_chart({})) == []


# ---------------------------------------------------------------- nondeterministic output


def test_volatile_keys_are_found_and_masked() -> None:
    first = "a: 1\n  tls.crt: AAA\n- caBundle: X1\n"
    second = "a: 1\n  tls.crt: BBB\n- caBundle: X2\n"
    keys = volatile_keys(first, second)
    assert keys == {"tls.crt:", "caBundle:"}
    assert mask(first, keys) == mask(second, keys) == "a: 1\n  tls.crt: <volatile>\n- caBundle: <volatile>\n"
    assert volatile_keys(first, first) == frozenset()


def test_volatile_output_outside_key_value_lines_is_an_error() -> None:
    with pytest.raises(ValueError, match="outside a 'key: value' line"):
        volatile_keys("a: 1\nrandom-1\n", "a: 1\nrandom-2\n")


# ---------------------------------------------------------------- selectors


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        (None, {"a": "1"}, False),
        ({}, {"a": "1"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "2"}}, {"a": "1"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "3"]}]}, {"a": "1"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {}, True),
    ],
)
def test_label_selectors(selector, labels, matches) -> None:
    assert selector_matches(selector, labels) is matches


GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("toleration", "tolerated"),
    [
        ({"operator": "Exists"}, True),  # no key: every taint
        ({"key": "nvidia.com/gpu", "operator": "Exists"}, True),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, True),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}, False),
        ({"key": "nvidia.com/gpu", "value": "true"}, True),  # operator Equal by default
        ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "false"}, False),
        ({"key": "other", "operator": "Exists"}, False),
        ({"value": "true"}, False),  # no key needs Exists
    ],
)
def test_tolerations(toleration, tolerated) -> None:
    assert tolerates(toleration, GPU_TAINT) is tolerated


def test_node_unschedulable_reasons() -> None:
    labels = {"llama-eks/node-class": "gpu", "kubernetes.io/os": "linux", "generation": "6"}
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "llama-eks/node-class", "operator": "In", "values": ["x"]}
                        ]
                    },
                    {"matchExpressions": [{"key": "generation", "operator": "Gt", "values": ["5"]}]},
                ]
            }
        }
    }
    fits = {
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "affinity": affinity,
        "tolerations": [{"operator": "Exists"}],
    }
    assert (
        node_unschedulable_reasons(fits, labels, [GPU_TAINT, {"key": "soft", "effect": "PreferNoSchedule"}])
        == []
    )
    assert node_unschedulable_reasons({**fits, "tolerations": []}, labels, [GPU_TAINT]) == [
        "taint nvidia.com/gpu=true:NoSchedule not tolerated"
    ]
    assert node_unschedulable_reasons(
        {**fits, "nodeSelector": {"kubernetes.io/os": "windows"}}, labels, []
    ) == ["nodeSelector kubernetes.io/os=windows"]
    assert node_unschedulable_reasons(fits, {**labels, "generation": "5"}, [])[0].startswith(
        "required node affinity"
    )


# ---------------------------------------------------------------- helm output


def test_documents_keep_sources_flatten_lists_and_read_yaml_like_kubernetes() -> None:
    text = textwrap.dedent(
        """\
        ---
        # Source: stack/charts/crds/crds/crd-a.yaml
        ---
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata: {name: as.example.com}
        spec:
          group: example.com
          names: {kind: A}
          versions: [{name: v1, served: true}, {name: v0, served: false}]
        ---
        # Source: stack/templates/list.yaml
        apiVersion: v1
        kind: List
        items:
        - {apiVersion: v1, kind: ConfigMap, metadata: {name: one}, data: {op: =, when: 2024-01-01}}
        - {apiVersion: v1, kind: ConfigMap, metadata: {name: two}}
        """
    )
    docs = documents(text)
    assert [(d.source, d.obj["kind"], d.from_crds_folder) for d in docs] == [
        ("stack/charts/crds/crds/crd-a.yaml", "CustomResourceDefinition", True),
        ("stack/templates/list.yaml", "ConfigMap", False),
        ("stack/templates/list.yaml", "ConfigMap", False),
    ]
    assert docs[1].obj["data"] == {"op": "=", "when": "2024-01-01"}
    assert crd_api_versions([docs[0].obj]) == {"example.com/v1", "example.com/v1/A"}


# ---------------------------------------------------------------- chart lookup


def _chart(root: Path, name: str, version: str, deps: str = "") -> Path:
    path = root / f"{name}-{version}"
    path.mkdir(parents=True)
    (path / "Chart.yaml").write_text(f"apiVersion: v2\nname: {name}\nversion: {version}\n{deps}")
    return path


def test_a_pinned_chart_missing_from_the_charts_folder_says_to_add_it(tmp_path: Path) -> None:
    with pytest.raises(
        ChartNotFound, match=r"keda 9\.9\.9 is pinned by the app but .*keda-9\.9\.9 does not exist: add"
    ):
        chart_path("keda", "9.9.9", tmp_path)


def _subchart(parent: Path, name: str, version: str) -> Path:
    path = parent / "charts" / name
    path.mkdir(parents=True)
    (path / "Chart.yaml").write_text(f"apiVersion: v2\nname: {name}\nversion: {version}\n")
    return path


def test_dependencies_are_present_as_folders_or_archives_of_an_allowed_version(tmp_path: Path) -> None:
    deps = (
        "dependencies:\n"
        "- {name: grafana, version: 12.10.0, condition: grafana.enabled}\n"
        "- {name: crds, version: 0.0.0}\n"
        "- {name: windows, version: 0.12.*, condition: 'win.enabled,other.enabled'}\n"
        "- {name: nfd, alias: features, version: 1.0.0, tags: [gpu]}\n"
    )
    path = _chart(tmp_path, "kps", "1.0.0", deps)
    _subchart(path, "crds", "0.0.0")
    (path / "charts" / "nfd-1.0.0.tgz").write_bytes(b"")
    present, missing = dependencies(path)
    assert [d.name for d in present] == ["crds", "nfd"]
    assert missing == [
        Dependency("grafana", "12.10.0", condition=("grafana.enabled",)),
        Dependency("windows", "0.12.*", condition=("win.enabled", "other.enabled")),
    ]
    assert present[1].key == "features" and missing[0].key == "grafana"
    _subchart(path, "windows", "0.12.8")
    assert [d.name for d in dependencies(path)[1]] == ["grafana"]
    _subchart(path, "grafana", "12.9.0")
    with pytest.raises(
        ChartNotFound, match=r"charts/grafana is grafana 12\.9\.0, but kps-1\.0\.0/Chart\.yaml pins 12\.10\.0"
    ):
        dependencies(path)


@pytest.mark.parametrize(
    ("values", "enabled"),
    [
        ({"grafana": {"enabled": True}}, True),
        ({"grafana": {"enabled": False}}, False),
        # the subchart's own values.yaml could default grafana.enabled: unknown
        ({"grafana": {}}, None),
        ({}, None),
    ],
)
def test_a_condition_under_the_subcharts_key_may_be_unknown(values, enabled) -> None:
    assert dependency_enabled(Dependency("grafana", "1", condition=("grafana.enabled",)), values) is enabled


def test_dependency_enabled_follows_helm_conditions_then_tags() -> None:
    dep = Dependency("nfd", "1", alias="nfd", condition=("nfd.enabled", "gfd.enabled"), tags=("gpu",))
    # the first condition path holding a boolean decides, whatever the tags say
    assert dependency_enabled(dep, {"nfd": {"enabled": "yes"}, "gfd": {"enabled": False}}) is False
    assert dependency_enabled(dep, {"gfd": {"enabled": True}, "tags": {"gpu": False}}) is True
    tagged = Dependency("x", "1", tags=("a", "b"))
    assert dependency_enabled(tagged, {"tags": {"a": False, "b": False}}) is False
    assert dependency_enabled(tagged, {"tags": {"a": False, "b": True}}) is True
    assert dependency_enabled(tagged, {}) is True
    assert dependency_enabled(Dependency("always", "1"), {}) is True
    # a condition outside the subchart's key that resolves nowhere: Helm keeps it enabled
    assert dependency_enabled(Dependency("ksm", "1", condition=("kubeStateMetrics.enabled",)), {}) is True


def test_disabling_values_turn_the_first_condition_or_every_tag_off() -> None:
    assert disabling_values(Dependency("n", "1", condition=("a.b.enabled", "c.enabled"))) == {
        "a": {"b": {"enabled": False}}
    }
    assert disabling_values(Dependency("n", "1", tags=("x", "y"))) == {"tags": {"x": False, "y": False}}
    assert disabling_values(Dependency("n", "1")) == {}


def test_values_merge_deeply_and_coalesce_like_helm() -> None:
    assert merged({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": False}, "d": [2]}) == {
        "a": {"b": False, "c": 2},
        "d": [2],
    }
    assert coalesced({"a": {"b": 1, "c": 2}, "e": 1}, {"a": {"c": None, "x": 3}}) == {
        "a": {"b": 1, "x": 3},
        "e": 1,
    }


KPS_LIKE = (
    "dependencies:\n"
    "- {name: crds, version: 0.0.0}\n"
    "- {name: grafana, version: 12.10.0, condition: grafana.enabled}\n"
    "- {name: kube-state-metrics, version: 8.0.0, condition: kubeStateMetrics.enabled}\n"
    "- {name: windows, version: 0.12.*, condition: windowsMonitoring.enabled}\n"
)


def test_a_chart_lacking_subcharts_is_rendered_from_a_copy_with_the_enabled_ones_off(tmp_path: Path) -> None:
    path = _chart(tmp_path / "charts", "kps", "1.0.0", KPS_LIKE)
    _subchart(path, "crds", "0.0.0")
    (path / "values.yaml").write_text(
        "kubeStateMetrics: {enabled: true}\nwindowsMonitoring: {enabled: false}\n"
    )
    (path / "templates").mkdir()
    (path / "templates" / "cm.yaml").write_text("kind: ConfigMap\n")
    work = tmp_path / "work"
    work.mkdir()
    chart = chart_to_render(path, {"grafana": {"enabled": True, "nodeSelector": {"a": "b"}}}, work)
    assert chart.chart_dir == work / "kps-1.0.0"
    meta = yaml.safe_load((chart.chart_dir / "Chart.yaml").read_text())
    assert [d["name"] for d in meta["dependencies"]] == ["crds"]
    assert (chart.chart_dir / "templates" / "cm.yaml").read_text() == "kind: ConfigMap\n"
    assert (chart.chart_dir / "charts" / "crds" / "Chart.yaml").is_file()
    assert [(m.name, m.enabled) for m in chart.missing] == [
        ("grafana", True),
        ("kube-state-metrics", True),  # enabled by the chart's own values.yaml
        ("windows", False),
    ]
    assert [m.name for m in chart.incomplete] == ["grafana", "kube-state-metrics"]
    assert chart.overrides == {"grafana": {"enabled": False}, "kubeStateMetrics": {"enabled": False}}
    assert chart.values({"grafana": {"enabled": True}, "x": 1}) == {
        "grafana": {"enabled": False},
        "kubeStateMetrics": {"enabled": False},
        "x": 1,
    }
    assert chart.missing[0].reason == (
        f"subchart grafana 12.10.0 of kps 1.0.0 is missing: add its unmodified chart source under "
        f"{path}/charts/grafana/"
    )
    # with the values turning Grafana off, only kube-state-metrics is lacking; the copy is reused
    off = chart_to_render(path, {"grafana": {"enabled": False}}, work)
    assert off.chart_dir == chart.chart_dir and [m.name for m in off.incomplete] == ["kube-state-metrics"]
    # a complete chart renders from its own folder, unchanged
    for name, version in (("grafana", "12.10.0"), ("kube-state-metrics", "8.0.0"), ("windows", "0.12.8")):
        _subchart(path, name, version)
    assert chart_to_render(path, {}, tmp_path / "unused") == ChartToRender(path)


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("{name: sub, version: 1.0.0, import-values: [data]}", "imports values into the parent"),
        ("{name: sub, version: 1.0.0}", "has no condition or tags"),
    ],
)
def test_a_missing_subchart_that_cannot_be_turned_off_fails(tmp_path: Path, entry: str, why: str) -> None:
    path = _chart(tmp_path, "p", "1.0.0", f"dependencies:\n- {entry}\n")
    with pytest.raises(ChartNotFound, match=rf"subchart sub 1\.0\.0 of p 1\.0\.0 is missing: .*; it {why}"):
        chart_to_render(path, {}, tmp_path)


def test_values_keys_are_owned_by_the_missing_subcharts_that_may_read_them(tmp_path: Path) -> None:
    def missing(dep: Dependency) -> MissingDependency:
        return MissingDependency("kps", "1.0.0", dep, tmp_path / dep.name, enabled=True)

    grafana = missing(Dependency("grafana", "1", condition=("grafana.enabled",)))
    ksm = missing(Dependency("kube-state-metrics", "1", condition=("kubeStateMetrics.enabled",)))
    nfd = missing(Dependency("node-feature-discovery", "1", alias="nfd", tags=("gpu",)))
    incomplete = [grafana, ksm, nfd]
    assert owners(("grafana", "nodeSelector", "a"), incomplete) == [grafana]
    assert owners(("kube-state-metrics", "nodeSelector", "a"), incomplete) == [ksm]
    # the parent's switch block for a subchart: its condition and its siblings
    assert owners(("kubeStateMetrics", "enabled"), incomplete) == [ksm]
    assert owners(("kubeStateMetrics", "serviceMonitor", "interval"), incomplete) == [ksm]
    # under the alias, not the chart name; tags
    assert owners(("nfd", "worker", "x"), incomplete) == [nfd]
    assert owners(("node-feature-discovery", "x"), incomplete) == []
    assert owners(("tags", "gpu"), incomplete) == [nfd]
    # globals reach every subchart
    assert owners(("global", "imageRegistry"), incomplete) == incomplete
    # the parent's own keys belong to no subchart: unread, they fail
    assert owners(("prometheus", "prometheusSpec", "retentoin"), incomplete) == []
    assert owners(("grafanaa", "x"), incomplete) == []
    assert owners(("global", "x"), []) == []


# A parent and a subchart as kube-prometheus-stack uses them: the parent reads a default of the
# subchart's values.yaml while the subchart is on (nil without it), Helm passes globals down.
PARENT_TEMPLATE = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: parent}
data:
  own: {{ .Values.own | quote }}
  {{- if .Values.sub.enabled }}
  port: {{ (index .Values "sub").service.port | quote }}
  {{- end }}
"""
SUB_TEMPLATE = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: sub}
data:
  name: {{ .Values.name | quote }}
  region: {{ .Values.global.region | quote }}
"""


def _parent_with_subchart(root: Path) -> Path:
    path = _chart(
        root, "parent", "1.0.0", "dependencies:\n- {name: sub, version: 2.0.0, condition: sub.enabled}\n"
    )
    (path / "values.yaml").write_text("own: a\nsub: {enabled: true}\n")
    (path / "templates").mkdir()
    (path / "templates" / "cm.yaml").write_text(PARENT_TEMPLATE)
    sub = _subchart(path, "sub", "2.0.0")
    (sub / "values.yaml").write_text("name: x\nservice: {port: 8080}\n")
    (sub / "templates").mkdir()
    (sub / "templates" / "cm.yaml").write_text(SUB_TEMPLATE)
    return path


def test_with_and_without_a_subchart_real_helm(helm_for, tmp_path: Path) -> None:
    helm = helm_for("1.35")
    values = {"own": "b", "sub": {"name": "n"}, "global": {"region": "r"}, "typo": "t"}

    def unread(chart: ChartToRender) -> list[UnreadKey]:
        request = RenderRequest(chart.chart_dir, "rel", "ns", "{}", "v1.35.0", include_crds=False)

        def render_many(values_list):
            return helm.render_many(
                dataclasses.replace(request, values_json=json.dumps(chart.values(v), sort_keys=True))
                for v in values_list
            )

        return unread_keys(values, render_many)

    complete = _parent_with_subchart(tmp_path / "complete")
    chart = chart_to_render(complete, values, tmp_path)
    assert chart == ChartToRender(complete)
    assert [str(k) for k in unread(chart)] == ["typo"]  # sub.name, global.region: read by the subchart

    lacking = _parent_with_subchart(tmp_path / "lacking")
    shutil.rmtree(lacking / "charts" / "sub")
    # as it is, Helm refuses the chart; without the dependency but left on, the parent's template fails
    # on the subchart's missing default; turned off, the parent renders
    with pytest.raises(HelmError, match="missing in charts/ directory: sub"):
        helm.template(RenderRequest(lacking, "rel", "ns", json.dumps(values), "v1.35.0"))
    chart = chart_to_render(lacking, values, tmp_path / "copies")
    with pytest.raises(HelmError, match="nil pointer"):
        helm.template(RenderRequest(chart.chart_dir, "rel", "ns", json.dumps(values), "v1.35.0"))
    text = helm.template(
        RenderRequest(chart.chart_dir, "rel", "ns", json.dumps(chart.values(values)), "v1.35.0")
    )
    assert [d.obj["metadata"]["name"] for d in documents(text)] == ["parent"]
    # unread without the subchart: what it would read is owned by it, the parent's typo is not
    assert {str(k): owners(k.path, chart.incomplete) for k in unread(chart)} == {
        "sub.name": list(chart.incomplete),
        "global.region": list(chart.incomplete),
        "typo": [],
    }


def test_skip_unproven_names_each_missing_subchart_and_what_it_would_prove(tmp_path: Path) -> None:
    dep = MissingDependency("kps", "1.0.0", Dependency("grafana", "12.10.0"), tmp_path / "grafana", True)
    skip_unproven([], "nothing missing: no skip")
    with pytest.raises(pytest.skip.Exception) as skipped:
        skip_unproven({dep: ["grafana.nodeSelector"]}, "[default] kps")
    assert str(skipped.value) == (
        f"[default] kps: subchart grafana 12.10.0 of kps 1.0.0 is missing: add its unmodified chart source "
        f"under {tmp_path}/grafana/ (grafana.nodeSelector) (see docs/addons.md, 'Adding or bumping a chart "
        "version')"
    )


def test_a_chart_folder_with_another_version_inside_is_refused(tmp_path: Path) -> None:
    _chart(tmp_path, "x", "1.0.0")
    (tmp_path / "x-1.0.0" / "Chart.yaml").write_text("name: x\nversion: 2.0.0\n")
    with pytest.raises(ChartNotFound, match=r"is x 2\.0\.0, not x 1\.0\.0"):
        chart_path("x", "1.0.0", tmp_path)


def test_absent_charts_skip_locally_and_fail_in_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absent = tmp_path / "charts"
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="is absent"):
        require_charts(absent)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="is absent"):
        require_charts(absent)
    absent.mkdir()
    assert require_charts(absent) == absent


# ---------------------------------------------------------------- cached kubernetes-validate

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p"},
    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
}


@pytest.mark.parametrize("version", ["1.31", "1.35"])
def test_cached_validator_agrees_with_kubernetes_validate(version: str) -> None:
    assert kube_schema.validate(POD, version) == kubernetes_validate.validate(POD, version, strict=True)
    broken = json.loads(json.dumps(POD))
    broken["spec"]["containers"][0]["imagePullPolice"] = "Always"  # strict: unknown field
    for validate in (kube_schema.validate, lambda o, v: kubernetes_validate.validate(o, v, strict=True)):
        with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolice"):
            validate(broken, version)
    unknown = {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t"}}
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kube_schema.validate(unknown, version)
    assert kube_schema.is_builtin("v1", "Pod", version)
    assert not kube_schema.is_builtin("example.com/v1", "Thing", version)
