package admin

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiff-mesh/skiff/pkg/stats"
)

const testKey = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIPrivateKeyBytes\n-----END PRIVATE KEY-----\n"
const testCert = "-----BEGIN CERTIFICATE-----\nMIIBcertificate\n-----END CERTIFICATE-----\n"

var t0 = time.Date(2026, 11, 22, 2, 0, 0, 0, time.UTC)

func inlineBytes(s string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte(s)}}
}

func tlsListener(name string) *listenerv3.Listener {
	tc, err := anypb.New(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: inlineBytes(testCert), PrivateKey: inlineBytes(testKey)}},
	}})
	if err != nil {
		panic(err)
	}
	return &listenerv3.Listener{Name: name, FilterChains: []*listenerv3.FilterChain{{
		TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tc}},
	}}}
}

func testState() *ConfigState {
	return &ConfigState{
		Bootstrap:        &bootstrapv3.Bootstrap{Node: &corev3.Node{Id: "sidecar~127.0.0.1~a~ns.svc.cluster.local"}},
		BootstrapLoaded:  t0,
		ClustersVersion:  "cds-3",
		ListenersVersion: "lds-2",
		Clusters: []Resource{
			{Name: "xds-grpc", Static: true, Config: &clusterv3.Cluster{Name: "xds-grpc"}, LastUpdated: t0},
			{Name: "outbound|80||b.ns.svc.cluster.local", Version: "cds-3", LastUpdated: t0.Add(time.Minute),
				Config: &clusterv3.Cluster{Name: "outbound|80||b.ns.svc.cluster.local", AltStatName: "b"}},
			{Name: "outbound|80||a.ns.svc.cluster.local", Version: "cds-2", LastUpdated: t0.Add(time.Minute),
				Config: &clusterv3.Cluster{Name: "outbound|80||a.ns.svc.cluster.local", AltStatName: "a"}},
			{Name: "inbound|9080||", Version: "cds-3", State: Warming, Config: &clusterv3.Cluster{Name: "inbound|9080||"}},
		},
		Endpoints: []Resource{
			{Name: "outbound|80||a.ns.svc.cluster.local", Version: "eds-1",
				Config: &endpointv3.ClusterLoadAssignment{ClusterName: "outbound|80||a.ns.svc.cluster.local"}},
		},
		Listeners: []Resource{
			{Name: "virtualOutbound", Version: "lds-1", Config: &listenerv3.Listener{Name: "virtualOutbound"}},
			{Name: "0.0.0.0_9080", Version: "lds-2", State: Warming, Config: tlsListener("0.0.0.0_9080")},
			{Name: "0.0.0.0_9080", Version: "lds-1", State: Active, Config: &listenerv3.Listener{Name: "0.0.0.0_9080"}},
			{Name: "0.0.0.0_9080", Version: "lds-0", State: Draining, Config: &listenerv3.Listener{Name: "0.0.0.0_9080"},
				Error: &UpdateFailure{Details: "listener 0.0.0.0_9080: filter_chains[0]: bad", Version: "lds-bad", LastAttempt: t0}},
		},
		Routes: []Resource{
			{Name: "9080", Version: "rds-1", Config: &routev3.RouteConfiguration{Name: "9080"}},
		},
		Secrets: []Resource{
			{Name: "default", Version: "sds-1", LastUpdated: t0, Config: &tlsv3.Secret{Name: "default",
				Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
					CertificateChain: inlineBytes(testCert), PrivateKey: inlineBytes(testKey)}}}},
			{Name: "ROOTCA", State: Warming, Config: &tlsv3.Secret{Name: "ROOTCA"}},
		},
	}
}

func dumpVia(t *testing.T, st *ConfigState, query string) (int, string, *adminv3.ConfigDump) {
	t.Helper()
	h := New(Options{Store: stats.New(), Config: ConfigSourceFunc(func() *ConfigState { return st })}).Handler()
	code, body, hdr := get(t, h, "/config_dump"+query)
	if code != 200 {
		return code, body, nil
	}
	if hdr.Get("Content-Type") != "application/json" {
		t.Errorf("content type %q", hdr.Get("Content-Type"))
	}
	dump := &adminv3.ConfigDump{}
	if err := protojson.Unmarshal([]byte(body), dump); err != nil {
		t.Fatalf("not an envoy.admin.v3.ConfigDump: %v\n%s", err, body)
	}
	return code, body, dump
}

