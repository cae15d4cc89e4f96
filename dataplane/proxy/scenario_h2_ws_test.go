package proxy

import (
	"bufio"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
)

// h2cBackend serves h2c (prior knowledge) and reports the protocol it saw.
func h2cBackend(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h2c.NewHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-upstream", name)
		w.Header().Set("x-seen-proto", r.Proto)
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	}), &http2.Server{})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// h2cClient speaks HTTP/2 with prior knowledge over plain TCP.
func h2cClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}}
}

// testService is grpc's interop TestService reduced to what the scenario
// uses: unary echo with a trailer and a requested status, and a full
// duplex echo.
type testService struct {
	testpb.UnimplementedTestServiceServer
}

func (testService) UnaryCall(ctx context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "from-backend"))
	if st := in.GetResponseStatus(); st != nil && st.GetCode() != 0 {
		return nil, status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	return &testpb.SimpleResponse{Payload: in.GetPayload()}, nil
}

func (testService) FullDuplexCall(stream testpb.TestService_FullDuplexCallServer) error {
	for {
		in, err := stream.Recv()
		if err == io.EOF {
			stream.SetTrailer(metadata.Pairs("x-trailer", "duplex-done"))
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: in.GetPayload()}); err != nil {
			return err
		}
	}
}

// Scenario 9: HTTP/2 end to end — h2c both sides, gRPC unary and bidi
// streaming with trailers and statuses, and gRPC's answer when no
// upstream is healthy.
func TestScenarioHTTP2AndGRPC(t *testing.T) {
	h2up := h2cBackend(t, "h2")
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	testpb.RegisterTestServiceServer(gs, testService{})
	go gs.Serve(gln)
	t.Cleanup(gs.Stop)

	listen := freeAddr(t)
	_, p := scenario(t,
		xdsres.HTTP2(xdsres.EDSCluster("h2")), xdsres.Endpoints("h2", h2up),
		xdsres.HTTP2(xdsres.EDSCluster("grpc")), xdsres.Endpoints("grpc", gln.Addr().String()),
		xdsres.HTTP2(xdsres.EDSCluster("dead")), xdsres.Endpoints("dead"),
		xdsres.Listener("http", listen, xdsres.HCM("http", "routes")),
		xdsres.RouteConfig("routes",
			to(prefix("/grpc.testing.TestService/UnaryCall"), "grpc"),
			to(prefix("/grpc.testing.TestService/FullDuplexCall"), "grpc"),
			to(prefix("/grpc.testing.TestService/"), "dead"),
			to(prefix("/"), "h2")))

	t.Run("h2c prior knowledge both ways", func(t *testing.T) {
		c := h2cClient()
		resp, err := c.Get("http://" + listen + "/h2")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "h2 /h2" || resp.Proto != "HTTP/2.0" || resp.Header.Get("x-seen-proto") != "HTTP/2.0" {
			t.Fatalf("h2c: %d %q client proto %s upstream proto %q", resp.StatusCode, body, resp.Proto, resp.Header.Get("x-seen-proto"))
		}
	})

	conn, err := grpc.NewClient("passthrough:///"+listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := testpb.NewTestServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("unary with trailer", func(t *testing.T) {
		var trailer metadata.MD
		resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("ping")}}, grpc.Trailer(&trailer))
		if err != nil {
			t.Fatal(err)
		}
		if string(resp.GetPayload().GetBody()) != "ping" || strings.Join(trailer.Get("x-trailer"), ",") != "from-backend" {
			t.Fatalf("unary: payload %q trailer %v", resp.GetPayload().GetBody(), trailer)
		}
	})
	t.Run("unary status preserved", func(t *testing.T) {
		_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such review"}})
		if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "no such review" {
			t.Fatalf("status through the proxy: %v, want NotFound \"no such review\"", err)
		}
	})
	t.Run("bidirectional streaming", func(t *testing.T) {
		stream, err := client.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 20; i++ {
			msg := fmt.Sprintf("msg-%d", i)
			if err := stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte(msg)}}); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
			// Each answer arrives before the next message is sent: the
			// stream is interactive through the proxy, not buffered.
			out, err := stream.Recv()
			if err != nil || string(out.GetPayload().GetBody()) != msg {
				t.Fatalf("recv %d: %v %q", i, err, out.GetPayload().GetBody())
			}
		}
		stream.CloseSend()
		if _, err := stream.Recv(); err != io.EOF {
			t.Fatalf("end of stream: %v", err)
		}
		if tr := stream.Trailer().Get("x-trailer"); strings.Join(tr, ",") != "duplex-done" {
			t.Fatalf("stream trailer %v", tr)
		}
	})
	t.Run("no healthy upstream is UNAVAILABLE", func(t *testing.T) {
		_, err := client.EmptyCall(ctx, &testpb.Empty{})
		if st := status.Convert(err); st.Code() != codes.Unavailable {
			t.Fatalf("EmptyCall to a cluster without endpoints: %v, want grpc-status 14", err)
		}
	})
	if v := statValue(adminStats(t, p), "cluster.grpc.upstream_rq_total"); v < 3 {
		t.Errorf("cluster.grpc.upstream_rq_total = %d", v)
	}
}

