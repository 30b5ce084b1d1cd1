"""The chart's Prometheus queries (KEDA triggers, Grafana dashboard) use metrics the server exports.

Names are read from the model server's own registry (model_server/metrics.py), so renaming a metric
there without updating the chart fails here, not silently in a dashboard or an autoscaler that never fires.
DCGM_* (dcgm-exporter) and kube_* (kube-state-metrics) come from the add-ons.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.charts.manifests import Manifests, one

metrics = pytest.importorskip("model_server.metrics", reason="model server deps not installed (make deps)")

_NAME = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{")
_EXTERNAL = ("DCGM_", "kube_")


def exported() -> set[str]:
    names = set()
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return names


def queried(expressions: list[str]) -> set[str]:
    return {n for e in expressions for n in _NAME.findall(e) if not n.startswith(_EXTERNAL)}


def test_keda_queries_use_exported_metrics(default: Manifests) -> None:
    queries = [t["metadata"]["query"] for t in one(default, "ScaledObject")["spec"]["triggers"]]
    names = queried(queries)
    assert names == {"llamacpp:requests_deferred", "llamacpp:requests_processing"}
    assert names <= exported()


def test_dashboard_queries_use_exported_metrics(default: Manifests) -> None:
    (text,) = one(default, "ConfigMap")["data"].values()
    exprs = [t["expr"] for p in json.loads(text)["panels"] for t in p["targets"]]
    names = queried(exprs)
    assert len(names) >= 6
    missing = names - exported()
    assert missing == set()
