#!/usr/bin/env bash
# Measures skiffd at the reference scale: 1000 services × 2 endpoints in 10
# namespaces, 2000 simulated sidecars on real ADS streams, 20 VirtualService
# changes and 20 endpoint changes. Prints the time to sync every proxy, how
# long each kind of change takes to be ACKed by every proxy (p50/p99), and
# skiffd's memory and CPU. Everything listens on 127.0.0.1; the 198.18.0.0/16
# pod addresses are only written into config, never dialled.
# The proxies speak delta xDS, as Istio's sidecars do by default since 1.22;
# -delta=false measures state of the world. Extra flags go to the tool and
# win over these, e.g. a reduced run:
#   scripts/scale.sh -services 100 -proxies 200 -reps 5
# or -per-conn 1 (a gRPC connection per proxy), -json FILE, -keep.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
go build -o bin/skiffd ./cmd/skiffd
go build -o bin/xds-load ./internal/cmd/xds-load
# A connection per proxy needs two descriptors per proxy on this machine.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log="$(mktemp -t skiffd-scale.XXXXXX.log)"
echo "skiffd output: $log" >&2
exec bin/xds-load -skiffd bin/skiffd -skiffd-log "$log" \
	-services 1000 -endpoints 2 -namespaces 10 -proxies 2000 -reps 20 -delta "$@"
