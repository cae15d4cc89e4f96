package kubelet

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/skiff-mesh/skiff/localmesh"
	"github.com/skiff-mesh/skiff/localmesh/netns"
)

type envVar = localmesh.EnvVar

// podRunner runs one pod: network, volumes, containers, status.
type podRunner struct {
	k        *Kubelet
	key, uid string
	net      atomic.Pointer[netns.Pod]
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}

	mu          sync.Mutex
	pod         *corev1.Pod // as first seen: the spec in force
	ip          netip.Addr
	startTime   metav1.Time
	initialized bool
	ctrs        []*ctr
	waitReason  string // why the pod is not running yet (ContainerCreating, …)
	waitMessage string
	lastWritten string
	transitions map[corev1.PodConditionType]condState
	hosts       []netns.HostEntry
}

type condState struct {
	status corev1.ConditionStatus
	at     metav1.Time
}

// ctr is one container of the pod.
type ctr struct {
	spec    *corev1.Container
	init    bool // an init container
	sidecar bool // an init container with restartPolicy Always
	uid     int
	argv    []string
	env     []string
	dir     string
	logPath string

	proc      atomic.Pointer[localmesh.Process]
	started   atomic.Bool // the startup probe passed (or there is none)
	probeOK   atomic.Bool // the last readiness verdict
	startedAt atomic.Pointer[metav1.Time]
}

func (k *Kubelet) newRunner(key, uid string) *podRunner {
	r := &podRunner{k: k, key: key, uid: uid, done: make(chan struct{}), transitions: map[corev1.PodConditionType]condState{}}
	r.ctx, r.cancel = context.WithCancel(k.ctx)
	return r
}

// stop ends the pod: its processes, then its network.
func (r *podRunner) stop() {
	r.cancel()
	<-r.done
}

func (r *podRunner) logf(format string, args ...any) {
	r.k.opts.Logf("kubelet: pod %s: "+format, append([]any{r.key}, args...)...)
}

// run starts the pod and keeps its status current until the pod is
// stopped; then it stops the processes and removes the namespace.
func (r *podRunner) run(p *corev1.Pod) {
	defer close(r.done)
	defer r.teardown()
	r.mu.Lock()
	r.pod = p.DeepCopy()
	r.startTime = metav1.Now()
	r.waitReason = "ContainerCreating"
	r.mu.Unlock()
	statusDone := make(chan struct{})
	go func() {
		defer close(statusDone)
		r.statusLoop()
	}()
	if err := r.start(); err != nil && r.ctx.Err() == nil {
		r.logf("%v", err)
		r.mu.Lock()
		r.waitReason, r.waitMessage = "CreateContainerError", err.Error()
		r.mu.Unlock()
	}
	<-r.ctx.Done()
	<-statusDone
}

