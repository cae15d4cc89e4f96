// Package admin owns the proxy's admin API (Envoy's :15000): the endpoint
// table and its POST-only rule, server state (/ready, /server_info,
// /healthcheck/*), the /config_dump builder, and the renderings of the stats
// store (/stats flat and JSON, /stats/prometheus, also served alone on
// :15090 through PrometheusHandler).
//
// It holds no proxy state of its own beyond the server state: clusters,
// listeners, config and controls arrive through the small interfaces below,
// which the integrator implements.
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/skiff-mesh/skiff/pkg/stats"
)

// ClustersWriter renders /clusters: Envoy's text lines, or with json the
// envoy.admin.v3.Clusters message. The upstream manager implements it.
type ClustersWriter interface {
	WriteClusters(w io.Writer, json bool)
}

// ListenersWriter renders /listeners: one "name::address" line per
// listener, or with json the envoy.admin.v3.Listeners message. The listener
// manager implements it.
type ListenersWriter interface {
	WriteListeners(w io.Writer, json bool)
}

// Controller carries out the admin API's commands. Each method must return
// promptly: start the work, do not wait for it.
type Controller interface {
	// DrainListeners drains all listeners, or only inbound ones
	// (traffic_direction INBOUND); graceful first runs the drain period.
	DrainListeners(inboundOnly, graceful bool)
	// SetHealthCheckFailed is told when /healthcheck/fail or /healthcheck/ok
	// flips the flag, so health checks answered elsewhere (:15021) follow.
	SetHealthCheckFailed(failed bool)
	// Quit shuts the process down. It is called after the response to
	// /quitquitquit has been written, from its own goroutine.
	Quit()
}

// InitState is how far the proxy is through its initial configuration.
type InitState int32

const (
	// PreInitializing: nothing requested yet.
	PreInitializing InitState = iota
	// Initializing: waiting for the first listeners and clusters to warm.
	Initializing
	// Initialized: the first configuration is warm and serving.
	Initialized
)

// Options configures a Server. Store is required; a nil interface leaves
// its endpoints out (they answer 404 and are not listed by /help), and
// /logging is served only when LogLevel is set.
type Options struct {
	Store     *stats.Store
	Clusters  ClustersWriter
	Listeners ListenersWriter
	Config    ConfigSource
	Control   Controller

	// LogLevel is the level /logging?level= sets; Loggers are named
	// component levels /logging?<name>=<level> and ?paths= set one by one.
	LogLevel *slog.LevelVar
	Loggers  map[string]*slog.LevelVar

	// Version is the proxy version; /server_info shows "skiff-proxy/<Version>".
	Version     string
	Node        *corev3.Node
	CommandLine *adminv3.CommandLineOptions
	StartTime   time.Time
}

// Server is the admin API. Its endpoint table is built once by New.
type Server struct {
	o        Options
	routes   map[string]*endpoint
	help     []byte
	init     atomic.Int32
	hcFailed atomic.Bool
	http     *http.Server
	// server.live and server.state, as Envoy exports them (state uses the
	// ServerInfo.State numbers: 0 LIVE, 1 DRAINING, 2 PRE_INITIALIZING,
	// 3 INITIALIZING).
	live, state *stats.Gauge
	publishMu   sync.Mutex // keeps the two gauges from mixing two updates
}

type endpoint struct {
	path    string
	help    string
	params  []string // "name: help" lines shown under the endpoint by /help
	mutates bool
	serve   http.HandlerFunc
}

