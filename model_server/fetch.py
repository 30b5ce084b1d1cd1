"""Fetch model weights (a GGUF file) into the model directory: ``python -m model_server fetch``.

In the cluster this runs as an init container that writes into a volume shared with the server container, so
the image stays small and the weights are pulled at start instead of baked in. Sources:

* a local path or ``file://`` URI (a mounted volume, a baked file);
* ``https://`` (and ``http://``), Hugging Face ``resolve`` URLs included, with an optional bearer token
  (``MODEL_SERVER_HF_TOKEN`` or a mounted secret file ``MODEL_SERVER_HF_TOKEN_FILE``) sent to the
  configured host only, never to the host a redirect leads to;
* ``s3://bucket/key`` through boto3's default credential chain (EKS Pod Identity, IRSA, instance profile,
  environment).

Behaviour: the file is written to a partial file beside the destination and renamed into place only once
complete and verified (sha256 when ``MODEL_SERVER_MODEL_SHA256`` is set; the digest is logged otherwise);
interrupted transfers resume with HTTP ``Range`` / S3 ranged GETs; transient failures are retried a
bounded number of times with exponential backoff and jitter; progress is logged; a destination that is
already present and verified is kept and nothing is downloaded. A checksum mismatch, a missing object or a
refused request is a :class:`FetchError` with a message that names the URI, and leaves no file behind.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import logging
import os
import random
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("model_server.fetch")

#: The seed's model (issue 5): Llama 2 7B chat, 2-bit K-quant GGUF (~2.8 GB), TheBloke's Hugging Face repo.
DEFAULT_MODEL_REPO = "TheBloke/Llama-2-7B-Chat-GGUF"
DEFAULT_MODEL_FILE = "llama-2-7b-chat.Q2_K.gguf"
DEFAULT_MODEL_URI = f"https://huggingface.co/{DEFAULT_MODEL_REPO}/resolve/main/{DEFAULT_MODEL_FILE}"

CHUNK = 1024 * 1024
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class FetchError(RuntimeError):
    """The model could not be fetched or verified. The message names the URI and what to do."""


class _Retryable(Exception):
    """A transient failure (network, 5xx, 429, short body): try again, resuming from what was written."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _RetryableWithEtag(_Retryable):
    """An interrupted body; keeps the validator so the resumed request can check the object is unchanged."""

    def __init__(self, message: str, etag: str | None) -> None:
        super().__init__(message)
        self.etag = etag


