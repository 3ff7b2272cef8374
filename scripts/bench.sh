#!/usr/bin/env bash
# Whole-system benchmark: portcullis against the proxies operators would pick
# instead, side by side in one run, interleaved, one worker thread each, loopback only.
#
#   scripts/bench.sh                 # defaults: 5 rounds x 5 s per target, 32 connections
#   BENCH_ROUNDS=5 BENCH_DURATION=10 scripts/bench.sh
#   BENCH_AB_GROUPS=36 BENCH_PAIRS=12   # cached-vs-public A/B groups, new-token A/B pairs
#   BENCH_BIN=target/release/portcullis  # another build (default: scripts/build-pgo.sh's)
#
# Prints a table (requests/s, p50, p99, CPU µs per request, ratios) and writes it to
# target/bench/report.md. Installs nginx, haproxy and wrk with apt-get when missing, and
# stops only the processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${BENCH_ROUNDS:-5}
ROUND=0
DURATION=${BENCH_DURATION:-5}
CONNS=${BENCH_CONNS:-32}
NOCACHE_TOKENS=${BENCH_NOCACHE_TOKENS:-4000}

log() { printf '== %s\n' "$*" >&2; }

missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -c 'import jwt, cryptography' 2>/dev/null || pip3 install -q pyjwt cryptography

log "building portcullis (release + PGO unless BENCH_BIN is set)"
# The shipped build (the Dockerfile's): release + PGO, scripts/build-pgo.sh. BENCH_BIN measures
# another binary instead, e.g. BENCH_BIN=target/release/portcullis for the plain release build.
if [ -n "${BENCH_BIN:-}" ]; then
  BIN=$(realpath "$BENCH_BIN")
else
  scripts/build-pgo.sh
  BIN=$ROOT/target/pgo/portcullis
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${BENCH_KEEP:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2; return 1
}

# 10000 idle connections need descriptors; HAProxy sizes itself from maxconn.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
UP=$(port); NGX=$(port); HAP=$(port); PC=$(port); PCN=$(port)

log "keys and tokens"
(cd "$WORK" && for a in EdDSA:ed ES256:es RS256:rs; do "$BIN" keygen --alg "${a%%:*}" --kid "${a##*:}" --out keys >/dev/null; done)
for a in EdDSA:ed ES256:es RS256:rs; do
  python3 scripts/bench/tokens.py "$WORK/keys" "${a%%:*}" "${a##*:}" 1 >"$WORK/token.${a##*:}"
done
python3 scripts/bench/tokens.py "$WORK/keys" RS256 rs "$NOCACHE_TOKENS" >"$WORK/tokens.rs.many"
printf 'users:\n  bench:\n    email: bench@example.com\n    password: "%s"\n' \
  "$(printf 'not the password' | "$BIN" hash-password --password-stdin)" >"$WORK/users.yaml"

