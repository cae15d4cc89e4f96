package xdsload

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"time"
)

// Options describe one load run.
type Options struct {
	Spec    Spec
	Dir     string // the config directory skiffd reads; the mesh is written here
	Proxies int    // simulated sidecars, one per generated pod (at most Services × Endpoints)
	Fleet   FleetOptions
	Reps    int // VirtualService changes and endpoint changes, each
	// Only, when "virtualservice" or "endpoint", makes changes of that
	// kind alone (to profile one kind); "" makes both, in turn.
	Only string

	// Skiffd, when set, is the skiffd binary to start on Dir with loopback
	// addresses (Fleet.Addr is then chosen here); otherwise skiffd already
	// serves Dir at Fleet.Addr, and PID (if not 0) is sampled.
	Skiffd    string
	SkiffdLog string // skiffd's stdout and stderr (default: discarded)
	// SkiffdArgs are more flags for the started skiffd (e.g. --log-level=debug).
	SkiffdArgs []string
	PID        int

	SyncTimeout   time.Duration // initial sync of every proxy (default 2m)
	ChangeTimeout time.Duration // one change reaching every proxy (default 30s)
	Gap           time.Duration // pause between changes, longer than skiffd's debounce (default 500ms)

	Progress io.Writer // one line per phase; nil discards

	// HeapProfile, when set, receives the tool's heap profile once every
	// proxy is synced (its largest state).
	HeapProfile io.Writer
	// Synced, when set, is called once every proxy is synced, before the
	// first change (to profile the changes alone).
	Synced func()
}

// Report is the figures of one run, printed as a table and as JSON.
type Report struct {
	Services, Endpoints, Namespaces int
	Proxies, Conns                  int
	Delta                           bool
	// Private: VirtualServices and DestinationRules are exported to their
	// namespace alone, and a VirtualService change is timed over that
	// namespace's proxies (the others must not need it).
	Private       bool `json:",omitempty"`
	InitialSyncMS Millis
	Resources     map[string]int // per proxy, of the first proxy: CDS, EDS, LDS, RDS
	// What the proxies read, all of them together: the initial sync, and
	// on average while one change of each kind was followed.
	SyncMB, VirtualServiceMB, EndpointMB float64
	VirtualService                       ChangeStats
	Endpoint                             ChangeStats
	Skiffd                               *ProcStats `json:",omitempty"`
	// The load tool's own peak memory and CPU over the run: when it is
	// near skiffd's CPU on the same machine, the two compete and the
	// times above include the tool's share.
	ToolPeakRSSMB, ToolCPUSec float64
	// Tool is the load tool's own memory and CPU in the same phases as
	// Skiffd's, so the two can be told apart.
	Tool                       *ProcStats
	DecodeErrors, StreamErrors int64
}

// ChangeStats summarise one kind of change over the repetitions.
type ChangeStats struct {
	Reps     int
	Complete int // repetitions ACKed by every proxy before the timeout
	// Per repetition, the time until the last proxy ACKed: its
	// distribution across repetitions.
	LastP50MS, LastP99MS, LastMaxMS Millis
	// Every proxy's time in every repetition, pooled.
	ProxyP50MS, ProxyP90MS, ProxyP99MS Millis
	Missing                            int      // proxy ACKs still missing at the timeouts, summed
	Failures                           []string `json:",omitempty"`
	// OthersPushed sums the responses of the change's type that proxies
	// it does not concern received (Report.Private): 0 when skiffd scopes
	// its pushes.
	OthersPushed int `json:",omitempty"`
}

// ProcStats are a process's memory and CPU across the run (skiffd's, the tool's).
type ProcStats struct {
	PID                         int
	RSSAfterSyncMB, HWMSyncMB   float64
	CPUSyncSec                  float64
	RSSAfterChangesMB, HWMEndMB float64
	CPUChangesSec               float64
}

