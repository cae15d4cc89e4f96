// Package file is the config source that reads a directory of YAML (and
// JSON) manifests, as `skiffd --config-dir` and `skiff up` use it: every
// *.yaml, *.yml and *.json file under the directory, recursively, each
// file one origin of the store. It watches the tree with inotify and, once
// the tree has been quiet for a debounce interval, rereads only the files
// that changed: those the events named, or, after events a list of files
// cannot describe (a directory created, moved or removed, a ConfigMap's
// ..data swap, a lost event) and at every resync,
// every file whose size, times or inode differ from the last read.
package file

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// Options tune a Source; the zero value is usable.
type Options struct {
	// Debounce is how long the tree must be quiet before changes are read
	// (default 20ms: an editor's save is one burst of events; a file read
	// half-written fails to parse, keeps its last good objects, and is
	// read again on the events that complete it).
	Debounce time.Duration
	// DeleteGrace is how long a file must stay missing before its objects
	// are removed (default 1s), so an editor's save by rename, or a file
	// moved away and back, never removes them even for a moment.
	DeleteGrace time.Duration
	// Resync rereads the tree this often even without events, a safety net
	// for events the kernel dropped (default 1 minute).
	Resync time.Duration
	// Log receives read problems; nil discards.
	Log *slog.Logger
	// Transform, when set, sees every decoded object before the sink does
	// and returns what to store instead (nil drops it). The local mesh uses
	// it to allocate Services' cluster IPs and to keep bare Pods, which it
	// runs itself, out of the store as templates.
	Transform func(*config.Object) *config.Object
}

// Source reads the manifests under one directory.
type Source struct {
	dir    string
	opts   Options
	synced chan struct{}

	// Owned by Run.
	files   map[string]fileState
	missing map[string]time.Time // when a file known to the sink was first seen missing
	watch   int                  // inotify descriptor, -1 without inotify

	// What the events since the last read named, filled by the event
	// reader and taken by Run.
	pendMu sync.Mutex
	pend   pending
	wds    map[int32]string // inotify watch descriptor → its directory
}

// fileState is what was last read from one file.
type fileState struct {
	size  int64
	mtime time.Time
	ino   uint64
	ctime syscall.Timespec
	sum   [32]byte
}