class FetchSettings(BaseSettings):
    """Fetch settings from ``MODEL_SERVER_*`` environment variables (the server container gets the same).

    Defaults: no URI (``fetch`` refuses to guess; the cluster chart sets :data:`DEFAULT_MODEL_URI`),
    ``model_dir=/models``, destination ``<model_dir>/<file name of the URI>`` unless
    ``MODEL_SERVER_MODEL_PATH`` names the file, 5 attempts per fetch, 1 s initial backoff doubling up to
    30 s, 30 s socket timeout.
    """

    model_config = SettingsConfigDict(env_prefix="MODEL_SERVER_", extra="ignore")

    model_uri: str | None = Field(None, description="local path, file://, https:// or s3:// URI of the GGUF")
    model_sha256: str | None = Field(None, description="expected sha256 (64 hex digits) of the file")
    model_dir: Path = Field(Path("/models"), description="directory the file is written to")
    model_path: Path | None = Field(None, description="full destination path; overrides model_dir")
    hf_token: SecretStr | None = Field(None, description="bearer token for https:// (Hugging Face)")
    hf_token_file: Path | None = Field(None, description="file holding the bearer token (a mounted secret)")
    fetch_attempts: int = Field(5, ge=1, le=100, description="attempts per fetch, the first one included")
    fetch_backoff_s: float = Field(1.0, ge=0, le=60, description="first retry delay; doubles each retry")
    fetch_backoff_max_s: float = Field(30.0, ge=0, le=600, description="cap on one retry delay")
    fetch_timeout_s: float = Field(30.0, gt=0, le=600, description="socket connect/read timeout")
    fetch_progress_s: float = Field(10.0, gt=0, description="seconds between progress log lines")

    @field_validator("model_sha256")
    @classmethod
    def _check_sha256(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().lower().removeprefix("sha256:")
        if not _SHA256_RE.match(value):
            raise ValueError("MODEL_SERVER_MODEL_SHA256 must be 64 hexadecimal digits (a sha256 digest)")
        return value

    @field_validator("model_uri")
    @classmethod
    def _check_uri(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        scheme = urllib.parse.urlsplit(value).scheme.lower()
        if scheme not in ("", "file", "http", "https", "s3"):
            raise ValueError(
                f"MODEL_SERVER_MODEL_URI scheme {scheme!r} is not supported; allowed: local path, file://, "
                "https://, http://, s3://"
            )
        return value

    def token(self) -> str | None:
        """The bearer token: ``hf_token`` if set, else the stripped content of ``hf_token_file``."""
        if self.hf_token is not None and self.hf_token.get_secret_value().strip():
            return self.hf_token.get_secret_value().strip()
        if self.hf_token_file is not None:
            try:
                text = self.hf_token_file.read_text().strip()
            except OSError as exc:
                raise FetchError(
                    f"cannot read MODEL_SERVER_HF_TOKEN_FILE {self.hf_token_file}: {exc}"
                ) from exc
            return text or None
        return None


def uri_file_name(uri: str) -> str:
    """The file name a URI designates: the last path segment, URL-decoded (query and fragment dropped)."""
    parts = urllib.parse.urlsplit(uri)
    path = urllib.parse.unquote(parts.path) if parts.scheme else uri
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if not name or name in (".", ".."):
        raise FetchError(
            f"cannot derive a file name from MODEL_SERVER_MODEL_URI {uri!r}; set MODEL_SERVER_MODEL_PATH"
        )
    return name


def resolve_model_path(settings: FetchSettings) -> Path:
    """Where the model lives: ``model_path`` if set, else ``model_dir / <file name of model_uri>``.

    The server can call this too so that fetch (init container) and serve agree on one path.
    """
    if settings.model_path is not None:
        return settings.model_path
    if settings.model_uri is None:
        raise FetchError(
            "MODEL_SERVER_MODEL_URI is not set (and no MODEL_SERVER_MODEL_PATH): nothing to fetch"
        )
    return settings.model_dir / uri_file_name(settings.model_uri)


# ------------------------------------------------------------------------------------------ sources
@dataclass
class _Response:
    """One opened transfer: ``start`` is the offset of the first byte of ``stream`` in the file."""

    stream: BinaryIO
    start: int
    total: int | None  # full size of the file when known
    etag: str | None
    close: Callable[[], None]


class _Source:
    uri: str

    def open(self, offset: int, etag: str | None) -> _Response:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:
        return self.uri


class _LocalSource(_Source):
    def __init__(self, uri: str) -> None:
        self.uri = uri
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise FetchError(f"file:// URI with a host is not supported: {uri!r}")
            self.path = Path(urllib.parse.unquote(parts.path))
        else:
            self.path = Path(uri)

    def open(self, offset: int, etag: str | None) -> _Response:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError as exc:
            raise FetchError(f"model not found: {self.uri} (no such file {self.path})") from exc
        except IsADirectoryError as exc:
            raise FetchError(f"model URI {self.uri} is a directory, not a GGUF file") from exc
        except PermissionError as exc:
            raise FetchError(f"model {self.uri} is not readable: {exc}") from exc
        total = os.fstat(handle.fileno()).st_size
        start = min(offset, total)
        handle.seek(start)
        return _Response(handle, start, total, None, handle.close)


_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class _HttpSource(_Source):
    def __init__(self, uri: str, token: str | None, timeout: float) -> None:
        self.uri = uri
        self.token = token
        self.timeout = timeout
        self.host = urllib.parse.urlsplit(uri).netloc

    def describe(self) -> str:
        parts = urllib.parse.urlsplit(self.uri)
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))  # no signed query

    def open(self, offset: int, etag: str | None) -> _Response:
        request = urllib.request.Request(self.uri, headers={"User-Agent": "llama-eks-model-fetch/1"})
        if self.token:
            # Unredirected: the token goes to the configured host only, never to a CDN a redirect points at.
            request.add_unredirected_header("Authorization", f"Bearer {self.token}")
        if offset > 0:
            request.add_header("Range", f"bytes={offset}-")
            if etag and not etag.startswith("W/"):
                request.add_header("If-Range", etag)
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            self._raise_for_status(exc.code, exc.headers, offset)
            raise AssertionError("unreachable") from exc  # _raise_for_status always raises
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise _Retryable(f"cannot connect to {self.describe()}: {getattr(exc, 'reason', exc)}") from exc
        headers = response.headers
        new_etag = headers.get("ETag")
        if response.status == 206:
            match = _CONTENT_RANGE_RE.match(headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                response.close()
                raise _Retryable(
                    f"unexpected Content-Range {headers.get('Content-Range')!r} for offset {offset}"
                )
            total = None if match.group(3) == "*" else int(match.group(3))
            return _Response(response, offset, total, new_etag, response.close)
        length = headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        return _Response(response, 0, total, new_etag, response.close)  # 200: full body, restart at 0

    def _raise_for_status(self, code: int, headers: Any, offset: int) -> None:
        where = self.describe()
        if code == 416 and offset > 0:
            # The partial file is already complete (or longer than the object): let the caller verify it.
            match = re.match(r"^bytes \*/(\d+)$", (headers or {}).get("Content-Range", "") or "")
            raise _RangeNotSatisfiable(int(match.group(1)) if match else None)
        if code == 404:
            raise FetchError(
                f"model not found: {where} returned HTTP 404 (check the repository, revision and file)"
            )
        if code in (401, 403):
            hint = (
                "the token was refused"
                if self.token
                else "set MODEL_SERVER_HF_TOKEN or MODEL_SERVER_HF_TOKEN_FILE"
            )
            raise FetchError(
                f"access denied: {where} returned HTTP {code} ({hint}; gated models need a token)"
            )
        if code == 429 or code >= 500:
            retry_after = _parse_retry_after((headers or {}).get("Retry-After"))
            raise _Retryable(f"{where} returned HTTP {code}", retry_after)
        raise FetchError(f"{where} returned HTTP {code}")


class _RangeNotSatisfiable(Exception):
    def __init__(self, total: int | None) -> None:
        super().__init__(f"range not satisfiable (total {total})")
        self.total = total


def _parse_retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


class _S3Source(_Source):
    def __init__(self, uri: str, client: Any | None = None) -> None:
        self.uri = uri
        parts = urllib.parse.urlsplit(uri)
        self.bucket = parts.netloc
        self.key = urllib.parse.unquote(parts.path.lstrip("/"))
        if not self.bucket or not self.key:
            raise FetchError(f"s3 URI must be s3://<bucket>/<key>: {uri!r}")
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # lazy: only s3:// needs it

            self._client = boto3.client("s3")
        return self._client

    def open(self, offset: int, etag: str | None) -> _Response:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key}
        if offset > 0:
            kwargs["Range"] = f"bytes={offset}-"
            if etag:
                kwargs["IfMatch"] = etag  # the object changed since the partial was written -> restart
        try:
            response = self.client.get_object(**kwargs)
        except NoCredentialsError as exc:
            raise FetchError(
                f"no AWS credentials for {self.uri}: configure EKS Pod Identity / IRSA or the AWS_* variables"
            ) from exc
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise FetchError(f"model not found: {self.uri} (s3 object does not exist)") from exc
            if code == "NoSuchBucket":
                raise FetchError(
                    f"model not found: {self.uri} (s3 bucket {self.bucket!r} does not exist)"
                ) from exc
            if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled"):
                raise FetchError(
                    f"access denied: {self.uri} (the pod's role needs s3:GetObject on this object)"
                ) from exc
            if code in ("PreconditionFailed", "InvalidRange"):
                raise _RangeNotSatisfiable(None) from exc
            if status is not None and (
                status >= 500 or status == 429 or code in ("SlowDown", "RequestTimeout")
            ):
                raise _Retryable(f"s3 returned {code} ({status}) for {self.uri}") from exc
            raise FetchError(f"s3 refused {self.uri}: {code} {error.get('Message', '')}".strip()) from exc
        except BotoCoreError as exc:
            raise _Retryable(f"s3 request for {self.uri} failed: {exc}") from exc
        body = response["Body"]
        start = 0
        total = response.get("ContentLength")
        content_range = response.get("ContentRange")
        if content_range:
            match = _CONTENT_RANGE_RE.match(content_range)
            if not match:
                body.close()
                raise _Retryable(f"unexpected ContentRange {content_range!r}")
            start = int(match.group(1))
            total = None if match.group(3) == "*" else int(match.group(3))
        return _Response(body, start, total, response.get("ETag"), body.close)


