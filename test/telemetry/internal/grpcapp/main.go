// Command grpcapp is the telemetry test's gRPC workload: `grpcapp serve
// --listen ADDR` serves grpc.health.v1.Health (service "" is SERVING, any
// other name answers NOT_FOUND, as grpc-go's health server does), and
// `grpcapp call ADDR [SERVICE]` makes one Check in plaintext (the sidecar
// does the mTLS) and prints the gRPC status code as a number.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

const usage = "usage: grpcapp serve --listen ADDR | grpcapp call ADDR [SERVICE]"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "call":
		err = call(os.Args[2:])
	default:
		err = fmt.Errorf("unknown verb %q; %s", os.Args[1], usage)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcapp:", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:7070", "address to serve gRPC on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("--listen=%s: %w", *listen, err)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer()) // "" is SERVING
	return s.Serve(l)
}

func call(args []string) error {
	if len(args) < 1 || len(args) > 2 {
		return fmt.Errorf("call takes ADDR and an optional SERVICE; %s", usage)
	}
	svc := ""
	if len(args) == 2 {
		svc = args[1]
	}
	conn, err := grpc.NewClient("passthrough:///"+args[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("call %s: %w", args[0], err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
	st := status.Convert(err)
	if st.Message() != "" {
		fmt.Fprintln(os.Stderr, st.Message())
	}
	fmt.Println(int(st.Code())) // last, for the caller that reads the last line
	return nil
}
