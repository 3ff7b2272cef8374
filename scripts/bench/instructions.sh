#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: the same number on every run, where
# requests per second on a shared 2-core box drift by 5-10% (BENCHMARKS.md). For deciding
# whether a change to the hot path helps before the noisy side-by-side bench.
#
#   scripts/bench/instructions.sh [requests]     # default 2000 per route
#   BENCH_KEEP=1 scripts/bench/instructions.sh   # keep the callgrind files for callgrind_annotate
#   BENCH_BIN=target/pgo/portcullis scripts/bench/instructions.sh   # another build
#   BENCH_CACHE_SIM=1 scripts/bench/instructions.sh   # also cache misses (simulated caches)
#
# Runs the release gateway under valgrind in front of nginx on loopback, warms each route up
# with 200 requests, then counts N sequential keep-alive requests: the public route, the
# cached RS256 route, and a new RS256 token on every request (no cache). Valgrind hides
# AVX-512, so crypto counts differ from the native code; compare builds, not absolute costs.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
N=${1:-2000}
log() { printf '== %s\n' "$*" >&2; }

missing=()
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -c 'import jwt, cryptography' 2>/dev/null || pip3 install -q pyjwt cryptography
# The plain release build by default (a quick rebuild while trying hot-path changes); the
# shipped PGO build with BENCH_BIN=target/pgo/portcullis (scripts/build-pgo.sh).
if [ -n "${BENCH_BIN:-}" ]; then
  BIN=$(realpath "$BENCH_BIN")
else
  cargo build --release --locked -q
  BIN=$ROOT/target/release/portcullis
fi

# Zen 4's L1 sizes and its L2 as the last level; a model, not this CPU's counters (which this
# virtual machine does not expose), so compare builds and routes, not absolute numbers.
SIM=()
[ -n "${BENCH_CACHE_SIM:-}" ] && SIM=(--cache-sim=yes --I1=32768,8,64 --D1=32768,8,64 --LL=1048576,16,64)

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${BENCH_KEEP:-}" ] && echo "kept $WORK (callgrind.PORT.* per route)" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(port)

(cd "$WORK" && "$BIN" keygen --alg RS256 --kid rs --out keys >/dev/null)
python3 scripts/bench/tokens.py "$WORK/keys" RS256 rs 1 >"$WORK/one.tok"
python3 scripts/bench/tokens.py "$WORK/keys" RS256 rs "$((N + 200))" >"$WORK/many.tok"
# shellcheck source=scripts/bench/upstream.sh
source scripts/bench/upstream.sh
upstream_conf "$WORK" "$UP" >"$WORK/upstream.conf"
nginx -c "$WORK/upstream.conf" -p "$WORK" &
PIDS+=($!)

# requests PORT COUNT TOKENS(file or -) PATH: sequential keep-alive GETs, each with the next
# token; fails unless every answer is 200.
requests() {
  python3 - "$@" <<'PY'
import http.client, sys
port, n, tf, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
toks = open(tf).read().split() if tf != "-" else None
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for i in range(n):
    c.request("GET", path, headers={"Authorization": "Bearer " + toks[i % len(toks)]} if toks else {})
    r = c.getresponse(); r.read()
    if r.status != 200:
        sys.exit(f"{path}: answered {r.status}")
PY
}

count() { # label cache_size tokens path
  local label=$1 pc pid out
  pc=$(port)
  cat >"$WORK/pc.yaml" <<CONF
server: { listen: ["127.0.0.1:$pc"], threads: 1, grace_period: 1s }
tokens:
  issuer: https://bench.test
  audience: legacy-apps
  cache_size: $2
  signing_keys: [{ kid: rs, algorithm: RS256, private_key_file: keys/rs.private.pem }]
store: { path: data-$pc/db }
logging: { format: json, level: warn }
upstreams: { app: { addresses: ["127.0.0.1:$UP"] } }
routes:
  - { path_prefix: /pub, upstream: app, auth: public }
  - { path_prefix: /, upstream: app }
CONF
  out=$WORK/callgrind.$pc
  (cd "$WORK" && exec valgrind --tool=callgrind "${SIM[@]}" --instr-atstart=no --callgrind-out-file="$out" \
    "$BIN" serve -c pc.yaml >"$WORK/pc.$pc.log" 2>&1) &
  pid=$!
  PIDS+=($pid)
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$pc") 2>/dev/null && break
    sleep 0.1
  done
  requests "$pc" 200 "$3" "$4"
  callgrind_control -i on "$pid" >/dev/null 2>&1
  callgrind_control -z "$pid" >/dev/null 2>&1
  requests "$pc" "$N" "$3" "$4"
  callgrind_control -d "$pid" >/dev/null 2>&1
  local ir
  # totals: Ir, and with the cache simulation Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw.
  local totals
  totals=$(cat "$out".* 2>/dev/null | awk '/^totals:/ {print; exit}')
  ir=$(echo "$totals" | awk '{print $2}')
  { kill -9 "$pid" && wait "$pid"; } 2>/dev/null || true
  [ -n "$ir" ] || { echo "no callgrind totals for $label (see $WORK/pc.$pc.log)" >&2; exit 1; }
  if ((${#SIM[@]})); then
    echo "$totals" | awk -v l="$label" -v n="$N" '{printf "| %s | %d | %d | %d |\n", l, $2/n, $5/n, ($6+$7)/n}'
  else
    printf '| %s | %s |\n' "$label" "$((ir / N))"
  fi
}

log "$N requests per route under callgrind"
if ((${#SIM[@]})); then
  echo "| route | instructions per request | L1 instruction misses | L1 data misses |"
  echo "|---|---:|---:|---:|"
else
  echo "| route | instructions per request |"
  echo "|---|---:|"
fi
count "public route" 0 - /pub/x
count "RS256, cached" 1000 "$WORK/one.tok" /app
count "RS256, new token each request" 0 "$WORK/many.tok" /app
