"""Post-deploy smoke test of one pipeline stage (stdlib + the AWS CLI: it runs on a bare CodeBuild image).

1. ``GET /readyz`` until it answers 200 (bounded by ``--ready-timeout``): the first deploy waits for a GPU
   node, the model download and load.
2. ``POST /predict`` with the seed's request (``prompt`` + ``sys_msg``); the answer must be HTTP 200 with a
   JSON object that carries non-empty text.

Three ways to reach the service (``LLAMA_SMOKE_VIA``):

- ``endpoint``: straight to the NLB hostname (the stage's ``EndpointHostname`` output), for an
  internet-facing NLB whose source ranges admit CodeBuild. The in-VPC project below runs this mode too.
- ``vpc``: from inside the cluster's VPC. The stage has a CodeBuild project in the VPC's private subnets
  that runs this script in ``endpoint`` mode against the (internal) NLB; here, as the stage's smoke-test
  role (``aws sts assume-role``), the script starts that project with the endpoint, waits for it and
  prints its log. Works with a private cluster endpoint and an internal NLB (the production default).
- ``kubernetes-api``: through the EKS API server's service proxy
  (``/api/v1/namespaces/NS/services/SVC:PORT/proxy/...``) with a token of the stage's smoke-test role
  (an EKS access entry scoped to the service's namespace). Needs the cluster API's public endpoint.

Exit 0 on success, 1 with a one-line reason otherwise::

    LLAMA_ENDPOINT=my-llama-nlb-123.elb.us-west-2.amazonaws.com python3 stacks/pipeline/codebuild/smoke.py
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: The seed's smoke request (book ch3): the same body its curl example sends to /predict. Its one home is
#: config/seed_predict.json (read by path: this script runs on a bare CodeBuild image, without the app's
#: dependencies). The in-VPC project has only this folder: the stage passes the request in
#: ``LLAMA_SEED_REQUEST`` (read from the same file at synth).
SEED_PREDICT_FILE = Path(__file__).resolve().parents[3] / "config" / "seed_predict.json"
SEED_REQUEST_ENV = "LLAMA_SEED_REQUEST"


def seed_request() -> dict[str, str]:
    """The seed's /predict body: from ``LLAMA_SEED_REQUEST`` when set, else from config/seed_predict.json."""
    raw = os.environ.get(SEED_REQUEST_ENV) or SEED_PREDICT_FILE.read_text()
    request: dict[str, str] = json.loads(raw)
    return request


class SmokeTestFailed(Exception):
    pass


def base_url(endpoint: str) -> str:
    """``http://HOST`` for a bare hostname (the Service output), the URL itself when it has a scheme."""
    endpoint = endpoint.strip().rstrip("/")
    if not endpoint:
        raise SmokeTestFailed("the endpoint is empty: the stage's EndpointHostname output has no value")
    return endpoint if "://" in endpoint else f"http://{endpoint}"


class Target:
    """Where requests go: a base URL, headers (fresh per request) and the TLS context."""

    def __init__(
        self,
        base: str,
        headers: Callable[[], dict[str, str]] = dict,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.base = base
        self.headers = headers
        self.context = context

    def request(self, path: str, *, timeout: float, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.base + path, data=data, method="POST" if body is not None else "GET"
        )
        if body is not None:
            req.add_header("Content-Type", "application/json")
        for key, value in self.headers().items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.context) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()


