#!/usr/bin/env bash
# Builds the Kubernetes binaries Skiff's Kubernetes tests run against
# (kube-apiserver, kube-controller-manager) from the tools/kube module into a
# cache directory keyed by version, and prints that directory. A second run
# reuses the cached binaries. internal/testing/kubetest does the same build on
# first use (same cache, same lock); CI calls this script up front so the cold
# build (several minutes on 2 cores) is not charged to a test's timeout.
#
# Cache: $SKIFF_KUBE_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/skiff/kube;
# binaries land in <cache>/<version>/.
set -euo pipefail
cd "$(dirname "$0")/../tools/kube"

version=$(awk '!/=>/ { for (i = 1; i < NF; i++) if ($i == "k8s.io/kubernetes" && $(i+1) ~ /^v[0-9]/) { print $(i+1); exit } }' go.mod)
if [ -z "$version" ]; then
  echo "tools/kube/go.mod: no 'require k8s.io/kubernetes vX.Y.Z' line" >&2
  exit 1
fi
base=${SKIFF_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/skiff/kube}
dir="$base/$version"
mkdir -p "$dir"

minor=$(echo "$version" | cut -d. -f2)
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"

# One builder at a time: kubetest takes the same flock(2) lock on this file.
exec 9>"$dir/.lock"
flock 9
for cmd in kube-apiserver kube-controller-manager; do
  if [ -x "$dir/$cmd" ]; then
    echo "== $cmd $version: cached in $dir" >&2
    continue
  fi
  echo "== building $cmd $version (minutes on a cold Go cache)" >&2
  start=$(date +%s)
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/.$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
  mv "$dir/.$cmd.tmp" "$dir/$cmd"
  echo "== built $cmd in $(( $(date +%s) - start ))s" >&2
done
echo "$dir"
