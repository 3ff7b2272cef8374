#!/usr/bin/env bash
# The demo on a fresh Debian machine that has only Rust: installs the build tools Pingora needs
# when they are missing (cmake and make for its zlib-ng, a C compiler), then runs
# `portcullis demo` (gateway on http://127.0.0.1:8080 in front of a bundled demo app).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v make >/dev/null 2>&1 || need+=(make)
command -v cc >/dev/null 2>&1 || need+=(gcc)
if ((${#need[@]})); then
  echo "installing build tools: ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
exec cargo run --release -- demo "$@"
