// Command testapp is the local mesh tests' workload: it answers GET / with
// its name, and GET /call?url=U with its name and what U answered, so a
// test sees one pod reach another by service name through the mesh.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	name := flag.String("name", "testapp", "name to answer with")
	flag.Parse()
	client := &http.Client{Timeout: 5 * time.Second}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s\n", *name)
	})
	http.HandleFunc("/call", func(w http.ResponseWriter, r *http.Request) {
		resp, err := client.Get(r.URL.Query().Get("url"))
		if err != nil {
			http.Error(w, *name+" -> error: "+err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(w, "%s -> %d %s", *name, resp.StatusCode, body)
	})
	log.Printf("testapp %s listening on %s", *name, *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