func (r *podRunner) start() error {
	p := r.pod
	ctx := r.ctx
	ip := r.k.allocIP()
	r.mu.Lock()
	r.ip = ip
	r.mu.Unlock()
	hosts := r.k.hostsFor(p.Namespace)
	pn, err := r.k.host.AddPod(ctx, p.Name, ip, hosts)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.hosts = hosts
	r.mu.Unlock()
	r.net.Store(pn)
	vols, err := r.volumes(ctx)
	if err != nil {
		return err
	}
	for i := range p.Spec.InitContainers {
		c, err := r.prepare(&p.Spec.InitContainers[i], fmt.Sprintf("spec.initContainers[%d]", i), vols)
		if err != nil {
			return err
		}
		c.init = true
		c.sidecar = c.spec.RestartPolicy != nil && *c.spec.RestartPolicy == corev1.ContainerRestartPolicyAlways
		r.addCtr(c)
	}
	var apps []*ctr
	for i := range p.Spec.Containers {
		c, err := r.prepare(&p.Spec.Containers[i], fmt.Sprintf("spec.containers[%d]", i), vols)
		if err != nil {
			return err
		}
		apps = append(apps, c)
	}
	r.mu.Lock()
	r.waitReason = "PodInitializing"
	r.mu.Unlock()
	// Init containers in order: each runs to completion, a native sidecar
	// instead stays running and holds the next until it has started.
	for _, c := range r.snapshotCtrs() {
		policy := "OnFailure"
		if p.Spec.RestartPolicy == corev1.RestartPolicyNever {
			policy = "Never"
		}
		if c.sidecar {
			policy = "Always"
		}
		if err := r.startCtr(c, policy); err != nil {
			return err
		}
		if c.sidecar {
			if !r.waitStarted(c) {
				return nil
			}
			continue
		}
		select {
		case <-c.proc.Load().Done():
		case <-ctx.Done():
			return nil
		}
		if st := c.proc.Load().Status(); st.State != "Completed" {
			return fmt.Errorf("init container %s failed (%s); log: %s", c.spec.Name, st.LastErr, c.logPath)
		}
	}
	r.mu.Lock()
	r.initialized = true
	r.waitReason = ""
	r.mu.Unlock()
	for _, c := range apps {
		r.addCtr(c)
		if err := r.startCtr(c, string(p.Spec.RestartPolicy)); err != nil {
			return err
		}
		// The kubelet starts the next container only once this one's
		// postStart hook returned (Istio's holdApplicationUntilProxyStarts).
		if h := c.spec.Lifecycle; h != nil && h.PostStart != nil {
			if err := r.runHook(c, h.PostStart); err != nil && ctx.Err() == nil {
				r.logf("postStart hook of container %s failed: %v", c.spec.Name, err)
			}
		}
	}
	return nil
}

func (r *podRunner) addCtr(c *ctr) {
	r.mu.Lock()
	r.ctrs = append(r.ctrs, c)
	r.mu.Unlock()
}

func (r *podRunner) snapshotCtrs() []*ctr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*ctr(nil), r.ctrs...)
}