func (o *Options) defaults() {
	if o.SyncTimeout == 0 {
		o.SyncTimeout = 2 * time.Minute
	}
	if o.ChangeTimeout == 0 {
		o.ChangeTimeout = 30 * time.Second
	}
	if o.Gap == 0 {
		o.Gap = 500 * time.Millisecond
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// Run generates the mesh, (optionally) starts skiffd, syncs the fleet and
// times the changes. It fails only when the run cannot proceed (no
// initial sync, skiffd gone); changes that time out are counted in the
// report.
func Run(ctx context.Context, o Options) (*Report, error) {
	o.defaults()
	if o.Proxies > o.Spec.Services*o.Spec.Endpoints {
		return nil, fmt.Errorf("%d proxies need as many pods: raise -services or -endpoints (now %d × %d)", o.Proxies, o.Spec.Services, o.Spec.Endpoints)
	}
	mesh, err := Generate(o.Dir, o.Spec)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Progress, "wrote %d services, %d pods in %d namespaces to %s\n", len(mesh.Services), len(mesh.Pods), o.Spec.Namespaces, o.Dir)
	if o.Skiffd != "" {
		stop, err := startSkiffd(ctx, &o)
		if err != nil {
			return nil, err
		}
		defer stop()
	}
	rep := &Report{Services: o.Spec.Services, Endpoints: o.Spec.Endpoints, Namespaces: o.Spec.Namespaces,
		Proxies: o.Proxies, Delta: o.Fleet.Delta, Private: o.Spec.Private}
	self := &phases{pid: os.Getpid()}
	if err := self.start(); err != nil {
		return nil, err
	}
	var before ProcSample
	if o.PID != 0 {
		if before, err = SampleProc(o.PID); err != nil {
			return nil, err
		}
		rep.Skiffd = &ProcStats{PID: o.PID}
	}

	for _, s := range mesh.Services {
		o.Fleet.WantClusters = append(o.Fleet.WantClusters, "outbound|"+strconv.Itoa(s.Port)+"||"+s.Host())
	}
	fleet, err := StartFleet(ctx, mesh.Pods[:o.Proxies], o.Fleet)
	if err != nil {
		return nil, err
	}
	defer fleet.Stop()
	rep.Conns = fleet.Conns()
	sync, err := fleet.WaitSynced(ctx, o.SyncTimeout)
	if err != nil {
		return nil, fmt.Errorf("initial sync: %w", err)
	}
	rep.InitialSyncMS = Millis(ms(sync))
	rep.SyncMB = mb(fleet.Received())
	rep.Resources = map[string]int{}
	for _, s := range fleet.Proxies[0].Status() {
		rep.Resources[s.Type] = s.Resources
	}
	fmt.Fprintf(o.Progress, "initial sync of %d proxies: %v (first proxy holds %v)\n", o.Proxies, sync.Round(time.Millisecond), rep.Resources)
	if err := self.synced(); err != nil {
		return nil, err
	}
	// The sync left the tool gigabytes of garbage (7 GB of responses read
	// through pooled buffers): collect it now, so that the changes timed
	// next do not pay for the tool's own collection of it, on skiffd's
	// cores. A fleet of real proxies shares no heap.
	runtime.GC()
	if o.Synced != nil {
		o.Synced()
	}
	if o.HeapProfile != nil {
		if err := pprof.WriteHeapProfile(o.HeapProfile); err != nil {
			return nil, fmt.Errorf("writing the heap profile: %w", err)
		}
	}
	var synced ProcSample
	if rep.Skiffd != nil {
		if synced, err = SampleProc(o.PID); err != nil {
			return nil, err
		}
		rep.Skiffd.RSSAfterSyncMB, rep.Skiffd.HWMSyncMB = mb(synced.RSSBytes), mb(synced.HWMBytes)
		rep.Skiffd.CPUSyncSec = synced.CPUSec - before.CPUSec
	}

	split := mesh.SplitServices()
	var vs, ep []Result
	var vsBytes, epBytes int64
	vsChange := func(r int) error {
		time.Sleep(o.Gap)
		s := split[r%len(split)]
		w1 := (s.WeightV1+7)%90 + 5 // 5..94, never the current weight
		var concerned func(*Proxy) bool
		if o.Spec.Private {
			concerned = func(p *Proxy) bool { return p.Pod.Namespace == s.Namespace }
		}
		wait := fleet.ExpectOf(RouteWeights(s.Host(), s.Port, w1, 100-w1), concerned)
		before := fleet.Received()
		if err := mesh.SetWeight(s, w1); err != nil {
			return err
		}
		res := wait.Wait(ctx, o.ChangeTimeout)
		vsBytes += fleet.Received() - before
		vs = append(vs, res)
		fmt.Fprintf(o.Progress, "VirtualService change %d/%d (%s): last proxy %v, %d missing\n", r+1, o.Reps, res.What, res.Last.Round(time.Millisecond), res.Missing)
		return nil
	}
	epChange := func(r int) error {
		time.Sleep(o.Gap)
		// Walk the pods with a stride so consecutive changes hit different
		// services and namespaces.
		p := mesh.Pods[(r*7919)%len(mesh.Pods)]
		ip, err := mesh.NextIP()
		if err != nil {
			return err
		}
		wait := fleet.Expect(EndpointAddress("outbound|"+strconv.Itoa(p.Service.Port)+"||"+p.Service.Host(), ip))
		before := fleet.Received()
		if err := mesh.MovePod(p, ip); err != nil {
			return err
		}
		res := wait.Wait(ctx, o.ChangeTimeout)
		epBytes += fleet.Received() - before
		ep = append(ep, res)
		fmt.Fprintf(o.Progress, "endpoint change %d/%d (%s): last proxy %v, %d missing\n", r+1, o.Reps, res.What, res.Last.Round(time.Millisecond), res.Missing)
		return nil
	}
	for r := 0; r < o.Reps && ctx.Err() == nil; r++ {
		if o.Only != "endpoint" {
			if err := vsChange(r); err != nil {
				return nil, err
			}
		}
		if o.Only != "virtualservice" {
			if err := epChange(r); err != nil {
				return nil, err
			}
		}
	}
	rep.VirtualService, rep.Endpoint = summarize(vs), summarize(ep)
	if len(vs) > 0 {
		rep.VirtualServiceMB = mb(vsBytes / int64(len(vs)))
	}
	if len(ep) > 0 {
		rep.EndpointMB = mb(epBytes / int64(len(ep)))
	}
	if rep.Skiffd != nil {
		end, err := SampleProc(o.PID)
		if err != nil {
			return nil, err
		}
		rep.Skiffd.RSSAfterChangesMB, rep.Skiffd.HWMEndMB = mb(end.RSSBytes), mb(end.HWMBytes)
		rep.Skiffd.CPUChangesSec = end.CPUSec - synced.CPUSec
	}
	rep.DecodeErrors, rep.StreamErrors = fleet.Errors()
	if err := self.end(); err != nil {
		return nil, err
	}
	rep.Tool = &self.stats
	rep.ToolPeakRSSMB, rep.ToolCPUSec = self.stats.HWMEndMB, self.last.CPUSec
	return rep, ctx.Err()
}

// phases samples a process at the start, after the initial sync and at
// the end of a run.
type phases struct {
	pid                 int
	first, atSync, last ProcSample
	stats               ProcStats
}

func (p *phases) start() (err error) {
	p.stats.PID = p.pid
	p.first, err = SampleProc(p.pid)
	return err
}

func (p *phases) synced() (err error) {
	if p.atSync, err = SampleProc(p.pid); err != nil {
		return err
	}
	p.stats.RSSAfterSyncMB, p.stats.HWMSyncMB = mb(p.atSync.RSSBytes), mb(p.atSync.HWMBytes)
	p.stats.CPUSyncSec = p.atSync.CPUSec - p.first.CPUSec
	return nil
}

func (p *phases) end() (err error) {
	if p.last, err = SampleProc(p.pid); err != nil {
		return err
	}
	// VmHWM as read is not monotonic: the kernel folds its per-CPU RSS
	// counts into the high-water mark lazily, so a later reading can be a
	// few hundred KB below an earlier one. The peak is at least what was
	// seen at sync.
	p.stats.RSSAfterChangesMB, p.stats.HWMEndMB = mb(p.last.RSSBytes), max(mb(p.last.HWMBytes), p.stats.HWMSyncMB)
	p.stats.CPUChangesSec = p.last.CPUSec - p.atSync.CPUSec
	return nil
}

// startSkiffd runs skiffd on o.Dir with free loopback ports and waits
// until its xDS port accepts connections.
func startSkiffd(ctx context.Context, o *Options) (stop func(), err error) {
	xds, err := freePort()
	if err != nil {
		return nil, err
	}
	mon, err := freePort()
	if err != nil {
		return nil, err
	}
	// The CA runs as in production (so clusters carry auto mTLS, as
	// Istio's do), on a free port, its root kept beside the mesh.
	args := append([]string{"--config-dir", o.Dir, "--xds-addr", xds, "--monitoring-addr", mon,
		"--secure-addr", "127.0.0.1:0", "--ca-dir", filepath.Join(o.Dir, ".skiffd-ca")}, o.SkiffdArgs...)
	cmd := exec.Command(o.Skiffd, args...)
	if o.SkiffdLog != "" {
		f, err := os.Create(o.SkiffdLog)
		if err != nil {
			return nil, err
		}
		defer f.Close() // the child keeps its own descriptor
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting skiffd: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop = func() {
		cmd.Process.Kill()
		<-exited
	}
	deadline := time.Now().Add(o.SyncTimeout)
	for {
		c, err := net.DialTimeout("tcp", xds, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			exited <- err
			return nil, fmt.Errorf("skiffd exited before serving xDS on %s: %v (see %s)", xds, err, orNone(o.SkiffdLog))
		case <-ctx.Done():
			stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("skiffd did not listen on %s within %v (see %s)", xds, o.SyncTimeout, orNone(o.SkiffdLog))
		}
	}
	o.Fleet.Addr, o.PID = xds, cmd.Process.Pid
	fmt.Fprintf(o.Progress, "skiffd pid %d serving xDS on %s, monitoring on %s\n", o.PID, xds, mon)
	return stop, nil
}

func orNone(log string) string {
	if log == "" {
		return "its output with -skiffd-log"
	}
	return log
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func summarize(rs []Result) ChangeStats {
	c := ChangeStats{Reps: len(rs)}
	var last, all []time.Duration
	for _, r := range rs {
		c.Missing += r.Missing
		c.OthersPushed += r.Others
		all = append(all, r.Times...)
		if r.Missing == 0 {
			c.Complete++
			last = append(last, r.Last)
		} else {
			c.Failures = append(c.Failures, fmt.Sprintf("%s: %d proxies had not ACKed it at the timeout", r.What, r.Missing))
		}
	}
	c.LastP50MS, c.LastP99MS, c.LastMaxMS = pct(last, 50), pct(last, 99), pct(last, 100)
	c.ProxyP50MS, c.ProxyP90MS, c.ProxyP99MS = pct(all, 50), pct(all, 90), pct(all, 99)
	return c
}

// pct is the nearest-rank percentile p of ds in milliseconds (NaN if empty,
// printed as "-").
func pct(ds []time.Duration, p float64) Millis {
	if len(ds) == 0 {
		return Millis(math.NaN())
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return Millis(ms(s[max(i, 0)]))
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e4) / 100 }

func mb(b int64) float64 { return math.Round(float64(b)/(1<<20)*10) / 10 }

// WriteTable prints the report for people.
func (r *Report) WriteTable(w io.Writer) {
	mode := "state of the world"
	if r.Delta {
		mode = "delta"
	}
	fmt.Fprintf(w, "mesh: %d services × %d endpoints in %d namespaces; %d proxies (%s) on %d gRPC connections\n",
		r.Services, r.Endpoints, r.Namespaces, r.Proxies, mode, r.Conns)
	fmt.Fprintf(w, "initial sync of all proxies: %s ms (per proxy: CDS %d, EDS %d, LDS %d, RDS %d resources)\n",
		num(r.InitialSyncMS), r.Resources["CDS"], r.Resources["EDS"], r.Resources["LDS"], r.Resources["RDS"])
	fmt.Fprintf(w, "responses read by all proxies: %.1f MB to sync, %.1f MB per VirtualService change, %.1f MB per endpoint change\n",
		r.SyncMB, r.VirtualServiceMB, r.EndpointMB)
	if r.Private {
		fmt.Fprintf(w, "routing is exported to its own namespace alone: a VirtualService change is timed over that namespace's proxies; the others received %d route responses meanwhile\n",
			r.VirtualService.OthersPushed)
	}
	fmt.Fprintf(w, "\n%-16s %5s %9s | %-27s | %-27s\n", "change", "reps", "complete", "last proxy ms p50/p99/max", "any proxy ms p50/p90/p99")
	for _, c := range []struct {
		name string
		s    ChangeStats
	}{{"VirtualService", r.VirtualService}, {"endpoint", r.Endpoint}} {
		fmt.Fprintf(w, "%-16s %5d %9d | %-27s | %-27s\n", c.name, c.s.Reps, c.s.Complete,
			num(c.s.LastP50MS)+" / "+num(c.s.LastP99MS)+" / "+num(c.s.LastMaxMS),
			num(c.s.ProxyP50MS)+" / "+num(c.s.ProxyP90MS)+" / "+num(c.s.ProxyP99MS))
		for _, f := range c.s.Failures {
			fmt.Fprintf(w, "  incomplete: %s\n", f)
		}
	}
	if s := r.Skiffd; s != nil {
		fmt.Fprintf(w, "\nskiffd (pid %d): after initial sync RSS %.1f MB (peak %.1f MB), %.2f CPU s; after the changes RSS %.1f MB (peak %.1f MB), %.2f CPU s\n",
			s.PID, s.RSSAfterSyncMB, s.HWMSyncMB, s.CPUSyncSec, s.RSSAfterChangesMB, s.HWMEndMB, s.CPUChangesSec)
	}
	if s := r.Tool; s != nil {
		fmt.Fprintf(w, "load tool (pid %d): after initial sync RSS %.1f MB (peak %.1f MB), %.2f CPU s; after the changes RSS %.1f MB (peak %.1f MB), %.2f CPU s\n",
			s.PID, s.RSSAfterSyncMB, s.HWMSyncMB, s.CPUSyncSec, s.RSSAfterChangesMB, s.HWMEndMB, s.CPUChangesSec)
	}
	fmt.Fprintf(w, "load tool: peak RSS %.1f MB, %.2f CPU s in all\n", r.ToolPeakRSSMB, r.ToolCPUSec)
	fmt.Fprintf(w, "proxy errors: %d responses or resources not decodable, %d broken streams\n", r.DecodeErrors, r.StreamErrors)
}

// WriteJSON prints the report for scripts.
func (r *Report) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// Millis is a duration in milliseconds; NaN means no data (no repetition
// completed) and is written as "-" in the table and null in JSON.
type Millis float64

// MarshalJSON writes NaN as null, which encoding/json cannot do for a float.
func (m Millis) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(m)) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, float64(m), 'f', -1, 64), nil
}

func num(x Millis) string {
	if math.IsNaN(float64(x)) {
		return "-"
	}
	return strconv.FormatFloat(float64(x), 'f', 1, 64)
}
