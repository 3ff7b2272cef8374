#!/usr/bin/env bash
# Refresh-token rotations per second at 1, 8 and 64 concurrent clients, on sled and on Redis:
# the store alone and the real gateway over HTTP (login once, then POST /auth/refresh with the
# newest cookie and the CSRF header, each client on its own keep-alive connection).
#
#   scripts/bench/rotations.sh                                  # 10 s per row, every row
#   ROT_SECS=300 ROT_CLIENTS=64 ROT_LEVELS=http ROT_BACKENDS=sled scripts/bench/rotations.sh
#   BENCH_BIN=path/to/portcullis scripts/bench/rotations.sh      # another build over HTTP
#   CARGO="cargo" (default) builds with the release profile; any cargo wrapper works.
#
# Starts its own redis-server (installed with apt-get when missing) and gateways on free
# loopback ports, stops only what it started, prints a Markdown table and writes it to
# target/bench/rotations.md. A client whose request takes over 5 s counts as stalled.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  # The package starts a system-wide instance; this benchmark runs its own.
  systemctl stop redis-server 2>/dev/null || service redis-server stop 2>/dev/null || true
fi

mkdir -p target/bench
echo "== $(nproc) CPUs, $(uname -sr), $(redis-server --version | cut -d' ' -f1-3)" >&2
${CARGO:-cargo} bench --bench rotations | tee target/bench/rotations.md
