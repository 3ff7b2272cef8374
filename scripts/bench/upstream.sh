# The fixed fast upstream that scripts/bench.sh and scripts/bench/instructions.sh proxy to:
# nginx, one worker, a 3-byte body. Sourced, not run.
# upstream_conf DIR PORT: the nginx configuration on stdout (pid file and error log in DIR).
upstream_conf() {
  cat <<CONF
worker_processes 1; master_process off; daemon off; pid $1/upstream.pid; error_log $1/upstream.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$2; location / { return 200 "ok\n"; } } }
CONF
}
