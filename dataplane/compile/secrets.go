package compile

import (
	"sync/atomic"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// SecretStore holds static (bootstrap) and SDS secrets by name. Readers
// (TLS handshakes) never lock: the map is replaced whole on each change.
type SecretStore struct {
	m atomic.Pointer[map[string]*tlsv3.Secret]
}

func newSecretStore() *SecretStore {
	s := &SecretStore{}
	empty := map[string]*tlsv3.Secret{}
	s.m.Store(&empty)
	return s
}

func (s *SecretStore) Secret(name string) *tlsv3.Secret { return (*s.m.Load())[name] }

// replace installs a new set. Only the manager's goroutine writes.
func (s *SecretStore) replace(m map[string]*tlsv3.Secret) { s.m.Store(&m) }

func (s *SecretStore) snapshot() map[string]*tlsv3.Secret { return *s.m.Load() }

var _ core.Secrets = (*SecretStore)(nil)
