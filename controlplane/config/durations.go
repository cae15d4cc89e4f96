package config

import (
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"gopkg.in/yaml.v3"
)

// normalizeDurations rewrites duration fields written the way Istio's docs
// and users write them ("5m", "30ms", "1h30m") into protobuf's JSON form
// ("300s"), which is all protojson accepts. Istio's own decoder accepts
// both, so the same YAML must load here. The node's line is kept for error
// positions.
func normalizeDurations(n *yaml.Node, md protoreflect.MessageDescriptor) {
	if n == nil || n.Kind != yaml.MappingNode {
		return
	}
	fields := md.Fields()
	for i := 0; i+1 < len(n.Content); i += 2 {
		name, v := n.Content[i].Value, n.Content[i+1]
		fd := fields.ByJSONName(name)
		if fd == nil {
			fd = fields.ByTextName(name)
		}
		if fd == nil {
			continue // protojson reports unknown fields
		}
		switch {
		case fd.IsMap():
			if vd := fd.MapValue(); vd.Kind() == protoreflect.MessageKind && v.Kind == yaml.MappingNode {
				for j := 1; j < len(v.Content); j += 2 {
					normalizeValue(v.Content[j], vd.Message())
				}
			}
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			if fd.IsList() && v.Kind == yaml.SequenceNode {
				for _, e := range v.Content {
					normalizeValue(e, fd.Message())
				}
			} else {
				normalizeValue(v, fd.Message())
			}
		}
	}
}

func normalizeValue(v *yaml.Node, md protoreflect.MessageDescriptor) {
	if md.FullName() == "google.protobuf.Duration" {
		if v.Kind == yaml.ScalarNode {
			if s, ok := protoDuration(v.Value); ok {
				v.Value, v.Tag, v.Style = s, "!!str", 0
			}
		}
		return
	}
	normalizeDurations(v, md)
}

// protoDuration converts a Go duration string to protobuf JSON seconds; ok
// is false for values that are already seconds or are not durations (then
// protojson reports them as it sees fit).
func protoDuration(s string) (string, bool) {
	if strings.HasSuffix(s, "s") && !strings.HasSuffix(s, "ms") && !strings.HasSuffix(s, "us") &&
		!strings.HasSuffix(s, "ns") && !strings.HasSuffix(s, "µs") {
		if _, err := strconv.ParseFloat(strings.TrimSuffix(s, "s"), 64); err == nil {
			return "", false
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return "", false
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s", true
}
