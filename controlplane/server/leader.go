package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaderElection tunes the Lease of the replicas' leader election. Zero
// values take the defaults below (istiod's are of the same order).
type LeaderElection struct {
	LeaseDuration time.Duration // 15 s
	RenewDeadline time.Duration // 10 s
	RetryPeriod   time.Duration // 2 s
	// Identity of this replica in the Lease; POD_NAME, else the host
	// name, with a random suffix so two processes on one host differ.
	Identity string
}

// leaseName is the Lease the replicas of one revision compete for, in the
// root namespace (istiod calls its own "istio-leader").
func (o *Options) leaseName() string {
	if o.Revision == "" || o.Revision == "default" {
		return "istio-leader"
	}
	return "istio-leader-" + o.Revision
}

func (l LeaderElection) withDefaults() LeaderElection {
	if l.LeaseDuration == 0 {
		l.LeaseDuration = 15 * time.Second
	}
	if l.RenewDeadline == 0 {
		l.RenewDeadline = 10 * time.Second
	}
	if l.RetryPeriod == 0 {
		l.RetryPeriod = 2 * time.Second
	}
	if l.Identity == "" {
		l.Identity = os.Getenv("POD_NAME")
		if l.Identity == "" {
			l.Identity, _ = os.Hostname()
		}
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		l.Identity += "_" + hex.EncodeToString(b)
	}
	return l
}

// leader runs lead while this replica holds the Lease, as often as it
// wins it back, until ctx ends. lead must return when its context ends.
type leader struct {
	leading atomic.Bool
}

func (s *Server) runLeaderElection(ctx context.Context, client kubernetes.Interface, lead func(context.Context)) {
	le := s.o.LeaderElection.withDefaults()
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metaFor(s.o.RootNamespace, s.o.leaseName()),
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: le.Identity},
	}
	// Without the root namespace there is nowhere to keep the Lease: say
	// so once, plainly, and wait for it (client-go would log a terse
	// error every retry period).
	for warned := false; ctx.Err() == nil; {
		_, err := client.CoreV1().Namespaces().Get(ctx, s.o.RootNamespace, metav1.GetOptions{})
		if err == nil {
			break
		}
		if !warned {
			warned = true
			s.log.Error("cannot elect a leader: no replica writes status, publishes istio-ca-root-cert or keeps the webhook configurations until this is fixed; create the root namespace (skiff install does)",
				"namespace", s.o.RootNamespace, "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(le.RetryPeriod):
		}
	}
	for ctx.Err() == nil {
		elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   le.LeaseDuration,
			RenewDeadline:   le.RenewDeadline,
			RetryPeriod:     le.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            s.o.leaseName(),
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					s.leader.leading.Store(true)
					s.log.Info("leading: writing status, publishing istio-ca-root-cert, keeping the webhook configurations",
						"lease", s.o.RootNamespace+"/"+s.o.leaseName(), "identity", le.Identity)
					lead(ctx)
				},
				OnStoppedLeading: func() {
					if s.leader.leading.Swap(false) {
						s.log.Info("no longer leading", "lease", s.o.RootNamespace+"/"+s.o.leaseName(), "identity", le.Identity)
					}
				},
				OnNewLeader: func(id string) {
					if id != le.Identity {
						s.log.Info("another replica leads", "lease", s.o.RootNamespace+"/"+s.o.leaseName(), "leader", id)
					}
				},
			},
		})
		if err != nil {
			s.log.Error("leader election misconfigured; this replica will not write status", "error", err)
			return
		}
		elector.Run(ctx)
	}
}

// Leading reports whether this replica holds the leader Lease (always
// false outside Kubernetes mode).
func (s *Server) Leading() bool { return s.leader.leading.Load() }

func metaFor(namespace, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: namespace, Name: name}
}
