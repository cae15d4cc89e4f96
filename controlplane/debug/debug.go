// Package debug owns skiffd's monitoring port (:15014, mounted by the
// integrator): per-proxy sync status (/debug/syncz), where a config
// version has reached (/debug/trace), a proxy's generated config in
// Envoy's config_dump shape (/debug/config_dump), the config store
// (/debug/configz), readiness (/ready) and Prometheus metrics (/metrics).
package debug

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// XDS is what the handlers read from the ADS server (*xds.Server).
type XDS interface {
	Status() []xds.ProxyStatus
	Trace(key xds.ConfigKey) []xds.Delivery
	ConfigDump(proxyID string) (*adminv3.ConfigDump, error)
}

// Options are the sources the handlers read. A nil source makes its
// endpoint answer 503 saying what is missing.
type Options struct {
	XDS XDS
	// Configz writes the config store as JSON.
	Configz func(w io.Writer) error
	// Ready reports nil once skiffd can serve proxies, else why not.
	Ready func() error
	// Metrics gathers everything /metrics shows (xds.Server.Registry(),
	// combined with others through prometheus.Gatherers).
	Metrics prometheus.Gatherer
}

// Handler serves the monitoring endpoints.
func Handler(o Options) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/syncz", o.syncz)
	mux.HandleFunc("GET /debug/trace", o.trace)
	mux.HandleFunc("GET /debug/config_dump", o.configDump)
	mux.HandleFunc("GET /debug/configz", o.configz)
	mux.HandleFunc("GET /ready", o.ready)
	if o.Metrics != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(o.Metrics, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	} else {
		mux.HandleFunc("GET /metrics", missing("metrics"))
	}
	return mux
}

func missing(what string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, what+" not available: skiffd was started without it", http.StatusServiceUnavailable)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away; nothing to tell it
}

func (o Options) syncz(w http.ResponseWriter, r *http.Request) {
	if o.XDS == nil {
		missing("xDS server")(w, r)
		return
	}
	writeJSON(w, o.XDS.Status())
}

// trace answers /debug/trace?kind=VirtualService&namespace=default&name=reviews&version=7
// with the proxies that were sent that version and whether they ACKed it.
func (o Options) trace(w http.ResponseWriter, r *http.Request) {
	if o.XDS == nil {
		missing("xDS server")(w, r)
		return
	}
	q := r.URL.Query()
	key := xds.ConfigKey{Kind: q.Get("kind"), Namespace: q.Get("namespace"), Name: q.Get("name"), ResourceVersion: q.Get("version")}
	if key.Kind == "" || key.Name == "" || key.ResourceVersion == "" {
		http.Error(w, "trace needs kind, name and version (and namespace for namespaced kinds): /debug/trace?kind=VirtualService&namespace=default&name=reviews&version=7", http.StatusBadRequest)
		return
	}
	d := o.XDS.Trace(key)
	if d == nil {
		d = []xds.Delivery{}
	}
	writeJSON(w, d)
}

func (o Options) configDump(w http.ResponseWriter, r *http.Request) {
	if o.XDS == nil {
		missing("xDS server")(w, r)
		return
	}
	id := r.URL.Query().Get("proxyID")
	if id == "" {
		http.Error(w, "config_dump needs ?proxyID=<pod>.<namespace> (see /debug/syncz for connected proxies)", http.StatusBadRequest)
		return
	}
	dump, err := o.XDS.ConfigDump(id)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(dump)
	if err != nil {
		http.Error(w, fmt.Sprintf("encoding the config dump of %q: %v", id, err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func (o Options) configz(w http.ResponseWriter, r *http.Request) {
	if o.Configz == nil {
		missing("config store")(w, r)
		return
	}
	// Buffered so a failure half way is reported as one, not as
	// truncated JSON with a 200.
	var buf bytes.Buffer
	if err := o.Configz(&buf); err != nil {
		http.Error(w, "dumping the config store: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf.Bytes())
}

func (o Options) ready(w http.ResponseWriter, r *http.Request) {
	if o.Ready == nil {
		missing("readiness check")(w, r)
		return
	}
	if err := o.Ready(); err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ready\n")
}
