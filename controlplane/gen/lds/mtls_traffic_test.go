package lds

import (
	"bufio"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/skiff-mesh/skiff/controlplane/gen/index/indextest"
	"github.com/skiff-mesh/skiff/controlplane/xds"
	"github.com/skiff-mesh/skiff/dataplane/compile"
	"github.com/skiff-mesh/skiff/dataplane/hcm"
	"github.com/skiff-mesh/skiff/dataplane/listener"
	"github.com/skiff-mesh/skiff/dataplane/upstream"
	"github.com/skiff-mesh/skiff/dataplane/xdsclient"
	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
)

// identity answers the SDS names the local agent would ("default",
// "ROOTCA") with Istio's sample certificates.
type identity map[string]*tlsv3.Secret

func (s identity) Secret(name string) *tlsv3.Secret { return s[name] }

func sampleIdentity(t *testing.T) (identity, tls.Certificate) {
	t.Helper()
	read := func(n string) []byte {
		b, err := os.ReadFile(indextest.SamplesDir + "/certs/" + n)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cert, key, root := read("ca-cert.pem"), read("ca-key.pem"), read("root-cert.pem")
	inline := func(b []byte) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
	}
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return identity{
		"default": {Name: "default", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{CertificateChain: inline(cert), PrivateKey: inline(key)}}},
		"ROOTCA":  {Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: inline(root)}}},
	}, pair
}

// TestInboundMTLSTraffic serves productpage's generated virtualInbound in
// skiff-proxy's listener manager (moved to 127.0.0.1, the capture
// simulated: every connection's original destination is port 9080) and
// connects as a sidecar would (mTLS with Istio's ALPN and a mesh
// certificate) and as a plaintext client. PERMISSIVE takes both, STRICT
// closes the plaintext connection, DISABLE has nothing to terminate mTLS.
func TestInboundMTLSTraffic(t *testing.T) {
	ids, clientCert := sampleIdentity(t)
	app := backend(t, "productpage")
	for _, tc := range []struct {
		mode                string
		plaintextOK, mtlsOK bool
	}{
		{"PERMISSIVE", true, true},
		{"STRICT", false, true},
		{"DISABLE", true, false},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			ix := bookinfoIndex(t, indextest.Decode(t, "pa.yaml", []byte(`
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: `+tc.mode+`}}`)))
			pp := indextest.SidecarFor(t, ix, "default", "productpage-v1-0")
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			routes := hcm.NewRouteRegistry()
			cfg := compile.New(compile.Options{Routes: routes, Logger: logger})
			clusters := upstream.NewManager(upstream.Options{Secrets: cfg.Secrets(), Logger: logger})
			lm := listener.NewManager(listener.Options{
				Secrets: ids, Logger: logger, DrainTime: 10 * time.Millisecond,
				Factory: &compile.ChainFactory{Clusters: clusters, Routes: routes, Logger: logger},
				OriginalDst: func(net.Conn) (*net.TCPAddr, error) {
					return &net.TCPAddr{IP: net.IPv4(198, 18, 0, 10), Port: 9080}, nil
				},
			})
			t.Cleanup(lm.Close)
			cfg.SetParts(clusters, lm)
			apply := func(typeURL string, rs []xdsclient.Resource) {
				t.Helper()
				if err := cfg.OnUpdate(typeURL, &xdsclient.Update{Full: true, Resources: rs, Version: "1"}); err != nil {
					t.Fatalf("skiff-proxy would NACK %s: %v", xds.ShortType(typeURL), err)
				}
			}
			const inbound = "inbound|9080||"
			apply(xds.ClusterType, []xdsclient.Resource{{Name: inbound, Message: xdsres.EDSCluster(inbound)}})
			apply(xds.EndpointType, []xdsclient.Resource{{Name: inbound, Message: xdsres.Endpoints(inbound, app)}})
			in := listenerByName(t, indextest.Unpack[*listenerv3.Listener](t, Generate(pp, ix)), "virtualInbound")
			in = proto.Clone(in).(*listenerv3.Listener)
			in.Address = socketAddress("127.0.0.1", 0)
			if err := lm.AddOrUpdate(in); err != nil {
				t.Fatalf("skiff-proxy would NACK virtualInbound: %v", err)
			}
			addr := lm.Addr("virtualInbound").String()

			get := func(c net.Conn) error {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.WriteString(c, "GET /productpage HTTP/1.1\r\nHost: productpage:9080\r\nConnection: close\r\n\r\n"); err != nil {
					return err
				}
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				if resp.StatusCode != 200 || resp.Header.Get("x-upstream") != "productpage" {
					return io.ErrUnexpectedEOF
				}
				return nil
			}
			plain, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if err := get(plain); (err == nil) != tc.plaintextOK {
				t.Errorf("plaintext request: err %v, want success %v", err, tc.plaintextOK)
			}
			mtls := func(certs []tls.Certificate) error {
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{
					Certificates: certs, InsecureSkipVerify: true,
					NextProtos: []string{"istio-peer-exchange", "istio"},
					ServerName: "outbound_.9080_._.productpage.default.svc.cluster.local",
				})
				if err != nil {
					return err
				}
				return get(c)
			}
			if err := mtls([]tls.Certificate{clientCert}); (err == nil) != tc.mtlsOK {
				t.Errorf("mTLS request: err %v, want success %v", err, tc.mtlsOK)
			}
			// The mesh requires a client certificate.
			if err := mtls(nil); err == nil {
				t.Errorf("TLS request without a client certificate succeeded")
			}
		})
	}
}
