package istiostats_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	statspb "istio.io/api/envoy/extensions/stats"

	"github.com/skiff-mesh/skiff/dataplane/filters/istiostats"
	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
)

// pki is a mesh CA and workload certificates with SPIFFE URI SANs.
type pki struct {
	caPEM []byte
	ca    *x509.Certificate
	key   *ecdsa.PrivateKey
}

func newPKI(t testing.TB) *pki {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"cluster.local"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	return &pki{caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca: ca, key: key}
}

// leaf issues a workload certificate for spiffe://cluster.local/ns/NS/sa/SA.
func (p *pki) leaf(t testing.TB, ns, sa string) (certPEM, keyPEM []byte) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse("spiffe://cluster.local/ns/" + ns + "/sa/" + sa)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

func tsocket(m proto.Message) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: xdsres.Any(m)}}
}

// inboundMTLS is a sidecar's inbound mTLS: client certificate required.
func (p *pki) inboundMTLS(cert, key []byte, alpn ...string) *corev3.TransportSocket {
	return tsocket(&tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: xdsres.Inline(cert), PrivateKey: xdsres.Inline(key)}},
			AlpnProtocols:   alpn,
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{
				ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: xdsres.Inline(p.caPEM)}}}})
}

// istioMutual is the client side, as skiffd's cds builds ISTIO_MUTUAL.
func (p *pki) istioMutual(c *clusterv3.Cluster, cert, key []byte, san string, alpn ...string) *clusterv3.Cluster {
	c.TransportSocket = tsocket(&tlsv3.UpstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: xdsres.Inline(cert), PrivateKey: xdsres.Inline(key)}},
			AlpnProtocols:   alpn,
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{
				ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: xdsres.Inline(p.caPEM),
					MatchSubjectAltNames: []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: san}}}}}}})
	return c
}

func typedStruct(typeURL string, v map[string]any) *anypb.Any {
	s, err := structpb.NewStruct(v)
	if err != nil {
		panic(err)
	}
	return xdsres.Any(&xdstypev3.TypedStruct{TypeUrl: typeURL, Value: s})
}

func httpMX(inbound bool) *hcmv3.HttpFilter {
	hdrs := []any{map[string]any{"istio_headers": map[string]any{}}}
	disc := []any{map[string]any{"istio_headers": map[string]any{}}, map[string]any{"workload_discovery": map[string]any{}}}
	v := map[string]any{"upstream_discovery": disc, "upstream_propagation": hdrs}
	if inbound {
		v = map[string]any{"downstream_discovery": disc, "downstream_propagation": hdrs}
	}
	return &hcmv3.HttpFilter{Name: "istio.metadata_exchange", ConfigType: &hcmv3.HttpFilter_TypedConfig{
		TypedConfig: typedStruct(istiostats.PeerMetadataTypeURL, v)}}
}

func httpStats(pc *statspb.PluginConfig) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: "istio.stats", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: xdsres.Any(pc)}}
}

func tcpMXTypedConfig() *anypb.Any {
	return typedStruct(istiostats.MetadataExchangeType, map[string]any{"protocol": "istio-peer-exchange"})
}

func netFilter(name string, a *anypb.Any) *listenerv3.Filter {
	return &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}
}

// istioServices is the cluster metadata skiffd's cds sets.
func istioServices(c *clusterv3.Cluster, host string) *clusterv3.Cluster {
	name, rest, _ := strings.Cut(host, ".")
	ns, _, _ := strings.Cut(rest, ".")
	s, _ := structpb.NewStruct(map[string]any{"services": []any{map[string]any{"host": host, "name": name, "namespace": ns}}})
	c.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": s}}
	return c
}

// sample is one scraped series.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// scrape reads a proxy's /stats/prometheus.
func scrape(t testing.TB, adminAddr string) []sample {
	t.Helper()
	resp, err := http.Get("http://" + adminAddr + "/stats/prometheus")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return parseProm(t, string(b))
}

func parseProm(t testing.TB, text string) []sample {
	var out []sample
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		s := sample{labels: map[string]string{}}
		i := strings.IndexAny(line, "{ ")
		s.name = line[:i]
		rest := line[i:]
		if rest[0] == '{' {
			rest = rest[1:]
			for rest[0] != '}' {
				eq := strings.IndexByte(rest, '=')
				k := rest[:eq]
				rest = rest[eq+2:]
				var v strings.Builder
				for rest[0] != '"' {
					if rest[0] == '\\' {
						rest = rest[1:]
						if rest[0] == 'n' {
							v.WriteByte('\n')
							rest = rest[1:]
							continue
						}
					}
					v.WriteByte(rest[0])
					rest = rest[1:]
				}
				s.labels[k] = v.String()
				rest = rest[1:]
				if rest[0] == ',' {
					rest = rest[1:]
				}
			}
			rest = rest[1:]
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			t.Fatalf("bad sample line %q: %v", line, err)
		}
		s.value = v
		out = append(out, s)
	}
	return out
}

// find returns the series of name whose labels are exactly want.
func find(samples []sample, name string, want map[string]string) (float64, bool) {
	for _, s := range samples {
		if s.name != name || len(s.labels) != len(want) {
			continue
		}
		ok := true
		for k, v := range want {
			if s.labels[k] != v {
				ok = false
				break
			}
		}
		if ok {
			return s.value, true
		}
	}
	return 0, false
}

// dump lists the series of name, for failure messages.
func dump(samples []sample, name string) string {
	var lines []string
	for _, s := range samples {
		if s.name != name {
			continue
		}
		var kv []string
		for k, v := range s.labels {
			kv = append(kv, k+"="+strconv.Quote(v))
		}
		sort.Strings(kv)
		lines = append(lines, fmt.Sprintf("  {%s} %v", strings.Join(kv, ","), s.value))
	}
	return strings.Join(lines, "\n")
}

// labels merges label maps, later ones winning.
func labels(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}
