"""The Dockerfiles without building them: the contract each pins, shell syntax of every RUN, checkov.

model_server/Dockerfile here; chat_ui/Dockerfile's contract is in test_chat_ui_dockerfile.py, which reuses
`instructions()`/`stages()` of tools/imagekit.py; checkov runs on both here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import imagekit  # noqa: E402

DOCKERFILE = REPO / "model_server" / "Dockerfile"
CHECKOV = REPO / ".venv" / "checkov" / "bin" / "checkov"
REQUIRED = os.environ.get("LLAMA_EKS_IMAGE_TEST") == "required"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of model_server/Dockerfile."""
    return imagekit.dockerfile_instructions(DOCKERFILE)


def stages() -> list[list[tuple[str, str]]]:
    return imagekit.dockerfile_stages(DOCKERFILE)


def args_with_defaults() -> dict[str, str]:
    found: dict[str, str] = {}
    for keyword, rest in instructions():
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            found[name] = value.strip('"')
    return found


def test_build_args_and_defaults() -> None:
    args = args_with_defaults()
    assert args["BASE_IMAGE"] == "python:3.12-slim-bookworm"
    assert args["BUILDER_IMAGE"] == "${BASE_IMAGE}"
    assert args["GGML_CUDA"] == "off"
    archs = {a.split("-")[0] for a in args["CUDA_ARCHITECTURES"].split(";")}
    assert {"86", "89", "90"} <= archs  # A10G (g5), L4 (g6), H100 (p5)
    assert args["MODEL_URI"] == "" and args["MODEL_SHA256"] == ""  # no model baked by default
    wheel_script = (REPO / "tools" / "build_llama_wheel.sh").read_text()
    pinned = re.search(r"LLAMA_CPP_VERSION:-([0-9.]+)", wheel_script)
    assert pinned and args["LLAMA_CPP_VERSION"] == pinned.group(1)  # the image and the wheelhouse agree


def test_multi_stage_runtime_contract() -> None:
    builder, runtime = stages()
    assert builder[0] == ("FROM", "${BUILDER_IMAGE} AS builder")
    assert runtime[0] == ("FROM", "${BASE_IMAGE} AS runtime")
    final = dict(runtime)  # last instruction of each kind in the runtime stage
    assert final["USER"] == "10001:10001"
    assert final["EXPOSE"] == "5000"
    entrypoint = json.loads(final["ENTRYPOINT"])  # exec form, an init as PID 1
    assert entrypoint == ["/usr/bin/tini", "-s", "--", "python", "-m", "model_server"]
    assert json.loads(final["CMD"]) == ["serve"]
    health = final["HEALTHCHECK"]
    assert "/healthz" in health and "CMD [" in health
    assert not any(k == "COPY" and "wheelhouse" in v for k, v in runtime)
    assert [v for k, v in runtime if k == "COPY"] == [
        "--from=builder /opt/venv /opt/venv",
        "--from=builder /src /app",
    ]


def test_every_run_step_is_valid_bash() -> None:
    runs = [rest for keyword, rest in instructions() if keyword == "RUN"]
    assert len(runs) >= 5
    for script in runs:
        assert not script.startswith("["), "RUN steps are shell form (pipefail SHELL)"
        proc = subprocess.run(["bash", "-n", "-o", "pipefail", "-c", script], capture_output=True, text=True)
        assert proc.returncode == 0, f"{proc.stderr}\n{script}"


def test_cuda_branch_flags() -> None:
    llama_step = next(
        rest for keyword, rest in instructions() if keyword == "RUN" and "llama-cpp-python" in rest
    )
    assert "-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}" in llama_step
    assert "--no-index --find-links /wheelhouse" in llama_step
    assert 'if [ "$has_cuda" = "$GGML_CUDA" ]' in llama_step  # a CPU wheel is never used for a CUDA image


def test_dockerignore_keeps_models_and_caches_out() -> None:
    patterns = [
        line.strip()
        for line in (REPO / "model_server" / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in ("**/__pycache__", "**/*.gguf", "**/*.partial", ".venv/"):
        assert needed in patterns
    assert not any("wheelhouse" in p for p in patterns)  # the builder stage needs it


@pytest.mark.parametrize("dockerfile", ["model_server/Dockerfile", "chat_ui/Dockerfile"])
def test_checkov_dockerfile_checks(dockerfile: str) -> None:
    if not CHECKOV.exists():
        message = (
            f"{CHECKOV} missing: `make deps` installs checkov in its own venv (its pins clash with pytest)"
        )
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    proc = subprocess.run(
        [
            str(CHECKOV),
            "-f",
            str(REPO / dockerfile),
            "--framework",
            "dockerfile",
            "--output",
            "json",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(proc.stdout)
    results = report["results"]
    failed = [(c["check_id"], c["check_name"]) for c in results["failed_checks"]]
    assert failed == [], f"checkov: {failed}"
    passed = {c["check_id"] for c in results["passed_checks"]}
    assert {"CKV_DOCKER_2", "CKV_DOCKER_3"} <= passed  # HEALTHCHECK present, non-root USER
    skipped = {
        c["check_id"]: c["check_result"].get("suppress_comment", "") for c in results["skipped_checks"]
    }
    assert set(skipped) == {"CKV_DOCKER_7"}  # acknowledged in the Dockerfile, with its reason
    assert "pinned tag" in skipped["CKV_DOCKER_7"]
    assert results["parsing_errors"] == []
