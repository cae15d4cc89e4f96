#!/usr/bin/env bash
# Peer: skiff-proxy as a pair of mesh sidecars with Istio's mutual TLS
# between them. Every instance listens as an Istio sidecar's inbound does in
# PERMISSIVE mode: one filter chain for mTLS (tls_inspector, transport
# protocol "tls", ALPN "istio", client certificate required and its SPIFFE
# URI SAN checked) and one for plaintext. An instance whose upstream is
# another instance of this peer (the harness's "client sidecar" of the
# two-hop run) originates mTLS toward it with Istio's ALPN, SNI and SAN
# check; toward the plain upstream it speaks plaintext. So the two-hop run
# is fortio → sidecar → (mTLS) → sidecar → upstream, as in a mesh, and the
# one-hop and max runs (plaintext in, plaintext out) cost what the plain
# peer costs plus the listener's TLS inspection. Certificates: a root and
# workload certificates with spiffe://cluster.local/ns/bench/sa/{client,server},
# made once per run with openssl (ECDSA P-256, as istio-agent's default is
# RSA 2048 — set MTLS_KEY=rsa for that).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
source "${BENCH_DIR:-$here/../../../shared/bench}/lib/common.sh"

BIN=${SKIFF_PROXY:-$(command -v skiff-proxy || echo "$here/../../bin/skiff-proxy")}
WORKERS=${BENCH_WORKERS:-2}
# Instances of this peer record their listen ports here, so an instance can
# tell whether its upstream is a sidecar (mTLS) or the plain upstream.
REG=${TMPDIR:-/tmp}/skiff-proxy-mtls.$(id -u)

# shellcheck source=_mtls-certs.sh
source "$here/_mtls-certs.sh"

case "${1:-}" in
  check)
    [[ -x "$BIN" ]] || { echo "skiff-proxy not found at $BIN (go build -o bin/skiff-proxy ./cmd/skiff-proxy, or set SKIFF_PROXY)" >&2; exit 1; }
    command -v openssl >/dev/null || { echo "openssl not found (apt-get install openssl)" >&2; exit 1; }
    rm -f "$REG/ports" # a new run: no instance of this peer is up yet
    echo "$("$BIN" --version | head -1) (mTLS between sidecars)"
    ;;
  start)
    up=$2 listen=$3 wd=$4
    c=$REG/certs
    mkdir -p "$REG"
    certs "$c"
    touch "$REG/ports"
    if grep -qx "$up" "$REG/ports"; then
      # The upstream is a sidecar of this peer: originate Istio mTLS.
      me=client
      transport=$(cat <<EOF
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: outbound_.80_._.server.bench.svc.cluster.local
        common_tls_context:
          alpn_protocols: [istio-peer-exchange, istio]
          tls_certificates: [{certificate_chain: {filename: $c/client.pem}, private_key: {filename: $c/client.key}}]
          validation_context:
            trusted_ca: {filename: $c/root.pem}
            match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: "spiffe://cluster.local/ns/bench/sa/server"}}]
EOF
)
    else
      me=server
      transport=""
    fi
    echo "$listen" >>"$REG/ports"
    hcm=$(cat <<EOF
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: AUTO
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
EOF
)
    cat >"$wd/bootstrap.yaml" <<EOF
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
static_resources:
  listeners:
  - name: bench
    address: { socket_address: { address: 127.0.0.1, port_value: $listen } }
$(inbound_chains "$c" "$me" "$hcm")
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
$transport
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $up } } }
EOF
    peer_spawn "$wd" skiff-proxy-mtls env GOMAXPROCS="$WORKERS" "$BIN" -c "$wd/bootstrap.yaml" --log-level warn
    ;;
  stop)
    peer_stop "$2"
    ;;
  *)
    echo "usage: $0 check | start UPSTREAM_PORT LISTEN_PORT WORKDIR | stop WORKDIR" >&2
    exit 2
    ;;
esac