// prepare resolves a container's program, environment and root directory.
func (r *podRunner) prepare(c *corev1.Container, path string, vols map[string]string) (*ctr, error) {
	p := r.pod
	out := &ctr{spec: c, uid: -1, logPath: filepath.Join(r.k.podDir(p.Namespace, p.Name), "logs", c.Name+".log")}
	if sc := c.SecurityContext; sc != nil && sc.RunAsUser != nil {
		out.uid = int(*sc.RunAsUser)
	} else if psc := p.Spec.SecurityContext; psc != nil && psc.RunAsUser != nil {
		out.uid = int(*psc.RunAsUser)
	}
	env, err := r.env(c, path)
	if err != nil {
		return nil, err
	}
	for _, e := range env {
		out.env = append(out.env, e.Name+"="+e.Value)
	}
	var argv []string
	if len(c.Command) > 0 {
		argv = append(append([]string(nil), c.Command...), c.Args...)
	} else {
		entry, ok := r.k.opts.Images(c.Image)
		if !ok {
			return nil, fmt.Errorf("%s.image: %q maps to no local program; give the container a command, or map the image in kubelet.Options.Images", path, c.Image)
		}
		argv = append(append([]string(nil), entry...), c.Args...)
	}
	argv = localmesh.ExpandCommand(argv, env)
	prog, err := r.k.program(argv[0])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out.argv = append([]string{prog}, argv[1:]...)
	// The container's root: its mounts as links to the pod's volumes.
	// Programs reading Istio's relative paths (./var/run/secrets/...) find
	// them here, as it is their working directory.
	out.dir = filepath.Join(r.k.podDir(p.Namespace, p.Name), "rootfs", c.Name)
	if err := os.MkdirAll(out.dir, 0o755); err != nil {
		return nil, err
	}
	for i, m := range c.VolumeMounts {
		src, ok := vols[m.Name]
		if !ok {
			return nil, fmt.Errorf("%s.volumeMounts[%d].name: no volume %q in spec.volumes", path, i, m.Name)
		}
		if m.SubPath != "" {
			src = filepath.Join(src, m.SubPath)
		}
		dst := filepath.Join(out.dir, filepath.Clean("/"+m.MountPath))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, err
		}
		if err := os.Symlink(src, dst); err != nil {
			return nil, fmt.Errorf("%s.volumeMounts[%d]: %w", path, i, err)
		}
	}
	if c.WorkingDir != "" {
		out.dir = filepath.Join(out.dir, filepath.Clean("/"+c.WorkingDir))
		if err := os.MkdirAll(out.dir, 0o755); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// env is the container's environment as the kubelet gives it.
func (r *podRunner) env(c *corev1.Container, path string) ([]envVar, error) {
	p := r.pod
	facts := localmesh.PodFacts{Name: p.Name, Namespace: p.Namespace, UID: string(p.UID),
		Labels: p.Labels, Annotations: p.Annotations, NodeName: r.k.opts.Node,
		ServiceAccount: p.Spec.ServiceAccountName, PodIP: r.ip.String(), HostIP: r.k.Gateway().String(),
		Data: r.objectData}
	base := []envVar{{Name: "PATH", Value: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		{Name: "HOME", Value: "/root"}, {Name: "HOSTNAME", Value: p.Name}}
	if p.Spec.EnableServiceLinks == nil || *p.Spec.EnableServiceLinks {
		base = append(base, r.k.serviceEnv(p.Namespace)...)
	}
	// resourceFieldRef is answered here (limits, else the node's
	// allocatable); the rest of the downward API by localmesh.
	cc := c.DeepCopy()
	for i, e := range cc.Env {
		if e.ValueFrom == nil || e.ValueFrom.ResourceFieldRef == nil {
			continue
		}
		v, err := resourceValue(p, c, e.ValueFrom.ResourceFieldRef)
		if err != nil {
			return nil, fmt.Errorf("%s.env[%d].valueFrom.resourceFieldRef: %w", path, i, err)
		}
		cc.Env[i] = corev1.EnvVar{Name: e.Name, Value: v}
	}
	return localmesh.ContainerEnv(cc, facts, base, path)
}

func (r *podRunner) objectData(kind, name string) (map[string]string, bool) {
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	ns := r.pod.Namespace
	out := map[string]string{}
	if kind == "Secret" {
		s, err := r.k.cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, false
		}
		for k, v := range s.Data {
			out[k] = string(v)
		}
		for k, v := range s.StringData {
			out[k] = v
		}
		return out, true
	}
	cm, err := r.k.cs.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, false
	}
	for k, v := range cm.BinaryData {
		out[k] = string(v)
	}
	for k, v := range cm.Data {
		out[k] = v
	}
	return out, true
}

// resourceValue answers a resourceFieldRef as the kubelet does: the
// container's limit (its request for requests.*), else the node's
// allocatable, divided by the divisor and rounded up.
func resourceValue(p *corev1.Pod, self *corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	c := self
	if ref.ContainerName != "" {
		c = nil
		for _, list := range [][]corev1.Container{p.Spec.Containers, p.Spec.InitContainers} {
			for i := range list {
				if list[i].Name == ref.ContainerName {
					c = &list[i]
				}
			}
		}
		if c == nil {
			return "", fmt.Errorf("containerName %q is not a container of the pod", ref.ContainerName)
		}
	}
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", fmt.Errorf("resource %q: want limits.cpu, limits.memory, requests.cpu or requests.memory", ref.Resource)
	}
	rn := corev1.ResourceName(name)
	alloc := nodeAllocatable()
	q, ok := c.Resources.Limits[rn]
	if kind == "requests" {
		if rq, rok := c.Resources.Requests[rn]; rok {
			q, ok = rq, true
		}
	}
	if !ok {
		if q, ok = alloc[rn]; !ok {
			return "", fmt.Errorf("resource %q: want cpu, memory or ephemeral-storage", ref.Resource)
		}
	}
	div := ref.Divisor
	if div.IsZero() {
		div = resource.MustParse("1")
	}
	if rn == corev1.ResourceCPU {
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(div.MilliValue()))), 10), nil
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(div.Value()))), 10), nil
}