func types(d *adminv3.ConfigDump) []string {
	var out []string
	for _, c := range d.Configs {
		out = append(out, strings.TrimPrefix(c.TypeUrl, "type.googleapis.com/envoy.admin.v3."))
	}
	return out
}

func unpack[T proto.Message](t *testing.T, a *anypb.Any, m T) T {
	t.Helper()
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatalf("%s: %v", a.TypeUrl, err)
	}
	return m
}

func TestConfigDumpOrderAndShape(t *testing.T) {
	_, body, d := dumpVia(t, testState(), "")
	if d == nil {
		t.Fatal("no dump")
	}
	if got := strings.Join(types(d), ","); got != "BootstrapConfigDump,ClustersConfigDump,ListenersConfigDump,ScopedRoutesConfigDump,RoutesConfigDump,SecretsConfigDump" {
		t.Fatalf("sections %s", got)
	}
	// Envoy's JSON: proto names, one-space indent, stable spacing.
	for _, s := range []string{"{\n \"configs\": [\n  {\n   \"@type\": \"type.googleapis.com/envoy.admin.v3.BootstrapConfigDump\",",
		`"dynamic_active_clusters": [`, `"last_updated": "2026-11-22T02:01:00Z"`} {
		if !strings.Contains(body, s) {
			t.Errorf("body lacks %q", s)
		}
	}

	b := unpack(t, d.Configs[0], &adminv3.BootstrapConfigDump{})
	if b.Bootstrap.GetNode().GetId() == "" || !b.LastUpdated.AsTime().Equal(t0) {
		t.Errorf("bootstrap %v", b)
	}
	c := unpack(t, d.Configs[1], &adminv3.ClustersConfigDump{})
	if c.VersionInfo != "cds-3" || len(c.StaticClusters) != 1 || len(c.DynamicActiveClusters) != 2 || len(c.DynamicWarmingClusters) != 1 {
		t.Fatalf("clusters %v", c)
	}
	first := unpack(t, c.DynamicActiveClusters[0].Cluster, &clusterv3.Cluster{})
	if first.Name != "outbound|80||a.ns.svc.cluster.local" || c.DynamicActiveClusters[0].VersionInfo != "cds-2" {
		t.Errorf("dynamic clusters not sorted by name / version lost: %v", c.DynamicActiveClusters[0])
	}
	l := unpack(t, d.Configs[2], &adminv3.ListenersConfigDump{})
	if l.VersionInfo != "lds-2" || len(l.DynamicListeners) != 2 {
		t.Fatalf("listeners %v", l)
	}
	dl := l.DynamicListeners[0]
	if dl.Name != "0.0.0.0_9080" || dl.ActiveState.GetVersionInfo() != "lds-1" || dl.WarmingState.GetVersionInfo() != "lds-2" ||
		dl.DrainingState.GetVersionInfo() != "lds-0" || dl.ErrorState.GetDetails() == "" || dl.ErrorState.GetVersionInfo() != "lds-bad" {
		t.Errorf("listener states not grouped: %v", dl)
	}
	r := unpack(t, d.Configs[4], &adminv3.RoutesConfigDump{})
	if len(r.DynamicRouteConfigs) != 1 || r.DynamicRouteConfigs[0].VersionInfo != "rds-1" {
		t.Errorf("routes %v", r)
	}
	s := unpack(t, d.Configs[5], &adminv3.SecretsConfigDump{})
	if len(s.DynamicActiveSecrets) != 1 || s.DynamicActiveSecrets[0].Name != "default" || len(s.DynamicWarmingSecrets) != 1 {
		t.Errorf("secrets %v", s)
	}
}

