"""The post-deploy smoke script against a real HTTP server on 127.0.0.1 that answers like the service
(a scripted server: the script's own logic is under test here, the model server has its own tests)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from stacks.pipeline.codebuild import smoke
from tests.conftest import REPO

#: What the model server's /predict answers (the seed's {"response": <llama.cpp completion>}).
PREDICT_ANSWER = {
    "response": {
        "id": "cmpl-1",
        "object": "text_completion",
        "choices": [{"text": "Humanity, a tapestry of hope.", "index": 0, "finish_reason": "stop"}],
    }
}


class Service:
    """Scripted service: /readyz is 503 for ``not_ready`` calls, then 200; /predict answers ``predict``."""

    def __init__(self) -> None:
        self.not_ready = 0
        self.predict: tuple[int, bytes] = (200, json.dumps(PREDICT_ANSWER).encode())
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()


@pytest.fixture
def service() -> Iterator[tuple[Service, str]]:
    state = Service()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def route(self) -> str:
            # The API server's service proxy prefix, as the kubernetes-api mode sends it.
            return self.path.split("/proxy", 1)[1] if "/proxy/" in self.path else self.path

        def do_GET(self) -> None:
            with state.lock:
                state.requests.append(("GET", self.path, dict(self.headers), b""))
                if self.route() == "/readyz":
                    if state.not_ready > 0:
                        state.not_ready -= 1
                        return self._reply(503, b'{"status":"loading"}')
                    return self._reply(200, b'{"status":"ready"}')
            self._reply(404, b"{}")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with state.lock:
                state.requests.append(("POST", self.path, dict(self.headers), body))
            if self.route() == "/predict":
                return self._reply(*state.predict)
            self._reply(404, b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_passes_after_readiness_and_sends_the_seed_request(service: tuple[Service, str], capsys: Any) -> None:
    state, endpoint = service
    state.not_ready = 2
    assert smoke.main(["--endpoint", endpoint, "--interval", "0.01", "--ready-timeout", "10"]) == 0
    paths = [(m, p) for m, p, _, _ in state.requests]
    assert paths == [("GET", "/readyz")] * 3 + [("POST", "/predict")]
    _, _, headers, body = state.requests[-1]
    assert json.loads(body) == smoke.seed_request()
    assert headers["Content-Type"] == "application/json"
    assert "Authorization" not in headers
    assert "SMOKE TEST PASSED" in capsys.readouterr().out


def test_api_key_from_the_environment(service: tuple[Service, str], monkeypatch: pytest.MonkeyPatch) -> None:
    state, endpoint = service
    monkeypatch.setenv("LLAMA_API_KEY", "s3cret")
    assert smoke.main(["--endpoint", f"http://{endpoint}/", "--interval", "0.01"]) == 0
    assert state.requests[-1][2]["Authorization"] == "Bearer s3cret"


def test_fails_when_never_ready(service: tuple[Service, str], capsys: Any) -> None:
    state, endpoint = service
    state.not_ready = 10**6
    assert smoke.main(["--endpoint", endpoint, "--interval", "0.05", "--ready-timeout", "0.3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"SMOKE TEST FAILED: http://{endpoint}/readyz not ready within 0.3 s (last: HTTP 503)"
    )
    assert not [r for r in state.requests if r[0] == "POST"]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ((500, b'{"error":"boom"}'), "answered HTTP 500"),
        ((200, b"<html>"), "answered non-JSON"),
        ((200, b'{"response": {"choices": [{"text": "  "}]}}'), "answered no text"),
    ],
)
def test_fails_on_a_bad_predict_answer(
    service: tuple[Service, str], capsys: Any, answer: tuple[int, bytes], reason: str
) -> None:
    state, endpoint = service
    state.predict = answer
    assert smoke.main(["--endpoint", endpoint, "--interval", "0.01"]) == 1
    assert reason in capsys.readouterr().err


def test_fails_when_nothing_listens(capsys: Any) -> None:
    # A closed port: connection refused until the deadline, with the reason in the message.
    assert smoke.main(["--endpoint", "127.0.0.1:9", "--interval", "0.05", "--ready-timeout", "0.2"]) == 1
    assert "not ready within" in capsys.readouterr().err


def test_fails_on_an_empty_endpoint(capsys: Any) -> None:
    assert smoke.main(["--endpoint", ""]) == 1
    assert "the endpoint is empty" in capsys.readouterr().err


def test_wait_ready_is_bounded_by_the_clock() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    with pytest.raises(smoke.SmokeTestFailed):
        smoke.wait_ready(
            smoke.Target("http://127.0.0.1:9"),
            timeout_s=60,
            interval_s=15,
            clock=lambda: now[0],
            sleep=sleep,
            log=lambda _: None,
        )
    assert sleeps == [15, 15, 15, 15]


def test_runs_as_the_pipeline_runs_it(service: tuple[Service, str]) -> None:
    # The CodeBuild step: `python3 stacks/pipeline/codebuild/smoke.py` with the endpoint in LLAMA_ENDPOINT.
    _, endpoint = service
    proc = subprocess.run(
        [sys.executable, "stacks/pipeline/codebuild/smoke.py", "--interval", "0.01"],
        cwd=REPO,
        env={"LLAMA_ENDPOINT": endpoint, "READY_TIMEOUT_S": "5", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "SMOKE TEST PASSED" in proc.stdout


class FakeAws:
    """The AWS CLI calls of the kubernetes-api mode, answered like AWS would (no AWS here)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    def __call__(self, args: list[str], env: dict[str, str]) -> dict[str, Any]:
        self.calls.append((args, env))
        if args[:2] == ["sts", "assume-role"]:
            return {"Credentials": {"AccessKeyId": "AKIA1", "SecretAccessKey": "s", "SessionToken": "t"}}
        if args[:2] == ["eks", "describe-cluster"]:
            return {"cluster": {"endpoint": self.endpoint, "certificateAuthority": {"data": ""}}}
        if args[:2] == ["eks", "get-token"]:
            return {"status": {"token": f"k8s-aws-v1.token{len(self.calls)}"}}
        raise AssertionError(args)


