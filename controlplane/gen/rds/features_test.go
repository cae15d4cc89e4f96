package rds

import (
	"slices"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"

	"github.com/skiff-mesh/skiff/controlplane/gen/index/indextest"
)

func vhostByName(t *testing.T, rc *routev3.RouteConfiguration, name string) *routev3.VirtualHost {
	t.Helper()
	for _, vh := range rc.GetVirtualHosts() {
		if vh.GetName() == name {
			return vh
		}
	}
	t.Fatalf("route configuration %q has no virtual host %q", rc.GetName(), name)
	return nil
}

func routeNames(vh *routev3.VirtualHost) []string {
	var out []string
	for _, r := range vh.GetRoutes() {
		out = append(out, r.GetName())
	}
	return out
}

// TestVirtualServiceFeatures checks every translated HTTPRoute feature
// field by field (the golden files pin the rest), for a caller the
// sourceLabels select and one they do not.
func TestVirtualServiceFeatures(t *testing.T) {
	ix := bookinfoIndex(t, indextest.Testdata(t, "features.yaml"))
	pp := indextest.SidecarFor(t, ix, "default", "productpage-v1-0")
	rt := indextest.SidecarFor(t, ix, "default", "ratings-v1-0")
	ppRoutes := routesOf(t, pp, ix)
	rtRoutes := routesOf(t, rt, ix)
	goldenRoutes(t, "features.productpage", ppRoutes)
	goldenRoutes(t, "features.ratings-v1", rtRoutes)

	if len(ppRoutes) != 1 || ppRoutes[0].GetName() != "9080" {
		t.Fatalf("productpage route configurations: got %d, want one named 9080", len(ppRoutes))
	}
	reviews := vhostByName(t, ppRoutes[0], "reviews.default.svc.cluster.local:9080")
	// sourceLabels app=ratings drops "only-ratings-callers" for productpage;
	// "unreachable" follows a catch-all and is dropped for everyone.
	if got, want := routeNames(reviews), []string{"from-productpage.jason", "old", "rewrite", "default"}; !slices.Equal(got, want) {
		t.Errorf("productpage reviews routes = %q, want %q", got, want)
	}
	rtReviews := vhostByName(t, rtRoutes[0], "reviews.default.svc.cluster.local:9080")
	if got, want := routeNames(rtReviews), []string{"only-ratings-callers", "old", "rewrite", "default"}; !slices.Equal(got, want) {
		t.Errorf("ratings reviews routes = %q, want %q", got, want)
	}

	jason := reviews.GetRoutes()[0]
	m := jason.GetMatch()
	if m.GetPrefix() != "/reviews" || m.GetCaseSensitive() == nil || m.GetCaseSensitive().GetValue() {
		t.Errorf("match prefix/case = %q/%v, want /reviews, case-insensitive", m.GetPrefix(), m.GetCaseSensitive())
	}
	var hdrs []string
	for _, h := range m.GetHeaders() {
		hdrs = append(hdrs, h.GetName())
		switch h.GetName() {
		case "x-any":
			if !h.GetPresentMatch() {
				t.Errorf("x-any (prefix \"\") should be a presence match, got %v", h)
			}
		case "x-skip":
			if !h.GetInvertMatch() || h.GetStringMatch().GetSafeRegex().GetRegex() != "y.*" {
				t.Errorf("withoutHeaders x-skip should be an inverted regex match, got %v", h)
			}
		case ":method":
			if h.GetStringMatch().GetExact() != "GET" {
				t.Errorf(":method = %v", h)
			}
		}
	}
	if want := []string{"end-user", "x-any", "x-skip", ":method"}; !slices.Equal(hdrs, want) {
		t.Errorf("header matchers = %q, want %q", hdrs, want)
	}
	if q := m.GetQueryParameters(); len(q) != 1 || q[0].GetName() != "debug" || q[0].GetStringMatch().GetExact() != "1" {
		t.Errorf("query matchers = %v", q)
	}
	a := jason.GetRoute()
	wc := a.GetWeightedClusters().GetClusters()
	if len(wc) != 2 || wc[0].GetName() != "outbound|9080|v2|reviews.default.svc.cluster.local" || wc[0].GetWeight().GetValue() != 80 ||
		wc[1].GetName() != "outbound|9080|v3|reviews.default.svc.cluster.local" || wc[1].GetWeight().GetValue() != 20 {
		t.Errorf("weighted clusters = %v", wc)
	}
	if len(wc) == 2 && (len(wc[0].GetRequestHeadersToAdd()) != 1 || wc[0].GetRequestHeadersToAdd()[0].GetHeader().GetValue() != "v2") {
		t.Errorf("destination headers should go on the weighted cluster: %v", wc[0])
	}
	if a.GetTimeout().AsDuration() != 3*time.Second || a.GetMaxGrpcTimeout().AsDuration() != 3*time.Second {
		t.Errorf("timeout = %v / grpc %v, want 3s", a.GetTimeout().AsDuration(), a.GetMaxGrpcTimeout().AsDuration())
	}
	rp := a.GetRetryPolicy()
	if rp.GetNumRetries().GetValue() != 4 || rp.GetRetryOn() != "gateway-error,connect-failure,retriable-status-codes" ||
		!slices.Equal(rp.GetRetriableStatusCodes(), []uint32{503}) || rp.GetPerTryTimeout().AsDuration() != time.Second {
		t.Errorf("retry policy = %v", rp)
	}
	if len(jason.GetRequestHeadersToAdd()) != 1 || jason.GetRequestHeadersToAdd()[0].GetAppendAction().String() != "APPEND_IF_EXISTS_OR_ADD" ||
		!slices.Equal(jason.GetRequestHeadersToRemove(), []string{"x-internal"}) ||
		jason.GetResponseHeadersToAdd()[0].GetAppendAction().String() != "OVERWRITE_IF_EXISTS_OR_ADD" {
		t.Errorf("route headers: add %v remove %v response %v", jason.GetRequestHeadersToAdd(), jason.GetRequestHeadersToRemove(), jason.GetResponseHeadersToAdd())
	}

	direct := rtReviews.GetRoutes()[0]
	if direct.GetDirectResponse().GetStatus() != 204 || direct.GetMatch().GetPath() != "/health" {
		t.Errorf("direct response route = %v", direct)
	}

	redirect := reviews.GetRoutes()[1].GetRedirect()
	if redirect.GetPathRedirect() != "/new" || redirect.GetHostRedirect() != "reviews.default.svc.cluster.local" ||
		redirect.GetResponseCode() != routev3.RedirectAction_FOUND {
		t.Errorf("redirect = %v", redirect)
	}
	if re := reviews.GetRoutes()[1].GetMatch().GetSafeRegex().GetRegex(); re != "^/old/[0-9]+$" {
		t.Errorf("regex match = %q", re)
	}

	rw := reviews.GetRoutes()[2].GetRoute()
	if rw.GetPrefixRewrite() != "/" || rw.GetHostRewriteLiteral() != "reviews-internal" || rw.GetRetryPolicy() != nil ||
		rw.GetCluster() != "outbound|9080|v1|reviews.default.svc.cluster.local" {
		t.Errorf("rewrite route: prefix %q host %q retry %v cluster %q (attempts 0 must disable retries)",
			rw.GetPrefixRewrite(), rw.GetHostRewriteLiteral(), rw.GetRetryPolicy(), rw.GetCluster())
	}

	def := reviews.GetRoutes()[3]
	mp := def.GetRoute().GetRequestMirrorPolicies()
	if len(mp) != 1 || mp[0].GetCluster() != "outbound|9080|v3|reviews.default.svc.cluster.local" ||
		mp[0].GetRuntimeFraction().GetDefaultValue().GetNumerator() != 125000 {
		t.Errorf("mirror = %v, want v3 at 125000 per million", mp)
	}
	var fault faultv3.HTTPFault
	if err := def.GetTypedPerFilterConfig()[FaultFilter].UnmarshalTo(&fault); err != nil {
		t.Fatal(err)
	}
	if fault.GetDelay().GetFixedDelay().AsDuration() != 5*time.Second || fault.GetDelay().GetPercentage().GetNumerator() != 1000 ||
		fault.GetAbort().GetHttpStatus() != 503 || fault.GetAbort().GetPercentage().GetNumerator() != 500000 {
		t.Errorf("fault = %v", &fault)
	}
	var cors corsv3.CorsPolicy
	if err := def.GetTypedPerFilterConfig()[CorsFilter].UnmarshalTo(&cors); err != nil {
		t.Fatal(err)
	}
	if cors.GetAllowMethods() != "GET,POST" || cors.GetMaxAge() != "86400" || !cors.GetAllowCredentials().GetValue() ||
		len(cors.GetAllowOriginStringMatch()) != 2 || cors.GetAllowOriginStringMatch()[1].GetSafeRegex().GetRegex() != `https://.*\.example\.org` {
		t.Errorf("cors = %v", &cors)
	}

	// details has no VirtualService: its default route carries the hash
	// policy of its DestinationRule's consistentHash.
	details := vhostByName(t, ppRoutes[0], "details.default.svc.cluster.local:9080")
	if hp := details.GetRoutes()[0].GetRoute().GetHashPolicy(); len(hp) != 1 || hp[0].GetHeader().GetHeaderName() != "x-user" {
		t.Errorf("details hash policy = %v, want header x-user", hp)
	}
	if hp := reviews.GetRoutes()[3].GetRoute().GetHashPolicy(); hp != nil {
		t.Errorf("reviews has no consistent-hash rule, got hash policy %v", hp)
	}

	// No route of the productpage VirtualService applies to productpage's
	// own sidecar (sourceLabels): Istio falls back to the default route.
	self := vhostByName(t, ppRoutes[0], "productpage.default.svc.cluster.local:9080")
	if got := self.GetRoutes(); len(got) != 1 || got[0].GetName() != "default" ||
		got[0].GetRoute().GetCluster() != "outbound|9080||productpage.default.svc.cluster.local" {
		t.Errorf("productpage routes for its own sidecar = %v, want the default route", got)
	}

	// The delegate's routes sit under the root's /ratings match: its
	// /ratings/v2 route stays, /other is outside the root and is dropped,
	// its catch-all inherits /ratings; the root's own default follows.
	ratings := vhostByName(t, ppRoutes[0], "ratings.default.svc.cluster.local:9080")
	var got []string
	for _, r := range ratings.GetRoutes() {
		got = append(got, r.GetMatch().GetPrefix()+" -> "+r.GetRoute().GetCluster())
	}
	want := []string{
		"/ratings/v2 -> outbound|9080|v2|ratings.default.svc.cluster.local",
		"/ratings -> outbound|9080|v1|ratings.default.svc.cluster.local",
		"/ -> outbound|9080||ratings.default.svc.cluster.local",
	}
	if !slices.Equal(got, want) {
		t.Errorf("delegated ratings routes =\n%q\nwant\n%q", got, want)
	}
}

