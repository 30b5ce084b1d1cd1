"""checkov's Kubernetes checks on every rendered variant: 0 failed checks that are not acknowledged.

checkov runs from the tool venv `.venv/checkov` (mk/image.mk, requirements-checkov.txt: its pins clash
with pytest's). Missing checkov skips this module on a laptop and fails it in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.charts.manifests import VARIANTS, Manifests

REPO = Path(__file__).resolve().parents[2]
CHECKOV = REPO / ".venv" / "checkov" / "bin" / "checkov"

#: The one place where failed checkov checks are accepted, each with the reason it does not apply.
ACKNOWLEDGED: dict[str, str] = {
    "CKV_K8S_15": (
        "imagePullPolicy IfNotPresent on purpose: the DockerImageAsset tag is the asset's content hash in "
        "CDK's tag-immutable ECR repository, so a cached tag is always the right image, and a multi-GB CUDA "
        "image is not pulled again on every scale-out"
    ),
    "CKV_K8S_43": (
        "the image is referenced by the DockerImageAsset's content-hash tag; the registry digest exists only "
        "after the push at deploy time, and the repository's tags are immutable, so tag and digest are 1:1"
    ),
}


def chat_ui_files(rendered_chat_ui: dict[str, Manifests]) -> dict[str, Manifests]:
    """The chat UI chart's variants (tests/charts/chat_ui_manifests.py), one file each."""
    return {f"chat-ui-{variant}": manifests for variant, manifests in rendered_chat_ui.items()}


@pytest.fixture(scope="module")
def checkov_report(
    rendered: dict[str, Manifests],
    rendered_chat_ui: dict[str, Manifests],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict:
    if not CHECKOV.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHECKOV} missing: `make deps` installs it (mk/image.mk)")
        pytest.skip("checkov not installed; run `make deps`")
    out = tmp_path_factory.mktemp("manifests")
    for variant, manifests in {**rendered, **chat_ui_files(rendered_chat_ui)}.items():
        (out / f"{variant}.yaml").write_text(yaml.safe_dump_all(manifests, sort_keys=False))
    proc = subprocess.run(
        [str(CHECKOV), "-d", str(out), "--framework", "kubernetes", "-o", "json", "--skip-download"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # Exit code 1 means failed checks (judged below); anything else is checkov itself failing.
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    return report[0] if isinstance(report, list) else report


def test_checkov_scanned_every_object(
    checkov_report: dict, rendered: dict[str, Manifests], rendered_chat_ui: dict[str, Manifests]
) -> None:
    assert checkov_report["summary"]["parsing_errors"] == 0
    results = checkov_report["results"]
    checked = {
        (r["file_path"].strip("/").removesuffix(".yaml"), r["resource"])
        for r in results["passed_checks"] + results["failed_checks"]
    }
    for variant, manifests in {**rendered, **chat_ui_files(rendered_chat_ui)}.items():
        for m in manifests:
            meta = m["metadata"]
            resource = ".".join(x for x in (m["kind"], meta.get("namespace", "default"), meta["name"]) if x)
            if m["kind"] in ("Deployment", "Service", "ServiceAccount", "ConfigMap"):
                assert (variant, resource) in checked, (variant, resource)
    assert len(results["passed_checks"]) > 100


def test_no_unacknowledged_failures(checkov_report: dict) -> None:
    failed = checkov_report["results"]["failed_checks"]
    unacknowledged = sorted(
        {
            f"{f['check_id']} {f['resource']} ({f['file_path']}): {f['check_name']}"
            for f in failed
            if f["check_id"] not in ACKNOWLEDGED
        }
    )
    assert unacknowledged == []


def test_acknowledgements_are_live(checkov_report: dict, rendered_chat_ui: dict[str, Manifests]) -> None:
    # An acknowledgement for a check that no longer fails is stale and must go.
    failing = {f["check_id"] for f in checkov_report["results"]["failed_checks"]}
    assert set(ACKNOWLEDGED) <= failing
    assert {
        f["file_path"].strip("/").removesuffix(".yaml") for f in checkov_report["results"]["failed_checks"]
    } <= set(VARIANTS) | set(chat_ui_files(rendered_chat_ui))


def test_security_checks_pass(checkov_report: dict) -> None:
    # The restricted-pod-security checks are among the passed ones (not merely absent).
    passed = {p["check_id"] for p in checkov_report["results"]["passed_checks"]}
    for check in ("CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_31", "CKV_K8S_37"):
        assert check in passed, check
