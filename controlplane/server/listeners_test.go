package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/skiff-mesh/skiff/controlplane/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// bound listens on a free loopback port and returns its address and a
// duplicate descriptor of the socket, as a parent passes it; the listener
// here is closed, so only the descriptor keeps the port. server.New owns
// the descriptor once given it, as skiffd owns the ones it inherits.
func bound(t *testing.T) (string, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return ln.Addr().String(), fd
}

// skiffd serves on the sockets a parent passed down (as skiff up does) and
// does not bind its address flags again: the flags name ports that are held
// by the passed sockets, so binding them would fail.
func TestListenFDsServeInheritedSockets(t *testing.T) {
	xdsAddr, xdsFD := bound(t)
	secAddr, secFD := bound(t)
	monAddr, monFD := bound(t)
	o := newSecureOptions(t)
	o.XDSAddr, o.SecureAddr, o.MonitoringAddr = xdsAddr, secAddr, monAddr
	o.ListenFDs = fmt.Sprintf("xds-addr=%d, secure-addr=%d,monitoring-addr=%d", xdsFD, secFD, monFD)
	srv, err := server.New(o)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	f := runServer(t, o, srv) // waits for /ready on the monitoring socket
	for name, got := range map[string]net.Addr{"xds": srv.XDSAddr(), "secure": srv.SecureAddr(), "monitoring": srv.MonitoringAddr()} {
		want := map[string]string{"xds": xdsAddr, "secure": secAddr, "monitoring": monAddr}[name]
		if got.String() != want {
			t.Errorf("%s served on %s, want the passed socket's %s", name, got, want)
		}
	}
	// The passed secure socket serves TLS with the CA's serving certificate.
	pemRoots, err := os.ReadFile(f.rootOut)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemRoots)
	conn, err := tls.Dial("tcp", secAddr, &tls.Config{RootCAs: pool, ServerName: "istiod.istio-system.svc", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatalf("TLS to the passed secure socket %s: %v", secAddr, err)
	}
	conn.Close()
	// The plaintext xDS socket speaks gRPC: an ADS stream opens on it.
	cc, err := grpc.NewClient(xdsAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err == nil {
		err = stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster",
			Node: &corev3.Node{Id: "sidecar~127.0.0.9~a.default~default.svc.cluster.local"}})
	}
	if err == nil {
		_, err = stream.Recv()
	}
	if err != nil {
		t.Fatalf("ADS on the passed xDS socket %s: %v", xdsAddr, err)
	}
}

// A bad --listen-fds fails skiffd's start naming the item and what to pass.
func TestListenFDsErrors(t *testing.T) {
	file, err := os.CreateTemp(t.TempDir(), "plain")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	plain, err := syscall.Dup(int(file.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		spec string
		edit func(*server.Options)
		want string
	}{
		{"grpc-addr=3", nil, `item "grpc-addr=3": want FLAG=FD with FLAG one of xds-addr, secure-addr, monitoring-addr`},
		{"xds-addr", nil, `item "xds-addr": want FLAG=FD`},
		{"xds-addr=two", nil, "xds-addr=two: want a file descriptor number of 3 or more"},
		{"xds-addr=1", nil, "xds-addr=1: want a file descriptor number of 3 or more"},
		{fmt.Sprintf("xds-addr=%d", plain), nil, fmt.Sprintf("xds-addr=%d is not an open listening socket", plain)},
		{"xds-addr=SOCK,xds-addr=SOCK", nil, "xds-addr given twice"},
		{"secure-addr=SOCK", func(o *server.Options) { o.SecureAddr = "" }, "passes a socket for --secure-addr, which is empty"},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			if strings.Contains(tc.spec, "SOCK") { // server.New owns and closes it
				_, sock := bound(t)
				tc.spec = strings.ReplaceAll(tc.spec, "SOCK", strconv.Itoa(sock))
			}
			o := newSecureOptions(t)
			o.ListenFDs = tc.spec
			if tc.edit != nil {
				tc.edit(&o)
			}
			if _, err := server.New(o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("server.New: %v; want an error saying %q", err, tc.want)
			}
		})
	}
}
