"""/openapi.json matches what the server does: schemathesis with every check against a real server.

Bounded: a fixed seed and example count (about 500 requests, well under a minute on 2 cores) and a hard
timeout. `positive_data_acceptance` lets schema-valid requests get the 400s no schema can express
(tests/model_server/schemathesis.toml).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def test_schemathesis_all_checks_find_nothing(start_server, tmp_path):
    server = start_server(
        max_concurrency=4,
        max_queue=64,
        n_ctx=512,
        max_tokens_limit=8,
        default_max_tokens=4,
        max_body_bytes=65536,
    )
    cmd = [
        str(SCHEMATHESIS),
        "--config-file", str(REPO / "tests/model_server/schemathesis.toml"),
        "--no-color",
        "run", f"{server.url}/openapi.json",
        "--checks", "all",
        "--max-examples", "25",
        "--seed", "12",
        "--workers", "1",
        "--request-timeout", "30",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-8000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "failed" not in out.stdout.split("SUMMARY")[-1]
    assert server.client.get("/healthz").status_code == 200
