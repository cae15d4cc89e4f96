package inspect

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
)

// writeDump writes a /config_dump of the given sections to a file, with
// proto field names as the proxy's admin API writes them.
func writeDump(t *testing.T, sections ...proto.Message) string {
	t.Helper()
	cd := &adminv3.ConfigDump{}
	for _, s := range sections {
		cd.Configs = append(cd.Configs, xdsres.Any(s))
	}
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(cd)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, b)
}

func writeFile(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "dump.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func tcp(cluster string) *listenerv3.Filter {
	return &listenerv3.Filter{Name: tcpProxyName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: xdsres.Any(xdsres.TCPProxy("s", cluster))}}
}

func dynListener(l *listenerv3.Listener) *adminv3.ListenersConfigDump_DynamicListener {
	return &adminv3.ListenersConfigDump_DynamicListener{Name: l.GetName(),
		ActiveState: &adminv3.ListenersConfigDump_DynamicListenerState{Listener: xdsres.Any(l)}}
}

// Istio's filter-chain shapes read as istioctl reads them.
func TestListenerTable(t *testing.T) {
	health := xdsres.Listener("health", "0.0.0.0:15021", &hcmv3.HttpConnectionManager{StatPrefix: "h",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: xdsres.RouteConfig("inline", xdsres.PrefixRoute("/healthz/ready", "agent"))}})
	tls := &listenerv3.Listener{
		Name:                "0.0.0.0_443",
		Address:             xdsres.Addr("0.0.0.0:443"),
		AdditionalAddresses: []*listenerv3.AdditionalAddress{{Address: xdsres.Addr("[::]:443")}},
		FilterChains: []*listenerv3.FilterChain{
			{FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: []string{"reviews.example.com"}, TransportProtocol: "tls",
				ApplicationProtocols: []string{"istio-peer-exchange", "istio"}},
				Filters: []*listenerv3.Filter{tcp("outbound|443||reviews.example.com")}},
			{FilterChainMatch: &listenerv3.FilterChainMatch{
				PrefixRanges:    []*corev3.CidrRange{{AddressPrefix: "198.19.0.5", PrefixLen: wrapperspb.UInt32(32)}},
				DestinationPort: wrapperspb.UInt32(443)},
				Filters: []*listenerv3.Filter{{Name: tcpProxyName, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: xdsres.Any(&tcpv3.TcpProxy{
					StatPrefix: "w", ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{
						Clusters: []*tcpv3.TcpProxy_WeightedCluster_ClusterWeight{{Name: "a", Weight: 80}, {Name: "b", Weight: 20}}}}})}}}},
			{Filters: []*listenerv3.Filter{tcp(blackHole)}},
		},
	}
	warming := xdsres.Listener("0.0.0.0_9999", "0.0.0.0:9999", xdsres.TCPProxy("x", "x"))
	ld := &adminv3.ListenersConfigDump{
		StaticListeners:  []*adminv3.ListenersConfigDump_StaticListener{{Listener: xdsres.Any(health)}},
		DynamicListeners: []*adminv3.ListenersConfigDump_DynamicListener{dynListener(tls), {Name: "0.0.0.0_9999", WarmingState: &adminv3.ListenersConfigDump_DynamicListenerState{Listener: xdsres.Any(warming)}}},
	}
	file := writeDump(t, ld)

	code, out, errs := run(Env{}, "proxy-config", "listeners", "-f", file)
	want := [][]string{
		{"ADDRESSES", "PORT", "MATCH", "DESTINATION"},
		{"0.0.0.0,::", "443", "Addr: 198.19.0.5/32:443", "WeightedClusters: a (80), b (20)"},
		{"0.0.0.0,::", "443", "ALL", "Non-HTTP/Non-TCP"},
		{"0.0.0.0,::", "443", "SNI: reviews.example.com; Trans: tls; App: TCP TLS", "Cluster: outbound|443||reviews.example.com"},
		{"0.0.0.0", "15021", "ALL", "Inline Route: /healthz/ready*"},
	}
	if got := table(out, want[0]...); code != 0 || !reflect.DeepEqual(got, want) {
		t.Errorf("exit %d %s\ngot  %q\nwant %q\n%s", code, errs, got, want, out)
	}

	code, out, _ = run(Env{}, "proxy-config", "listeners", "-f", file, "--verbose=false", "--address", "::")
	want = [][]string{{"ADDRESSES", "PORT", "TYPE"}, {"0.0.0.0,::", "443", "TCP"}}
	if got := table(out, want[0]...); code != 0 || !reflect.DeepEqual(got, want) {
		t.Errorf("--address ::\ngot  %q\nwant %q", got, want)
	}
}

