package server

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// The address flags whose sockets a parent may bind and pass down
// (--listen-fds): a parent that picks free ports keeps them bound, so no
// other process can take one between the pick and skiffd's start, and
// holds them across skiffd's restarts.
var inheritable = []string{"xds-addr", "secure-addr", "monitoring-addr"}

// parseListenFDs reads --listen-fds ("xds-addr=3,secure-addr=4,…"): each
// named address flag is served on the listening socket already open at
// that file descriptor.
func parseListenFDs(spec string) (map[string]net.Listener, error) {
	out := map[string]net.Listener{}
	if spec == "" {
		return out, nil
	}
	fail := func(err error) (map[string]net.Listener, error) {
		for _, ln := range out {
			ln.Close()
		}
		return nil, err
	}
	for _, item := range strings.Split(spec, ",") {
		name, fdText, ok := strings.Cut(strings.TrimSpace(item), "=")
		known := false
		for _, n := range inheritable {
			known = known || n == name
		}
		if !ok || !known {
			return fail(fmt.Errorf("--listen-fds %q: item %q: want FLAG=FD with FLAG one of %s", spec, item, strings.Join(inheritable, ", ")))
		}
		if out[name] != nil {
			return fail(fmt.Errorf("--listen-fds %q: %s given twice", spec, name))
		}
		fd, err := strconv.Atoi(fdText)
		if err != nil || fd < 3 {
			return fail(fmt.Errorf("--listen-fds %q: %s=%s: want a file descriptor number of 3 or more (0-2 are stdin, stdout and stderr)", spec, name, fdText))
		}
		f := os.NewFile(uintptr(fd), name)
		ln, err := net.FileListener(f)
		f.Close() // FileListener holds its own duplicate
		if err != nil {
			return fail(fmt.Errorf("--listen-fds %q: %s=%d is not an open listening socket: %w; the parent must pass it (exec.Cmd.ExtraFiles[i] is fd 3+i)", spec, name, fd, err))
		}
		if _, isTCP := ln.(*net.TCPListener); !isTCP {
			ln.Close()
			return fail(fmt.Errorf("--listen-fds %q: %s=%d is a %s socket, not TCP", spec, name, fd, ln.Addr().Network()))
		}
		out[name] = ln
	}
	return out, nil
}

// listen binds flag's address, or takes the socket inherited for it.
func (s *Server) listen(flag, addr string) (net.Listener, error) {
	if ln := s.inherited[flag]; ln != nil {
		delete(s.inherited, flag)
		return ln, nil
	}
	return net.Listen("tcp", addr)
}

// closeInherited closes sockets passed down but not taken.
func (s *Server) closeInherited() {
	for name, ln := range s.inherited {
		ln.Close()
		delete(s.inherited, name)
	}
}
