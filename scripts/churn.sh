#!/usr/bin/env bash
# Pushes 50 route and cluster updates through a real xDS server to a real
# skiff-proxy while 1000 requests per second flow through it, and reports
# every request that did not get a 200 (the command fails if any did).
# Extra flags go to the tool: -updates N -qps N -t 15s -delta
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
go build -o bin/skiff-proxy ./cmd/skiff-proxy
go build -o bin/xds-churn ./internal/cmd/xds-churn
bin/xds-churn -proxy bin/skiff-proxy "$@"
