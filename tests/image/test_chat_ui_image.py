"""Build chat_ui/Dockerfile with buildah and run it with podman, in front of a real model server, with a
read-only root file system and only /tmp writable.

Same rules as tests/image/test_image.py: skipped where buildah/podman/debootstrap/runc (or root) are
missing, required when LLAMA_EKS_IMAGE_TEST=required (.ci/run). Both images build on the same cached
debootstrap base. The container talks to a model server process on the host (tiny GGUF, host network).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import imagekit  # noqa: E402

from tests.chat_ui.conftest import Server  # noqa: E402  (the real model server, as the chat UI tests start it)

REQUIRED = os.environ.get("LLAMA_EKS_IMAGE_TEST") == "required"
APP_UID = 10001
#: Gradio and its dependencies (pandas, numpy, pillow) dominate; the base is ~150 MB of it.
SIZE_BUDGET_MB = 500

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    missing = imagekit.missing_tools()
    if missing:
        message = f"image test needs {', '.join(missing)} (CI installs them: .ci/run)"
        if REQUIRED:
            pytest.fail(f"LLAMA_EKS_IMAGE_TEST=required but {message}")
        pytest.skip(message)
    return imagekit.container_env(tmp_path_factory.mktemp("containers-conf"))


@pytest.fixture(scope="module")
def image(
    env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[imagekit.BuiltImage]:
    base = imagekit.base_image(env)
    ref = f"{imagekit.CHAT_UI.ref.rsplit(':', 1)[0]}:test-{os.getpid()}"
    built = imagekit.build_image(
        env, tmp_path_factory.mktemp("build"), spec=imagekit.CHAT_UI, ref=ref, base=base
    )
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(
            f"\n[image] {built.ref}: {built.size_bytes / 1e6:.1f} MB on {base} "
            f"(buildah bud {built.build_seconds:.0f}s)",
            flush=True,
        )
    yield built
    imagekit.podman(env, "rmi", "--force", "--no-prune", ref, check=False)


def get(url: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    sys.path.insert(0, str(REPO / "tests" / "model_server"))
    from tiny_model import write_tiny_llama

    model = write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    server = Server(model, tmp_path_factory.mktemp("model-server"), n_ctx=512)
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ui(env: dict[str, str], image: imagekit.BuiltImage, model_server: Server) -> Iterator[dict]:
    port = imagekit.free_port()
    name = f"llama-eks-chat-ui-test-{port}"
    imagekit.run_container(
        env,
        image.ref,
        name,
        port=port,
        volumes={},
        environment={"CHAT_UI_MODEL_URL": model_server.url, "CHAT_UI_MAX_TOKENS": "8"},
        spec=imagekit.CHAT_UI,
        # As restricted Pod Security runs it: read-only root file system, only /tmp writable (an emptyDir
        # in the cluster; Gradio keeps its temp dir there).
        options=("--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,size=64m"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        state = imagekit.wait_ready(env, name, f"{url}/readyz", timeout=180)
        yield {"url": url, "name": name, "pid": state["Pid"]}
    finally:
        imagekit.podman(env, "rm", "-f", "--time", "5", name, check=False)


def test_image_config_and_size(env: dict[str, str], image: imagekit.BuiltImage) -> None:
    config = imagekit.image_config(env, image.ref)
    cfg = config["Config"]
    assert cfg["User"] == f"{APP_UID}:{APP_UID}"
    assert cfg["Entrypoint"] == ["python", "-m", "chat_ui"]
    assert "/healthz" in " ".join(config["Healthcheck"]["Test"])
    assert "7860/tcp" in cfg["ExposedPorts"]
    assert "GRADIO_ANALYTICS_ENABLED=False" in cfg["Env"]
    assert image.size_bytes < SIZE_BUDGET_MB * 1_000_000, f"{image.size_bytes / 1e6:.0f} MB"
    proc = imagekit.podman(
        env,
        "run",
        "--rm",
        "--network",
        "none",
        "--no-healthcheck",
        "--entrypoint",
        "/bin/sh",
        image.ref,
        "-c",
        "ls /opt/venv/bin/pip 2>/dev/null; ls -d /opt/venv/lib/python3*/site-packages/gradio/templates/node "
        "2>/dev/null; ls /app; command -v gcc || true",
    )
    assert proc.stdout.split() == ["chat_ui"], proc.stdout  # no pip, no SSR bundle, only the app, no compiler


def test_page_probes_and_a_chat_through_the_container(ui: dict) -> None:
    status, body = get(f"{ui['url']}/readyz")
    assert status == 200 and json.loads(body) == {"status": "ready", "model": "ready"}
    status, page = get(f"{ui['url']}/")
    assert status == 200 and "<html" in page
    from gradio_client import Client

    reply = Client(ui["url"] + "/", verbose=False).predict(message="hello", api_name="/chat")
    assert str(reply).strip()


def test_image_healthcheck_passes(env: dict[str, str], ui: dict) -> None:
    proc = imagekit.podman(env, "healthcheck", "run", ui["name"], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert imagekit.container_state(env, ui["name"])["Health"]["Status"] == "healthy"


def test_every_process_runs_as_the_app_user(ui: dict) -> None:
    tree = imagekit.process_tree_uids(ui["pid"])
    assert any(name.startswith("python") for name, _ in tree.values()), tree
    assert {uid for _, uid in tree.values()} == {APP_UID}, tree


def test_logs_are_json_without_prompt_text(env: dict[str, str], ui: dict) -> None:
    from gradio_client import Client

    Client(ui["url"] + "/", verbose=False).predict(message="a private question", api_name="/chat")
    logs = imagekit.podman(env, "logs", ui["name"], check=False)
    lines = [line for line in (logs.stdout + logs.stderr).splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    turns = [r for r in records if r["msg"] == "chat turn"]
    assert turns and turns[0]["outcome"] == "ok"
    assert "private question" not in logs.stdout + logs.stderr


def test_sigterm_exits_cleanly(env: dict[str, str], ui: dict) -> None:
    started = time.monotonic()
    imagekit.podman(env, "kill", "--signal", "TERM", ui["name"])
    proc = imagekit.podman(env, "wait", ui["name"], timeout=60)
    assert proc.stdout.strip() == "0", imagekit.podman(env, "logs", ui["name"], check=False).stderr[-3000:]
    assert time.monotonic() - started < 15
