#!/usr/bin/env bash
# Runs the shared peer benchmark (../shared/bench, fortio in Istio's method)
# with skiff-proxy beside nginx and HAProxy, installing what it needs.
# Results go to bench/results/. Extra arguments name the peers to run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
shared=${SHARED_BENCH:-$root/../shared/bench}
[[ -x "$shared/run.sh" ]] || { echo "the shared benchmark is not at $shared (set SHARED_BENCH)" >&2; exit 1; }
need=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || need+=(haproxy)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
for t in jq curl ss; do command -v $t >/dev/null 2>&1 || need+=($([[ $t == ss ]] && echo iproute2 || echo $t)); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH=$PATH:$(go env GOPATH)/bin
command -v fortio >/dev/null 2>&1 || GOFLAGS= go install fortio.org/fortio@v1.63.0
mkdir -p bin bench/results
CGO_ENABLED=0 go build -trimpath -o bin/skiff-proxy ./cmd/skiff-proxy
peers=("$@")
[ ${#peers[@]} -gt 0 ] || peers=(skiff-proxy skiff-proxy-mtls nginx haproxy)
SKIFF_PROXY=$root/bin/skiff-proxy BENCH_PEER_DIRS=$root/bench/peers RESULTS_DIR=$root/bench/results \
  "$shared/run.sh" "${peers[@]}"
