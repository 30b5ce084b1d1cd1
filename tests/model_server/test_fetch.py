"""model_server.fetch against a real HTTP server on 127.0.0.1, real files, and S3 through moto (no AWS)."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from model_server import fetch as f

REPO = Path(__file__).resolve().parents[2]
PAYLOAD = bytes((i * 7 + 3) % 251 for i in range(3 * 1024 * 1024 + 123))  # 3 MiB + change, > 1 chunk
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
TOKEN = "hf_test_token_123"


@dataclass
class Seen:
    path: str
    range: str | None
    authorization: str | None
    if_range: str | None


@dataclass
class Behaviour:
    """What the test server does for one path."""

    body: bytes = PAYLOAD
    status: int = 200
    drop_after: list[int] = field(default_factory=list)  # per request: bytes sent before the connection drops
    failures: list[int] = field(default_factory=list)  # per request: an error status to answer first
    retry_after: str | None = None
    honour_range: bool = True
    token: str | None = None  # answer 403 unless this bearer token is sent
    redirect_to: str | None = None


class Server:
    def __init__(self) -> None:
        self.routes: dict[str, Behaviour] = {}
        self.seen: list[Seen] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.seen.append(
                    Seen(
                        self.path,
                        self.headers.get("Range"),
                        self.headers.get("Authorization"),
                        self.headers.get("If-Range"),
                    )
                )
                b = server.routes.get(self.path.split("?")[0])
                if b is None:
                    self.send_error(404)
                    return
                if b.redirect_to:
                    self.send_response(302)
                    self.send_header("Location", b.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if b.token is not None and self.headers.get("Authorization") != f"Bearer {b.token}":
                    self.send_error(403)
                    return
                if b.failures:
                    self.send_response(b.failures.pop(0))
                    if b.retry_after:
                        self.send_header("Retry-After", b.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and b.honour_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(b.body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(b.body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(b.body) - 1}/{len(b.body)}")
                else:
                    self.send_response(b.status)
                body = b.body[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"v1"')
                self.end_headers()
                if b.drop_after:
                    cut = b.drop_after.pop(0)
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MODEL_SERVER_"):
            monkeypatch.delenv(name)


def settings(tmp_path: Path, uri: str, **kw: object) -> f.FetchSettings:
    kw.setdefault("fetch_backoff_s", 0.01)
    return f.FetchSettings(model_uri=uri, model_dir=tmp_path / "models", **kw)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# ------------------------------------------------------------------------------------------ http(s)
def test_http_download_verified_atomic(server: Server, tmp_path: Path) -> None:
    server.routes["/repo/resolve/main/model.gguf"] = Behaviour()
    result = f.fetch(
        settings(
            tmp_path, f"{server.url}/repo/resolve/main/model.gguf?download=true", model_sha256=DIGEST.upper()
        )
    )
    assert result == f.FetchResult(tmp_path / "models" / "model.gguf", DIGEST, len(PAYLOAD), downloaded=True)
    assert result.path.read_bytes() == PAYLOAD
    assert leftovers(tmp_path / "models") == ["model.gguf"]  # no partial file left behind


def test_interrupted_download_resumes_with_range(server: Server, tmp_path: Path) -> None:
    server.routes["/m.gguf"] = Behaviour(drop_after=[1_000_000, 700_000])
    delays: list[float] = []
    result = f.fetch(settings(tmp_path, f"{server.url}/m.gguf", model_sha256=DIGEST), sleep=delays.append)
    assert result.path.read_bytes() == PAYLOAD
    assert [s.range for s in server.seen] == [None, "bytes=1000000-", "bytes=1700000-"]
    assert [s.if_range for s in server.seen] == [None, '"v1"', '"v1"']
    assert len(delays) == 2 and all(d > 0 for d in delays)
    assert leftovers(tmp_path / "models") == ["m.gguf"]


def test_server_ignoring_range_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    server.routes["/m.gguf"] = Behaviour(drop_after=[500_000], honour_range=False)
    result = f.fetch(settings(tmp_path, f"{server.url}/m.gguf", model_sha256=DIGEST), sleep=lambda _: None)
    assert result.path.read_bytes() == PAYLOAD
    assert [s.range for s in server.seen] == [None, "bytes=500000-"]  # asked, got a 200 full body


def test_partial_file_from_previous_run_is_resumed(server: Server, tmp_path: Path) -> None:
    server.routes["/m.gguf"] = Behaviour()
    s = settings(tmp_path, f"{server.url}/m.gguf", model_sha256=DIGEST)
    dest = f.resolve_model_path(s)
    dest.parent.mkdir(parents=True)
    partial = f._partial_path(dest, s.model_uri, DIGEST)
    partial.write_bytes(PAYLOAD[:2_000_000])  # e.g. an init container killed mid-download
    assert f.fetch(s).path.read_bytes() == PAYLOAD
    assert [x.range for x in server.seen] == ["bytes=2000000-"]


def test_complete_partial_file_gets_416_and_is_verified(server: Server, tmp_path: Path) -> None:
    server.routes["/m.gguf"] = Behaviour()
    s = settings(tmp_path, f"{server.url}/m.gguf", model_sha256=DIGEST)
    dest = f.resolve_model_path(s)
    dest.parent.mkdir(parents=True)
    f._partial_path(dest, s.model_uri, DIGEST).write_bytes(PAYLOAD)
    assert f.fetch(s).path.read_bytes() == PAYLOAD
    assert leftovers(dest.parent) == ["m.gguf"]


def test_checksum_mismatch_refused_and_nothing_left(server: Server, tmp_path: Path) -> None:
    server.routes["/m.gguf"] = Behaviour()
    wrong = "0" * 64
    with pytest.raises(f.FetchError) as err:
        f.fetch(settings(tmp_path, f"{server.url}/m.gguf", model_sha256=wrong))
    assert str(err.value) == (
        f"checksum mismatch for {server.url}/m.gguf: expected sha256 {wrong}, got {DIGEST} "
        f"({len(PAYLOAD)} bytes); "
        f"the download was removed and {tmp_path / 'models' / 'm.gguf'} was not written"
    )
    assert leftovers(tmp_path / "models") == []


def test_missing_object_is_a_clear_error_without_retries(server: Server, tmp_path: Path) -> None:
    delays: list[float] = []
    with pytest.raises(f.FetchError, match=r"^model not found: .*/nope\.gguf returned HTTP 404"):
        f.fetch(settings(tmp_path, f"{server.url}/nope.gguf"), sleep=delays.append)
    assert len(server.seen) == 1 and delays == []
    assert leftovers(tmp_path / "models") == []


def test_forbidden_without_token_names_the_setting(server: Server, tmp_path: Path) -> None:
    server.routes["/gated.gguf"] = Behaviour(token=TOKEN)
    with pytest.raises(
        f.FetchError, match=r"HTTP 403 .*set MODEL_SERVER_HF_TOKEN or MODEL_SERVER_HF_TOKEN_FILE"
    ):
        f.fetch(settings(tmp_path, f"{server.url}/gated.gguf"))


def test_token_from_env_and_from_file(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.routes["/gated.gguf"] = Behaviour(token=TOKEN)
    monkeypatch.setenv("MODEL_SERVER_HF_TOKEN", TOKEN)
    assert f.fetch(settings(tmp_path / "a", f"{server.url}/gated.gguf")).downloaded
    monkeypatch.delenv("MODEL_SERVER_HF_TOKEN")
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    monkeypatch.setenv("MODEL_SERVER_HF_TOKEN_FILE", str(secret))
    assert f.fetch(settings(tmp_path / "b", f"{server.url}/gated.gguf")).path.read_bytes() == PAYLOAD
    assert [s.authorization for s in server.seen] == [f"Bearer {TOKEN}"] * 2
    with pytest.raises(f.FetchError, match=r"HTTP 403 .*the token was refused"):
        monkeypatch.setenv("MODEL_SERVER_HF_TOKEN", "wrong")
        f.fetch(settings(tmp_path / "c", f"{server.url}/gated.gguf"))


def test_token_is_not_forwarded_to_a_redirect_target(server: Server, tmp_path: Path) -> None:
    cdn = Server()
    try:
        cdn.routes["/blob"] = Behaviour()
        server.routes["/resolve/main/m.gguf"] = Behaviour(redirect_to=f"{cdn.url}/blob")
        result = f.fetch(
            settings(tmp_path, f"{server.url}/resolve/main/m.gguf", model_sha256=DIGEST, hf_token=TOKEN)
        )
        assert result.path.name == "m.gguf" and result.path.read_bytes() == PAYLOAD
        assert server.seen[0].authorization == f"Bearer {TOKEN}"
        assert [s.authorization for s in cdn.seen] == [None]
    finally:
        cdn.close()


def test_transient_errors_are_retried_with_backoff_and_retry_after(server: Server, tmp_path: Path) -> None:
    server.routes["/m.gguf"] = Behaviour(failures=[503, 429], retry_after="3")
    delays: list[float] = []
    result = f.fetch(settings(tmp_path, f"{server.url}/m.gguf", model_sha256=DIGEST), sleep=delays.append)
    assert result.downloaded and len(server.seen) == 3
    assert len(delays) == 2 and all(3 <= d <= 30 for d in delays)  # Retry-After honoured, capped


def test_retries_are_bounded(server: Server, tmp_path: Path) -> None:
    server.routes["/m.gguf"] = Behaviour(failures=[500] * 10)
    delays: list[float] = []
    with pytest.raises(
        f.FetchError, match=r"^giving up on .*/m\.gguf after 3 attempts: .* returned HTTP 500"
    ):
        f.fetch(
            settings(
                tmp_path, f"{server.url}/m.gguf", fetch_attempts=3, fetch_backoff_s=1, fetch_backoff_max_s=1.5
            ),
            sleep=delays.append,
        )
    assert len(server.seen) == 3
    assert len(delays) == 2 and 0.5 <= delays[0] <= 1 and 0.75 <= delays[1] <= 1.5  # doubling, jitter, cap


def test_connection_refused_is_retried_then_fails(tmp_path: Path) -> None:
    srv = Server()
    url = srv.url
    srv.close()  # nothing listens on that port any more
    with pytest.raises(f.FetchError, match=r"giving up .* after 2 attempts: cannot connect to"):
        f.fetch(settings(tmp_path, f"{url}/m.gguf", fetch_attempts=2), sleep=lambda _: None)


# ------------------------------------------------------------------------------------------ present already
def test_present_and_verified_is_skipped_without_a_request(server: Server, tmp_path: Path) -> None:
    server.routes["/m.gguf"] = Behaviour()
    dest = tmp_path / "models" / "m.gguf"
    dest.parent.mkdir()
    dest.write_bytes(PAYLOAD)
    before = dest.stat().st_mtime_ns
    result = f.fetch(settings(tmp_path, f"{server.url}/m.gguf", model_sha256=DIGEST))
    assert result == f.FetchResult(dest, DIGEST, len(PAYLOAD), downloaded=False)
    assert server.seen == [] and dest.stat().st_mtime_ns == before


def test_present_but_corrupt_is_downloaded_again(server: Server, tmp_path: Path) -> None:
    server.routes["/m.gguf"] = Behaviour()
    dest = tmp_path / "models" / "m.gguf"
    dest.parent.mkdir()
    dest.write_bytes(PAYLOAD[:-1] + b"X")
    result = f.fetch(settings(tmp_path, f"{server.url}/m.gguf", model_sha256=DIGEST))
    assert result.downloaded and dest.read_bytes() == PAYLOAD and len(server.seen) == 1


def test_present_without_digest_is_kept_and_logged(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dest = tmp_path / "models" / "m.gguf"
    dest.parent.mkdir()
    dest.write_bytes(PAYLOAD)
    caplog.set_level("INFO", logger="model_server.fetch")
    assert not f.fetch(settings(tmp_path, f"{server.url}/m.gguf")).downloaded
    assert server.seen == []
    assert f"sha256 {DIGEST}, not verified" in caplog.text


def test_unverified_download_logs_the_digest(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.routes["/m.gguf"] = Behaviour()
    caplog.set_level("INFO", logger="model_server.fetch")
    assert f.fetch(settings(tmp_path, f"{server.url}/m.gguf")).sha256 == DIGEST
    assert f"sha256 {DIGEST} (NOT verified: pin it with MODEL_SERVER_MODEL_SHA256)" in caplog.text


# ------------------------------------------------------------------------------------------ local sources
@pytest.mark.parametrize("as_uri", [True, False], ids=["file-uri", "local-path"])
def test_local_sources(tmp_path: Path, as_uri: bool) -> None:
    src = tmp_path / "src dir" / "local model.gguf"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    uri = src.as_uri() if as_uri else str(src)
    result = f.fetch(settings(tmp_path, uri, model_sha256=DIGEST))
    assert result.path == tmp_path / "models" / "local model.gguf"
    assert result.path.read_bytes() == PAYLOAD


def test_local_missing_and_explicit_output(tmp_path: Path) -> None:
    with pytest.raises(f.FetchError, match=r"^model not found: file:///nonexistent/x\.gguf"):
        f.fetch(settings(tmp_path, "file:///nonexistent/x.gguf"))
    src = tmp_path / "a.gguf"
    src.write_bytes(b"GGUF" + PAYLOAD[:100])
    out = tmp_path / "elsewhere" / "named.gguf"
    assert f.fetch(settings(tmp_path, str(src), model_path=out)).path == out
    assert out.read_bytes() == src.read_bytes()


# ------------------------------------------------------------------------------------------ settings
def test_settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODEL_SERVER_MODEL_URI", "s3://bucket/dir/m.gguf")
    monkeypatch.setenv("MODEL_SERVER_MODEL_SHA256", f"sha256:{DIGEST.upper()}")
    monkeypatch.setenv("MODEL_SERVER_MODEL_DIR", str(tmp_path))
    s = f.FetchSettings()
    assert (s.model_uri, s.model_sha256) == ("s3://bucket/dir/m.gguf", DIGEST)
    assert f.resolve_model_path(s) == tmp_path / "m.gguf"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model_sha256", "abc", "MODEL_SERVER_MODEL_SHA256 must be 64 hexadecimal digits"),
        ("model_uri", "ftp://host/m.gguf", "scheme 'ftp' is not supported"),
        ("fetch_attempts", 0, "greater than or equal to 1"),
    ],
)
def test_invalid_settings(key: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        f.FetchSettings(**{key: value})


def test_default_model_constant() -> None:
    assert f.DEFAULT_MODEL_URI == (
        "https://huggingface.co/TheBloke/Llama-2-7B-Chat-GGUF/resolve/main/llama-2-7b-chat.Q2_K.gguf"
    )
    assert f.uri_file_name(f.DEFAULT_MODEL_URI) == "llama-2-7b-chat.Q2_K.gguf"


# ------------------------------------------------------------------------------------------ CLI
def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_SERVER_")}
    full.update(env, MODEL_SERVER_MODEL_DIR=str(tmp_path / "models"), PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "model_server", "fetch", *args],
        env=full,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_success_prints_path(server: Server, tmp_path: Path) -> None:
    server.routes["/m.gguf"] = Behaviour()
    proc = run_cli(tmp_path, MODEL_SERVER_MODEL_URI=f"{server.url}/m.gguf", MODEL_SERVER_MODEL_SHA256=DIGEST)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "models" / "m.gguf")
    assert "verified" in proc.stderr


def test_cli_missing_object_exits_1(server: Server, tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "--uri", f"{server.url}/missing.gguf")
    assert proc.returncode == 1
    assert f"model not found: {server.url}/missing.gguf returned HTTP 404" in proc.stderr
    assert proc.stdout == "" and leftovers(tmp_path / "models") == []


def test_cli_checksum_mismatch_exits_1(server: Server, tmp_path: Path) -> None:
    server.routes["/m.gguf"] = Behaviour()
    proc = run_cli(tmp_path, "--uri", f"{server.url}/m.gguf", "--sha256", "f" * 64)
    assert proc.returncode == 1 and "checksum mismatch" in proc.stderr
    assert leftovers(tmp_path / "models") == []


def test_standalone_module_entry_point(server: Server, tmp_path: Path) -> None:
    server.routes["/m.gguf"] = Behaviour()
    full = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_SERVER_")}
    full.update(PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "model_server.fetch", "--uri", f"{server.url}/m.gguf", "--dir", str(tmp_path)],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "m.gguf").read_bytes() == PAYLOAD


def test_cli_config_errors_exit_2(tmp_path: Path) -> None:
    proc = run_cli(tmp_path)
    assert proc.returncode == 2 and "MODEL_SERVER_MODEL_URI (or --uri) is required" in proc.stderr
    proc = run_cli(tmp_path, "--uri", "/x.gguf", "--sha256", "nothex")
    assert proc.returncode == 2 and "must be 64 hexadecimal digits" in proc.stderr


def test_progress_is_logged(server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server.routes["/m.gguf"] = Behaviour()
    caplog.set_level("INFO", logger="model_server.fetch")
    f.fetch(settings(tmp_path, f"{server.url}/m.gguf", fetch_progress_s=1e-6))
    lines = [r.getMessage() for r in caplog.records if "MB/s" in r.getMessage()]
    assert len(lines) >= 3  # one per 1 MiB chunk with a near-zero interval
    assert lines[-1].endswith("MB/s") and f"/{len(PAYLOAD) / 1e6:.1f} MB (100%)" in lines[-1]


def test_unwritable_model_dir_is_a_clear_error(server: Server, tmp_path: Path) -> None:
    server.routes["/m.gguf"] = Behaviour()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    s = f.FetchSettings(model_uri=f"{server.url}/m.gguf", model_dir=blocker / "models")
    with pytest.raises(f.FetchError, match=r"^cannot create the model directory .*not-a-dir/models"):
        f.fetch(s)
    assert server.seen == []
