#!/usr/bin/env bash
# Peer: skiff-proxy as a plain HTTP/1.1 reverse proxy, configured the way a
# user would: an Envoy v3 bootstrap with one listener (HTTP connection
# manager, one route) and one STATIC cluster to the upstream with keep-alive.
# Settings in line with the other peers: GOMAXPROCS=$BENCH_WORKERS (2), no
# access log, upstream keep-alive (skiff-proxy's pool keeps connections).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
source "${BENCH_DIR:-$here/../../../shared/bench}/lib/common.sh"

BIN=${SKIFF_PROXY:-$(command -v skiff-proxy || echo "$here/../../bin/skiff-proxy")}
WORKERS=${BENCH_WORKERS:-2}

case "${1:-}" in
  check)
    [[ -x "$BIN" ]] || { echo "skiff-proxy not found at $BIN (go build -o bin/skiff-proxy ./cmd/skiff-proxy, or set SKIFF_PROXY)" >&2; exit 1; }
    "$BIN" --version | head -1
    ;;
  start)
    up=$2 listen=$3 wd=$4
    cat >"$wd/bootstrap.yaml" <<EOF
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
static_resources:
  listeners:
  - name: bench
    address: { socket_address: { address: 127.0.0.1, port_value: $listen } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: HTTP1
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: upstream }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $up } } }
EOF
    peer_spawn "$wd" skiff-proxy env GOMAXPROCS="$WORKERS" "$BIN" -c "$wd/bootstrap.yaml" --log-level warn
    ;;
  stop)
    peer_stop "$2"
    ;;
  *)
    echo "usage: $0 check | start UPSTREAM_PORT LISTEN_PORT WORKDIR | stop WORKDIR" >&2
    exit 2
    ;;
esac