def endpoint_target(endpoint: str, api_key: str | None = None) -> Target:
    """Straight to the NLB; the model server's bearer API key when the service has one."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return Target(base_url(endpoint), lambda: dict(headers))


AwsCli = Callable[[list[str], dict[str, str]], dict[str, Any]]


def run_aws(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """``aws ARGS --output json`` -> parsed JSON; raise SmokeTestFailed with the CLI's error."""
    proc = subprocess.run(
        ["aws", *args, "--output", "json"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        raise SmokeTestFailed(f"aws {' '.join(args[:2])} failed: {proc.stderr.strip()[:300]}")
    parsed: dict[str, Any] = json.loads(proc.stdout)
    return parsed


#: EKS tokens live 15 minutes; the ready wait can be longer, so a token is re-minted after this long.
TOKEN_REFRESH_S = 600.0


def kubernetes_api_target(
    *,
    cluster: str,
    region: str,
    role_arn: str,
    namespace: str,
    service: str,
    port: str,
    aws: AwsCli = run_aws,
    clock: Callable[[], float] = time.monotonic,
) -> Target:
    """Through the API server's service proxy, as the stage's smoke-test role."""
    if not cluster:
        raise SmokeTestFailed("the cluster name is empty: the stage's ClusterName output has no value")
    env = assume_role_env(role_arn, region, aws)
    desc = aws(["eks", "describe-cluster", "--name", cluster, "--region", region], env)["cluster"]
    context = None
    if desc["endpoint"].startswith("https://"):
        ca = base64.b64decode(desc["certificateAuthority"]["data"]).decode()
        context = ssl.create_default_context(cadata=ca)
    token: dict[str, Any] = {"value": "", "at": float("-inf")}

    def headers() -> dict[str, str]:
        if clock() - token["at"] > TOKEN_REFRESH_S:
            minted = aws(["eks", "get-token", "--cluster-name", cluster, "--region", region], env)
            token.update(value=minted["status"]["token"], at=clock())
        return {"Authorization": f"Bearer {token['value']}"}

    base = f"{desc['endpoint'].rstrip('/')}/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy"
    return Target(base, headers, context)


def wait_ready(
    target: Target,
    *,
    timeout_s: float,
    interval_s: float = 15.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> int:
    """Poll ``/readyz`` until 200; return the number of attempts. Raise after ``timeout_s``."""
    deadline = clock() + timeout_s
    attempt = 0
    while True:
        attempt += 1
        try:
            status, _ = target.request("/readyz", timeout=10)
            last = f"HTTP {status}"
        except (OSError, urllib.error.URLError) as err:  # DNS not yet propagated, NLB not yet listening
            status, last = 0, f"{type(err).__name__}: {err}"
        if status == 200:
            log(f"ready after {attempt} attempt(s)")
            return attempt
        log(f"not ready (attempt {attempt}): {last}")
        if clock() + interval_s > deadline:
            raise SmokeTestFailed(f"{target.base}/readyz not ready within {timeout_s:g} s (last: {last})")
        sleep(interval_s)


def check_predict(target: Target, *, timeout_s: float) -> str:
    """POST the seed request to ``/predict``; return the generated text. Raise on anything unexpected."""
    where = f"POST {target.base}/predict"
    try:
        status, raw = target.request("/predict", timeout=timeout_s, body=seed_request())
    except (OSError, urllib.error.URLError) as err:
        raise SmokeTestFailed(f"{where} failed: {type(err).__name__}: {err}") from None
    if status != 200:
        raise SmokeTestFailed(f"{where} answered HTTP {status}: {raw[:300]!r}")
    try:
        answer = json.loads(raw)
    except ValueError:
        raise SmokeTestFailed(f"{where} answered non-JSON: {raw[:300]!r}") from None
    text = _text_of(answer)
    if not text.strip():
        raise SmokeTestFailed(f"{where} answered no text: {raw[:300]!r}")
    return text


def _text_of(answer: Any) -> str:
    """The generated text of a /predict answer: a JSON string, or the first string field that holds it."""
    if isinstance(answer, str):
        return answer
    if isinstance(answer, dict):
        # The seed wraps llama.cpp's completion object: {"response": {"choices": [{"text": ...}]}}.
        for key in ("response", "text", "content", "completion", "output"):
            if isinstance(answer.get(key), str | dict):
                return _text_of(answer[key])
        choices = answer.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            first = choices[0]
            message = first.get("message")
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                return str(message["content"])
            if isinstance(first.get("text"), str):
                return str(first["text"])
    return ""


#: Build states of a finished CodeBuild build other than SUCCEEDED (FAILED, FAULT, TIMED_OUT, STOPPED).
_BUILD_RUNNING = "IN_PROGRESS"


def assume_role_env(role_arn: str, region: str, aws: AwsCli) -> dict[str, str]:
    """The environment of AWS CLI calls as ``role_arn`` (never as the CodeBuild role itself)."""
    creds = aws(
        ["sts", "assume-role", "--role-arn", role_arn, "--role-session-name", "llama-eks-smoke-test"],
        dict(os.environ),
    )["Credentials"]
    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
        "AWS_SESSION_TOKEN": creds["SessionToken"],
        "AWS_REGION": region,
    }


def run_in_vpc(
    *,
    project: str,
    endpoint: str,
    region: str,
    role_arn: str,
    timeout_s: float,
    interval_s: float = 15.0,
    aws: AwsCli = run_aws,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> None:
    """Start the stage's in-VPC smoke-test project on ``endpoint`` as ``role_arn``, wait for it (bounded by
    ``timeout_s``), print its log; raise SmokeTestFailed unless the build succeeded."""
    if not project:
        raise SmokeTestFailed("the in-VPC smoke-test project name is empty")
    base_url(endpoint)  # an empty endpoint fails here, before anything starts
    env = assume_role_env(role_arn, region, aws)
    override = f"name=LLAMA_ENDPOINT,value={endpoint},type=PLAINTEXT"
    build = aws(
        ["codebuild", "start-build", "--project-name", project, "--environment-variables-override", override],
        env,
    )["build"]
    build_id = build["id"]
    log(f"started {build_id} in the stage's VPC")
    deadline = clock() + timeout_s
    while build.get("buildStatus", _BUILD_RUNNING) == _BUILD_RUNNING:
        if clock() + interval_s > deadline:
            raise SmokeTestFailed(f"{build_id} did not finish within {timeout_s:g} s")
        sleep(interval_s)
        build = aws(["codebuild", "batch-get-builds", "--ids", build_id], env)["builds"][0]
        log(f"{build_id}: {build.get('currentPhase', '?')}")
    _print_build_log(build, env, aws, log)
    status = build["buildStatus"]
    if status != "SUCCEEDED":
        raise SmokeTestFailed(f"the in-VPC smoke test {build_id} ended {status} (its log is above)")


def _print_build_log(
    build: dict[str, Any], env: dict[str, str], aws: AwsCli, log: Callable[[str], None]
) -> None:
    logs = build.get("logs") or {}
    group, stream = logs.get("groupName"), logs.get("streamName")
    if not group or not stream:
        log("(the build wrote no log)")
        return
    events = aws(
        [
            "logs",
            "get-log-events",
            "--log-group-name",
            group,
            "--log-stream-name",
            stream,
            "--start-from-head",
        ],
        env,
    ).get("events", [])
    for event in events:
        log(f"| {event.get('message', '').rstrip()}")


def main(argv: list[str] | None = None, *, aws: AwsCli = run_aws) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--via", choices=["endpoint", "vpc", "kubernetes-api"], default=env.get("LLAMA_SMOKE_VIA", "endpoint")
    )
    parser.add_argument("--project", default=env.get("LLAMA_SMOKE_PROJECT", ""))
    parser.add_argument("--endpoint", default=env.get("LLAMA_ENDPOINT", ""))
    parser.add_argument("--cluster", default=env.get("LLAMA_CLUSTER_NAME", ""))
    parser.add_argument("--region", default=env.get("LLAMA_CLUSTER_REGION", env.get("AWS_REGION", "")))
    parser.add_argument("--role-arn", default=env.get("LLAMA_SMOKE_ROLE_ARN", ""))
    parser.add_argument("--namespace", default=env.get("LLAMA_NAMESPACE", "llama"))
    parser.add_argument("--service", default=env.get("LLAMA_SERVICE", "my-llama-svc"))
    parser.add_argument("--port", default=env.get("LLAMA_SERVICE_PORT", "80"))
    parser.add_argument("--ready-timeout", type=float, default=float(env.get("READY_TIMEOUT_S", 1200)))
    parser.add_argument("--predict-timeout", type=float, default=float(env.get("PREDICT_TIMEOUT_S", 300)))
    parser.add_argument("--interval", type=float, default=15.0)
    args = parser.parse_args(argv)
    try:
        if args.via == "vpc":
            run_in_vpc(
                project=args.project,
                endpoint=args.endpoint,
                region=args.region,
                role_arn=args.role_arn,
                # The project's own timeout bounds the wait too; this one covers its queue and start.
                timeout_s=args.ready_timeout + args.predict_timeout + 600,
                interval_s=args.interval,
                aws=aws,
            )
            print("SMOKE TEST PASSED")
            return 0
        if args.via == "kubernetes-api":
            target = kubernetes_api_target(
                cluster=args.cluster,
                region=args.region,
                role_arn=args.role_arn,
                namespace=args.namespace,
                service=args.service,
                port=args.port,
                aws=aws,
            )
        else:
            # The API key, when the service has one, comes from the environment only (never argv).
            target = endpoint_target(args.endpoint, env.get("LLAMA_API_KEY") or None)
        print(f"smoke test of {target.base}")
        wait_ready(target, timeout_s=args.ready_timeout, interval_s=args.interval)
        text = check_predict(target, timeout_s=args.predict_timeout)
    except SmokeTestFailed as err:
        print(f"SMOKE TEST FAILED: {err}", file=sys.stderr)
        return 1
    print(f"/predict answered {len(text)} characters: {text[:200]!r}")
    print("SMOKE TEST PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