// wsBackend completes a WebSocket handshake and then echoes raw bytes.
func wsBackend(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	var upgrades atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "websocket only", 400)
			return
		}
		upgrades.Add(1)
		sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			base64.StdEncoding.EncodeToString(sum[:]))
		brw.Flush()
		buf := make([]byte, 4096)
		for {
			n, err := brw.Read(buf)
			if n > 0 {
				c.Write(buf[:n])
			}
			if err != nil {
				return
			}
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), &upgrades
}

// wsHandshake sends a WebSocket upgrade on c and returns the response
// status line and the reader positioned after the headers.
func wsHandshake(t *testing.T, c net.Conn) (string, *bufio.Reader) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: echo.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("reading the upgrade answer: %v", err)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the upgrade headers: %v", err)
		}
		if l == "\r\n" {
			break
		}
	}
	return strings.TrimSpace(line), br
}

// Scenario 10: WebSocket through the HCM when upgrade_configs allows it;
// refused otherwise.
func TestScenarioWebSocket(t *testing.T) {
	ws, upgrades := wsBackend(t)
	on, off := freeAddr(t), freeAddr(t)
	withWS := xdsres.HCM("on", "routes")
	withWS.UpgradeConfigs = []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}
	scenario(t, xdsres.EDSCluster("ws"), xdsres.Endpoints("ws", ws),
		xdsres.Listener("on", on, withWS), xdsres.Listener("off", off, xdsres.HCM("off", "routes")),
		xdsres.RouteConfig("routes", to(prefix("/"), "ws")))

	t.Run("upgrade and echo", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", on, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		line, br := wsHandshake(t, c)
		if !strings.HasPrefix(line, "HTTP/1.1 101") {
			t.Fatalf("upgrade answered %q, want 101", line)
		}
		// A masked text frame "Hello" (RFC 6455 §5.7) and then raw bytes:
		// the proxy is a byte pipe after the upgrade.
		frames := [][]byte{
			{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58},
			[]byte("second message in the other direction and back"),
		}
		for _, f := range frames {
			if _, err := c.Write(f); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(f))
			if _, err := io.ReadFull(br, got); err != nil || string(got) != string(f) {
				t.Fatalf("echo through the upgraded connection: %v %q, want %q", err, got, f)
			}
		}
	})
	t.Run("refused without upgrade_configs", func(t *testing.T) {
		before := upgrades.Load()
		c, err := net.DialTimeout("tcp", off, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		line, _ := wsHandshake(t, c)
		if !strings.HasPrefix(line, "HTTP/1.1 403") {
			t.Fatalf("upgrade without upgrade_configs answered %q, want Envoy's 403", line)
		}
		if upgrades.Load() != before {
			t.Fatalf("the refused upgrade reached the backend")
		}
	})
}
