package localmesh

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// mirror keeps a directory holding the supervisor's config in force, one
// JSON file per object, for the skiffd child process to serve with
// --config-dir: the store is the local mesh's API server, the directory
// its watch. Only the kinds config.Decode reads are written (PodTemplates,
// the bare Pods the supervisor runs itself, stay private).
type mirror struct {
	dir   string
	store *config.Store

	mu      sync.Mutex
	written map[string][32]byte // file → digest of what it holds
	// tombstones are files emptied for a deleted object: skiffd drops an
	// emptied file's objects at once, a removed file's only after its
	// file source's grace (1 s), which would outlast a stopping pod.
	tombstones map[string]bool
	life       time.Duration // how long an emptied file stays (tombstoneLife)
}

// tombstoneLife is how long an emptied file stays before it is removed.
const tombstoneLife = 5 * time.Second

// newMirror starts dir afresh: what an earlier run left is stale.
func newMirror(dir string, store *config.Store) (*mirror, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("skiffd's config directory: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("skiffd's config directory: %w", err)
	}
	return &mirror{dir: dir, store: store, written: map[string][32]byte{}, tombstones: map[string]bool{}, life: tombstoneLife}, nil
}

// mirrored is whether skiffd can read objects of kind k from files.
func mirrored(k config.Kind) bool { return slices.Contains(config.SupportedKinds(), k) }

// fileFor names the file of key k: names and namespaces hold no "_".
func (mr *mirror) fileFor(k config.Key) string {
	ns := k.Namespace
	if ns == "" {
		ns = "-"
	}
	kind := k.Kind.Kind + "." + strings.ReplaceAll(k.Kind.APIVersion(), "/", ".")
	return filepath.Join(mr.dir, kind+"_"+ns+"_"+k.Name+".json")
}

// syncAll writes every object in force and removes the files of keys the
// store no longer holds.
func (mr *mirror) syncAll() error {
	keep := map[string]bool{}
	var keys []config.Key
	for _, o := range mr.store.Snapshot().All() {
		if mirrored(o.Kind) {
			keep[mr.fileFor(o.Key())] = true
			keys = append(keys, o.Key())
		}
	}
	mr.mu.Lock()
	for f := range mr.written {
		if !keep[f] {
			keys = append(keys, keyOfFile(f))
		}
	}
	mr.mu.Unlock()
	return mr.update(keys)
}

// update brings the files of keys in line with the store. The snapshot
// is read under the lock, so whichever of two overlapping calls writes
// last writes the newest config.
func (mr *mirror) update(keys []config.Key) error {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	snap := mr.store.Snapshot()
	var firstErr error
	for _, k := range keys {
		if k.Kind.Kind == "" || !mirrored(k.Kind) {
			continue
		}
		var data []byte
		if o := snap.Get(k); o != nil {
			b, err := encodeObject(o)
			if err != nil {
				firstErr = firstOf(firstErr, fmt.Errorf("%s: %w", o.Describe(), err))
				continue
			}
			data = b
		}
		f := mr.fileFor(k)
		sum := sha256.Sum256(data)
		if old, ok := mr.written[f]; ok && old == sum {
			continue
		}
		if data == nil {
			if _, ok := mr.written[f]; !ok {
				continue
			}
		}
		if err := writeAtomic(f, data); err != nil {
			firstErr = firstOf(firstErr, err)
			continue
		}
		mr.written[f] = sum
		if data == nil {
			mr.tombstones[f] = true
			time.AfterFunc(mr.life, func() { mr.reap(f) })
		} else {
			delete(mr.tombstones, f)
		}
	}
	return firstErr
}

// reap removes f if it is still a tombstone.
func (mr *mirror) reap(f string) {
	mr.mu.Lock()
	defer mr.mu.Unlock()
	if mr.tombstones[f] {
		os.Remove(f)
		delete(mr.tombstones, f)
		delete(mr.written, f)
	}
}

func firstOf(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// keyOfFile is the inverse of fileFor, for the files of keys gone.
func keyOfFile(f string) config.Key {
	base := strings.TrimSuffix(filepath.Base(f), ".json")
	parts := strings.SplitN(base, "_", 3)
	if len(parts) != 3 {
		return config.Key{}
	}
	for _, k := range config.SupportedKinds() {
		if k.Kind+"."+strings.ReplaceAll(k.APIVersion(), "/", ".") == parts[0] {
			ns := parts[1]
			if ns == "-" {
				ns = ""
			}
			return config.Key{Kind: k, Namespace: ns, Name: parts[2]}
		}
	}
	return config.Key{}
}

// writeAtomic replaces path by data through a temporary file, so skiffd
// never reads half a file; the temporary's leading dot keeps skiffd's
// file source from reading it.
func writeAtomic(path string, data []byte) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("skiffd's config directory: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("skiffd's config directory: %w", err)
	}
	return nil
}

// encodeObject writes o as one JSON document config.Decode reads back to
// the same object: Istio specs through protojson (their JSON names and
// well-known types), Kubernetes objects and Gateway API specs through
// their JSON tags.
func encodeObject(o *config.Object) ([]byte, error) {
	type document struct {
		APIVersion string             `json:"apiVersion"`
		Kind       string             `json:"kind"`
		Metadata   *metav1.ObjectMeta `json:"metadata"`
		Spec       json.RawMessage    `json:"spec,omitempty"`
		Status     json.RawMessage    `json:"status,omitempty"`
	}
	switch spec := o.Spec.(type) {
	case proto.Message:
		b, err := protojson.Marshal(spec)
		if err != nil {
			return nil, err
		}
		meta := o.Meta
		return json.Marshal(document{APIVersion: o.Kind.APIVersion(), Kind: o.Kind.Kind, Metadata: &meta, Spec: b})
	case metav1.Object:
		// A Kubernetes kind: the typed object is the whole document.
		b, err := json.Marshal(spec)
		if err != nil {
			return nil, err
		}
		var doc map[string]json.RawMessage
		if err := json.Unmarshal(b, &doc); err != nil {
			return nil, err
		}
		doc["apiVersion"], _ = json.Marshal(o.Kind.APIVersion())
		doc["kind"], _ = json.Marshal(o.Kind.Kind)
		return json.Marshal(doc)
	default:
		b, err := json.Marshal(spec)
		if err != nil {
			return nil, err
		}
		meta := o.Meta
		d := document{APIVersion: o.Kind.APIVersion(), Kind: o.Kind.Kind, Metadata: &meta, Spec: b}
		if o.Status != nil {
			if d.Status, err = json.Marshal(o.Status); err != nil {
				return nil, err
			}
		}
		return json.Marshal(d)
	}
}
