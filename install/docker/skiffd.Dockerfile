# skiffd (istiod's job): a static Go binary on distroless, run as Istio's
# uid 1337. Build from the repository root:
#   docker build -f install/docker/skiffd.Dockerfile --build-arg VERSION=0.1.0 -t ghcr.io/skiff-mesh/skiffd:0.1.0 .
# (scripts/images.sh does both images.) VERSION is also the skiff-proxy tag
# the injector puts into pods, so build both images with the same VERSION.
ARG GO_VERSION=1.26
FROM docker.io/library/golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=0.1.0-dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.Version=${VERSION} -X github.com/skiff-mesh/skiff/controlplane/inject.Version=${VERSION}" \
      -o /out/skiffd ./cmd/skiffd

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/skiffd /usr/local/bin/skiffd
USER 1337:1337
ENTRYPOINT ["/usr/local/bin/skiffd"]
