// Package bookinfo is Istio's Bookinfo sample written in Go: the productpage,
// details, reviews (v1, v2, v3) and ratings services, with the same URLs, JSON,
// HTML markers, timeouts, retries and header propagation as Istio's own
// Python, Ruby, Java and Node.js services, so that Istio's Bookinfo tasks
// (request routing by end-user, fault injection, timeouts) behave as Istio
// documents them when run on Skiff's local mesh.
//
// Each service is an http.Handler built from a config struct; Serve runs one
// on a listener with per-request logging and graceful shutdown.
package bookinfo