func nodeAllocatable() corev1.ResourceList {
	return corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory:           resource.MustParse("8Gi"),
		corev1.ResourceEphemeralStorage: resource.MustParse("20Gi"),
		corev1.ResourcePods:             resource.MustParse("110"),
	}
}

func (k *Kubelet) program(name string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	if _, ok := k.opts.Programs[name]; ok {
		return filepath.Join(k.binDir, name), nil
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("program %q is neither in kubelet.Options.Programs nor on PATH; add it to Programs", name)
	}
	return path, nil
}

var bookinfoImage = regexp.MustCompile(`^examples-bookinfo-(details|ratings|reviews|productpage)-v(\d+)(?:[:@].*)?$`)

// DefaultImages maps Istio's proxy images (skiff-proxy, proxyv2) to the
// program "skiff-proxy", and Bookinfo's upstream images
// (…/examples-bookinfo-SERVICE-vN) to "bookinfo SERVICE" (reviews with
// --version=vN), the Go Bookinfo in samples/bookinfo/cmd/bookinfo.
func DefaultImages(image string) ([]string, bool) {
	last := image[strings.LastIndexByte(image, '/')+1:]
	if strings.HasPrefix(last, "skiff-proxy") || strings.HasPrefix(last, "proxyv2") {
		return []string{"skiff-proxy"}, true
	}
	if m := bookinfoImage.FindStringSubmatch(last); m != nil {
		if m[1] == "reviews" {
			return []string{"bookinfo", "reviews", "--version=v" + m[2]}, true
		}
		return []string{"bookinfo", m[1]}, true
	}
	return nil, false
}

// startCtr starts c's process and its probes.
func (r *podRunner) startCtr(c *ctr, policy string) error {
	pn := r.net.Load()
	if err := os.MkdirAll(filepath.Dir(c.logPath), 0o755); err != nil {
		return err
	}
	proc, err := localmesh.StartProcess(r.ctx, localmesh.ProcessOptions{
		Name: c.spec.Name, LogPath: c.logPath, Policy: policy,
		Backoff: localmesh.Backoff{Initial: time.Second, Max: 10 * time.Second},
		Grace:   graceOf(r.pod),
		NewCmd: func(ctx context.Context) *exec.Cmd {
			cmd := pn.Command(ctx, c.uid, c.argv[0], c.argv[1:]...)
			cmd.Env, cmd.Dir = c.env, c.dir
			return cmd
		},
		OnStart: func(int, int) {
			now := metav1.Now()
			c.startedAt.Store(&now)
		},
		OnExit: func(status, logPath string, restartIn time.Duration) {
			if c.init && !c.sidecar && status == "exit code 0" {
				return // an init container's normal end
			}
			r.logf("container %s exited (%s); log %s", c.spec.Name, status, logPath)
		},
	})
	if err != nil {
		return err
	}
	c.proc.Store(proc)
	go r.probeLoop(c)
	return nil
}

func graceOf(p *corev1.Pod) time.Duration {
	if g := p.Spec.TerminationGracePeriodSeconds; g != nil && *g < 5 {
		return time.Duration(*g)*time.Second + 100*time.Millisecond
	}
	return 5 * time.Second
}