def make_source(uri: str, settings: FetchSettings, s3_client: Any | None = None) -> _Source:
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if scheme in ("", "file"):
        return _LocalSource(uri)
    if scheme in ("http", "https"):
        if scheme == "http":
            log.warning("fetching %s over plain http: integrity relies on MODEL_SERVER_MODEL_SHA256", uri)
        return _HttpSource(uri, settings.token(), settings.fetch_timeout_s)
    if scheme == "s3":
        return _S3Source(uri, s3_client)
    raise FetchError(f"unsupported model URI scheme {scheme!r} in {uri!r}")


# ------------------------------------------------------------------------------------------ the fetch
def sha256_file(path: Path, chunk: int = CHUNK) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class FetchResult:
    path: Path
    sha256: str
    size: int
    downloaded: bool  # False when the file was already present and verified


class _Progress:
    def __init__(self, what: str, every_s: float) -> None:
        self.what = what
        self.every_s = every_s
        self.started = time.monotonic()
        self.last = self.started
        self.bytes_this_run = 0

    def update(self, done: int, total: int | None, added: int) -> None:
        self.bytes_this_run += added
        now = time.monotonic()
        if now - self.last < self.every_s:
            return
        self.last = now
        rate = self.bytes_this_run / max(now - self.started, 1e-6) / 1e6
        if total:
            log.info(
                "fetch %s: %.1f/%.1f MB (%.0f%%) at %.1f MB/s",
                self.what,
                done / 1e6,
                total / 1e6,
                100 * done / total,
                rate,
            )
        else:
            log.info("fetch %s: %.1f MB at %.1f MB/s", self.what, done / 1e6, rate)