// New builds the admin server. The server starts PRE_INITIALIZING; the
// integrator moves it on with SetInitState.
func New(o Options) *Server {
	if o.StartTime.IsZero() {
		o.StartTime = time.Now()
	}
	s := &Server{o: o, routes: map[string]*endpoint{},
		live: o.Store.Root().Gauge("server.live"), state: o.Store.Root().Gauge("server.state")}
	s.publishState()
	add := func(e *endpoint) { s.routes[e.path] = e }

	add(&endpoint{path: "/", help: "Admin home page", serve: s.serveHelp})
	add(&endpoint{path: "/help", help: "print out list of admin commands", serve: s.serveHelp})
	add(&endpoint{path: "/ready", help: "print server state, return 200 if LIVE, otherwise return 503", serve: s.serveReady})
	add(&endpoint{path: "/server_info", help: "print server version/status information", serve: s.serveServerInfo})
	add(&endpoint{path: "/memory", help: "print current allocation/heap usage", serve: s.serveMemory})
	add(&endpoint{path: "/healthcheck/fail", help: "cause the server to fail health checks", mutates: true, serve: s.serveHealthcheck(true)})
	add(&endpoint{path: "/healthcheck/ok", help: "cause the server to pass health checks", mutates: true, serve: s.serveHealthcheck(false)})
	add(&endpoint{path: "/stats", help: "print server stats", serve: s.serveStats, params: []string{
		"usedonly: Only include stats that have been written by system since restart",
		"filter: Regular expression (Go RE2 syntax) for filtering stats",
		"format: Format to use; One of (text, json, prometheus)",
		"type: Stat types to include; One of (All, Counters, Gauges, Histograms)",
	}})
	add(&endpoint{path: "/stats/prometheus", help: "print server stats in prometheus format", serve: s.servePrometheus, params: []string{
		"usedonly: Only include stats that have been written by system since restart",
		"filter: Regular expression (Go RE2 syntax) for filtering stats",
	}})
	if o.Clusters != nil {
		add(&endpoint{path: "/clusters", help: "upstream cluster status", serve: s.serveClusters, params: []string{
			"format: File format to use; One of (text, json)",
		}})
	}
	if o.Listeners != nil {
		add(&endpoint{path: "/listeners", help: "print listener info", serve: s.serveListeners, params: []string{
			"format: File format to use; One of (text, json)",
		}})
	}
	if o.Config != nil {
		add(&endpoint{path: "/config_dump", help: "dump current Envoy configs (experimental)", serve: s.serveConfigDump, params: []string{
			"resource: The resource to dump",
			"mask: The mask to apply. When both resource and mask are specified, the mask is applied to every element in the desired repeated field so that only a subset of fields are returned. The mask is parsed as a ProtobufWkt::FieldMask",
			"name_regex: Dump only the currently loaded configurations whose names match the specified regex. Can be used with both resource and mask query parameters.",
			"include_eds: Dump currently loaded configuration including EDS. See the response definition for more information",
		}})
	}
	if o.Control != nil {
		add(&endpoint{path: "/drain_listeners", help: "drain listeners", mutates: true, serve: s.serveDrain, params: []string{
			"graceful: When draining listeners, enter a graceful drain period prior to closing listeners.",
			"inboundonly: Drains all inbound listeners. traffic_direction field in Listener is used to determine whether a listener is inbound or outbound.",
		}})
		add(&endpoint{path: "/quitquitquit", help: "exit the server", mutates: true, serve: s.serveQuit})
	}
	if o.LogLevel != nil {
		add(&endpoint{path: "/logging", help: "query/change logging levels", mutates: true, serve: s.serveLogging, params: []string{
			"paths: Change multiple logging levels by setting to <logger_name1>:<desired_level1>,<logger_name2>:<desired_level2>.",
			"level: desired logging level, this will change all loggers's level; One of (, " + strings.Join(levelNames, ", ") + ")",
		}})
	}
	s.help = s.renderHelp()
	s.http = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	return s
}

// Handler serves the admin API.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Serve serves the admin API on ln until Shutdown; it returns nil after a
// Shutdown and the listener's error otherwise.
func (s *Server) Serve(ln net.Listener) error {
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops Serve, letting requests in flight finish until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.http.Shutdown(ctx)
}

// SetInitState records initialization progress; /ready answers 200 once it
// is Initialized and health checks are not failed.
func (s *Server) SetInitState(st InitState) {
	s.init.Store(int32(st))
	s.publishState()
}

func (s *Server) publishState() {
	s.publishMu.Lock()
	defer s.publishMu.Unlock()
	st := s.State()
	s.state.Set(int64(st))
	if st == adminv3.ServerInfo_LIVE {
		s.live.Set(1)
	} else {
		s.live.Set(0)
	}
}

// HealthCheckFailed reports whether /healthcheck/fail is in force.
func (s *Server) HealthCheckFailed() bool { return s.hcFailed.Load() }

// State is the server state as Envoy reports it: PRE_INITIALIZING and
// INITIALIZING until the first config is warm, then LIVE, or DRAINING while
// health checks are failed.
func (s *Server) State() adminv3.ServerInfo_State {
	switch InitState(s.init.Load()) {
	case PreInitializing:
		return adminv3.ServerInfo_PRE_INITIALIZING
	case Initializing:
		return adminv3.ServerInfo_INITIALIZING
	}
	if s.hcFailed.Load() {
		return adminv3.ServerInfo_DRAINING
	}
	return adminv3.ServerInfo_LIVE
}

