#!/usr/bin/env bash
# Builds the container images skiff install deploys, with docker or podman:
#   HUB/skiffd:TAG and HUB/skiff-proxy:TAG (install/docker/*.Dockerfile).
# Not run in CI; no test pulls images.
#   HUB   registry and path      (default ghcr.io/skiff-mesh)
#   TAG   image tag and version  (default 0.1.0-dev, skiff's development version)
#   PUSH  1 pushes after building
# Install the images you built with: skiff install --set hub=$HUB --set tag=$TAG
set -euo pipefail
cd "$(dirname "$0")/.."

HUB=${HUB:-ghcr.io/skiff-mesh}
TAG=${TAG:-0.1.0-dev}
if command -v docker >/dev/null 2>&1; then
  engine=docker
elif command -v podman >/dev/null 2>&1; then
  engine=podman
else
  echo "images.sh: neither docker nor podman is installed; install one of them" >&2
  exit 1
fi

for image in skiffd skiff-proxy; do
  echo "== $engine build $HUB/$image:$TAG"
  "$engine" build -f "install/docker/$image.Dockerfile" --build-arg "VERSION=$TAG" -t "$HUB/$image:$TAG" .
  if [ "${PUSH:-0}" = 1 ]; then
    "$engine" push "$HUB/$image:$TAG"
  fi
done
