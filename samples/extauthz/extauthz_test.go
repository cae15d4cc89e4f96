package extauthz_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/skiff-mesh/skiff/samples/extauthz"
)

func TestHTTPAuthorizer(t *testing.T) {
	srv := httptest.NewServer(extauthz.HTTP{})
	defer srv.Close()
	for _, tc := range []struct {
		hdr    string
		status int
		result string
	}{{"allow", 200, "allowed"}, {"deny", 403, "denied"}, {"", 403, "denied"}} {
		req, _ := http.NewRequest("GET", srv.URL+"/headers", nil)
		if tc.hdr != "" {
			req.Header.Set("x-ext-authz", tc.hdr)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get("x-ext-authz-check-result") != tc.result {
			t.Errorf("x-ext-authz %q: %d %s %q; want %d %s", tc.hdr, resp.StatusCode, resp.Header.Get("x-ext-authz-check-result"), body, tc.status, tc.result)
		}
		if tc.status == 403 && !strings.Contains(string(body), "x-ext-authz: allow") {
			t.Errorf("denial body %q does not say what to send", body)
		}
	}
}

func TestGRPCAuthorizer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, extauthz.GRPC{})
	go gs.Serve(ln)
	defer gs.Stop()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := authv3.NewAuthorizationClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	check := func(headers map[string]string, principal string) *authv3.CheckResponse {
		attrs := &authv3.AttributeContext{Source: &authv3.AttributeContext_Peer{Principal: principal}}
		if headers != nil {
			attrs.Request = &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/ip", Host: "httpbin", Headers: headers}}
		}
		r, err := client.Check(ctx, &authv3.CheckRequest{Attributes: attrs})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := check(map[string]string{"x-ext-authz": "allow"}, ""); codes.Code(r.GetStatus().GetCode()) != codes.OK || r.GetOkResponse() == nil {
		t.Errorf("allowed request: %v", r)
	}
	if r := check(map[string]string{"x-ext-authz": "deny"}, ""); codes.Code(r.GetStatus().GetCode()) != codes.PermissionDenied || r.GetDeniedResponse().GetStatus().GetCode() != 403 {
		t.Errorf("denied request: %v", r)
	}
	if r := check(nil, "spiffe://cluster.local/ns/foo/sa/curl"); codes.Code(r.GetStatus().GetCode()) != codes.OK {
		t.Errorf("mTLS connection: %v", r)
	}
	if r := check(nil, ""); codes.Code(r.GetStatus().GetCode()) != codes.PermissionDenied {
		t.Errorf("plaintext connection: %v", r)
	}
}
