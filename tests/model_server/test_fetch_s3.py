"""s3:// fetches through boto3 against moto's in-process S3 (no AWS account, no network)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

moto = pytest.importorskip("moto", reason="moto is pinned in requirements-dev.txt")
boto3 = pytest.importorskip("boto3")

from model_server import fetch as f  # noqa: E402

PAYLOAD = os.urandom(2 * 1024 * 1024 + 77)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in list(os.environ):
        if name.startswith(("MODEL_SERVER_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    with moto.mock_aws():
        client = boto3.client("s3", region_name="us-west-2")
        client.create_bucket(Bucket="models", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        client.put_object(Bucket="models", Key="llama/m.gguf", Body=PAYLOAD)
        yield client


def settings(tmp_path: Path, uri: str, **kw: object) -> f.FetchSettings:
    return f.FetchSettings(model_uri=uri, model_dir=tmp_path / "models", fetch_backoff_s=0.01, **kw)


def test_s3_download_with_default_client_chain(s3: Any, tmp_path: Path) -> None:
    result = f.fetch(
        settings(tmp_path, "s3://models/llama/m.gguf", model_sha256=DIGEST)
    )  # boto3.client("s3")
    assert result.path == tmp_path / "models" / "m.gguf" and result.path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in result.path.parent.iterdir()) == ["m.gguf"]


def test_s3_missing_key_and_bucket(s3: Any, tmp_path: Path) -> None:
    with pytest.raises(
        f.FetchError, match=r"^model not found: s3://models/nope\.gguf \(s3 object does not exist\)$"
    ):
        f.fetch(settings(tmp_path, "s3://models/nope.gguf"), s3_client=s3)
    with pytest.raises(
        f.FetchError, match=r"^model not found: s3://other/m\.gguf \(s3 bucket 'other' does not"
    ):
        f.fetch(settings(tmp_path, "s3://other/m.gguf"), s3_client=s3)
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []


def test_s3_checksum_mismatch(s3: Any, tmp_path: Path) -> None:
    with pytest.raises(
        f.FetchError, match=f"checksum mismatch for s3://models/llama/m.gguf: .* got {DIGEST}"
    ):
        f.fetch(settings(tmp_path, "s3://models/llama/m.gguf", model_sha256="a" * 64), s3_client=s3)
    assert list((tmp_path / "models").iterdir()) == []


class _Truncating:
    """A response body that raises after ``limit`` bytes, like a connection reset mid-transfer."""

    def __init__(self, body: Any, limit: int) -> None:
        self.body, self.left = body, limit

    def read(self, amt: int) -> bytes:
        if self.left <= 0:
            from botocore.exceptions import ResponseStreamingError

            raise ResponseStreamingError(error=ConnectionResetError("reset by peer"))
        data = self.body.read(min(amt, self.left))
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.body.close()


def test_s3_interrupted_body_resumes_with_ranged_get(s3: Any, tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []
    cuts = [1_500_000]

    def before(params: dict[str, Any], **_: Any) -> None:
        calls.append({k: v for k, v in params.items() if k in ("Range", "IfMatch")})

    def after(parsed: dict[str, Any], **_: Any) -> None:
        if cuts and "Body" in parsed:
            parsed["Body"] = _Truncating(parsed["Body"], cuts.pop(0))

    s3.meta.events.register("provide-client-params.s3.GetObject", before)
    s3.meta.events.register("after-call.s3.GetObject", after)
    delays: list[float] = []
    result = f.fetch(
        settings(tmp_path, "s3://models/llama/m.gguf", model_sha256=DIGEST), s3_client=s3, sleep=delays.append
    )
    assert result.path.read_bytes() == PAYLOAD
    etag = s3.head_object(Bucket="models", Key="llama/m.gguf")["ETag"]
    assert calls == [{}, {"Range": "bytes=1500000-", "IfMatch": etag}]
    assert len(delays) == 1


def test_s3_object_replaced_mid_download_restarts_from_zero(s3: Any, tmp_path: Path) -> None:
    new = os.urandom(len(PAYLOAD))
    cuts = [1_000_000]

    def after(parsed: dict[str, Any], **_: Any) -> None:
        if cuts and "Body" in parsed:
            parsed["Body"] = _Truncating(parsed["Body"], cuts.pop(0))
            boto3.client("s3", region_name="us-west-2").put_object(
                Bucket="models", Key="llama/m.gguf", Body=new
            )

    s3.meta.events.register("after-call.s3.GetObject", after)
    result = f.fetch(settings(tmp_path, "s3://models/llama/m.gguf"), s3_client=s3, sleep=lambda _: None)
    assert result.path.read_bytes() == new  # IfMatch failed (412), the partial was dropped, not spliced


def test_s3_stale_partial_longer_than_object_restarts(s3: Any, tmp_path: Path) -> None:
    s = settings(tmp_path, "s3://models/llama/m.gguf")
    dest = f.resolve_model_path(s)
    dest.parent.mkdir(parents=True)
    f._partial_path(dest, s.model_uri, None).write_bytes(PAYLOAD + b"extra")  # left by an older object
    result = f.fetch(s, s3_client=s3, sleep=lambda _: None)
    assert result.path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m.gguf"]
