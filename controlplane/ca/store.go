package ca

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File names of Istio's CA secret (istio-ca-secret) and cacerts layout, so a
// directory or Secret written by one reads in the other.
const (
	fileCACert        = "ca-cert.pem"
	fileCAKey         = "ca-key.pem"
	fileRootCert      = "root-cert.pem"
	fileCertChain     = "cert-chain.pem"
	filePreviousRoots = "previous-roots.pem"
)

// ErrStoreConflict is wrapped by a Store's Save when another writer got
// there first (another replica made the root): New then loads theirs.
var ErrStoreConflict = errors.New("the CA store was written by another replica")

// Store keeps the self-signed root between restarts: a directory in the local
// mesh, a Secret in Kubernetes. Entries are named by the file names above.
type Store interface {
	// Load returns every entry, or an error wrapping fs.ErrNotExist when the
	// store holds nothing yet.
	Load() (map[string][]byte, error)
	// Save replaces the stored entries.
	Save(map[string][]byte) error
	// Where names an entry for error messages (a path, or secret/key).
	Where(name string) string
}

// DirStore keeps the CA's files in a directory; ca-key.pem is written 0600.
type DirStore struct{ Dir string }

// Where returns the entry's path.
func (d DirStore) Where(name string) string { return filepath.Join(d.Dir, name) }

// Load reads the CA files present in the directory. An absent ca-cert.pem and
// ca-key.pem mean "nothing stored yet"; one without the other is an error.
func (d DirStore) Load() (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, name := range []string{fileCACert, fileCAKey, fileRootCert, fileCertChain, filePreviousRoots} {
		b, err := os.ReadFile(d.Where(name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading CA file: %w; fix its permissions or remove the directory %s to have a new root made", err, d.Dir)
		}
		out[name] = b
	}
	_, cert := out[fileCACert]
	_, key := out[fileCAKey]
	switch {
	case !cert && !key:
		return nil, fmt.Errorf("no CA in %s: %w", d.Dir, fs.ErrNotExist)
	case !key:
		return nil, fmt.Errorf("%s exists but %s is missing: restore the key, or remove %s to have a new root made (workloads will need new certificates)", d.Where(fileCACert), d.Where(fileCAKey), d.Dir)
	case !cert:
		return nil, fmt.Errorf("%s exists but %s is missing: restore the certificate, or remove %s to have a new root made (workloads will need new certificates)", d.Where(fileCAKey), d.Where(fileCACert), d.Dir)
	}
	return out, nil
}

// Save writes each entry through a temporary file and a rename, so a crash
// never leaves a half-written key; entries not given are removed.
func (d DirStore) Save(entries map[string][]byte) error {
	if err := os.MkdirAll(d.Dir, 0o700); err != nil {
		return fmt.Errorf("creating CA directory: %w", err)
	}
	for _, name := range []string{fileCACert, fileCAKey, fileRootCert, fileCertChain, filePreviousRoots} {
		b, ok := entries[name]
		if !ok {
			if err := os.Remove(d.Where(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("removing stale CA file: %w", err)
			}
			continue
		}
		mode := os.FileMode(0o644)
		if name == fileCAKey {
			mode = 0o600
		}
		if err := writeAtomic(d.Where(name), b, mode); err != nil {
			return err
		}
	}
	return nil
}

func writeAtomic(path string, b []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
