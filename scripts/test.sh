#!/usr/bin/env bash
# Runs every test of the repository, installing first what the tests need.
# This is the README's test command and exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server) # internal/testing/kubetest
# test/bookinfo drives headless Chromium through chromedriver.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus) # test/dashboard, skiff up --prometheus
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing ${need[*]}: install them (sudo apt-get install ${need[*]}) and run again" >&2
    exit 1
  fi
fi

echo "== go vet"
go vet ./...
echo "== gofmt"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$bad" ]; then echo "gofmt would change: $bad" >&2; exit 1; fi

# Tests that need root (network namespaces, iptables) carry the netns build
# tag. CI runs as root, so they run there; elsewhere this says so loudly.
tags=""
if [ "$(id -u)" = 0 ]; then
  tags="-tags=netns"
else
  echo "== not root: the network-namespace tests (build tag netns) do not run here; CI runs them as root"
fi

# The Kubernetes tests run a real kube-apiserver and kube-controller-manager,
# built once from the k8s.io/kubernetes module and cached by version
# (about 5 minutes cold; ~/.cache/skiff/kube): build them before the tests'
# timeouts start.
echo "== kube-apiserver and kube-controller-manager (cached)"
bash scripts/kube-binaries.sh

echo "== go test"
go test -race -count=1 -timeout 25m $tags ./...