def _partial_path(dest: Path, uri: str, sha256: str | None) -> Path:
    # Keyed by URI and digest so that a leftover from another model is never resumed into this one.
    key = hashlib.sha256(f"{uri}\n{sha256 or ''}".encode()).hexdigest()[:12]
    return dest.with_name(f".{dest.name}.{key}.partial")


def _backoff(attempt: int, settings: FetchSettings, retry_after: float | None) -> float:
    delay = min(settings.fetch_backoff_max_s, settings.fetch_backoff_s * (2.0 ** (attempt - 1)))
    delay *= random.uniform(0.5, 1.0)  # jitter: many pods restarting together do not retry in lockstep
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.fetch_backoff_max_s))
    return delay


def _hash_prefix(path: Path, digest: Any) -> int:
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
            size += len(block)
    return size


def fetch(
    settings: FetchSettings | None = None,
    *,
    s3_client: Any | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """Fetch ``settings.model_uri`` to :func:`resolve_model_path`; the module docstring has the contract."""
    settings = settings or FetchSettings()
    uri = settings.model_uri
    if uri is None:
        raise FetchError("MODEL_SERVER_MODEL_URI is not set: nothing to fetch")
    dest = resolve_model_path(settings)
    expected = settings.model_sha256
    source = make_source(uri, settings, s3_client)
    what = source.describe()

    if dest.is_file():
        if expected is None:
            digest = sha256_file(dest)
            log.info(
                "model already present at %s (sha256 %s, not verified: set MODEL_SERVER_MODEL_SHA256); "
                "skipping download",
                dest,
                digest,
            )
            return FetchResult(dest, digest, dest.stat().st_size, downloaded=False)
        digest = sha256_file(dest)
        if digest == expected:
            log.info("model already present at %s and verified (sha256 %s); skipping download", dest, digest)
            return FetchResult(dest, digest, dest.stat().st_size, downloaded=False)
        log.warning("model at %s has sha256 %s, expected %s: downloading it again", dest, digest, expected)

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"cannot create the model directory {dest.parent}: {exc}") from exc
    partial = _partial_path(dest, uri, expected)
    log.info("fetching %s -> %s%s", what, dest, f" (expecting sha256 {expected})" if expected else "")
    started = time.monotonic()
    etag: str | None = None
    progress = _Progress(what, settings.fetch_progress_s)
    attempt = 0
    while True:
        attempt += 1
        try:
            total = _transfer(source, partial, etag, progress)
            break
        except _Retryable as exc:
            etag = getattr(exc, "etag", None) or etag
            if attempt >= settings.fetch_attempts:
                raise FetchError(
                    f"giving up on {what} after {attempt} attempts: {exc} (the partial download "
                    f"{partial} is kept and resumed on the next run)"
                ) from exc
            delay = _backoff(attempt, settings, exc.retry_after)
            have = partial.stat().st_size if partial.exists() else 0
            log.warning(
                "fetch %s: attempt %d/%d failed (%s); %d bytes kept, retrying in %.1fs",
                what,
                attempt,
                settings.fetch_attempts,
                exc,
                have,
                delay,
            )
            sleep(delay)

    hasher = hashlib.sha256()
    size = _hash_prefix(partial, hasher)
    actual = hasher.hexdigest()
    if total is not None and size != total:
        partial.unlink(missing_ok=True)
        raise FetchError(f"{what}: got {size} bytes, the source announced {total}; removed the partial file")
    if expected is not None and actual != expected:
        partial.unlink(missing_ok=True)
        raise FetchError(
            f"checksum mismatch for {what}: expected sha256 {expected}, got {actual} ({size} bytes); "
            f"the download was removed and {dest} was not written"
        )
    os.replace(partial, dest)
    _fsync_dir(dest.parent)
    took = time.monotonic() - started
    if expected is None:
        log.warning(
            "fetched %s -> %s, %d bytes in %.1fs, sha256 %s (NOT verified: pin it with "
            "MODEL_SERVER_MODEL_SHA256)",
            what,
            dest,
            size,
            took,
            actual,
        )
    else:
        log.info("fetched %s -> %s, %d bytes in %.1fs, sha256 %s verified", what, dest, size, took, actual)
    return FetchResult(dest, actual, size, downloaded=True)


