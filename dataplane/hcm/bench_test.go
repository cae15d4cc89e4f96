package hcm

import (
	"bytes"
	"io"
	"net/http"
	"testing"
)

// BenchmarkProxyHTTP1 measures one 1 KB POST through the manager to a
// loopback upstream and back (1 KB response), over keep-alive connections.
func BenchmarkProxyHTTP1(b *testing.B) {
	e := newEnv(b)
	payload := bytes.Repeat([]byte("x"), 1024)
	e.upstream("backend", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", "1024")
		w.Write(payload)
	})
	e.start(hcmConfig(b, simpleRoutes(prefixRoute("/", "backend"))))
	b.ReportAllocs()
	b.SetBytes(2048)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := e.client.Post(e.url("/bench"), "application/octet-stream", bytes.NewReader(payload))
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}
