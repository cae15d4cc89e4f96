package accesslog

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
)

const (
	fileLogType   = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
	stdoutLogType = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
	stderrLogType = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog"
)

// Logger is one compiled access_log entry: filter, format and output.
type Logger struct {
	filter filter // nil: log everything
	f      *Formatter
	w      *writer
}

// New compiles one AccessLog (envoy.access_loggers.file, .stdout or
// .stderr). Errors name the field below access_log[i].
func New(al *accesslogv3.AccessLog) (*Logger, error) {
	var flt filter
	if al.GetFilter() != nil {
		var err error
		if flt, err = compileFilter(al.GetFilter(), "filter"); err != nil {
			return nil, err
		}
	}
	tc := al.GetTypedConfig()
	var lf *corev3.SubstitutionFormatString
	var w *writer
	switch tc.GetTypeUrl() {
	case fileLogType:
		fl := &filev3.FileAccessLog{}
		if err := tc.UnmarshalTo(fl); err != nil {
			return nil, fmt.Errorf("typed_config: %w", err)
		}
		if fl.GetPath() == "" {
			return nil, errors.New("typed_config.path: must not be empty")
		}
		switch {
		case fl.GetLogFormat() != nil:
			lf = fl.GetLogFormat()
		case fl.GetFormat() != "":
			lf = &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormat{TextFormat: fl.GetFormat()}}
		case fl.GetJsonFormat() != nil:
			lf = &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: fl.GetJsonFormat()}}
		}
		var err error
		if w, err = fileWriter(fl.GetPath()); err != nil {
			return nil, fmt.Errorf("typed_config.path: %w", err)
		}
	case stdoutLogType:
		sl := &streamv3.StdoutAccessLog{}
		if err := tc.UnmarshalTo(sl); err != nil {
			return nil, fmt.Errorf("typed_config: %w", err)
		}
		lf = sl.GetLogFormat()
		w, _ = fileWriter("/dev/stdout")
	case stderrLogType:
		el := &streamv3.StderrAccessLog{}
		if err := tc.UnmarshalTo(el); err != nil {
			return nil, fmt.Errorf("typed_config: %w", err)
		}
		lf = el.GetLogFormat()
		w, _ = fileWriter("/dev/stderr")
	default:
		return nil, fmt.Errorf("typed_config: unsupported access logger %q (use envoy.access_loggers.file or envoy.access_loggers.stdout)", tc.GetTypeUrl())
	}
	f, err := NewFormatter(lf)
	if err != nil {
		return nil, fmt.Errorf("typed_config.log_format: %w", err)
	}
	return &Logger{filter: flt, f: f, w: w}, nil
}

// Log formats e and hands the line to the writer. It never blocks: when
// the writer is behind by a full queue the line is dropped and counted.
func (l *Logger) Log(e *Entry) {
	if l.filter != nil && !l.filter.match(e) {
		return
	}
	bp := bufPool.Get().(*[]byte)
	*bp = l.f.Append((*bp)[:0], e)
	select {
	case l.w.ch <- msg{b: bp}:
	default:
		l.w.dropped.Add(1)
		bufPool.Put(bp)
	}
}

// Flush waits until every line logged so far is written.
func (l *Logger) Flush() { l.w.flush() }

// Dropped is how many lines of this logger's output were dropped because
// the writer could not keep up.
func (l *Logger) Dropped() uint64 { return l.w.dropped.Load() }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// queueLen bounds the lines waiting for one output.
const queueLen = 4096

// writer owns one output file; its goroutine does the writes so a slow
// disk never holds a request.
type writer struct {
	ch      chan msg
	dropped atomic.Uint64
}

type msg struct {
	b   *[]byte
	ack chan struct{}
}

var (
	writersMu sync.Mutex
	writers   = map[string]*writer{}
)

// fileWriter returns the process-wide writer of path, opening the file in
// append mode on first use; loggers of several listeners share it.
func fileWriter(path string) (*writer, error) {
	writersMu.Lock()
	defer writersMu.Unlock()
	if w, ok := writers[path]; ok {
		return w, nil
	}
	var out io.Writer
	switch path {
	case "/dev/stdout":
		out = os.Stdout
	case "/dev/stderr":
		out = os.Stderr
	default:
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		out = f
	}
	w := &writer{ch: make(chan msg, queueLen)}
	writers[path] = w
	go w.run(out)
	return w, nil
}

func (w *writer) run(out io.Writer) {
	bw := bufio.NewWriterSize(out, 64<<10)
	for m := range w.ch {
		if m.b != nil {
			bw.Write(*m.b)
			bufPool.Put(m.b)
		}
		if m.ack != nil || len(w.ch) == 0 {
			bw.Flush()
		}
		if m.ack != nil {
			close(m.ack)
		}
	}
}

func (w *writer) flush() {
	ack := make(chan struct{})
	w.ch <- msg{ack: ack}
	<-ack
}
