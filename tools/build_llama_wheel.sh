#!/usr/bin/env bash
# Build llama-cpp-python once into a wheelhouse keyed by version and CMAKE_ARGS, and print the wheel's path.
#
#   tools/build_llama_wheel.sh            -> $HOME/.cache/llama-eks/wheels/<version>-<sha12(CMAKE_ARGS)>/llama_cpp_python-*.whl
#
# Why: pip's own wheel cache ignores CMAKE_ARGS, so a CPU wheel and a CUDA wheel would collide, and a fresh
# build compiles llama.cpp (5-30 minutes on 2 cores). Everyone (make serve, make test, the image build)
# reuses the wheel. While it builds, a progress line every BUILD_HEARTBEAT_S seconds (stderr) says the
# elapsed time and the compiler's last step; the full log stays in the wheelhouse (last-build.log).
# Env:
#   LLAMA_CPP_VERSION   default 0.3.36
#   CMAKE_ARGS          default "-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" (portable CPU build)
#   LLAMA_WHEELHOUSE    default $HOME/.cache/llama-eks/wheels
#   PYTHON              interpreter that builds (and that will install) the wheel; default python3
#   BUILD_HEARTBEAT_S   seconds between progress lines; default 30
# A flock on the wheelhouse serialises concurrent callers: the second one waits and then reuses the wheel.
set -euo pipefail

version="${LLAMA_CPP_VERSION:-0.3.36}"
cmake_args="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF}"
root="${LLAMA_WHEELHOUSE:-$HOME/.cache/llama-eks/wheels}"
python="${PYTHON:-python3}"
heartbeat="${BUILD_HEARTBEAT_S:-30}"
key="$(printf '%s' "$cmake_args" | sha256sum | cut -c1-12)"
dest="$root/$version-$key"

# The build's last step: ninja's "[12/345] <compiler command>" as "[12/345] compiling <file>", make's
# "[ 45%] Building ..." as is, else the log's last line (pip's download, cmake's configure).
last_step() {
  local line file
  line="$(grep -E '^\s*\[ *[0-9]+(%|/[0-9]+)\]' "$log" | tail -n1 || true)"
  if [[ -z "$line" ]]; then
    line="$(grep -v '^\s*$' "$log" | tail -n1 || true)"
  elif file="$(grep -oE ' -c [^ ]+' <<<"$line" | tail -n1)" && [[ -n "$file" ]]; then
    line="$(grep -oE '\[[0-9]+/[0-9]+\]' <<<"$line") compiling ${file##*/}"
  fi
  line="$(sed -E 's/^\s+//' <<<"$line" | cut -c1-120)"
  printf '%s' "${line:-starting}"
}
find_wheel() { compgen -G "$dest/llama_cpp_python-$version-*.whl" | head -n1 || true; }
elapsed() { printf '%dm%02ds' $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60)); }
say() { echo "build_llama_wheel: $*" >&2; }

mkdir -p "$root"
start=$SECONDS
exec 9>"$root/.build.lock"
if ! flock -n 9; then
  say "another build of the wheelhouse is running (lock $root/.build.lock); waiting for it"
  while ! flock -w "$heartbeat" 9; do
    say "still waiting for the other build ($(elapsed))"
  done
fi

wheel="$(find_wheel)"
if [[ -n "$wheel" ]]; then
  echo "$wheel"
  exit 0
fi

tmp="$(mktemp -d "$root/.tmp-$version-$key.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
log="$root/last-build.log"
say "building llama-cpp-python==$version with CMAKE_ARGS='$cmake_args': compiles llama.cpp once," \
  "5-30 minutes on 2 cores; a progress line every ${heartbeat}s; full log: $log"
CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  "$python" -m pip wheel -v --no-deps --no-cache-dir --wheel-dir "$tmp" "llama-cpp-python==$version" \
  >"$log" 2>&1 &
pid=$!
next=$((SECONDS + heartbeat))
while kill -0 "$pid" 2>/dev/null; do
  sleep 1
  if ((SECONDS >= next)); then
    next=$((SECONDS + heartbeat))
    say "still building ($(elapsed)): $(last_step)"
  fi
done
if ! wait "$pid"; then
  say "the build failed after $(elapsed); last lines of $log:"
  tail -n 30 "$log" >&2
  exit 1
fi
printf '%s\n' "$cmake_args" >"$tmp/CMAKE_ARGS"
mkdir -p "$dest"
mv "$tmp"/llama_cpp_python-*.whl "$tmp/CMAKE_ARGS" "$dest/"
say "built in $(elapsed): $(find_wheel)"
find_wheel