def _transfer(source: _Source, partial: Path, etag: str | None, progress: _Progress) -> int | None:
    """One attempt: append to ``partial`` from where it ends. Returns the announced total size."""
    offset = partial.stat().st_size if partial.exists() else 0
    try:
        response = source.open(offset, etag)
    except _RangeNotSatisfiable as exc:
        if exc.total is not None and exc.total == offset:
            return offset  # the partial file is already complete
        partial.unlink(missing_ok=True)  # stale or changed object: start over
        raise _Retryable("the partial download does not match the source any more; restarting") from exc
    try:
        if response.start != offset:
            log.info(
                "fetch %s: the source does not resume at byte %d; starting over", source.describe(), offset
            )
        mode = "ab" if response.start == offset and offset > 0 else "wb"
        done = response.start if mode == "ab" else 0
        total = response.total
        try:
            out = partial.open(mode)
        except OSError as exc:
            raise FetchError(f"cannot write {partial}: {exc}") from exc
        with out:
            while True:
                try:
                    block = response.stream.read(CHUNK)
                except Exception as exc:
                    if not _is_transfer_error(exc):
                        raise
                    raise _RetryableWithEtag(
                        f"transfer interrupted at byte {done}: {exc!r}", response.etag
                    ) from exc
                if not block:
                    break
                try:
                    out.write(block)
                except OSError as exc:  # disk full, read-only volume: retrying cannot help
                    out.close()
                    partial.unlink(missing_ok=True)
                    raise FetchError(f"cannot write {partial} ({done} bytes written): {exc}") from exc
                done += len(block)
                progress.update(done, total, len(block))
            out.flush()
            os.fsync(out.fileno())
        if total is not None and done < total:
            raise _RetryableWithEtag(f"connection closed at byte {done} of {total}", response.etag)
        return total
    finally:
        with contextlib.suppress(Exception):
            response.close()