func routeWithVS(r *routev3.Route, path string) *routev3.Route {
	s, _ := structpb.NewStruct(map[string]any{"config": path})
	r.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": s}}
	return r
}

func TestRouteTable(t *testing.T) {
	exact := routeWithVS(&routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/exact"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}}}},
		"/apis/networking.istio.io/v1/namespaces/ns1/virtual-service/vs1")
	regex := &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/r.*"}}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}}}}
	rd := &adminv3.RoutesConfigDump{DynamicRouteConfigs: []*adminv3.RoutesConfigDump_DynamicRouteConfig{
		{RouteConfig: xdsres.Any(&routev3.RouteConfiguration{Name: "inbound|8080||", VirtualHosts: []*routev3.VirtualHost{
			{Name: "inbound|http|8080", Domains: []string{"*"}, Routes: []*routev3.Route{xdsres.PrefixRoute("/", "inbound|8080||")}}}})},
		{RouteConfig: xdsres.Any(&routev3.RouteConfiguration{Name: "8080", VirtualHosts: []*routev3.VirtualHost{
			{Name: "a.default.svc.cluster.local:8080", Domains: []string{"a.default.svc.cluster.local", "a.default.svc.cluster.local:8080",
				"a", "a:8080", "a.default.svc", "a.default.svc:8080", "a.default", "a.default:8080", "198.19.0.7", "198.19.0.7:8080"},
				Routes: []*routev3.Route{exact, regex}},
			{Name: "allow_any", Domains: []string{"*"}, Routes: []*routev3.Route{xdsres.PrefixRoute("/", passthrough)}},
			{Name: "blackhole", Domains: []string{"*"}}}})},
		{RouteConfig: xdsres.Any(&routev3.RouteConfiguration{Name: "80", VirtualHosts: []*routev3.VirtualHost{
			{Name: "b:80", Domains: []string{"b"}, Routes: []*routev3.Route{routeWithVS(xdsres.PrefixRoute("/", "c"), "/elsewhere")}}}})},
	}}
	file := writeDump(t, rd)
	code, out, errs := run(Env{}, "pc", "routes", "-f", file)
	want := [][]string{
		{"NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"},
		{"80", "b:80", "b", "/*", "<unknown>"},
		{"8080", "a.default.svc.cluster.local:8080", "a, a.default + 1 more...", "/exact", "vs1.ns1"},
		{"8080", "a.default.svc.cluster.local:8080", "a, a.default + 1 more...", "regex /r.*", ""},
		{"8080", "blackhole", "*", "/*", "404"},
		{"inbound|8080||", "inbound|http|8080", "*", "/*", ""},
	}
	if got := table(out, want[0]...); code != 0 || !reflect.DeepEqual(got, want) {
		t.Errorf("exit %d %s\ngot  %q\nwant %q\n%s", code, errs, got, want, out)
	}
}

// selfSigned is a PEM certificate valid from notBefore for a day.
func selfSigned(t *testing.T, serial int64, notBefore time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "test"},
		NotBefore: notBefore, NotAfter: notBefore.Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestSecretTable(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	leaf := selfSigned(t, 0x1a2b3c, now.Add(-time.Hour))
	old := selfSigned(t, 7, now.Add(-48*time.Hour))
	sd := &adminv3.SecretsConfigDump{
		StaticSecrets: []*adminv3.SecretsConfigDump_StaticSecret{{Name: "old-root", Secret: xdsres.Any(&tlsv3.Secret{Name: "old-root",
			Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: xdsres.Inline(old)}}})}},
		DynamicActiveSecrets: []*adminv3.SecretsConfigDump_DynamicSecret{{Name: "default", Secret: xdsres.Any(&tlsv3.Secret{Name: "default",
			Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{CertificateChain: xdsres.Inline(leaf),
				PrivateKey: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "[redacted]"}}}}})}},
		DynamicWarmingSecrets: []*adminv3.SecretsConfigDump_DynamicSecret{{Name: "ROOTCA"}},
	}
	file := writeDump(t, sd)
	code, out, errs := run(Env{Now: func() time.Time { return now }}, "proxy-config", "secret", "-f", file)
	want := [][]string{
		{"RESOURCE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE"},
		{"ROOTCA", "", "WARMING", "false", "", "", ""},
		{"default", "Cert Chain", "ACTIVE", "true", "1a2b3c", "2026-11-23T11:00:00Z", "2026-11-22T11:00:00Z"},
		{"old-root", "CA", "ACTIVE", "false", "07", "2026-11-21T12:00:00Z", "2026-11-20T12:00:00Z"},
	}
	if got := table(out, want[0]...); code != 0 || !reflect.DeepEqual(got, want) {
		t.Errorf("exit %d %s\ngot  %q\nwant %q\n%s", code, errs, got, want, out)
	}
}

