#!/usr/bin/env bash
# Build llama-cpp-python once into a wheelhouse keyed by version and CMAKE_ARGS, and print the wheel's path.
#
#   tools/build_llama_wheel.sh            -> $HOME/.cache/llama-eks/wheels/<version>-<sha12(CMAKE_ARGS)>/llama_cpp_python-*.whl
#
# Why: pip's own wheel cache ignores CMAKE_ARGS, so a CPU wheel and a CUDA wheel would collide, and a fresh
# build costs ~5 minutes of two cores. Everyone (make serve, make test, the image build) reuses the wheel.
# Env:
#   LLAMA_CPP_VERSION   default 0.3.36
#   CMAKE_ARGS          default "-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" (portable CPU build)
#   LLAMA_WHEELHOUSE    default $HOME/.cache/llama-eks/wheels
#   PYTHON              interpreter that builds (and that will install) the wheel; default python3
# A flock on the wheelhouse serialises concurrent callers: the second one waits and then reuses the wheel.
set -euo pipefail

version="${LLAMA_CPP_VERSION:-0.3.36}"
cmake_args="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF}"
root="${LLAMA_WHEELHOUSE:-$HOME/.cache/llama-eks/wheels}"
python="${PYTHON:-python3}"
key="$(printf '%s' "$cmake_args" | sha256sum | cut -c1-12)"
dest="$root/$version-$key"

find_wheel() { compgen -G "$dest/llama_cpp_python-$version-*.whl" | head -n1 || true; }

mkdir -p "$root"
exec 9>"$root/.build.lock"
if ! flock -n 9; then
  echo "build_llama_wheel: another build holds $root/.build.lock; waiting" >&2
  flock 9
fi

wheel="$(find_wheel)"
if [[ -n "$wheel" ]]; then
  echo "$wheel"
  exit 0
fi

tmp="$(mktemp -d "$root/.tmp-$version-$key.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "build_llama_wheel: building llama-cpp-python==$version with CMAKE_ARGS='$cmake_args' (several minutes)" >&2
CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  "$python" -m pip wheel --no-deps --no-cache-dir --wheel-dir "$tmp" "llama-cpp-python==$version" >&2
printf '%s\n' "$cmake_args" >"$tmp/CMAKE_ARGS"
mkdir -p "$dest"
mv "$tmp"/llama_cpp_python-*.whl "$tmp/CMAKE_ARGS" "$dest/"
find_wheel