// waitStarted waits for a sidecar's startup probe; false if the pod stops
// first.
func (r *podRunner) waitStarted(c *ctr) bool {
	for !c.started.Load() {
		select {
		case <-r.ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return true
}

// runHook runs a postStart handler inside the container's context.
func (r *podRunner) runHook(c *ctr, h *corev1.LifecycleHandler) error {
	ctx, cancel := context.WithTimeout(r.ctx, 2*time.Minute)
	defer cancel()
	switch {
	case h.Exec != nil:
		return r.execIn(ctx, c, h.Exec.Command)
	case h.HTTPGet != nil:
		if !r.httpProbe(ctx, c, h.HTTPGet, 30*time.Second) {
			return fmt.Errorf("GET %s failed", h.HTTPGet.Path)
		}
		return nil
	}
	return nil
}

// execIn runs argv in c's network, user, environment and directory; its
// output goes to c's log.
func (r *podRunner) execIn(ctx context.Context, c *ctr, argv []string) error {
	if len(argv) == 0 {
		return fmt.Errorf("empty command")
	}
	prog, err := r.k.program(argv[0])
	if err != nil {
		return err
	}
	cmd := r.net.Load().Command(ctx, c.uid, prog, argv[1:]...)
	cmd.Env, cmd.Dir = c.env, c.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	log, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	return cmd.Run()
}

// updateHosts rewrites the pod's hosts file when the Services changed.
func (r *podRunner) updateHosts() {
	pn := r.net.Load()
	if pn == nil {
		return
	}
	hosts := r.k.hostsFor(r.pod.Namespace)
	r.mu.Lock()
	same := equalHosts(hosts, r.hosts)
	r.hosts = hosts
	r.mu.Unlock()
	if same {
		return
	}
	if err := pn.SetHosts(hosts); err != nil && r.ctx.Err() == nil {
		r.logf("%v", err)
	}
}

func equalHosts(a, b []netns.HostEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].IP != b[i].IP || strings.Join(a[i].Names, " ") != strings.Join(b[i].Names, " ") {
			return false
		}
	}
	return true
}

// teardown stops the containers (apps first, then init containers and
// sidecars in reverse order, as the kubelet stops native sidecars last)
// and removes the network namespace.
func (r *podRunner) teardown() {
	ctrs := r.snapshotCtrs()
	var wg sync.WaitGroup
	for _, c := range ctrs {
		if c.init {
			continue
		}
		if p := c.proc.Load(); p != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.Stop()
			}()
		}
	}
	wg.Wait()
	for i := len(ctrs) - 1; i >= 0; i-- {
		if p := ctrs[i].proc.Load(); p != nil && ctrs[i].init {
			p.Stop()
		}
	}
	if pn := r.net.Load(); pn != nil {
		if err := pn.Remove(); err != nil {
			r.logf("%v", err)
		}
	}
}

// statusLoop writes the pod's status whenever it changes, until the pod
// stops.
func (r *podRunner) statusLoop() {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		st, key := r.status()
		if key != r.lastWritten {
			if err := r.writeStatus(st); err == nil {
				r.lastWritten = key
			} else if r.ctx.Err() == nil {
				r.logf("writing status: %v", err)
			}
		}
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *podRunner) writeStatus(st corev1.PodStatus) error {
	ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
	defer cancel()
	pods := r.k.cs.CoreV1().Pods(r.pod.Namespace)
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		p, err := pods.Get(ctx, r.pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if string(p.UID) != r.uid {
			return nil // a new pod of the same name: not ours
		}
		p.Status = st
		_, err = pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
		return err
	})
}