// A filter type this binary does not link (one skiffd learns after the CLI
// was built) must not make the whole dump unreadable.
func TestUnknownFilterTypeStillRenders(t *testing.T) {
	dump := `{"configs": [{
  "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
  "dynamic_listeners": [{"name": "0.0.0.0_7000", "active_state": {"listener": {
    "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
    "name": "0.0.0.0_7000",
    "address": {"socket_address": {"address": "0.0.0.0", "port_value": 7000}},
    "filter_chains": [{"filters": [
      {"name": "skiff.test.future", "typed_config": {"@type": "type.googleapis.com/skiff.test.Future", "knob": 3, "nested": {"a": "b"}}},
      {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": "x", "cluster": "outbound|7000||legacy.default.svc.cluster.local"}}]}]}}}]
}]}`
	file := writeFile(t, []byte(dump))
	code, out, errs := run(Env{}, "proxy-config", "listeners", "-f", file)
	want := [][]string{{"ADDRESSES", "PORT", "MATCH", "DESTINATION"}, {"0.0.0.0", "7000", "ALL", "Cluster: outbound|7000||legacy.default.svc.cluster.local"}}
	if got := table(out, want[0]...); code != 0 || !reflect.DeepEqual(got, want) {
		t.Errorf("exit %d %s\ngot  %q\nwant %q", code, errs, got, want)
	}
	code, out, errs = run(Env{}, "proxy-config", "listeners", "-f", file, "-o", "json")
	var ls []map[string]any
	if err := json.Unmarshal([]byte(out), &ls); code != 0 || err != nil || !strings.Contains(out, `"@type": "type.googleapis.com/skiff.test.Future"`) {
		t.Errorf("-o json: exit %d %s %v\n%s", code, errs, err, out)
	}
}

