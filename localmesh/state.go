package localmesh

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

const (
	stateFile = "mesh.json"
	lockFile  = "lock"
)

// State is mesh.json: where a running mesh serves and what it runs, for
// the CLI verbs and for people.
type State struct {
	PID            int        `json:"pid"`        // the supervisor (skiff up)
	SkiffdPID      int        `json:"skiffd_pid"` // skiffd, the supervisor's child; changes when it restarts
	SkiffdLog      string     `json:"skiffd_log"`
	Dir            string     `json:"dir"`
	Capture        string     `json:"capture"`
	XDSAddr        string     `json:"xds_addr"`
	MonitoringAddr string     `json:"monitoring_addr"`
	SecureAddr     string     `json:"secure_addr"`    // skiffd's CA and xDS over TLS
	RootCert       string     `json:"root_cert_file"` // the trust bundle skiffd writes
	APIAddr        string     `json:"api_addr"`
	GatewayURL     string     `json:"gateway_url"`
	ProductPageURL string     `json:"product_page_url,omitempty"`
	Ready          bool       `json:"ready"` // every pod has been ready once
	Started        time.Time  `json:"started"`
	Pods           []PodState `json:"pods"`
}

// PodState is one running pod in mesh.json.
type PodState struct {
	Name           string            `json:"name"`
	Namespace      string            `json:"namespace"`
	IP             string            `json:"ip"`
	Labels         map[string]string `json:"labels,omitempty"`
	ServiceAccount string            `json:"service_account"`
	Identity       string            `json:"identity,omitempty"` // SPIFFE ID, for pods with a proxy
	PodDir         string            `json:"pod_dir,omitempty"`  // bootstrap, CA token and root certificate of its proxy
	Gateway        bool              `json:"gateway,omitempty"`
	AdminAddr      string            `json:"admin_addr,omitempty"`
	ProxyPID       int               `json:"proxy_pid,omitempty"`
	ProxyLog       string            `json:"proxy_log,omitempty"`
	Containers     []ContainerState  `json:"containers"`
}

// ContainerState is one container of a pod in mesh.json.
type ContainerState struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	Log  string `json:"log"`
}

// ErrNotRunning is what ReadState returns when no mesh runs there.
var ErrNotRunning = errors.New("no local mesh is running")

// ReadState reads mesh.json from stateDir.
func ReadState(stateDir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w with state directory %s; start one with skiff up DIR (or pass the --state-dir it runs with)", ErrNotRunning, stateDir)
	}
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(stateDir, stateFile), err)
	}
	if st.PID <= 0 || unix.Kill(st.PID, 0) == unix.ESRCH {
		return nil, fmt.Errorf("%w with state directory %s (mesh.json names pid %d, which has exited); start one with skiff up DIR", ErrNotRunning, stateDir, st.PID)
	}
	return &st, nil
}

// lockState takes the state directory for this supervisor; a second one
// fails while the first runs (the lock dies with its process).
func lockState(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		st, _ := ReadState(dir)
		return nil, &ErrRunning{StateDir: dir, State: st}
	}
	return func() { f.Close() }, nil
}

// writeState replaces mesh.json atomically.
func (m *mesh) writeState(ready bool) error {
	st := State{PID: os.Getpid(), SkiffdLog: m.skiffd.logPath, Dir: m.o.Dir, Capture: m.capture, XDSAddr: m.xdsAddr,
		MonitoringAddr: m.monAddr, SecureAddr: m.secAddr, RootCert: m.rt.rootCert, APIAddr: m.apiAddr, GatewayURL: m.gatewayURL,
		Ready: ready, Started: m.started}
	st.SkiffdPID, _, _, _, _ = m.skiffd.snapshot()
	if path := productPagePath(m.store.Snapshot()); path != "" {
		st.ProductPageURL = m.gatewayURL + path
	}
	for _, p := range m.sortedPods() {
		ps := PodState{Name: p.name, Namespace: p.namespace, IP: p.ip.String(), Labels: p.labels,
			ServiceAccount: p.serviceAccount, Gateway: p.gateway}
		if p.proxy != nil {
			ps.AdminAddr, ps.ProxyLog = p.adminAddr(), p.proxy.logPath
			ps.ProxyPID, _, _, _, _ = p.proxy.snapshot()
			ps.Identity, ps.PodDir = spiffeID(p.namespace, p.serviceAccount), p.dir(m.rt.bootDir)
		}
		for _, c := range p.containers {
			pid, _, _, _, _ := c.snapshot()
			ps.Containers = append(ps.Containers, ContainerState{Name: c.name, PID: pid, Log: c.logPath})
		}
		st.Pods = append(st.Pods, ps)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(m.o.StateDir, "."+stateFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	return os.Rename(tmp, filepath.Join(m.o.StateDir, stateFile))
}
