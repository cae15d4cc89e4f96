package admin

import (
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
)

// levelNames are Envoy's log levels, lowest first.
var levelNames = []string{"trace", "debug", "info", "warning", "error", "critical", "off"}

// slogLevel maps an Envoy level name onto slog. trace and critical sit a
// step beyond slog's own ends; off is above anything a logger emits.
func slogLevel(name string) (slog.Level, bool) {
	switch name {
	case "trace":
		return slog.LevelDebug - 4, true
	case "debug":
		return slog.LevelDebug, true
	case "info":
		return slog.LevelInfo, true
	case "warning", "warn":
		return slog.LevelWarn, true
	case "error":
		return slog.LevelError, true
	case "critical":
		return slog.LevelError + 4, true
	case "off":
		return slog.LevelError + 8, true
	}
	return 0, false
}

func envoyLevelName(l slog.Level) string {
	switch {
	case l < slog.LevelDebug:
		return "trace"
	case l < slog.LevelInfo:
		return "debug"
	case l < slog.LevelWarn:
		return "info"
	case l < slog.LevelError:
		return "warning"
	case l < slog.LevelError+4:
		return "error"
	case l < slog.LevelError+8:
		return "critical"
	}
	return "off"
}

// serveLogging is POST /logging: ?level=L sets every logger, ?<name>=L one
// logger, ?paths=n1:L1,n2:L2 several; it then lists the active loggers.
func (s *Server) serveLogging(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	type change struct {
		v     *slog.LevelVar
		level slog.Level
	}
	var changes []change
	setOne := func(name, lvl string) error {
		l, ok := slogLevel(lvl)
		if !ok {
			return fmt.Errorf("logging: level %q for %q: want one of %s", lvl, name, strings.Join(levelNames, ", "))
		}
		v := s.o.Loggers[name]
		if v == nil {
			return fmt.Errorf("logging: unknown logger %q", name)
		}
		changes = append(changes, change{v, l})
		return nil
	}
	for key, vals := range q {
		var err error
		switch key {
		case "level":
			l, ok := slogLevel(vals[0])
			if !ok {
				err = fmt.Errorf("logging: level=%q: want one of %s", vals[0], strings.Join(levelNames, ", "))
				break
			}
			changes = append(changes, change{s.o.LogLevel, l})
			for _, v := range s.o.Loggers {
				changes = append(changes, change{v, l})
			}
		case "paths":
			for _, p := range strings.Split(vals[0], ",") {
				name, lvl, ok := strings.Cut(p, ":")
				if !ok {
					err = fmt.Errorf("logging: paths=%q: entry %q is not <logger>:<level>", vals[0], p)
					break
				}
				if err = setOne(name, lvl); err != nil {
					break
				}
			}
		default:
			err = setOne(key, vals[0])
		}
		if err != nil {
			// Nothing is applied unless the whole request is valid.
			textReply(w, http.StatusBadRequest, err.Error()+"\n")
			return
		}
	}
	for _, c := range changes {
		c.v.Set(c.level)
	}

	names := make([]string, 0, len(s.o.Loggers))
	for n := range s.o.Loggers {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("active loggers:\n")
	fmt.Fprintf(&b, "  default: %s\n", envoyLevelName(s.o.LogLevel.Level()))
	for _, n := range names {
		fmt.Fprintf(&b, "  %s: %s\n", n, envoyLevelName(s.o.Loggers[n].Level()))
	}
	textReply(w, http.StatusOK, b.String())
}
