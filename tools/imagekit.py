"""Build and run the project's images with buildah/podman, without a Docker engine or a registry.

Images (``IMAGES``): ``model-server`` (model_server/Dockerfile, issue 5) and ``chat-ui`` (chat_ui/Dockerfile,
issue 15). Used by the image tests in tests/image/ (CI), ``make image`` and ``make chat-image``. Steps:

1. ``base_image()``: ``debootstrap --variant=minbase`` of the host's Debian suite with python3, python3-venv,
   python3-pip and ca-certificates from the mirror apt is already configured with, tarred once into
   ``$LLAMA_EKS_CACHE/base/`` (default ``~/.cache/llama-eks``) and ``podman import``-ed. Both images build on
   it, so CI bootstraps it once.
2. ``build_image()``: ``buildah bud --format docker --network host`` with ``BUILDAH_ISOLATION=chroot``,
   overlay storage through ``CONTAINERS_STORAGE_CONF``, the host CA bundle mounted into RUN steps and, for
   the model server, the host's llama-cpp-python wheel put into the build context's wheelhouse (no second
   compile).
3. ``run_container()``: ``podman run --init --network host`` with ``CONTAINERS_CONF`` (runc, ulimits).

Run by hand: ``python tools/imagekit.py build [model-server|chat-ui]`` prints the image reference and size.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("LLAMA_EKS_CACHE", Path.home() / ".cache" / "llama-eks"))
WHEELHOUSE = Path(os.environ.get("LLAMA_WHEELHOUSE", CACHE / "wheels"))
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
TOOLS = ("buildah", "podman", "debootstrap", "runc")


@dataclass(frozen=True)
class ImageSpec:
    """One of the project's images: its build context (a directory with a Dockerfile), default tag, the
    prefix of the settings its server reads (``<prefix>HOST``/``<prefix>PORT``) and whether its build reuses
    the host's llama-cpp-python wheel."""

    name: str
    context: Path
    ref: str
    env_prefix: str
    llama_wheel: bool = False


MODEL_SERVER = ImageSpec(
    "model-server", REPO / "model_server", "localhost/llama-eks/model-server:ci", "MODEL_SERVER_", True
)
CHAT_UI = ImageSpec("chat-ui", REPO / "chat_ui", "localhost/llama-eks/chat-ui:ci", "CHAT_UI_")
IMAGES = {spec.name: spec for spec in (MODEL_SERVER, CHAT_UI)}
#: The model server image's default tag (tests/image/test_image.py derives its test tags from it).
IMAGE_REF = MODEL_SERVER.ref


class ImageKitError(RuntimeError):
    """A step of the image build or run failed; the message says which and why."""