func TestConfigDumpIncludeEDS(t *testing.T) {
	_, _, d := dumpVia(t, testState(), "?include_eds")
	if got := strings.Join(types(d), ","); got != "BootstrapConfigDump,ClustersConfigDump,EndpointsConfigDump,ListenersConfigDump,ScopedRoutesConfigDump,RoutesConfigDump,SecretsConfigDump" {
		t.Fatalf("sections %s", got)
	}
	e := unpack(t, d.Configs[2], &adminv3.EndpointsConfigDump{})
	if len(e.DynamicEndpointConfigs) != 1 || e.DynamicEndpointConfigs[0].VersionInfo != "eds-1" {
		t.Errorf("endpoints %v", e)
	}
}

func TestConfigDumpRedactsSecretsAndInlineKeys(t *testing.T) {
	st := testState()
	_, body, d := dumpVia(t, st, "")
	if strings.Contains(body, base64.StdEncoding.EncodeToString([]byte(testKey))) || !strings.Contains(body, `"W3JlZGFjdGVkXQ=="`) {
		t.Fatal("private key material in /config_dump")
	}
	s := unpack(t, d.Configs[5], &adminv3.SecretsConfigDump{})
	sec := unpack(t, s.DynamicActiveSecrets[0].Secret, &tlsv3.Secret{})
	tc := sec.GetTlsCertificate()
	if string(tc.GetPrivateKey().GetInlineBytes()) != "[redacted]" || string(tc.GetCertificateChain().GetInlineBytes()) != testCert {
		t.Errorf("secret: key %q, chain %q", tc.GetPrivateKey().GetInlineBytes(), tc.GetCertificateChain().GetInlineBytes())
	}
	// Through two Anys: the dump's listener, then its transport socket.
	l := unpack(t, d.Configs[2], &adminv3.ListenersConfigDump{})
	lis := unpack(t, l.DynamicListeners[0].WarmingState.Listener, &listenerv3.Listener{})
	dtc := unpack(t, lis.FilterChains[0].TransportSocket.GetTypedConfig(), &tlsv3.DownstreamTlsContext{})
	if k := dtc.CommonTlsContext.TlsCertificates[0].PrivateKey.GetInlineBytes(); string(k) != "[redacted]" {
		t.Errorf("listener inline key %q", k)
	}
	// The integrator's objects are untouched.
	orig := st.Secrets[0].Config.(*tlsv3.Secret).GetTlsCertificate().GetPrivateKey().GetInlineBytes()
	if string(orig) != testKey {
		t.Error("redaction modified the ConfigState")
	}
}

func TestConfigDumpResourceParam(t *testing.T) {
	_, _, d := dumpVia(t, testState(), "?resource=dynamic_active_clusters")
	if got := strings.Join(types(d), ","); got != "ClustersConfigDump.DynamicCluster,ClustersConfigDump.DynamicCluster" {
		t.Fatalf("resource=dynamic_active_clusters: %s", got)
	}
	// With a mask, each element is trimmed; paths through the Any reach
	// the cluster inside it.
	_, body, d := dumpVia(t, testState(), "?resource=dynamic_active_clusters&mask="+url.QueryEscape("cluster.name,version_info"))
	if len(d.Configs) != 2 {
		t.Fatalf("masked: %s", body)
	}
	dc := unpack(t, d.Configs[1], &adminv3.ClustersConfigDump_DynamicCluster{})
	cl := unpack(t, dc.Cluster, &clusterv3.Cluster{})
	if dc.VersionInfo != "cds-3" || dc.LastUpdated != nil || cl.Name != "outbound|80||b.ns.svc.cluster.local" || cl.AltStatName != "" {
		t.Errorf("mask not applied: %v / %v", dc, cl)
	}
	_, _, d = dumpVia(t, testState(), "?resource=dynamic_listeners&name_regex=virtual.*")
	if len(d.Configs) != 1 || unpack(t, d.Configs[0], &adminv3.ListenersConfigDump_DynamicListener{}).Name != "virtualOutbound" {
		t.Errorf("resource with name_regex: %v", types(d))
	}
	for q, want := range map[string]struct {
		code int
		msg  string
	}{
		"?resource=version_info": {400, "version_info is not a repeated field. Use ?mask=version_info to get only this field\n"},
		"?resource=nosuch":       {404, "nosuch not found in config dump\n"},
		"?resource=dynamic_active_clusters&mask=cluster.nope": {400, "FieldMask cluster.nope could not be successfully used.\n"},
	} {
		code, body, _ := dumpVia(t, testState(), q)
		if code != want.code || body != want.msg {
			t.Errorf("%s: %d %q, want %d %q", q, code, body, want.code, want.msg)
		}
	}
}

