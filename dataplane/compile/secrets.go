package compile

import (
	"sync/atomic"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// SecretStore holds static (bootstrap) and SDS secrets by name. Readers
// (TLS handshakes) never lock: the map is replaced whole on each change.
type SecretStore struct {
	m     atomic.Pointer[map[string]*tlsv3.Secret]
	local SecretProvider
}

func newSecretStore(local SecretProvider) *SecretStore {
	s := &SecretStore{local: local}
	empty := map[string]*tlsv3.Secret{}
	s.m.Store(&empty)
	return s
}

// Secret returns the named secret: a bootstrap or ADS one, or the local
// provider's for its own names.
func (s *SecretStore) Secret(name string) *tlsv3.Secret {
	if sec := (*s.m.Load())[name]; sec != nil {
		return sec
	}
	if s.local != nil && s.local.Provides(name) {
		return s.local.Secret(name)
	}
	return nil
}

// replace installs a new set. Only the manager's goroutine writes.
func (s *SecretStore) replace(m map[string]*tlsv3.Secret) { s.m.Store(&m) }

func (s *SecretStore) snapshot() map[string]*tlsv3.Secret { return *s.m.Load() }

var _ core.Secrets = (*SecretStore)(nil)
