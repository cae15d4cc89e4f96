package upstream

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/pkg/stats"
)

// BenchmarkHTTP1RoundTrip measures the pooled HTTP/1.1 path: choose a
// host, send over a kept-alive connection, read a 1 KB body to EOF.
func BenchmarkHTTP1RoundTrip(b *testing.B) {
	body := make([]byte, 1024)
	srv := newBenchServer(b, body)
	m := NewManager(Options{Stats: stats.New()})
	defer m.Close()
	if err := m.AddOrUpdate(staticCluster("bench", ep{addr: srv})); err != nil {
		b.Fatal(err)
	}
	cl := m.Cluster("bench")
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	b.RunParallel(func(pb *testing.PB) {
		req, _ := http.NewRequest(http.MethodGet, "http://bench/", nil)
		buf := make([]byte, 4096)
		for pb.Next() {
			roundTripOnce(b, cl, req, buf)
		}
	})
}

func roundTripOnce(b *testing.B, cl core.Cluster, req *http.Request, buf []byte) {
	h := cl.ChooseHost(nil)
	resp, err := h.RoundTrip(req)
	if err != nil {
		b.Fatal(err)
	}
	for {
		if _, err := resp.Body.Read(buf); err == io.EOF {
			break
		} else if err != nil {
			b.Fatal(err)
		}
	}
	resp.Body.Close()
	h.Observe(resp.StatusCode, nil)
}

// newBenchServer answers every request on a connection with a canned
// keep-alive response, so the benchmark's allocations are the client's.
func newBenchServer(b *testing.B, body []byte) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	resp := append([]byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n", len(body))), body...)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					// Requests have no body: read up to the blank line.
					for {
						line, err := br.ReadSlice('\n')
						if err != nil {
							return
						}
						if len(line) <= 2 {
							break
						}
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}