// New returns a source for the files under dir.
func New(dir string, opts Options) *Source {
	if opts.Debounce <= 0 {
		opts.Debounce = 20 * time.Millisecond
	}
	if opts.DeleteGrace <= 0 {
		opts.DeleteGrace = time.Second
	}
	if opts.Resync <= 0 {
		opts.Resync = time.Minute
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Source{dir: dir, opts: opts, synced: make(chan struct{}),
		files: map[string]fileState{}, missing: map[string]time.Time{}, watch: -1, wds: map[int32]string{}}
}

// Synced is closed once every file present at start has been given to the
// sink, so a server can wait for the whole config before serving.
func (s *Source) Synced() <-chan struct{} { return s.synced }

const watchMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MODIFY | unix.IN_CLOSE_WRITE |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_ATTRIB | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

// Run reads the tree into sink, then follows changes until ctx is done. It
// fails only if dir is not a readable directory at start. Call it once.
func (s *Source) Run(ctx context.Context, sink config.Sink) error {
	fi, err := os.Stat(s.dir)
	if err != nil {
		return fmt.Errorf("config directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("config directory %s is not a directory", s.dir)
	}

	events := make(chan struct{}, 1)
	if fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK); err != nil {
		s.opts.Log.Warn("inotify unavailable; polling the config directory every second", "dir", s.dir, "error", err)
		s.opts.Resync = min(s.opts.Resync, time.Second)
	} else {
		// A non-blocking descriptor in an *os.File reads through the
		// runtime poller, so Close interrupts the pending Read.
		f := os.NewFile(uintptr(fd), "inotify")
		defer f.Close()
		s.watch = fd
		go s.readEvents(f, events)
	}

	s.scan(sink)
	close(s.synced)

	debounce := time.NewTimer(0)
	<-debounce.C
	resync := time.NewTicker(s.opts.Resync)
	defer resync.Stop()
	// A file written without pause would keep the tree from ever being
	// quiet; after maxDelay of events the scan runs anyway.
	maxDelay := 10 * s.opts.Debounce
	var firstEvent time.Time
	wake := func() {
		now := time.Now()
		if firstEvent.IsZero() {
			firstEvent = now
		}
		debounce.Reset(max(0, min(s.opts.Debounce, maxDelay-now.Sub(firstEvent))))
	}
	for {
		select {
		case <-ctx.Done():
			debounce.Stop()
			return nil
		case <-events:
			wake()
		case <-resync.C:
			s.pendMu.Lock()
			s.pend.full = true
			s.pendMu.Unlock()
			wake()
		case <-debounce.C:
			firstEvent = time.Time{}
			s.pendMu.Lock()
			p := s.pend
			s.pend = pending{}
			s.pendMu.Unlock()
			var wait time.Duration
			if p.full || s.watch < 0 {
				wait = s.scan(sink)
			} else {
				// Reading the named files alone spares a tree of thousands
				// of manifests a walk and a stat of each per change.
				wait = s.scanPaths(p.paths, sink)
			}
			if wait > 0 {
				debounce.Reset(wait)
			}
		}
	}
}

// pending is what events asked to be reread.
type pending struct {
	full  bool                // the whole tree (see the package doc)
	paths map[string]struct{} // else these files
}

// readEvents notes what inotify events name and wakes Run.
func (s *Source) readEvents(f *os.File, events chan<- struct{}) {
	buf := make([]byte, 64*1024)
	for {
		n, err := f.Read(buf)
		if err != nil {
			return
		}
		s.pendMu.Lock()
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			end := min(n, off+unix.SizeofInotifyEvent+int(ev.Len))
			name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:end]), "\x00")
			off = end
			dir, watched := s.wds[ev.Wd]
			if ev.Mask&(unix.IN_Q_OVERFLOW|unix.IN_ISDIR|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_IGNORED) != 0 ||
				!watched || name == "" || strings.HasPrefix(name, "..") {
				// ".." names are a mounted ConfigMap's swap of its ..data
				// link: every file under it may have changed.
				s.pend.full = true
				continue
			}
			if strings.HasPrefix(name, ".") {
				// A hidden file is never read (an editor's swap file, or
				// the temporary file a save renames over its target,
				// whose rename names the target too).
				continue
			}
			if s.pend.paths == nil {
				s.pend.paths = map[string]struct{}{}
			}
			s.pend.paths[filepath.Join(dir, name)] = struct{}{}
		}
		s.pendMu.Unlock()
		select {
		case events <- struct{}{}:
		default:
		}
	}
}

// scanPaths is scan for the files events named (and those still within
// their grace after going missing): it rereads those that changed and
// removes those gone for longer than the grace, returning how long until
// the next grace ends.
func (s *Source) scanPaths(paths map[string]struct{}, sink config.Sink) (wait time.Duration) {
	check := make([]string, 0, len(paths)+len(s.missing))
	for p := range paths {
		check = append(check, p)
	}
	for p := range s.missing {
		if _, ok := paths[p]; !ok {
			check = append(check, p)
		}
	}
	slices.Sort(check)
	now := time.Now()
	for _, path := range check {
		if !isManifest(path) {
			continue
		}
		if s.readFile(path, sink) {
			delete(s.missing, path)
			continue
		}
		if _, known := s.files[path]; !known {
			delete(s.missing, path)
			continue
		}
		wait = s.gone(path, now, wait, sink)
	}
	return wait
}

