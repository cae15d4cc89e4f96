#!/usr/bin/env bash
# The README's first command: builds Skiff and Bookinfo and runs the whole
# mesh on this machine — skiffd, every Bookinfo workload with its
# skiff-proxy sidecar, and an ingress gateway — then prints the product
# page URL. No Kubernetes. Ctrl-C (or `bin/skiff down` elsewhere) stops it.
# Extra arguments go to `skiff up`, e.g. --gateway-port 0 or --capture loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
echo "building skiff, skiffd, skiff-proxy and the samples into bin/ ..."
go build -o bin/skiff ./cmd/skiff
go build -o bin/skiff-proxy ./cmd/skiff-proxy
go build -o bin/skiffd ./cmd/skiffd
go build -o bin/bookinfo ./samples/bookinfo/cmd/bookinfo
go build -o bin/echo-server ./samples/echo/cmd/echo-server
go build -o bin/echo-load ./samples/echo/cmd/echo-load
exec bin/skiff up samples/bookinfo/platform/local "$@"
