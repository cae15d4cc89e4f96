#!/usr/bin/env bash
# Peer: skiff-proxy-mtls (two sidecars with Istio's mutual TLS between them)
# plus the telemetry Istio puts on every sidecar, so that one run measures
# Istio's standard metrics on versus off. Identical to skiff-proxy-mtls.sh
# (same PERMISSIVE listener, certificates, ALPN, SNI and SAN checks) except:
#   - every HTTP connection manager runs istio.metadata_exchange (a
#     TypedStruct of io.istio.http.peer_metadata.Config) first and istio.stats
#     (stats.PluginConfig) right before the router, as istiod emits them;
#   - the client sidecar (the two-hop run's first proxy, whose upstream is
#     another instance of this peer) is an OUTBOUND listener (reporter
#     "source"; upstream discovery and propagation over the
#     x-envoy-peer-metadata headers); its mTLS cluster names its service in
#     filter_metadata.istio.services and carries the istio.metadata_exchange
#     upstream network filter, as skiffd's cds builds ISTIO_MUTUAL clusters;
#   - every other instance (the server sidecar, the one-hop and max runs) is
#     an INBOUND listener (reporter "destination"; downstream discovery and
#     propagation; istio.stats with disable_host_header_fallback) in front of
#     an inbound cluster that names its service;
#   - each instance has Istio's node metadata (NAME, NAMESPACE, LABELS app and
#     version, WORKLOAD_NAME, OWNER, SERVICE_ACCOUNT, CLUSTER_ID, MESH_ID,
#     ISTIO_VERSION) and a sidecar node id.
# So the two-hop run is fortio → client sidecar (source metrics) → mTLS →
# server sidecar (destination metrics) → upstream, and both sidecars know the
# peer workload. The one-hop and max runs have no peer (source "unknown"),
# as a request from outside the mesh would.
#
# METRICS_ADMIN_DIR=DIR: each instance also writes its admin address to
# DIR/<listen port>.admin (for scraping /stats/prometheus or taking a
# /debug/pprof profile by hand); off by default.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
source "${BENCH_DIR:-$here/../../../shared/bench}/lib/common.sh"

BIN=${SKIFF_PROXY:-$(command -v skiff-proxy || echo "$here/../../bin/skiff-proxy")}
WORKERS=${BENCH_WORKERS:-2}
# Instances of this peer record their listen ports here, so an instance can
# tell whether its upstream is a sidecar (mTLS, outbound) or the plain
# upstream (inbound). Separate from skiff-proxy-mtls's registry.
REG=${TMPDIR:-/tmp}/skiff-proxy-mtls-metrics.$(id -u)

# shellcheck source=_mtls-certs.sh
source "$here/_mtls-certs.sh"

# node ROLE LISTEN: Istio's node identity for a sidecar of workload ROLE-v1.
node() {
  local role=$1 listen=$2
  cat <<EOF
node:
  id: sidecar~127.0.0.1~$role-v1-$listen.bench~bench.svc.cluster.local
  cluster: $role.bench
  metadata:
    NAME: $role-v1-$listen
    NAMESPACE: bench
    WORKLOAD_NAME: $role-v1
    OWNER: kubernetes://apis/apps/v1/namespaces/bench/deployments/$role-v1
    SERVICE_ACCOUNT: $role
    CLUSTER_ID: Kubernetes
    MESH_ID: cluster.local
    ISTIO_VERSION: 1.31.1
    LABELS: { app: $role, version: v1, service.istio.io/canonical-name: $role, service.istio.io/canonical-revision: v1 }
EOF
}

case "${1:-}" in
  check)
    [[ -x "$BIN" ]] || { echo "skiff-proxy not found at $BIN (go build -o bin/skiff-proxy ./cmd/skiff-proxy, or set SKIFF_PROXY)" >&2; exit 1; }
    command -v openssl >/dev/null || { echo "openssl not found (apt-get install openssl)" >&2; exit 1; }
    rm -f "$REG/ports" # a new run: no instance of this peer is up yet
    echo "$("$BIN" --version | head -1) (mTLS between sidecars, Istio's standard metrics)"
    ;;
  start)
    up=$2 listen=$3 wd=$4
    c=$REG/certs
    mkdir -p "$REG"
    certs "$c"
    touch "$REG/ports"
    if grep -qx "$up" "$REG/ports"; then
      # The upstream is a sidecar of this peer: the client sidecar's
      # outbound, originating Istio mTLS.
      me=client direction=OUTBOUND
      cluster="outbound|80||server.bench.svc.cluster.local"
      mx='{upstream_discovery: [{istio_headers: {}}, {workload_discovery: {}}], upstream_propagation: [{istio_headers: {}}]}'
      stats='{ "@type": type.googleapis.com/stats.PluginConfig }'
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
    filters:
    - name: istio.metadata_exchange
      typed_config:
        "@type": type.googleapis.com/xds.type.v3.TypedStruct
        type_url: type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange
        value: { protocol: istio-peer-exchange }
EOF
)
    else
      # The server sidecar's inbound, in front of the application.
      me=server direction=INBOUND
      cluster="inbound|80||"
      mx='{downstream_discovery: [{istio_headers: {}}, {workload_discovery: {}}], downstream_propagation: [{istio_headers: {}}]}'
      stats='{ "@type": type.googleapis.com/stats.PluginConfig, disable_host_header_fallback: true }'
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
                route: { cluster: "$cluster" }
          http_filters:
          - name: istio.metadata_exchange
            typed_config:
              "@type": type.googleapis.com/xds.type.v3.TypedStruct
              type_url: type.googleapis.com/io.istio.http.peer_metadata.Config
              value: $mx
          - name: istio.stats
            typed_config: $stats
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
EOF
)
    {
      node "$me" "$listen"
      cat <<EOF
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
static_resources:
  listeners:
  - name: bench
    address: { socket_address: { address: 127.0.0.1, port_value: $listen } }
    traffic_direction: $direction
$(inbound_chains "$c" "$me" "$hcm")
  clusters:
  - name: "$cluster"
    type: STATIC
    connect_timeout: 1s
    metadata:
      filter_metadata:
        istio:
          services: [{ host: server.bench.svc.cluster.local, name: server, namespace: bench }]
$transport
    load_assignment:
      cluster_name: "$cluster"
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $up } } }
EOF
    } >"$wd/bootstrap.yaml"
    peer_spawn "$wd" skiff-proxy-mtls-metrics env GOMAXPROCS="$WORKERS" "$BIN" -c "$wd/bootstrap.yaml" --log-level warn
    pid=$(tail -n1 "$wd/pids")
    if [[ -n ${METRICS_ADMIN_DIR:-} ]]; then
      mkdir -p "$METRICS_ADMIN_DIR"
      # The admin binds port 0: find it among the process's listening sockets.
      for _ in $(seq 50); do
        a=$(ss -Hltnp 2>/dev/null | awk -v p="pid=$pid," -v l="127.0.0.1:$listen" 'index($0, p) && $4 != l {print $4; exit}')
        [[ -n $a ]] && { echo "$a" >"$METRICS_ADMIN_DIR/$listen.admin"; echo "$me" >"$METRICS_ADMIN_DIR/$listen.role"; break; }
        sleep 0.1
      done
    fi
    ;;
  stop)
    peer_stop "$2"
    ;;
  *)
    echo "usage: $0 check | start UPSTREAM_PORT LISTEN_PORT WORKDIR | stop WORKDIR" >&2
    exit 2
    ;;
esac