// Ready is State() == LIVE, for the :15021 readiness probe.
func (s *Server) Ready() bool { return s.State() == adminv3.ServerInfo_LIVE }

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	e, ok := s.routes[r.URL.Path]
	if !ok {
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, "invalid path. ")
		w.Write(s.help)
		return
	}
	if e.mutates && r.Method != http.MethodPost {
		// As Envoy: a state change requested with GET must have no effect,
		// so that a stray link or prefetch cannot drain the proxy.
		textReply(w, http.StatusMethodNotAllowed, fmt.Sprintf("Method %s not allowed, POST required.", r.Method))
		return
	}
	e.serve(w, r)
}

func (s *Server) renderHelp() []byte {
	paths := make([]string, 0, len(s.routes))
	for p := range s.routes {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var b strings.Builder
	b.WriteString("admin commands are:\n")
	for _, p := range paths {
		e := s.routes[p]
		post := ""
		if e.mutates {
			post = " (POST)"
		}
		fmt.Fprintf(&b, "  %s%s: %s\n", e.path, post, e.help)
		for _, prm := range e.params {
			fmt.Fprintf(&b, "      %s\n", prm)
		}
	}
	return []byte(b.String())
}

func (s *Server) serveHelp(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	w.Write(s.help)
}

func textReply(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	io.WriteString(w, body)
}

// jsonOut is Envoy's admin JSON: proto field names, default values left
// out. /server_info prints defaults too, as Envoy's does.
var (
	jsonOut     = protojson.MarshalOptions{UseProtoNames: true}
	jsonOutFull = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
)

func writeProtoJSON(w http.ResponseWriter, m proto.Message, mo protojson.MarshalOptions) {
	compact, err := mo.Marshal(m)
	var out bytes.Buffer
	if err == nil {
		// protojson varies its spacing from build to build on purpose;
		// re-indenting gives Envoy's stable pretty print (one-space indent).
		err = json.Indent(&out, compact, "", " ")
	}
	if err != nil {
		textReply(w, http.StatusInternalServerError, err.Error()+"\n")
		return
	}
	out.WriteByte('\n')
	w.Header().Set("Content-Type", "application/json")
	w.Write(out.Bytes())
}

func (s *Server) serveReady(w http.ResponseWriter, _ *http.Request) {
	st := s.State()
	code := http.StatusOK
	if st != adminv3.ServerInfo_LIVE {
		code = http.StatusServiceUnavailable
	}
	textReply(w, code, st.String()+"\n")
}

func (s *Server) serveServerInfo(w http.ResponseWriter, _ *http.Request) {
	up := durationpb.New(time.Since(s.o.StartTime).Truncate(time.Second))
	info := &adminv3.ServerInfo{
		Version:            "skiff-proxy/" + s.o.Version,
		State:              s.State(),
		UptimeCurrentEpoch: up,
		// There is no hot restart: the current epoch is the only one.
		UptimeAllEpochs:    up,
		HotRestartVersion:  "disabled",
		CommandLineOptions: s.o.CommandLine,
		Node:               s.o.Node,
	}
	writeProtoJSON(w, info, jsonOutFull)
}

func (s *Server) serveMemory(w http.ResponseWriter, _ *http.Request) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	// Go's allocator mapped onto tcmalloc's terms as closely as they go.
	writeProtoJSON(w, &adminv3.Memory{
		Allocated:          ms.HeapAlloc,
		HeapSize:           ms.HeapSys,
		PageheapUnmapped:   ms.HeapReleased,
		PageheapFree:       ms.HeapIdle - ms.HeapReleased,
		TotalThreadCache:   ms.MCacheInuse,
		TotalPhysicalBytes: ms.Sys - ms.HeapReleased,
	}, jsonOut)
}

func (s *Server) serveHealthcheck(fail bool) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		s.hcFailed.Store(fail)
		s.publishState()
		if s.o.Control != nil {
			s.o.Control.SetHealthCheckFailed(fail)
		}
		textReply(w, http.StatusOK, "OK\n")
	}
}

func (s *Server) serveDrain(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.o.Control.DrainListeners(q.Has("inboundonly"), q.Has("graceful"))
	textReply(w, http.StatusOK, "OK\n")
}

func (s *Server) serveQuit(w http.ResponseWriter, _ *http.Request) {
	textReply(w, http.StatusOK, "OK\n")
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	go s.o.Control.Quit()
}

func (s *Server) serveClusters(w http.ResponseWriter, r *http.Request) {
	js := r.URL.Query().Get("format") == "json"
	if js {
		w.Header().Set("Content-Type", "application/json")
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	}
	s.o.Clusters.WriteClusters(w, js)
}

func (s *Server) serveListeners(w http.ResponseWriter, r *http.Request) {
	js := r.URL.Query().Get("format") == "json"
	if js {
		w.Header().Set("Content-Type", "application/json")
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=UTF-8")
	}
	s.o.Listeners.WriteListeners(w, js)
}