def missing_tools() -> list[str]:
    """Names of the required executables that are not on PATH (root is needed as well)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not Path("/usr/libexec/podman/catatonit").exists():  # podman run --init (a Recommends only)
        missing.append("catatonit")
    if os.geteuid() != 0:
        missing.append("root (uid 0)")
    return missing


# --------------------------------------------------------------------------------------------- apt mirror
@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_apt_sources(root: Path = Path("/")) -> list[AptSource]:
    """Binary (``deb``) entries of ``/etc/apt/sources.list`` and ``sources.list.d/*.list|*.sources``."""
    etc = root / "etc" / "apt"
    sources: list[AptSource] = []
    one_line = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if not path.is_file():
            continue
        for raw in path.read_text().splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line.startswith("deb "):
                continue
            line = re.sub(r"\[[^\]]*\]", " ", line)  # drop [arch=... signed-by=...] options
            parts = line.split()
            if len(parts) >= 3:
                sources.append(AptSource(parts[1], (parts[2],), tuple(parts[3:])))
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for raw in stanza.splitlines():
                if raw.startswith("#") or ":" not in raw or raw[:1].isspace():
                    continue
                key, value = raw.split(":", 1)
                fields[key.strip().lower()] = value.strip()
            if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", "").split():
                continue
            for uri in fields.get("uris", "").split():
                sources.append(
                    AptSource(
                        uri,
                        tuple(fields.get("suites", "").split()),
                        tuple(fields.get("components", "").split()),
                    )
                )
    return sources


def host_suite(root: Path = Path("/")) -> str:
    """The host's Debian codename (``VERSION_CODENAME`` of /etc/os-release), e.g. ``bookworm``."""
    text = (root / "etc" / "os-release").read_text()
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.M)
    if not match:
        raise ImageKitError("cannot read VERSION_CODENAME from /etc/os-release: not a Debian host?")
    return match.group(1)


def debian_mirror(suite: str, root: Path = Path("/")) -> str:
    """The first configured apt mirror that serves ``suite`` with the ``main`` component."""
    for source in parse_apt_sources(root):
        if suite in source.suites and "main" in source.components:
            return source.uri.rstrip("/")
    raise ImageKitError(f"no apt source serves suite {suite!r} main (read /etc/apt/sources.list[.d])")


# --------------------------------------------------------------------------------------------- environment
def container_env(workdir: Path) -> dict[str, str]:
    """Environment for buildah/podman: overlay storage and runc configured by files we own, not /etc."""
    storage = CACHE / "containers"
    workdir.mkdir(parents=True, exist_ok=True)
    storage_conf = workdir / "storage.conf"
    driver = os.environ.get("LLAMA_EKS_STORAGE_DRIVER", "overlay")
    storage_conf.write_text(
        "[storage]\n"
        f'driver = "{driver}"\n'
        f'graphroot = "{storage / "storage"}"\n'
        f'runroot = "{storage / "run"}"\n'
    )
    containers_conf = workdir / "containers.conf"
    containers_conf.write_text(
        "[containers]\n"
        'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )
    env = dict(os.environ)
    env.update(
        CONTAINERS_STORAGE_CONF=str(storage_conf),
        CONTAINERS_CONF=str(containers_conf),
        BUILDAH_ISOLATION="chroot",
    )
    return env


def _run(cmd: list[str], env: dict[str, str], *, what: str, timeout: float = 1800, **kw) -> str:
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, **kw)
    took = time.monotonic() - started
    print(f"[imagekit] {what}: {' '.join(cmd[:3])} ... rc={proc.returncode} in {took:.1f}s", file=sys.stderr)
    if proc.returncode != 0:
        raise ImageKitError(
            f"{what} failed (rc={proc.returncode}): {' '.join(cmd)}\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# --------------------------------------------------------------------------------------------- base image
#: Dropped from the base rootfs like Debian's slim images do (about 100 MB): apt lists (every Dockerfile
#: runs apt-get update first), downloaded .debs, docs, man pages, translations.
SLIM_PATHS = (
    "var/lib/apt/lists",
    "var/cache/apt/archives",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)


def slim_rootfs(rootfs: Path) -> None:
    """Empty the :data:`SLIM_PATHS` directories of ``rootfs`` (kept as empty directories)."""
    for rel in SLIM_PATHS:
        path = rootfs / rel
        if path.is_dir():
            shutil.rmtree(path)
            path.mkdir(mode=0o755)
    (rootfs / "var" / "lib" / "apt" / "lists" / "partial").mkdir(exist_ok=True)
    (rootfs / "var" / "cache" / "apt" / "archives" / "partial").mkdir(exist_ok=True)


def base_rootfs_tar(env: dict[str, str]) -> Path:
    """debootstrap the base rootfs once per (suite, mirror, packages, arch) and cache it as a tar."""
    suite = host_suite()
    mirror = debian_mirror(suite)
    arch = _run(["dpkg", "--print-architecture"], env, what="dpkg arch").strip()
    recipe = f"{suite} {mirror} {arch} {','.join(BASE_PACKAGES)} slim={SLIM_PATHS}"
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    tar = CACHE / "base" / f"{suite}-minbase-{arch}-{key}.tar"
    with _locked(CACHE / "base" / ".lock"):
        if tar.is_file():
            return tar
        with tempfile.TemporaryDirectory(dir=tar.parent, prefix=".rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            _run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    f"--arch={arch}",
                    suite,
                    str(rootfs),
                    mirror,
                ],
                env,
                what=f"debootstrap {suite} from {mirror}",
                timeout=1800,
            )
            slim_rootfs(rootfs)
            partial = Path(tmp) / "rootfs.tar"
            _run(
                ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."],
                env,
                what="tar rootfs",
            )
            partial.rename(tar)
    return tar


def base_image(env: dict[str, str]) -> str:
    """Import the cached rootfs tar as ``localhost/llama-eks/base:<suite>-<key>`` (once per storage)."""
    tar = base_rootfs_tar(env)
    ref = f"localhost/llama-eks/base:{tar.stem}"
    if subprocess.run(["podman", "image", "exists", ref], env=env).returncode != 0:
        _run(["podman", "import", "--change", "CMD=/bin/bash", str(tar), ref], env, what="podman import base")
    return ref


# --------------------------------------------------------------------------------------------- build
LLAMA_CPP_VERSION = os.environ.get("LLAMA_CPP_VERSION", "0.3.36")
LLAMA_CMAKE_ARGS = os.environ.get("CMAKE_ARGS", "-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF")


def llama_wheel() -> Path:
    """The host's llama-cpp-python wheel from tools/build_llama_wheel.sh (built once, then reused).

    An existing wheel whose recorded CMAKE_ARGS match is used directly: the script takes the wheelhouse lock
    first, which would make us wait for an unrelated compile (the benchmark's llama-server) holding it.
    """
    for recorded in sorted(WHEELHOUSE.glob(f"{LLAMA_CPP_VERSION}-*/CMAKE_ARGS")):
        wheels = sorted(recorded.parent.glob(f"llama_cpp_python-{LLAMA_CPP_VERSION}-*.whl"))
        if wheels and recorded.read_text().strip() == LLAMA_CMAKE_ARGS:
            return wheels[0]
    script = REPO / "tools" / "build_llama_wheel.sh"
    if not script.is_file():
        raise ImageKitError(f"{script} is missing: it builds the llama-cpp-python wheel the image reuses")
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise ImageKitError(f"{script} failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
    wheel = Path(proc.stdout.strip().splitlines()[-1])
    if not wheel.is_file():
        raise ImageKitError(f"{script} printed {wheel}, which is not a file")
    return wheel


def build_context(dest: Path, wheel: Path | None, spec: ImageSpec = MODEL_SERVER) -> Path:
    """A copy of the image's context directory (e.g. model_server/) with ``wheel`` in its wheelhouse/."""
    ctx = dest / spec.context.name
    shutil.rmtree(ctx, ignore_errors=True)
    shutil.copytree(
        spec.context,
        ctx,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.gguf", "*.partial", "*.whl"),
    )
    if wheel is not None:
        shutil.copy2(wheel, ctx / "wheelhouse" / wheel.name)
    return ctx


@dataclass(frozen=True)
class BuiltImage:
    ref: str
    base: str
    size_bytes: int
    build_seconds: float


def build_image(
    env: dict[str, str],
    workdir: Path,
    *,
    spec: ImageSpec = MODEL_SERVER,
    ref: str | None = None,
    base: str | None = None,
    wheel: Path | None = None,
    build_args: dict[str, str] | None = None,
) -> BuiltImage:
    """``buildah bud`` the image's Dockerfile on the local base (the model server's reuses the host wheel)."""
    ref = ref or spec.ref
    base = base or base_image(env)
    if spec.llama_wheel and wheel is None:
        wheel = llama_wheel()
    ctx = build_context(workdir, wheel if spec.llama_wheel else None, spec)
    cmd = [
        "buildah",
        "bud",
        "--format",
        "docker",
        "--network",
        "host",
        "--layers",
        "--force-rm",
        "-t",
        ref,
        "--build-arg",
        f"BASE_IMAGE={base}",
    ]
    if HOST_CA_BUNDLE.is_file():  # pip and apt in RUN steps trust the same CAs as the host (TLS proxies)
        cmd += ["--volume", f"{HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro"]
    for key, value in (build_args or {}).items():
        cmd += ["--build-arg", f"{key}={value}"]
    started = time.monotonic()
    _run([*cmd, "-f", str(ctx / "Dockerfile"), str(ctx)], env, what="buildah bud", timeout=3600)
    took = time.monotonic() - started
    # Untagged results of earlier builds would pile up in the shared storage. The builder stage's cache
    # layers are untagged too (no final image descends from them), so only day-old ones go.
    subprocess.run(
        ["podman", "image", "prune", "--force", "--filter", "until=24h"],
        env=env,
        capture_output=True,
        timeout=300,
    )
    size = int(
        _run(["podman", "image", "inspect", "--format", "{{.Size}}", ref], env, what="image size").strip()
    )
    return BuiltImage(ref, base, size, took)


def image_config(env: dict[str, str], ref: str) -> dict:
    """The image's config (User, Entrypoint, Healthcheck, Env, Labels...) from ``podman image inspect``."""
    return json.loads(_run(["podman", "image", "inspect", ref], env, what="image inspect"))[0]


# --------------------------------------------------------------------------------------------- Dockerfile
def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # comment inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, rest = buf.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        buf = ""
    return out


def dockerfile_stages(path: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (``FROM`` first), in order."""
    result: list[list[tuple[str, str]]] = []
    for item in dockerfile_instructions(path):
        if item[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(item)
    return result


# --------------------------------------------------------------------------------------------- run
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def podman(
    env: dict[str, str], *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise ImageKitError(f"podman {' '.join(args)} failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def run_container(
    env: dict[str, str],
    ref: str,
    name: str,
    *,
    port: int,
    volumes: dict[Path, str],
    environment: dict[str, str],
    args: tuple[str, ...] = (),
    spec: ImageSpec = MODEL_SERVER,
    options: tuple[str, ...] = (),
) -> str:
    """``podman run -d --init --network host [options]``; the server listens on 127.0.0.1:``port`` only."""
    podman(env, "rm", "-f", "--ignore", name, check=False)
    cmd = [
        "run",
        "-d",
        "--init",
        "--network",
        "host",
        "--name",
        name,
        "-e",
        f"{spec.env_prefix}HOST=127.0.0.1",
        "-e",
        f"{spec.env_prefix}PORT={port}",
    ]
    for key, value in environment.items():
        cmd += ["-e", f"{key}={value}"]
    for host, target in volumes.items():
        cmd += ["-v", f"{host}:{target}"]
    return podman(env, *cmd, *options, ref, *args).stdout.strip()


def container_state(env: dict[str, str], name: str) -> dict:
    return json.loads(podman(env, "inspect", "--format", "{{json .State}}", name).stdout)


def wait_ready(env: dict[str, str], name: str, url: str, timeout: float = 180) -> dict:
    """Poll ``url`` (a readiness probe) until it answers 200 while container ``name`` runs; return the
    container's state. ImageKitError with the container's logs if it exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        state = container_state(env, name)
        if not state["Running"]:
            logs = podman(env, "logs", name, check=False)
            raise ImageKitError(
                f"container {name} exited ({state['ExitCode']}) before ready:\n{logs.stdout}{logs.stderr}"
            )
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return state
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            logs = podman(env, "logs", name, check=False)
            raise ImageKitError(
                f"container {name} not ready in {timeout:.0f}s:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}"
            )
        time.sleep(0.5)


def process_tree_uids(root_pid: int) -> dict[int, tuple[str, int]]:
    """pid -> (command, real uid) for ``root_pid`` and all its descendants, read from the host's /proc."""
    seen: dict[int, tuple[str, int]] = {}
    stack = [root_pid]
    while stack:
        pid = stack.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            children = []
            for task in Path(f"/proc/{pid}/task").iterdir():
                children += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        name = re.search(r"^Name:\s*(\S+)", status, re.M).group(1)
        uid = int(re.search(r"^Uid:\s*(\d+)", status, re.M).group(1))
        seen[pid] = (name, uid)
        stack += children
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("base", help="debootstrap + import the base image, print its reference")
    build = sub.add_parser("build", help="build an image's Dockerfile on the local base, print ref and size")
    build.add_argument("image", nargs="?", choices=sorted(IMAGES), default=MODEL_SERVER.name)
    build.add_argument("--tag", help="image reference (default: localhost/llama-eks/<image>:ci)")
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing:
        print(f"missing: {', '.join(missing)} (apt-get install buildah podman debootstrap runc catatonit)")
        return 2
    env = container_env(CACHE / "conf")
    if args.command == "base":
        print(base_image(env))
        return 0
    with tempfile.TemporaryDirectory(prefix="llama-eks-image-") as tmp:
        built = build_image(env, Path(tmp), spec=IMAGES[args.image], ref=args.tag)
    print(
        f"{built.ref} {built.size_bytes / 1e6:.1f} MB "
        f"(base {built.base}, built in {built.build_seconds:.0f}s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