func TestConfigDumpMaskParam(t *testing.T) {
	_, body, d := dumpVia(t, testState(), "?mask=static_clusters")
	if got := strings.Join(types(d), ","); got != "ClustersConfigDump" {
		t.Fatalf("mask=static_clusters: sections %s", got)
	}
	c := unpack(t, d.Configs[0], &adminv3.ClustersConfigDump{})
	if len(c.StaticClusters) != 1 || c.VersionInfo != "" || len(c.DynamicActiveClusters) != 0 {
		t.Errorf("mask kept %s", body)
	}
	// A path that fits several sections keeps each of them.
	_, _, d = dumpVia(t, testState(), "?mask=version_info")
	if got := strings.Join(types(d), ","); got != "ClustersConfigDump,ListenersConfigDump" {
		t.Errorf("mask=version_info: %s", got)
	}
	code, msg, _ := dumpVia(t, testState(), "?mask=nosuch")
	if code != 400 || msg != "FieldMask nosuch could not be successfully applied to any configs.\n" {
		t.Errorf("mask=nosuch: %d %q", code, msg)
	}
}

func TestConfigDumpNameRegex(t *testing.T) {
	_, _, d := dumpVia(t, testState(), "?name_regex=outbound.*")
	c := unpack(t, d.Configs[1], &adminv3.ClustersConfigDump{})
	if len(c.StaticClusters) != 0 || len(c.DynamicActiveClusters) != 2 || len(c.DynamicWarmingClusters) != 0 {
		t.Errorf("clusters %v", c)
	}
	l := unpack(t, d.Configs[2], &adminv3.ListenersConfigDump{})
	if len(l.DynamicListeners) != 0 {
		t.Errorf("listeners %v", l)
	}
	// A full match, as Envoy's: a bare prefix selects nothing.
	_, _, d = dumpVia(t, testState(), "?name_regex=outbound")
	if c := unpack(t, d.Configs[1], &adminv3.ClustersConfigDump{}); len(c.DynamicActiveClusters) != 0 {
		t.Errorf("name_regex=outbound matched %d clusters, want a full-match 0", len(c.DynamicActiveClusters))
	}
	code, msg, _ := dumpVia(t, testState(), "?name_regex=%28")
	if code != 400 || !strings.HasPrefix(msg, "Error while parsing name_regex from (: ") {
		t.Errorf("bad regex: %d %q", code, msg)
	}
}

func TestBuildConfigDumpRejectsImpossibleStates(t *testing.T) {
	for _, c := range []struct {
		mod  func(*ConfigState)
		want string
	}{
		{func(s *ConfigState) { s.Clusters[1].State = Draining }, `cluster "outbound|80||b.ns.svc.cluster.local": state: DRAINING does not apply to a cluster`},
		{func(s *ConfigState) { s.Clusters[0].State = Warming }, `cluster "xds-grpc": state: a static resource is always ACTIVE, got WARMING`},
		{func(s *ConfigState) { s.Routes[0].State = Warming }, `route_config "9080": state: WARMING does not apply to a route_config`},
		{func(s *ConfigState) { s.Listeners[0].Name = "0.0.0.0_9080" }, `listener "0.0.0.0_9080": state: listed twice as ACTIVE`},
	} {
		st := testState()
		c.mod(st)
		_, err := BuildConfigDump(st, false)
		if err == nil || err.Error() != c.want {
			t.Errorf("got %v, want %s", err, c.want)
		}
	}
}

func TestBuildConfigDumpMatchesHandler(t *testing.T) {
	d, err := BuildConfigDump(testState(), true)
	if err != nil {
		t.Fatal(err)
	}
	_, _, viaHTTP := dumpVia(t, testState(), "?include_eds")
	if !proto.Equal(d, viaHTTP) {
		t.Error("BuildConfigDump and GET /config_dump?include_eds differ")
	}
	// Marshals as JSON with every @type resolvable.
	if _, err := jsonOut.Marshal(d); err != nil {
		t.Fatal(err)
	}
}