def _is_transfer_error(exc: BaseException) -> bool:
    """A network-side failure while reading a body (socket, http.client, urllib3/botocore streaming)."""
    if isinstance(exc, OSError | http.client.HTTPException):
        return True
    return type(exc).__module__.split(".")[0] in ("botocore", "urllib3")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ------------------------------------------------------------------------------------------ CLI
def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``fetch`` to the ``python -m model_server`` subcommands (model_server/__main__.py PLUGINS)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "fetch",
        help="download and verify the model file (init container)",
        description="Download the model file (local path, file://, https://, s3://) into the model dir, "
        "verify its sha256, resume interrupted transfers. Flags override the MODEL_SERVER_* variables; "
        "MODEL_SERVER_HF_TOKEN(_FILE) gives a bearer token for https://. Exit 0: the path is printed; "
        "1: the fetch failed; 2: invalid configuration.",
    )
    parser.add_argument("--uri", help="model URI (MODEL_SERVER_MODEL_URI): path, file://, https://, s3://")
    parser.add_argument("--sha256", help="expected sha256 digest (MODEL_SERVER_MODEL_SHA256)")
    parser.add_argument("--dir", type=Path, help="model directory (MODEL_SERVER_MODEL_DIR, default /models)")
    parser.add_argument("--output", type=Path, help="destination file (MODEL_SERVER_MODEL_PATH)")
    parser.add_argument(
        "--default-model",
        action="store_true",
        help=f"fetch the default cluster model {DEFAULT_MODEL_REPO}/{DEFAULT_MODEL_FILE} when no URI is set",
    )
    parser.set_defaults(handler=run_cli)
    return parser


def run_cli(args: argparse.Namespace) -> int:
    """Run ``fetch`` from parsed arguments; print the model path. Exit 0, 1 (fetch failed), 2 (bad config)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )
    overrides: dict[str, Any] = {}
    for flag, field in (
        ("uri", "model_uri"),
        ("sha256", "model_sha256"),
        ("dir", "model_dir"),
        ("output", "model_path"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[field] = value
    try:
        settings = FetchSettings(**overrides)
    except ValueError as exc:
        print(f"model_server fetch: invalid settings: {exc}", file=sys.stderr)
        return 2
    if settings.model_uri is None and getattr(args, "default_model", False):
        settings = settings.model_copy(update={"model_uri": DEFAULT_MODEL_URI})
    if settings.model_uri is None:
        print("model_server fetch: MODEL_SERVER_MODEL_URI (or --uri) is required", file=sys.stderr)
        return 2
    try:
        result = fetch(settings)
    except FetchError as exc:
        log.error("%s", exc)
        return 1
    print(result.path)
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    """Stand-alone entry point (``python -m model_server.fetch``) with the same flags as the subcommand."""
    parser = argparse.ArgumentParser(prog="model_server")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fetch", *(list(argv) if argv is not None else sys.argv[1:])])
    return run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
