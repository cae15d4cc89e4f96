// Command ext-authz is the local mesh's ext-authz sample (Istio's
// samples/extauthz): an external authorizer for CUSTOM
// AuthorizationPolicies, on HTTP (--http, default :8000) and gRPC (--grpc,
// default :9000). It allows requests carrying `x-ext-authz: allow`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"

	"github.com/skiff-mesh/skiff/samples/extauthz"
)

func main() {
	httpAddr := flag.String("http", ":8000", "address of the HTTP authorizer (Envoy's ext_authz http_service)")
	grpcAddr := flag.String("grpc", ":9000", "address of the gRPC authorizer (envoy.service.auth.v3.Authorization)")
	flag.Parse()
	if err := run(*httpAddr, *grpcAddr); err != nil {
		fmt.Fprintln(os.Stderr, "ext-authz:", err)
		os.Exit(1)
	}
}

func run(httpAddr, grpcAddr string) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	hl, err := net.Listen("tcp", httpAddr)
	if err != nil {
		return fmt.Errorf("--http %s: %w", httpAddr, err)
	}
	gl, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		return fmt.Errorf("--grpc %s: %w", grpcAddr, err)
	}
	hs := &http.Server{Handler: extauthz.HTTP{Log: log}}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, extauthz.GRPC{Log: log})
	log.Info("ext-authz serving", "http", hl.Addr().String(), "grpc", gl.Addr().String())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(hl) }()
	go func() { errc <- gs.Serve(gl) }()
	select {
	case <-ctx.Done():
		gs.GracefulStop()
		return hs.Shutdown(context.Background())
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}