// status is the pod's status now, and a key that changes when anything a
// reader cares about does.
func (r *podRunner) status() (corev1.PodStatus, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pod
	st := corev1.PodStatus{Phase: corev1.PodPending, HostIP: r.k.Gateway().String(), StartTime: &r.startTime,
		HostIPs: []corev1.HostIP{{IP: r.k.Gateway().String()}}, QOSClass: corev1.PodQOSBurstable}
	if r.ip.IsValid() {
		st.PodIP = r.ip.String()
		st.PodIPs = []corev1.PodIP{{IP: st.PodIP}}
	}
	var key strings.Builder
	byName := map[string]*ctr{}
	for _, c := range r.ctrs {
		byName[c.spec.Name] = c
	}
	ready, allApps, appsRunning, appsDone, appsFailed := true, 0, 0, 0, 0
	statusOf := func(spec *corev1.Container, init bool) corev1.ContainerStatus {
		cs := corev1.ContainerStatus{Name: spec.Name, Image: spec.Image, ImageID: spec.Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: cmpOr(r.waitReason, "PodInitializing"), Message: r.waitMessage}}}
		started := false
		cs.Started = &started
		c := byName[spec.Name]
		if c == nil || c.proc.Load() == nil {
			if !init || (c == nil && !r.initialized) {
				ready = false
			}
			return cs
		}
		ps := c.proc.Load().Status()
		cs.RestartCount = int32(ps.Restarts)
		switch {
		case ps.Running:
			at := metav1.Now()
			if t := c.startedAt.Load(); t != nil {
				at = *t
			}
			cs.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: at}}
			cs.ContainerID = fmt.Sprintf("skiff://%d", ps.PID)
			started = c.started.Load()
			cs.Ready = started && (c.spec.ReadinessProbe == nil || c.probeOK.Load())
		case ps.State == "Completed" || ps.State == "Error":
			code := int32(0)
			if ps.State == "Error" {
				code = 1
				if n, err := strconv.Atoi(strings.TrimPrefix(ps.LastErr, "exit code ")); err == nil {
					code = int32(n)
				}
			}
			cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: ps.State, Message: ps.LastErr}}
		default:
			cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: ps.LastErr}}
		}
		if (!init || c.sidecar) && !cs.Ready {
			ready = false
		}
		return cs
	}
	for i := range p.Spec.InitContainers {
		cs := statusOf(&p.Spec.InitContainers[i], true)
		st.InitContainerStatuses = append(st.InitContainerStatuses, cs)
		fmt.Fprintf(&key, "%s:%v:%v:%d:%s;", cs.Name, cs.Ready, *cs.Started, cs.RestartCount, stateKey(cs.State))
	}
	for i := range p.Spec.Containers {
		cs := statusOf(&p.Spec.Containers[i], false)
		allApps++
		switch {
		case cs.State.Running != nil:
			appsRunning++
		case cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0:
			appsDone++
		case cs.State.Terminated != nil:
			appsFailed++
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
		fmt.Fprintf(&key, "%s:%v:%v:%d:%s;", cs.Name, cs.Ready, *cs.Started, cs.RestartCount, stateKey(cs.State))
	}
	switch {
	case !r.initialized:
	case appsDone == allApps:
		st.Phase = corev1.PodSucceeded
	case appsDone+appsFailed == allApps && p.Spec.RestartPolicy != corev1.RestartPolicyAlways:
		st.Phase = corev1.PodFailed
	case appsRunning+appsDone+appsFailed == allApps:
		st.Phase = corev1.PodRunning
	}
	if st.Phase != corev1.PodRunning {
		ready = false
	}
	cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		prev, seen := r.transitions[t]
		if !seen || prev.status != s {
			prev = condState{s, metav1.Now()}
			r.transitions[t] = prev
		}
		return corev1.PodCondition{Type: t, Status: s, LastTransitionTime: prev.at}
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodScheduled, true),
		cond(corev1.PodInitialized, r.initialized),
		cond(corev1.ContainersReady, ready),
		cond(corev1.PodReady, ready),
	}
	fmt.Fprintf(&key, "phase=%s ip=%s init=%v ready=%v wait=%s %s", st.Phase, st.PodIP, r.initialized, ready, r.waitReason, r.waitMessage)
	return st, key.String()
}

func stateKey(s corev1.ContainerState) string {
	switch {
	case s.Running != nil:
		return "running"
	case s.Terminated != nil:
		return "terminated/" + s.Terminated.Reason
	case s.Waiting != nil:
		return "waiting/" + s.Waiting.Reason
	}
	return ""
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