// TestRoutesShared checks the cache: proxies that differ only in what
// cannot change their routes share one encoded resource; a label some
// VirtualService matches on separates them.
func TestRoutesShared(t *testing.T) {
	ix := bookinfoIndex(t, indextest.Testdata(t, "features.yaml"))
	pp := indextest.SidecarFor(t, ix, "default", "productpage-v1-0")
	other := *pp
	other.ID, other.IPs = "productpage-v1-1.default", []string{"198.18.9.9"}
	other.Labels = map[string]string{"app": "productpage", "version": "v9"}
	a, b := Generate(pp, ix, []string{"9080"}), Generate(&other, ix, []string{"9080"})
	if len(a) != 1 || len(b) != 1 || a[0].Message != b[0].Message {
		t.Errorf("same scope and same sourceLabels values: want one shared resource, got %p and %p", a[0].Message, b[0].Message)
	}
	rt := indextest.SidecarFor(t, ix, "default", "ratings-v1-0")
	if c := Generate(rt, ix, []string{"9080"}); c[0].Message == a[0].Message {
		t.Error("a proxy with different app label (used by sourceLabels) got the productpage routes")
	}
	got := indextest.Unpack[*routev3.RouteConfiguration](t, Generate(pp, ix, []string{"bogus", "9080"}))
	if len(got) != 2 || got[0].GetName() != "9080" || got[1].GetName() != "bogus" || len(got[1].GetVirtualHosts()) != 0 {
		t.Errorf("want 9080 and an empty bogus route configuration, got %v", got)
	}
}