def test_kubernetes_api_mode_goes_through_the_service_proxy_as_the_smoke_role(
    service: tuple[Service, str],
) -> None:
    state, endpoint = service
    state.not_ready = 1
    aws = FakeAws(f"http://{endpoint}")
    role = "arn:aws:iam::222222222222:role/llama-eks-prod-smoke-test"
    argv = ["--via", "kubernetes-api", "--cluster", "llama-eks-prod", "--region", "us-west-2"]
    argv += ["--role-arn", role, "--namespace", "llama", "--service", "my-llama-svc", "--interval", "0.01"]
    assert smoke.main(argv, aws=aws) == 0
    proxy = "/api/v1/namespaces/llama/services/my-llama-svc:80/proxy"
    assert [(m, p) for m, p, _, _ in state.requests] == [
        ("GET", f"{proxy}/readyz"),
        ("GET", f"{proxy}/readyz"),
        ("POST", f"{proxy}/predict"),
    ]
    assert all(h["Authorization"] == "Bearer k8s-aws-v1.token3" for _, _, h, _ in state.requests)
    (assume, _), (describe, env), (token, token_env) = aws.calls
    assert assume == ["sts", "assume-role", "--role-arn", role, "--role-session-name", "llama-eks-smoke-test"]
    assert describe == ["eks", "describe-cluster", "--name", "llama-eks-prod", "--region", "us-west-2"]
    assert token == ["eks", "get-token", "--cluster-name", "llama-eks-prod", "--region", "us-west-2"]
    # The EKS calls run as the assumed role, never as the CodeBuild role itself.
    assert env["AWS_SESSION_TOKEN"] == token_env["AWS_SESSION_TOKEN"] == "t"


def test_kubernetes_api_token_is_reminted_before_it_expires() -> None:
    now = [0.0]
    aws = FakeAws("http://127.0.0.1:9")
    target = smoke.kubernetes_api_target(
        cluster="c",
        region="us-west-2",
        role_arn="arn:aws:iam::1:role/r",
        namespace="n",
        service="s",
        port="80",
        aws=aws,
        clock=lambda: now[0],
    )
    first = target.headers()["Authorization"]
    now[0] = smoke.TOKEN_REFRESH_S - 1
    assert target.headers()["Authorization"] == first
    now[0] = smoke.TOKEN_REFRESH_S + 1
    assert target.headers()["Authorization"] != first
    assert [a[:2] for a, _ in aws.calls].count(["eks", "get-token"]) == 2


def test_kubernetes_api_mode_fails_clearly_without_a_cluster_name(capsys: Any) -> None:
    assert smoke.main(["--via", "kubernetes-api", "--cluster", ""], aws=FakeAws("http://x")) == 1
    assert "the cluster name is empty" in capsys.readouterr().err