log "upstream (nginx, fixed small body), nginx proxy, HAProxy jwt_verify, portcullis"
# shellcheck source=scripts/bench/upstream.sh
source scripts/bench/upstream.sh
upstream_conf "$WORK" "$UP" >"$WORK/upstream.conf"
cat >"$WORK/nginx.conf" <<CONF
worker_processes 1; master_process off; daemon off; pid $WORK/nginx.pid; error_log $WORK/nginx.err;
events { worker_connections 16384; }
http { access_log off; keepalive_requests 1000000;
  upstream app { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NGX;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
cat >"$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAP
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
  http-request deny unless { var(txn.alg) -m str RS256 }
  http-request deny unless { var(txn.bearer),jwt_payload_query('\$.iss') -m str https://bench.test }
  http-request deny unless { var(txn.bearer),jwt_payload_query('\$.aud') -m str legacy-apps }
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
  http-request set-var(txn.now) date()
  http-request deny if { var(txn.exp),sub(txn.now) -m int lt 0 }
  http-request deny unless { var(txn.bearer),jwt_verify("RS256","$WORK/keys/rs.public.pem") -m int 1 }
  default_backend be
backend be
  server s1 127.0.0.1:$UP
CONF
pc_config() { # port cache_size
  cat <<CONF
server: { listen: ["127.0.0.1:$1"], public_url: "http://127.0.0.1:$1", threads: 1, grace_period: 1s }
tokens:
  issuer: https://bench.test
  audience: legacy-apps
  cache_size: $2
  signing_keys:
    - { kid: ed, algorithm: EdDSA, private_key_file: keys/ed.private.pem }
    - { kid: es, algorithm: ES256, private_key_file: keys/es.private.pem }
    - { kid: rs, algorithm: RS256, private_key_file: keys/rs.private.pem }
users: { file: users.yaml }
store: { path: data-$1/db }
rate_limits: { login_per_ip: 1000000/1m, login_per_account: 1000000/1m, login_per_account_ip: 1000000/1m, login_per_device: 1000000/1m, refresh_per_ip: 1000000/1m }
logging: { format: json, level: warn }
upstreams:
  app: { addresses: ["127.0.0.1:$UP"] }
routes:
  - { path_prefix: /pub, upstream: app, auth: public }
  - { path_prefix: /, upstream: app }
CONF
}
pc_config "$PC" 100000 >"$WORK/pc.yaml"
pc_config "$PCN" 0 >"$WORK/pcn.yaml"

nginx -c "$WORK/upstream.conf" -p "$WORK" & PIDS+=($!); UP_PID=$!
nginx -c "$WORK/nginx.conf" -p "$WORK" & PIDS+=($!); NGX_PID=$!
haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 & PIDS+=($!); HAP_PID=$!
(cd "$WORK" && exec "$BIN" serve -c pc.yaml >"$WORK/pc.log" 2>&1) & PIDS+=($!); PC_PID=$!
(cd "$WORK" && exec "$BIN" serve -c pcn.yaml >"$WORK/pcn.log" 2>&1) & PIDS+=($!); PCN_PID=$!
for p in $UP $NGX $HAP $PC $PCN; do wait_port "$p"; done
sleep 0.5

# Sanity: every target answers 200 with its credentials, and forgeries are refused.
check() { # name url expected [header]
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' ${4:+-H "$4"} "$2")
  [ "$code" = "$3" ] || { echo "sanity: $1 answered $code, expected $3" >&2; exit 1; }
}
RS=$(cat "$WORK/token.rs")
check upstream "http://127.0.0.1:$UP/" 200
check nginx "http://127.0.0.1:$NGX/" 200
check haproxy "http://127.0.0.1:$HAP/" 200 "Authorization: Bearer $RS"
check haproxy-forged "http://127.0.0.1:$HAP/" 403 "Authorization: Bearer ${RS}x"
check portcullis-public "http://127.0.0.1:$PC/pub/x" 200
for k in ed es rs; do check "portcullis-$k" "http://127.0.0.1:$PC/app" 200 "Authorization: Bearer $(cat "$WORK/token.$k")"; done
check portcullis-forged "http://127.0.0.1:$PC/app" 401 "Authorization: Bearer ${RS}x"

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
RESULTS=$WORK/results.tsv
: >"$RESULTS"
run() { # name pid url [token|@file]
  local name=$1 pid=$2 url=$3 auth=${4:-} out t0 t1 args=()
  if [[ $auth == @* ]]; then
    args=(-s "$ROOT/scripts/bench/cycle.lua")
    export TOKENS_FILE=${auth#@} BENCH_PATH=/app
  elif [ -n "$auth" ]; then
    args=(-H "Authorization: Bearer $auth")
  fi
  t0=$(cpu_ticks "$pid")
  out=$(wrk -t1 -c"$CONNS" -d"${RUN_SECS:-$DURATION}s" --latency "${args[@]}" "$url")
  t1=$(cpu_ticks "$pid")
  python3 - "$name" "$t0" "$t1" "$(getconf CLK_TCK)" "$ROUND" <<PY >>"$RESULTS"
import re, sys
out = """$out"""
name, t0, t1, hz, rnd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
total = int(re.search(r"(\d+) requests in", out).group(1))
p50 = ms(*re.search(r"50%\s+([\d.]+)(us|ms|s)", out).groups())
p99 = ms(*re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups())
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
cpu_us = (t1 - t0) / hz * 1e6 / max(total, 1)
print(f"{name}\t{rps:.0f}\t{p50:.3f}\t{p99:.3f}\t{cpu_us:.1f}\t{non2xx.group(1) if non2xx else 0}\t{rnd}")
PY
}

log "throughput: $ROUNDS interleaved rounds x ${DURATION}s per target, $CONNS connections, wrk -t1"
for ROUND in $(seq 1 "$ROUNDS"); do
  log "round $ROUND"
  run "upstream (ceiling)" "$UP_PID" "http://127.0.0.1:$UP/"
  run "nginx proxy (no auth)" "$NGX_PID" "http://127.0.0.1:$NGX/"
  run "HAProxy jwt_verify RS256" "$HAP_PID" "http://127.0.0.1:$HAP/" "$RS"
  run "HAProxy jwt_verify RS256, new token each request" "$HAP_PID" "http://127.0.0.1:$HAP/app" "@$WORK/tokens.rs.many"
  run "portcullis public route" "$PC_PID" "http://127.0.0.1:$PC/pub/x"
  run "portcullis auth EdDSA (cached)" "$PC_PID" "http://127.0.0.1:$PC/app" "$(cat "$WORK/token.ed")"
  run "portcullis auth ES256 (cached)" "$PC_PID" "http://127.0.0.1:$PC/app" "$(cat "$WORK/token.es")"
  run "portcullis auth RS256 (cached)" "$PC_PID" "http://127.0.0.1:$PC/app" "$RS"
  run "portcullis auth RS256, new token each request" "$PCN_PID" "http://127.0.0.1:$PCN/app" "@$WORK/tokens.rs.many"
done

# The cached-auth target is a ratio to our own public route, within a few percent of 1; runs
# seconds apart drift more than that here, so it gets short back-to-back runs of its own.
# Here runs seconds apart differ by 10-13% (sd of one group's ratio), so it takes many short
# groups: the report gives the median ratio with a 95% confidence interval.
AB_GROUPS=${BENCH_AB_GROUPS:-36}
PAIRS=${BENCH_PAIRS:-12}
log "paired A/B: public route and cached RS256, EdDSA, ES256 (Williams-square order), $AB_GROUPS groups x 1s"
ab_rs() { run "A/B: portcullis auth RS256 (cached)" "$PC_PID" "http://127.0.0.1:$PC/app" "$RS"; }
ab_ed() { run "A/B: portcullis auth EdDSA (cached)" "$PC_PID" "http://127.0.0.1:$PC/app" "$(cat "$WORK/token.ed")"; }
ab_es() { run "A/B: portcullis auth ES256 (cached)" "$PC_PID" "http://127.0.0.1:$PC/app" "$(cat "$WORK/token.es")"; }
ab_pub() { run "A/B: portcullis public route" "$PC_PID" "http://127.0.0.1:$PC/pub/x"; }
# The four runs of a group follow a Williams square: over every four groups each route runs
# once in each place and once right after each other route, so neither a run's place in the
# group nor the run before it weighs on one route more than on another.
AB_RUNS=(ab_pub ab_rs ab_ed ab_es)
WILLIAMS=("0 1 3 2" "1 2 0 3" "2 3 1 0" "3 0 2 1")
for p in $(seq 1 "$AB_GROUPS"); do
  ROUND="ab$p" RUN_SECS=1
  for i in ${WILLIAMS[$((p % 4))]}; do "${AB_RUNS[$i]}"; done
done
# The new-token target compares two processes whose rates are within a few percent: in the
# rounds above their runs are half a minute apart, so they also get back-to-back pairs.
log "paired A/B: HAProxy and portcullis, new RS256 token each request (order alternating), $PAIRS times x 2s"
ab_hap_new() { run "A/B: HAProxy jwt_verify RS256, new token each request" "$HAP_PID" "http://127.0.0.1:$HAP/app" "@$WORK/tokens.rs.many"; }
ab_pc_new() { run "A/B: portcullis auth RS256, new token each request" "$PCN_PID" "http://127.0.0.1:$PCN/app" "@$WORK/tokens.rs.many"; }
for p in $(seq 1 "$PAIRS"); do
  ROUND="abn$p" RUN_SECS=2
  if ((p % 2)); then ab_hap_new; ab_pc_new; else ab_pc_new; ab_hap_new; fi
done
unset RUN_SECS

log "login storm: proxied p99 with and without a storm of wrong-password logins, $ROUNDS pairs"
STORM_LOGINS=0
for ROUND in $(seq 1 "$ROUNDS"); do
  run "storm: portcullis RS256 (cached), no storm" "$PC_PID" "http://127.0.0.1:$PC/app" "$RS"
  python3 scripts/bench/storm.py "$PC" "$((DURATION + 1))" 8 >"$WORK/storm.count" &
  STORM=$!
  sleep 0.5
  run "storm: portcullis RS256 (cached), during storm" "$PC_PID" "http://127.0.0.1:$PC/app" "$RS"
  wait "$STORM"
  STORM_LOGINS=$((STORM_LOGINS + $(cat "$WORK/storm.count")))
done

log "memory: RSS with the token cache filled, then with 10000 idle keep-alive connections"
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
CACHE_TOKENS=${BENCH_CACHE_TOKENS:-20000}
python3 scripts/bench/tokens.py "$WORK/keys" EdDSA ed "$CACHE_TOKENS" >"$WORK/tokens.ed.many"
cache_before=$(rss "$PC_PID")
TOKENS_FILE=$WORK/tokens.ed.many BENCH_PATH=/app wrk -t1 -c8 -d3s -s scripts/bench/cycle.lua "http://127.0.0.1:$PC/app" >/dev/null
cache_after=$(rss "$PC_PID")

MEM=$WORK/mem.tsv
: >"$MEM"
for target in "nginx proxy:$NGX_PID:$NGX" "portcullis:$PC_PID:$PC"; do
  IFS=: read -r name pid p <<<"$target"
  before=$(rss "$pid")
  python3 scripts/bench/idle.py "$p" 10000 3 >"$WORK/idle.out" &
  idle=$!
  for _ in $(seq 1 200); do grep -q ready "$WORK/idle.out" 2>/dev/null && break; sleep 0.1; done
  after=$(rss "$pid")
  wait "$idle" || true
  printf '%s\t%s\t%s\n' "$name" "$before" "$after" >>"$MEM"
done
mkdir -p target/bench
python3 - "$RESULTS" "$MEM" "$cache_before" "$cache_after" "$CACHE_TOKENS" "$STORM_LOGINS" "$ROUNDS" "$DURATION" "$CONNS" <<'PY' | tee target/bench/report.md
import random, sys, statistics
from collections import defaultdict, OrderedDict
res, mem, cb, ca, ctok, storm, rounds, dur, conns = sys.argv[1:10]
rows = OrderedDict()
by_round = defaultdict(dict)
for line in open(res):
    name, rps, p50, p99, cpu, bad, rnd = line.rstrip("\n").split("\t")
    rows.setdefault(name, []).append((float(rps), float(p50), float(p99), float(cpu), int(bad)))
    by_round[rnd][name] = (float(rps), float(p50), float(p99), float(cpu))
med = {n: tuple(statistics.median(x[i] for x in v) for i in range(4)) + (sum(x[4] for x in v),) for n, v in rows.items()}

def ratios(a, b, field=0):
    return [r[a][field] / r[b][field] for r in by_round.values() if a in r and b in r]

def paired(a, b, field=0):
    """Median over rounds of a/b measured in the same round (minutes apart at most), which
    cancels the machine's slow drift better than a ratio of medians."""
    return statistics.median(ratios(a, b, field))

def median_ci(xs, resamples=4000):
    """95% bootstrap interval of the median (fixed seed: the same data give the same interval)."""
    rng = random.Random(7)
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(resamples))
    return meds[int(0.025 * resamples)], meds[int(0.975 * resamples) - 1]
ceiling = med["upstream (ceiling)"][0]
nginx = med["nginx proxy (no auth)"][0]
hap = med["HAProxy jwt_verify RS256"][0]
hap_new = med["HAProxy jwt_verify RS256, new token each request"][0]
print(f"### Throughput ({rounds} interleaved rounds x {dur}s, {conns} connections, wrk -t1, medians)\n")
print("| target | req/s | p50 ms | p99 ms | CPU µs/req | x ceiling | x nginx | x HAProxy RS256 | non-2xx |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for n, (rps, p50, p99, cpu, bad) in med.items():
    if n.startswith(("storm:", "A/B:")):
        continue
    print(f"| {n} | {rps:,.0f} | {p50:.3f} | {p99:.3f} | {cpu:.1f} | {rps/ceiling:.2f} | {rps/nginx:.2f} | {rps/hap:.2f} | {bad} |")
PUB, HAP, HAPN = "portcullis public route", "HAProxy jwt_verify RS256", "HAProxy jwt_verify RS256, new token each request"
print("\n### Targets: median of same-round ratios; CPU ratio = the other's CPU µs/req over ours\n")
print("| target | req/s ratio | 95% CI | runs | CPU-cost ratio | result |")
print("|---|---:|---:|---:|---:|---|")
checks = [
    ("cached auth (RS256) >= 0.95x portcullis public route (A/B pairs)", "A/B: portcullis auth RS256 (cached)", "A/B: portcullis public route", 0.95),
    ("cached auth (EdDSA) >= 0.95x portcullis public route (A/B pairs)", "A/B: portcullis auth EdDSA (cached)", "A/B: portcullis public route", 0.95),
    ("cached auth (ES256) >= 0.95x portcullis public route (A/B pairs)", "A/B: portcullis auth ES256 (cached)", "A/B: portcullis public route", 0.95),
    ("cached auth (RS256) >= 1.2x HAProxy jwt_verify RS256", "portcullis auth RS256 (cached)", HAP, 1.2),
    ("new token each request (RS256) >= 1.0x HAProxy (new token each request) (A/B pairs)",
     "A/B: portcullis auth RS256, new token each request", "A/B: HAProxy jwt_verify RS256, new token each request", 1.0),
    ("new token each request, the same in the rounds (runs ~30 s apart; for reference)",
     "portcullis auth RS256, new token each request", HAPN, 1.0),
]
for name, a, b, target in checks:
    xs = ratios(a, b)
    ratio, cpu_ratio = statistics.median(xs), 1 / paired(a, b, 3)
    lo, hi = median_ci(xs)
    print(f"| {name} | {ratio:.3f}x | {lo:.3f}-{hi:.3f} | {len(xs)} | {cpu_ratio:.2f}x | {'PASS' if ratio >= target else 'MISS'} |")
NO, DURING = "storm: portcullis RS256 (cached), no storm", "storm: portcullis RS256 (cached), during storm"
storm_ratio = paired(DURING, NO, 2)
print(f"| login storm ({storm} wrong-password logins in all): proxied p99 <= 2x "
      f"(median p99 {med[NO][2]:.3f} ms -> {med[DURING][2]:.3f} ms) | {storm_ratio:.2f}x p99 | | {rounds} | | {'PASS' if storm_ratio <= 2.0 else 'MISS'} |")
print("\n### Memory (RSS)\n")
print("| target | before KiB | with 10000 idle connections KiB | per connection bytes |")
print("|---|---:|---:|---:|")
for line in open(mem):
    name, before, after = line.rstrip("\n").split("\t")
    print(f"| {name} | {int(before):,} | {int(after):,} | {(int(after)-int(before))*1024/10000:,.0f} |")
print(f"\nportcullis verified-token cache: RSS {int(cb):,} KiB -> {int(ca):,} KiB after {int(ctok):,} distinct tokens "
      f"({(int(ca)-int(cb))*1024/int(ctok):,.0f} bytes per cached token; bounded by tokens.cache_size)")
PY
