"""chat_ui/Dockerfile without building it: the contract it pins and the shell syntax of every RUN step
(checkov runs on it in test_dockerfile.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import imagekit  # noqa: E402

DOCKERFILE = REPO / "chat_ui" / "Dockerfile"


def test_runtime_contract() -> None:
    builder, runtime = imagekit.dockerfile_stages(DOCKERFILE)
    assert builder[0] == ("FROM", "${BASE_IMAGE} AS builder")
    assert runtime[0] == ("FROM", "${BASE_IMAGE} AS runtime")
    args = dict(
        item[1].split("=", 1) for item in imagekit.dockerfile_instructions(DOCKERFILE) if item[0] == "ARG"
    )
    assert args["BASE_IMAGE"] == "python:3.12-slim-bookworm"  # the model server image's base: shared layers
    final = dict(runtime)
    assert final["USER"] == "10001:10001"
    assert final["EXPOSE"] == "7860"
    assert json.loads(final["ENTRYPOINT"]) == ["python", "-m", "chat_ui"]
    assert "/healthz" in final["HEALTHCHECK"] and "CMD [" in final["HEALTHCHECK"]
    env = final["ENV"]
    for setting in ("GRADIO_ANALYTICS_ENABLED=False", "CHAT_UI_HOST=0.0.0.0", "CHAT_UI_PORT=7860"):
        assert setting in env
    assert [v for k, v in runtime if k == "COPY"] == [
        "--from=builder /opt/venv /opt/venv",
        "--from=builder /src /app",
    ]
    assert not any(k == "RUN" and "apt-get" in v for k, v in runtime)  # nothing installed at run time


def test_builder_installs_the_pinned_requirements_and_trims() -> None:
    builder = imagekit.dockerfile_stages(DOCKERFILE)[0]
    runs = " ".join(v for k, v in builder if k == "RUN")
    assert "pip install --no-cache-dir -r /tmp/requirements.txt" in runs
    assert "gradio/templates/node" in runs  # the SSR bundle: ssr_mode is off
    assert "pip uninstall -y setuptools pip" in runs


def test_every_run_step_is_valid_bash() -> None:
    runs = [rest for keyword, rest in imagekit.dockerfile_instructions(DOCKERFILE) if keyword == "RUN"]
    assert len(runs) == 4
    for script in runs:
        proc = subprocess.run(["bash", "-n", "-o", "pipefail", "-c", script], capture_output=True, text=True)
        assert proc.returncode == 0, f"{proc.stderr}\n{script}"


def test_dockerignore_keeps_caches_out() -> None:
    patterns = (REPO / "chat_ui" / ".dockerignore").read_text().split()
    assert "**/__pycache__" in patterns and ".venv/" in patterns
