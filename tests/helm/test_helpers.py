"""The Helm test helpers on their own (no synth, no helm): placeholders, values leaves, the unread-key
search, nondeterministic output, selectors, helm output parsing, chart lookup, the cached validator."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import kubernetes_validate
import pytest

from tests.helm.conftest import require_charts
from tests.helpers import kube_schema
from tests.helpers.helm import (
    ChartNotFound,
    HelmError,
    changed,
    chart_path,
    crd_api_versions,
    documents,
    dotted,
    leaves,
    mask,
    placeholder,
    resolve,
    selector_matches,
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


def test_a_chart_with_missing_dependencies_names_them(tmp_path: Path) -> None:
    deps = "dependencies:\n- {name: grafana, version: 12.10.0}\n- {name: crds, version: 0.0.0}\n"
    path = _chart(tmp_path, "kps", "1.0.0", deps)
    (path / "charts" / "crds").mkdir(parents=True)
    with pytest.raises(ChartNotFound, match=r"lacks its dependencies \['grafana 12\.10\.0'\]"):
        chart_path("kps", "1.0.0", tmp_path)
    (path / "charts" / "grafana").mkdir()
    assert chart_path("kps", "1.0.0", tmp_path) == path


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
