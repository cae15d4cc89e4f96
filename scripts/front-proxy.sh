#!/usr/bin/env bash
# Builds skiff-proxy and runs it alone from a plain Envoy front-proxy bootstrap in
# front of a sample server, then shows a request going through it. Ctrl-C
# stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bin
echo "building skiff-proxy and the hello sample..."
go build -o bin/skiff-proxy ./cmd/skiff-proxy
go build -o bin/hello ./samples/hello
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
bin/hello -addr 127.0.0.1:8080 & pids+=($!)
bin/skiff-proxy -c samples/front-proxy/envoy.yaml & pids+=($!)
for _ in $(seq 50); do
  curl -fsS http://127.0.0.1:10000/ >/dev/null 2>&1 && break
  sleep 0.1
done
echo
echo "skiff-proxy is listening on http://127.0.0.1:10000 (admin: http://127.0.0.1:9901/)"
echo "\$ curl -i http://127.0.0.1:10000/demo"
curl -sS -i http://127.0.0.1:10000/demo
echo
echo "try: curl http://127.0.0.1:9901/stats | grep upstream_rq, curl http://127.0.0.1:9901/config_dump"
echo "Ctrl-C stops the proxy and the sample server."
wait
