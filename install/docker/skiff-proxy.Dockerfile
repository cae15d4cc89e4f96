# skiff-proxy (Envoy's and pilot-agent's job): the sidecar, the gateways
# (`proxy router`) and the istio-init container (`iptables`, which runs
# iptables-restore: hence debian-slim with iptables rather than distroless).
# Build from the repository root:
#   docker build -f install/docker/skiff-proxy.Dockerfile --build-arg VERSION=0.1.0 -t ghcr.io/skiff-mesh/skiff-proxy:0.1.0 .
ARG GO_VERSION=1.26
FROM docker.io/library/golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=0.1.0-dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/skiff-mesh/skiff/dataplane/proxy.Version=${VERSION}" \
      -o /out/skiff-proxy ./cmd/skiff-proxy

FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables iproute2 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/skiff-proxy /usr/local/bin/skiff-proxy
# The proxy runs as 1337 (its traffic is exempt from capture by uid); the
# init container overrides this with root and NET_ADMIN.
USER 1337:1337
ENTRYPOINT ["/usr/local/bin/skiff-proxy"]
