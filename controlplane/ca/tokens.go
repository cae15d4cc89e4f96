package ca

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// TokenRecord is one line of a tokens file: the SHA-256 of a bootstrap
// token and the workload it vouches for. The file never holds the token
// itself, so reading it gives no credential.
type TokenRecord struct {
	SHA256         string    `json:"sha256"` // hex of the token's SHA-256
	Namespace      string    `json:"namespace"`
	ServiceAccount string    `json:"serviceAccount"`
	Expires        time.Time `json:"expires,omitzero"` // zero: never
}

// HashToken is the hex SHA-256 a TokenRecord holds for tok.
func HashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// WriteTokenRecords replaces a tokens file atomically (mode 0600), one JSON
// object per line, as TokensFile reads it.
func WriteTokenRecords(path string, recs []TokenRecord) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("tokens file %s: %w", path, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("tokens file %s: %w", path, err)
	}
	return writeAtomic(path, b.Bytes(), 0o600)
}

// ParseTokenRecords reads a tokens file: JSON Lines (one TokenRecord per
// line; blank lines and lines starting with # are skipped) or one JSON
// array of them. where names the file in errors, which give the line.
func ParseTokenRecords(b []byte, where string) ([]TokenRecord, error) {
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '[' {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		var recs []TokenRecord
		if err := dec.Decode(&recs); err != nil {
			off := dec.InputOffset()
			var te *json.UnmarshalTypeError
			var se *json.SyntaxError
			if errors.As(err, &te) {
				off = te.Offset
			} else if errors.As(err, &se) {
				off = se.Offset
			}
			return nil, fmt.Errorf("%s line %d: %v; want a JSON array of {sha256, namespace, serviceAccount, expires}", where, lineAt(b, off), err)
		}
		for i, r := range recs {
			if err := r.check(); err != nil {
				return nil, fmt.Errorf("%s: [%d]%v", where, i, err)
			}
		}
		return recs, nil
	}
	var recs []TokenRecord
	for i, line := range bytes.Split(b, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		var r TokenRecord
		if err := dec.Decode(&r); err != nil {
			return nil, fmt.Errorf("%s line %d: %v; each line is one JSON object {\"sha256\": HEX, \"namespace\": NS, \"serviceAccount\": SA, \"expires\": RFC3339 (optional)}", where, i+1, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("%s line %d: more than one JSON value on the line; put one record per line", where, i+1)
		}
		if err := r.check(); err != nil {
			return nil, fmt.Errorf("%s line %d: %v", where, i+1, err)
		}
		recs = append(recs, r)
	}
	return recs, nil
}

func (r TokenRecord) check() error {
	h, err := hex.DecodeString(r.SHA256)
	switch {
	case err != nil || len(h) != sha256.Size:
		return fmt.Errorf(".sha256 %q: want the 64 hex digits of the token's SHA-256 (never the token)", r.SHA256)
	case r.Namespace == "":
		return errors.New(".namespace: missing; name the workload's namespace")
	case r.ServiceAccount == "":
		return errors.New(".serviceAccount: missing; name the workload's service account")
	}
	return nil
}

func lineAt(b []byte, off int64) int {
	off = min(max(off, 0), int64(len(b)))
	return bytes.Count(b[:off], []byte("\n")) + 1
}

// TokensFile authenticates callers by bearer token against a file of token
// hashes (see TokenRecord), reread when it changes: the local mesh's
// supervisor adds a pod's token before starting it and removes it when the
// pod is gone, and skiffd keeps honouring tokens across its restarts. A
// malformed file keeps the last good table, with the error logged.
type TokensFile struct {
	path     string
	log      *slog.Logger
	now      func() time.Time
	debounce time.Duration

	mu      sync.RWMutex
	table   map[[32]byte]Identity
	expires map[[32]byte]time.Time
	digest  [32]byte // of the content last tried, good or not
	version uint64   // bumped on every table change
}

// TokensFileOptions tune NewTokensFile; the zero value is usable.
type TokensFileOptions struct {
	Logger *slog.Logger     // slog.Default() when nil
	Now    func() time.Time // time.Now when nil
	// Debounce is how long the file must be quiet before it is reread
	// (default 20 ms, as the config directory source).
	Debounce time.Duration
}

// NewTokensFile reads path. A missing file is an empty table (it appears
// when the first pod starts); an unreadable or malformed one is an error.
func NewTokensFile(path string, o TokensFileOptions) (*TokensFile, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Debounce <= 0 {
		o.Debounce = 20 * time.Millisecond
	}
	t := &TokensFile{path: path, log: o.Logger, now: o.Now, debounce: o.Debounce}
	if err := t.reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// reload rereads the file; on error the table is unchanged.
func (t *TokensFile) reload() error {
	b, err := os.ReadFile(t.path)
	if errors.Is(err, fs.ErrNotExist) {
		b, err = nil, nil
	}
	if err != nil {
		return fmt.Errorf("bootstrap tokens file: %w; make it readable by skiffd", err)
	}
	d := sha256.Sum256(b)
	t.mu.RLock()
	same := d == t.digest && t.table != nil
	t.mu.RUnlock()
	if same {
		return nil
	}
	recs, err := ParseTokenRecords(b, t.path)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.digest = d
	if err != nil {
		return err
	}
	table := make(map[[32]byte]Identity, len(recs))
	exp := map[[32]byte]time.Time{}
	for _, r := range recs {
		var k [32]byte
		hex.Decode(k[:], []byte(r.SHA256)) // checked by ParseTokenRecords
		table[k] = Identity{Namespace: r.Namespace, ServiceAccount: r.ServiceAccount}
		if !r.Expires.IsZero() {
			exp[k] = r.Expires
		}
	}
	t.table, t.expires = table, exp
	t.version++
	return nil
}

// Len is the number of tokens in the table.
func (t *TokensFile) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.table)
}