// serve answers GET path with body on a loopback port until the test ends.
func serve(t *testing.T, bodies map[string]string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := bodies[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, b)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func dumpJSON(t *testing.T, sections ...proto.Message) string {
	t.Helper()
	b, err := os.ReadFile(writeDump(t, sections...))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// proxy-status POD when the proxy holds other clusters than skiffd
// generates: which ones, and where to look.
func TestProxyStatusPodMismatch(t *testing.T) {
	cds := func(names ...string) *adminv3.ClustersConfigDump {
		d := &adminv3.ClustersConfigDump{}
		for _, n := range names {
			d.DynamicActiveClusters = append(d.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{Cluster: xdsres.Any(xdsres.EDSCluster(n))})
		}
		return d
	}
	skiffdAddr := serve(t, map[string]string{"/debug/config_dump": dumpJSON(t, cds("a", "b"))})
	proxyAddr := serve(t, map[string]string{"/config_dump": dumpJSON(t, cds("a", "c"))})
	env := Env{MonitoringAddr: skiffdAddr, Resolver: mapResolver{{"p", "ns"}: proxyAddr}}
	code, out, errs := run(env, "proxy-status", "p.ns")
	want := `Clusters Don't Match
  b: sent by skiffd, missing from the proxy
  c: held by the proxy, not generated by skiffd
Listeners Match
Routes Match
The proxy holds what ` + "`skiff proxy-config all p.ns -o json`" + ` prints; skiffd generates what http://` + skiffdAddr + `/debug/config_dump?proxyID=p.ns shows.
`
	if code != 0 || out != want {
		t.Errorf("exit %d %s\ngot\n%s\nwant\n%s", code, errs, out, want)
	}
}

func TestCompareKind(t *testing.T) {
	a := &routev3.RouteConfiguration{Name: "a"}
	b := &routev3.RouteConfiguration{Name: "b", ValidateClusters: wrapperspb.Bool(true)}
	b2 := &routev3.RouteConfiguration{Name: "b"}
	c := &routev3.RouteConfiguration{Name: "c"}
	var sb strings.Builder
	compareKind(&sb, "Routes", "", []resource{{name: "a", state: "ACTIVE", msg: a}, {name: "b", state: "ACTIVE", msg: b}},
		[]resource{{name: "b", state: "ACTIVE", msg: b2}, {name: "c", state: "ACTIVE", msg: c}, {name: "static", static: true, state: "ACTIVE", msg: c}})
	want := `Routes Don't Match
  a: sent by skiffd, missing from the proxy
  b: differs between skiffd and the proxy
  c: held by the proxy, not generated by skiffd
`
	if sb.String() != want {
		t.Errorf("got\n%s\nwant\n%s", sb.String(), want)
	}
}

// A canned /debug/syncz: the other states of istioctl's columns, and
// names sorted.
func TestProxyStatusStates(t *testing.T) {
	syncz := `[
 {"conn_id": "c2", "proxy_id": "zeta.default", "istio_version": "1.24.0", "types": [
  {"type_url": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "nonce_sent": "5", "nonce_acked": "4"},
  {"type_url": "type.googleapis.com/envoy.config.listener.v3.Listener", "nonce_sent": "6", "nonce_acked": ""},
  {"type_url": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", "nonce_sent": "", "nonce_acked": ""}]},
 {"conn_id": "c1", "proxy_id": "alpha.ns", "cluster_id": "east", "types": [
  {"type_url": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "nonce_sent": "1", "nonce_acked": "1"}]}
]`
	addr := serve(t, map[string]string{"/debug/syncz": syncz})
	code, out, errs := run(Env{MonitoringAddr: addr}, "proxy-status")
	want := [][]string{
		{"NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION"},
		{"alpha.ns", "east", "SYNCED", "IGNORED", "IGNORED", "IGNORED", "IGNORED", "skiffd", "-"},
		{"zeta.default", "Kubernetes", "STALE", "STALE (Never Acknowledged)", "IGNORED", "NOT SENT", "IGNORED", "skiffd", "1.24.0"},
	}
	if got := table(out, want[0]...); code != 0 || !reflect.DeepEqual(got, want) {
		t.Errorf("exit %d %s\ngot  %q\nwant %q\n%s", code, errs, got, want, out)
	}
}

// Envoy's /clusters JSON: EDS health, outlier ejection and a unix socket
// host, ordered by address.
func TestEndpointTable(t *testing.T) {
	clusters := `{"cluster_statuses": [
 {"name": "outbound|9080||reviews.default.svc.cluster.local", "host_statuses": [
  {"address": {"socket_address": {"address": "198.18.0.12", "port_value": 9080}}, "health_status": {"eds_health_status": "HEALTHY", "failed_outlier_check": true}},
  {"address": {"socket_address": {"address": "198.18.0.9", "port_value": 9080}}, "health_status": {"eds_health_status": "UNHEALTHY"}},
  {"address": {"socket_address": {"address": "198.18.0.10", "port_value": 9080}}, "health_status": {}}]},
 {"name": "sds-grpc", "host_statuses": [
  {"address": {"pipe": {"path": "./var/run/secrets/workload-spiffe-uds/socket"}}, "health_status": {"eds_health_status": "HEALTHY"}}]}
]}`
	file := writeFile(t, []byte(clusters))
	code, out, errs := run(Env{}, "proxy-config", "endpoints", "-f", file)
	want := [][]string{
		{"ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"},
		{"198.18.0.9:9080", "UNHEALTHY", "OK", "outbound|9080||reviews.default.svc.cluster.local"},
		{"198.18.0.10:9080", "HEALTHY", "OK", "outbound|9080||reviews.default.svc.cluster.local"},
		{"198.18.0.12:9080", "HEALTHY", "FAILED", "outbound|9080||reviews.default.svc.cluster.local"},
		{"unix://./var/run/secrets/workload-spiffe-uds/socket", "HEALTHY", "OK", "sds-grpc"},
	}
	if got := table(out, want[0]...); code != 0 || !reflect.DeepEqual(got, want) {
		t.Errorf("exit %d %s\ngot  %q\nwant %q\n%s", code, errs, got, want, out)
	}
	code, out, _ = run(Env{}, "proxy-config", "endpoints", "-f", file, "--status", "healthy", "--port", "9080")
	if got := table(out, want[0]...); code != 0 || !reflect.DeepEqual(got, [][]string{want[0], want[2], want[3]}) {
		t.Errorf("--status healthy --port 9080: got %q", got)
	}
}
