package localmesh

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// network gives each pod its own address and runs the pod's processes
// where that address is theirs. Loopback mode shares the host's network
// (every address in 127.0.0.0/8 is local on Linux); the root mode
// (localmesh/netns) gives each pod a network namespace with capture.
type network interface {
	// AddPod prepares the network of one pod at ip; hosts are the
	// name-to-address entries the pod's resolver should know.
	AddPod(ctx context.Context, name string, ip netip.Addr, hosts []hostEntry) (podNetwork, error)
	// Close tears down what the network set up on the host.
	Close() error
}

// podNetwork is one pod's network.
type podNetwork interface {
	// Command returns a command that runs inside the pod's network as uid
	// (-1: the supervisor's own).
	Command(ctx context.Context, uid int, name string, args ...string) *exec.Cmd
	// Remove releases the pod's network.
	Remove() error
}

// hostEntry is one line of a pod's hosts file.
type hostEntry struct {
	IP    netip.Addr
	Names []string
}

// loopbackNetwork runs every pod on the host's network; nothing to set up.
type loopbackNetwork struct{}

func (loopbackNetwork) AddPod(context.Context, string, netip.Addr, []hostEntry) (podNetwork, error) {
	return loopbackPod{}, nil
}
func (loopbackNetwork) Close() error { return nil }

type loopbackPod struct{}

func (loopbackPod) Command(ctx context.Context, _ int, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, name, args...)
}
func (loopbackPod) Remove() error { return nil }

// addrPool hands out pod addresses from a prefix, lowest free first,
// skipping the prefix's first address (the gateway of a real subnet). The
// host is shared with other meshes (other state directories, tests), so
// each address in use is also held by a lock file under the system's temp
// directory; the lock dies with the process that held it.
type addrPool struct {
	mu      sync.Mutex
	prefix  netip.Prefix
	lockDir string
	used    map[netip.Addr]*os.File
}

func newAddrPool(prefix netip.Prefix) *addrPool {
	return &addrPool{prefix: prefix.Masked(), lockDir: filepath.Join(os.TempDir(), "skiff-pod-addresses"),
		used: map[netip.Addr]*os.File{}}
}

func (p *addrPool) get() (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := os.MkdirAll(p.lockDir, 0o777); err != nil {
		return netip.Addr{}, fmt.Errorf("pod address locks: %w", err)
	}
	// Shared by every user's meshes, like /tmp itself; only its creator
	// can change the mode, and then it already has it.
	_ = os.Chmod(p.lockDir, 0o777|os.ModeSticky)
	for a := p.prefix.Addr().Next().Next(); p.prefix.Contains(a); a = a.Next() {
		if b := a.As4(); b[3] == 0 || b[3] == 255 {
			continue // .0 and .255 confuse people reading addresses
		}
		if _, mine := p.used[a]; mine {
			continue
		}
		// Read-only suffices for flock, and works on another user's file.
		f, err := os.OpenFile(filepath.Join(p.lockDir, a.String()), os.O_CREATE|os.O_RDONLY, 0o444)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("pod address locks: %w", err)
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
			f.Close() // another mesh on this host has it
			continue
		}
		p.used[a] = f
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("no free pod address left in %s", p.prefix)
}

// reserve keeps a from being handed out (the bridge's own address).
func (p *addrPool) reserve(a netip.Addr) {
	p.mu.Lock()
	p.used[a] = nil
	p.mu.Unlock()
}

func (p *addrPool) put(a netip.Addr) {
	p.mu.Lock()
	if f := p.used[a]; f != nil {
		f.Close()
	}
	delete(p.used, a)
	p.mu.Unlock()
}