def test_seed_request_comes_from_the_environment_in_the_in_vpc_project(
    service: tuple[Service, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The in-VPC project has only the script's folder: the stage passes config/seed_predict.json's request.
    state, endpoint = service
    from config.names import SEED_PREDICT_BODY, SEED_PREDICT_REQUEST

    monkeypatch.setenv(smoke.SEED_REQUEST_ENV, SEED_PREDICT_BODY)
    monkeypatch.setattr(smoke, "SEED_PREDICT_FILE", REPO / "no-such-file.json")
    assert smoke.main(["--endpoint", endpoint, "--interval", "0.01"]) == 0
    (body,) = [b for m, _, _, b in state.requests if m == "POST"]
    assert json.loads(body) == SEED_PREDICT_REQUEST


class FakeCodeBuild:
    """The AWS CLI calls of the vpc mode: a build that runs ``polls`` polls and ends ``status``."""

    def __init__(self, status: str = "SUCCEEDED", polls: int = 2) -> None:
        self.status, self.polls = status, polls
        self.calls: list[tuple[list[str], dict[str, str]]] = []

    def __call__(self, args: list[str], env: dict[str, str]) -> dict[str, Any]:
        self.calls.append((args, env))
        if args[:2] == ["sts", "assume-role"]:
            return {"Credentials": {"AccessKeyId": "AKIA1", "SecretAccessKey": "s", "SessionToken": "t"}}
        if args[:2] == ["codebuild", "start-build"]:
            return {"build": {"id": "p:1", "buildStatus": "IN_PROGRESS", "currentPhase": "QUEUED"}}
        if args[:2] == ["codebuild", "batch-get-builds"]:
            self.polls -= 1
            status = "IN_PROGRESS" if self.polls > 0 else self.status
            logs = {"groupName": "/smoke", "streamName": "p/1"}
            return {"builds": [{"id": "p:1", "buildStatus": status, "currentPhase": "BUILD", "logs": logs}]}
        if args[:2] == ["logs", "get-log-events"]:
            return {"events": [{"message": "ready after 3 attempt(s)\n"}, {"message": "SMOKE TEST PASSED\n"}]}
        raise AssertionError(args)


VPC_ARGS = [
    "--via",
    "vpc",
    "--project",
    "llama-eks-prod-smoke-test-in-vpc",
    "--endpoint",
    "internal-my-llama-123.elb.us-west-2.amazonaws.com",
    "--region",
    "us-west-2",
    "--role-arn",
    "arn:aws:iam::222222222222:role/llama-eks-prod-smoke-test",
    "--interval",
    "0.01",
]


def test_vpc_mode_starts_the_stages_project_on_the_endpoint_and_prints_its_log(capsys: Any) -> None:
    aws = FakeCodeBuild()
    assert smoke.main(VPC_ARGS, aws=aws) == 0
    (assume, _), (start, env), *polls, (log_call, _) = aws.calls
    assert assume[:4] == [
        "sts",
        "assume-role",
        "--role-arn",
        "arn:aws:iam::222222222222:role/llama-eks-prod-smoke-test",
    ]
    assert start == [
        "codebuild",
        "start-build",
        "--project-name",
        "llama-eks-prod-smoke-test-in-vpc",
        "--environment-variables-override",
        "name=LLAMA_ENDPOINT,value=internal-my-llama-123.elb.us-west-2.amazonaws.com,type=PLAINTEXT",
    ]
    assert env["AWS_SESSION_TOKEN"] == "t"  # as the assumed role, never as the pipeline's CodeBuild role
    assert [p[:2] for p, _ in polls] == [["codebuild", "batch-get-builds"]] * 2
    assert log_call[:2] == ["logs", "get-log-events"]
    out = capsys.readouterr().out
    assert "| SMOKE TEST PASSED" in out and out.rstrip().endswith("SMOKE TEST PASSED")


def test_vpc_mode_fails_with_the_builds_status(capsys: Any) -> None:
    assert smoke.main(VPC_ARGS, aws=FakeCodeBuild(status="FAILED")) == 1
    captured = capsys.readouterr()
    assert "| SMOKE TEST PASSED" in captured.out  # the build's log is printed either way
    assert "SMOKE TEST FAILED: the in-VPC smoke test p:1 ended FAILED (its log is above)" in captured.err


def test_vpc_mode_wait_is_bounded() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(smoke.SmokeTestFailed, match="p:1 did not finish within 60 s"):
        smoke.run_in_vpc(
            project="p",
            endpoint="internal-x.elb.amazonaws.com",
            region="us-west-2",
            role_arn="arn:aws:iam::1:role/r",
            timeout_s=60,
            interval_s=15,
            aws=FakeCodeBuild(polls=100),
            clock=lambda: now[0],
            sleep=sleep,
            log=lambda _: None,
        )
    assert now[0] == 60  # four polls, the last at the deadline; a fifth would pass it


def test_vpc_mode_fails_clearly_without_an_endpoint(capsys: Any) -> None:
    aws = FakeCodeBuild()
    argv = [a if a != "internal-my-llama-123.elb.us-west-2.amazonaws.com" else "" for a in VPC_ARGS]
    assert smoke.main(argv, aws=aws) == 1
    assert "the endpoint is empty" in capsys.readouterr().err
    assert aws.calls == []  # nothing started
