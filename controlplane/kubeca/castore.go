package kubeca

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/skiff-mesh/skiff/controlplane/ca"
)

// CASecretName is the Secret istiod keeps its self-signed root in, in its
// own namespace; skiffd uses the same name and keys (ca-cert.pem,
// ca-key.pem, root-cert.pem, …), so every replica signs with one root and a
// restart keeps it.
const CASecretName = "istio-ca-secret"

// SecretStore is a ca.Store kept in a Kubernetes Secret. Writes are
// conditional on what the store last read (create when it saw none,
// update of the resourceVersion it saw), so two replicas starting at once
// cannot overwrite each other's root. Use it by pointer.
type SecretStore struct {
	Client    kubernetes.Interface
	Namespace string
	Name      string        // CASecretName when empty
	Timeout   time.Duration // per API call; 10 s when zero

	mu sync.Mutex
	rv string // resourceVersion last read or written; "" = none seen
}

func (s *SecretStore) name() string {
	if s.Name == "" {
		return CASecretName
	}
	return s.Name
}

func (s *SecretStore) ctx() (context.Context, context.CancelFunc) {
	t := s.Timeout
	if t == 0 {
		t = 10 * time.Second
	}
	return context.WithTimeout(context.Background(), t)
}

// Where names an entry as secret/NAMESPACE/NAME[key].
func (s *SecretStore) Where(entry string) string {
	return "secret " + s.Namespace + "/" + s.name() + "[" + entry + "]"
}

// Load reads the Secret's entries; a missing Secret (or one without
// ca-cert.pem and ca-key.pem) wraps fs.ErrNotExist.
func (s *SecretStore) Load() (map[string][]byte, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	sec, err := s.Client.CoreV1().Secrets(s.Namespace).Get(ctx, s.name(), metav1.GetOptions{})
	s.mu.Lock()
	defer s.mu.Unlock()
	if apierrors.IsNotFound(err) {
		s.rv = ""
		return nil, fmt.Errorf("no CA in secret %s/%s: %w", s.Namespace, s.name(), fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("reading secret %s/%s: %w; skiffd's service account needs get/create/update on it", s.Namespace, s.name(), err)
	}
	s.rv = sec.ResourceVersion
	out := map[string][]byte{}
	for k, v := range sec.Data {
		out[k] = v
	}
	_, cert := out["ca-cert.pem"]
	_, key := out["ca-key.pem"]
	switch {
	case !cert && !key:
		return nil, fmt.Errorf("secret %s/%s holds no ca-cert.pem and ca-key.pem: %w", s.Namespace, s.name(), fs.ErrNotExist)
	case !cert || !key:
		return nil, fmt.Errorf("secret %s/%s holds only one of ca-cert.pem and ca-key.pem: restore the other, or delete the Secret to have a new root made (workloads will need new certificates)", s.Namespace, s.name())
	}
	return out, nil
}

// Save creates the Secret when the last Load found none, else updates the
// version last seen. A Secret created or changed by another replica
// meanwhile returns an error wrapping ca.ErrStoreConflict, so the caller
// loads the winner's root instead of overwriting it.
func (s *SecretStore) Save(entries map[string][]byte) error {
	ctx, cancel := s.ctx()
	defer cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	secrets := s.Client.CoreV1().Secrets(s.Namespace)
	if s.rv == "" {
		sec, err := secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: s.name(), Namespace: s.Namespace,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "skiffd"}},
			Type: "istio.io/ca-root",
			Data: entries,
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("secret %s/%s was created meanwhile: %w", s.Namespace, s.name(), ca.ErrStoreConflict)
		}
		if err != nil {
			return err
		}
		s.rv = sec.ResourceVersion
		return nil
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: s.name(), Namespace: s.Namespace, ResourceVersion: s.rv,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "skiffd"}},
		Type: "istio.io/ca-root",
		Data: entries,
	}
	out, err := secrets.Update(ctx, sec, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) {
		return fmt.Errorf("secret %s/%s changed meanwhile: %w", s.Namespace, s.name(), errors.Join(err, ca.ErrStoreConflict))
	}
	if err != nil {
		return err
	}
	s.rv = out.ResourceVersion
	return nil
}