// gone handles a known file found missing: within its grace (counted
// from when it was first found missing) it is kept, and wait becomes the
// nearest end of a grace; after it, its objects are removed. It returns
// the new wait.
func (s *Source) gone(path string, now time.Time, wait time.Duration, sink config.Sink) time.Duration {
	since, ok := s.missing[path]
	if !ok {
		since = now
		s.missing[path] = now
	}
	if left := s.opts.DeleteGrace - now.Sub(since); left > 0 {
		if wait == 0 || left < wait {
			wait = left
		}
		return wait
	}
	delete(s.missing, path)
	delete(s.files, path)
	sink.Replace(path, nil, nil)
	return wait
}

// scan walks the tree and gives the sink every file that changed. It
// returns how long until a missing file's grace ends (0 if none is
// pending), when the tree must be scanned again.
func (s *Source) scan(sink config.Sink) (wait time.Duration) {
	seen := map[string]bool{}
	var unreadableDirs []string
	// The trailing separator makes WalkDir follow a root that is a symlink
	// to a directory; the paths it passes below the root are clean.
	root := filepath.Clean(s.dir) + string(filepath.Separator)
	walkErr := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == root {
				return err
			}
			s.opts.Log.Warn("cannot read config directory; keeping what it held", "dir", path, "error", err)
			unreadableDirs = append(unreadableDirs, path)
			return fs.SkipDir
		}
		if path != root && strings.HasPrefix(d.Name(), ".") {
			// Editors' swap files, and the ..data links of a mounted ConfigMap.
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if s.watch >= 0 {
				wd, err := unix.InotifyAddWatch(s.watch, path, watchMask)
				if err != nil {
					s.opts.Log.Warn("cannot watch config directory; its changes are seen at the next resync", "dir", path, "error", err)
				} else {
					s.pendMu.Lock()
					s.wds[int32(wd)] = path
					s.pendMu.Unlock()
				}
			}
			return nil
		}
		if !isManifest(path) {
			return nil
		}
		if s.readFile(path, sink) {
			seen[path] = true
		}
		return nil
	})
	if walkErr != nil {
		s.opts.Log.Warn("cannot read config directory; keeping the config it held", "dir", s.dir, "error", walkErr)
		return 0
	}
	now := time.Now()
	for path := range s.missing {
		if seen[path] {
			delete(s.missing, path)
		}
	}
	for path := range s.files {
		if seen[path] || under(path, unreadableDirs) {
			continue
		}
		wait = s.gone(path, now, wait, sink)
	}
	return wait
}

func isManifest(path string) bool {
	switch filepath.Ext(path) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

func under(path string, dirs []string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(path, d+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// readFile rereads path if it changed since the last scan and hands it to
// the sink; false if the file is gone (or is not a regular file).
func (s *Source) readFile(path string, sink config.Sink) bool {
	fi, err := os.Stat(path) // follows symlinks, as ConfigMap mounts need
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err == nil && !fi.Mode().IsRegular() {
		return false
	}
	prev, known := s.files[path]
	var st fileState
	if err == nil {
		st = stateOf(fi)
		if known && st.size == prev.size && st.mtime.Equal(prev.mtime) && st.ino == prev.ino && st.ctime == prev.ctime {
			return true
		}
	}
	var data []byte
	if err == nil {
		data, err = os.ReadFile(path)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err != nil {
		s.files[path] = fileState{}
		sink.Replace(path, nil, []error{&config.ObjectError{Pos: config.Position{File: path},
			Message: fmt.Sprintf("cannot read the file (%v); its previous objects stay in force", err), Unreadable: true}})
		return true
	}
	st.sum = sha256.Sum256(data)
	s.files[path] = st
	if known && st.sum == prev.sum {
		return true
	}
	objs, errs := config.Decode(data, path)
	if t := s.opts.Transform; t != nil {
		kept := objs[:0]
		for _, o := range objs {
			if o = t(o); o != nil {
				kept = append(kept, o)
			}
		}
		objs = kept
	}
	sink.Replace(path, objs, errs)
	return true
}

func stateOf(fi fs.FileInfo) fileState {
	st := fileState{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
		st.ctime = sys.Ctim
	}
	return st
}

// Interface guard.
var _ config.Source = (*Source)(nil)
