// Command hello is the smallest upstream for trying skiff-proxy: it answers
// every request with a line naming itself and the request it saw.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	name := flag.String("name", "hello", "name to answer with")
	flag.Parse()
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s on %s: %s %s (x-request-id %s)\n", *name, host, r.Method, r.URL.Path, r.Header.Get("x-request-id"))
	})
	log.Printf("hello listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
