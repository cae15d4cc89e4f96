package hcm

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

// duplex echoes every FullDuplexCall message back with its payload.
type duplex struct {
	testpb.UnimplementedTestServiceServer
}

func (duplex) FullDuplexCall(stream testpb.TestService_FullDuplexCallServer) error {
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return status.Error(codes.OutOfRange, "client done")
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

func startGRPC(t *testing.T, e *env, cluster string) *health.Server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	testpb.RegisterTestServiceServer(srv, duplex{})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	e.addHost(cluster, newTestHost(ln.Addr().String(), true))
	return hs
}

func TestGRPCUnaryStreamingAndLocalReplies(t *testing.T) {
	e := newEnv(t)
	hs := startGRPC(t, e, "grpc")
	a := clusterAction("grpc")
	a.Timeout = dur(0)
	noTimeout := clusterAction("grpc")
	noTimeout.Timeout = dur(0)
	rc := simpleRoutes(
		actionRoute("/grpc.health.v1.Health/", noTimeout),
		actionRoute("/grpc.testing.TestService/", a),
		prefixRoute("/", "missing"),
	)
	e.start(hcmConfig(t, rc))

	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	hc := healthpb.NewHealthClient(conn)
	res, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Check: %v %v", res, err)
	}
	// An unknown service: the upstream's grpc-status (NOT_FOUND) passes through.
	_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("Check(nope): %v, want NotFound from upstream", err)
	}

	// Server streaming: Watch sees the status change pushed by the server.
	hs.SetServingStatus("svc", healthpb.HealthCheckResponse_SERVING)
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := w.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch first: %v %v", m, err)
	}
	hs.SetServingStatus("svc", healthpb.HealthCheckResponse_NOT_SERVING)
	if m, err := w.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch update: %v %v", m, err)
	}

	// Bidirectional streaming, message by message, then trailers.
	tc := testpb.NewTestServiceClient(conn)
	d, err := tc.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		body := []byte{byte(i), 'x'}
		if err := d.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: body}}); err != nil {
			t.Fatal(err)
		}
		m, err := d.Recv()
		if err != nil || string(m.GetPayload().GetBody()) != string(body) {
			t.Fatalf("duplex %d: %v %v", i, m, err)
		}
	}
	d.CloseSend()
	if _, err := d.Recv(); status.Code(err) != codes.OutOfRange {
		t.Fatalf("duplex end: %v, want the upstream's OutOfRange trailer", err)
	}

	// A local reply to a gRPC request is a trailers-only UNAVAILABLE.
	err = conn.Invoke(ctx, "/other.Service/Method", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable {
		t.Fatalf("no cluster for gRPC: %v, want Unavailable", err)
	}
}

func TestGRPCTimeoutHeaderHonoured(t *testing.T) {
	e := newEnv(t)
	startGRPC(t, e, "grpc")
	a := clusterAction("grpc")
	a.Timeout = dur(0)
	a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{GrpcTimeoutHeaderMax: dur(100 * time.Millisecond)}
	e.start(hcmConfig(t, simpleRoutes(actionRoute("/", a))))
	conn, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The client allows 10s, but grpc_timeout_header_max caps it at 100ms:
	// the proxy must end the hanging stream with a timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := testpb.NewTestServiceClient(conn).FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = d.Recv()
	if err == nil {
		t.Fatal("stream outlived the capped grpc-timeout")
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("stream ended after %v, want about 100ms", el)
	}
}