// Run follows the file until ctx ends: inotify on its directory (the
// supervisor replaces it by rename), debounced, and a reread every minute
// (every second without inotify) as a safety net.
func (t *TokensFile) Run(ctx context.Context) {
	resyncEvery := time.Minute
	events := make(chan struct{}, 1)
	if fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK); err != nil {
		t.log.Warn("inotify unavailable; polling the bootstrap tokens file every second", "file", t.path, "err", err)
		resyncEvery = time.Second
	} else {
		f := os.NewFile(uintptr(fd), "inotify")
		defer f.Close()
		dir := filepath.Dir(t.path)
		if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO|unix.IN_MOVED_FROM|unix.IN_CREATE|unix.IN_DELETE); err != nil {
			t.log.Warn("cannot watch the bootstrap tokens file's directory; polling it every second", "dir", dir, "err", err)
			resyncEvery = time.Second
		} else {
			go func() {
				buf := make([]byte, 16*1024)
				for {
					if _, err := f.Read(buf); err != nil {
						return
					}
					select {
					case events <- struct{}{}:
					default:
					}
				}
			}()
		}
	}
	resync := time.NewTicker(resyncEvery)
	defer resync.Stop()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-events:
			debounce.Reset(t.debounce)
		case <-resync.C:
			debounce.Reset(0)
		case <-debounce.C:
			t.mu.RLock()
			before := t.version
			t.mu.RUnlock()
			if err := t.reload(); err != nil {
				t.log.Error("bootstrap tokens file not applied; keeping the tokens last read", "err", err)
				continue
			}
			t.mu.RLock()
			after, n := t.version, len(t.table)
			t.mu.RUnlock()
			if after != before {
				t.log.Info("bootstrap tokens file reread", "file", t.path, "tokens", n)
			}
		}
	}
}

// Authenticate looks up the SHA-256 of the call's bearer token. The lookup
// is by a hash of the secret, so its timing says nothing about the token.
func (t *TokensFile) Authenticate(ctx context.Context) (Identity, error) {
	tok, err := BearerToken(ctx)
	if err != nil {
		return Identity{}, err
	}
	k := sha256.Sum256([]byte(tok))
	t.mu.RLock()
	id, ok := t.table[k]
	exp := t.expires[k]
	t.mu.RUnlock()
	if !ok {
		return Identity{}, fmt.Errorf("%w: unknown bootstrap token: it is not in %s (the pod is gone, or the token file is stale); restart the pod to get a new one", ErrUnauthenticated, t.path)
	}
	if !exp.IsZero() && !t.now().Before(exp) {
		return Identity{}, fmt.Errorf("%w: bootstrap token for %s/%s expired at %s; restart the pod to get a new one", ErrUnauthenticated, id.Namespace, id.ServiceAccount, exp.UTC().Format(time.RFC3339))
	}
	return id, nil
}

var _ Authenticator = (*TokensFile)(nil)
