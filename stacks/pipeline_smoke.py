"""Post-deploy smoke test of one pipeline stage (stdlib only: it runs on a bare CodeBuild image).

1. ``GET /readyz`` until it answers 200 (bounded by ``--ready-timeout``): the first deploy waits for a GPU
   node, the model download and load.
2. ``POST /predict`` with the seed's request (``prompt`` + ``sys_msg``); the answer must be HTTP 200 with a
   JSON object that carries non-empty text.

Exit 0 on success, 1 with a one-line reason otherwise. In the pipeline the endpoint comes from the stage's
CfnOutput (``env_from_cfn_outputs``)::

    LLAMA_ENDPOINT=my-llama-nlb-123.elb.us-west-2.amazonaws.com python3 stacks/pipeline_smoke.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

#: The seed's smoke request (book ch3): the same body its curl example sends to /predict.
SEED_PREDICT_REQUEST: dict[str, str] = {
    "prompt": "Create a poem about humanity?",
    "sys_msg": (
        "You are a helpful, respectful, and honest assistant. Always provide safe, unbiased, and positive "
        "responses. Avoid harmful, unethical, or illegal content. If a question is unclear or incorrect, "
        "explain why. If unsure, do not provide false information."
    ),
}


class SmokeTestFailed(Exception):
    pass


def base_url(endpoint: str) -> str:
    """``http://HOST`` for a bare hostname (the Service output), the URL itself when it has a scheme."""
    endpoint = endpoint.strip().rstrip("/")
    if not endpoint:
        raise SmokeTestFailed("the endpoint is empty: the stage's EndpointHostname output has no value")
    return endpoint if "://" in endpoint else f"http://{endpoint}"


def _request(
    url: str, *, timeout: float, body: dict[str, Any] | None = None, api_key: str | None = None
) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_ready(
    base: str,
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
            status, _ = _request(f"{base}/readyz", timeout=10)
            last = f"HTTP {status}"
        except (OSError, urllib.error.URLError) as err:  # DNS not yet propagated, NLB not yet listening
            status, last = 0, f"{type(err).__name__}: {err}"
        if status == 200:
            log(f"ready after {attempt} attempt(s)")
            return attempt
        log(f"not ready (attempt {attempt}): {last}")
        if clock() + interval_s > deadline:
            raise SmokeTestFailed(f"{base}/readyz not ready within {timeout_s:g} s (last: {last})")
        sleep(interval_s)


def check_predict(base: str, *, timeout_s: float, api_key: str | None = None) -> str:
    """POST the seed request to ``/predict``; return the generated text. Raise on anything unexpected."""
    try:
        status, raw = _request(
            f"{base}/predict", timeout=timeout_s, body=SEED_PREDICT_REQUEST, api_key=api_key
        )
    except (OSError, urllib.error.URLError) as err:
        raise SmokeTestFailed(f"POST {base}/predict failed: {type(err).__name__}: {err}") from None
    if status != 200:
        raise SmokeTestFailed(f"POST {base}/predict answered HTTP {status}: {raw[:300]!r}")
    try:
        answer = json.loads(raw)
    except ValueError:
        raise SmokeTestFailed(f"POST {base}/predict answered non-JSON: {raw[:300]!r}") from None
    text = _text_of(answer)
    if not text.strip():
        raise SmokeTestFailed(f"POST {base}/predict answered no text: {raw[:300]!r}")
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
                return message["content"]
            if isinstance(first.get("text"), str):
                return first["text"]
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default=os.environ.get("LLAMA_ENDPOINT", ""))
    parser.add_argument("--ready-timeout", type=float, default=float(os.environ.get("READY_TIMEOUT_S", 1200)))
    parser.add_argument(
        "--predict-timeout", type=float, default=float(os.environ.get("PREDICT_TIMEOUT_S", 300))
    )
    parser.add_argument("--interval", type=float, default=15.0)
    args = parser.parse_args(argv)
    # The API key, when the service has one, comes from the environment only (never a command line).
    api_key = os.environ.get("LLAMA_API_KEY") or None
    try:
        base = base_url(args.endpoint)
        print(f"smoke test of {base}")
        wait_ready(base, timeout_s=args.ready_timeout, interval_s=args.interval)
        text = check_predict(base, timeout_s=args.predict_timeout, api_key=api_key)
    except SmokeTestFailed as err:
        print(f"SMOKE TEST FAILED: {err}", file=sys.stderr)
        return 1
    print(f"/predict answered {len(text)} characters: {text[:200]!r}")
    print("SMOKE TEST PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
