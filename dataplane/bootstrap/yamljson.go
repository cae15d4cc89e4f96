package bootstrap

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// origin is where one line of the generated JSON came from.
type origin struct {
	path string // field path, snake_case: static_resources.clusters[0].name
	line int    // line in the source file
}

// jsonDoc is YAML rewritten as JSON with one member or element per line, so
// that a line number in a protojson error leads back to the YAML source.
type jsonDoc struct {
	buf   bytes.Buffer
	lines []origin       // lines[i] is output line i+1
	paths map[string]int // field path → source line
}

// yamlToJSON converts a parsed YAML (or JSON) document.
func yamlToJSON(root *yaml.Node) (*jsonDoc, error) {
	d := &jsonDoc{paths: map[string]int{}}
	d.lines = append(d.lines, origin{line: root.Line})
	if err := d.value(root, "", 0); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *jsonDoc) newline(path string, line int) {
	d.buf.WriteByte('\n')
	d.lines = append(d.lines, origin{path: path, line: line})
	if _, ok := d.paths[path]; !ok {
		d.paths[path] = line
	}
}

// origin returns where output line n (1-based) came from.
func (d *jsonDoc) origin(n int) origin {
	if n < 1 || n > len(d.lines) {
		return origin{}
	}
	return d.lines[n-1]
}

// lineOf finds the source line of path or of its closest ancestor present
// in the source (a missing required field is reported at its parent).
func (d *jsonDoc) lineOf(path string) int {
	for p := path; p != ""; {
		if l, ok := d.paths[p]; ok {
			return l
		}
		i := max(strings.LastIndexByte(p, '.'), strings.LastIndexByte(p, '['))
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

func (d *jsonDoc) value(n *yaml.Node, path string, depth int) error {
	if depth > 100 {
		return fmt.Errorf("line %d: %s: nesting too deep (an alias cycle?)", n.Line, path)
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			d.buf.WriteString("null")
			return nil
		}
		return d.value(n.Content[0], path, depth+1)
	case yaml.AliasNode:
		return d.value(n.Alias, path, depth+1)
	case yaml.MappingNode:
		pairs, err := mergedPairs(n)
		if err != nil {
			return err
		}
		d.buf.WriteByte('{')
		for i := 0; i < len(pairs); i += 2 {
			k, v := pairs[i], pairs[i+1]
			if k.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: %s: mapping keys must be strings", k.Line, path)
			}
			if i > 0 {
				d.buf.WriteByte(',')
			}
			child := joinPath(path, k.Value)
			d.newline(child, k.Line)
			writeString(&d.buf, k.Value)
			d.buf.WriteByte(':')
			if err := d.value(v, child, depth+1); err != nil {
				return err
			}
		}
		d.buf.WriteByte('}')
	case yaml.SequenceNode:
		d.buf.WriteByte('[')
		for i, e := range n.Content {
			if i > 0 {
				d.buf.WriteByte(',')
			}
			child := fmt.Sprintf("%s[%d]", path, i)
			d.newline(child, e.Line)
			if err := d.value(e, child, depth+1); err != nil {
				return err
			}
		}
		d.buf.WriteByte(']')
	case yaml.ScalarNode:
		return d.scalar(n, path)
	default:
		return fmt.Errorf("line %d: %s: unsupported YAML node", n.Line, path)
	}
	return nil
}

// scalar writes a scalar as YAML resolved it: numbers, booleans and null
// stay typed, everything else is a string (protojson takes durations,
// 64-bit integers and enums as strings).
func (d *jsonDoc) scalar(n *yaml.Node, path string) error {
	switch n.ShortTag() {
	case "!!null":
		d.buf.WriteString("null")
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return fmt.Errorf("line %d: %s: %v", n.Line, path, err)
		}
		d.buf.WriteString(strconv.FormatBool(b))
	case "!!int":
		var i int64
		if err := n.Decode(&i); err == nil {
			d.buf.WriteString(strconv.FormatInt(i, 10))
			return nil
		}
		var u uint64
		if err := n.Decode(&u); err != nil {
			return fmt.Errorf("line %d: %s: %v", n.Line, path, err)
		}
		d.buf.WriteString(strconv.FormatUint(u, 10))
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil {
			return fmt.Errorf("line %d: %s: %v", n.Line, path, err)
		}
		switch {
		case math.IsNaN(f):
			d.buf.WriteString(`"NaN"`)
		case math.IsInf(f, 1):
			d.buf.WriteString(`"Infinity"`)
		case math.IsInf(f, -1):
			d.buf.WriteString(`"-Infinity"`)
		default:
			d.buf.WriteString(strconv.FormatFloat(f, 'g', -1, 64))
		}
	default:
		writeString(&d.buf, n.Value)
	}
	return nil
}

// mergedPairs returns a mapping's key/value nodes with YAML merge keys
// (<<: *anchor) expanded; keys written in the mapping win over merged ones.
func mergedPairs(n *yaml.Node) ([]*yaml.Node, error) {
	var own, merged []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!merge" {
			own = append(own, k, v)
			continue
		}
		srcs := []*yaml.Node{v}
		if v.Kind == yaml.SequenceNode {
			srcs = v.Content
		}
		for _, s := range srcs {
			for s.Kind == yaml.AliasNode {
				s = s.Alias
			}
			if s.Kind != yaml.MappingNode {
				return nil, fmt.Errorf("line %d: merge key value must be a mapping", k.Line)
			}
			p, err := mergedPairs(s)
			if err != nil {
				return nil, err
			}
			merged = append(merged, p...)
		}
	}
	if len(merged) == 0 {
		return own, nil
	}
	seen := map[string]bool{}
	for i := 0; i < len(own); i += 2 {
		seen[own[i].Value] = true
	}
	out := own
	for i := 0; i < len(merged); i += 2 {
		if !seen[merged[i].Value] {
			seen[merged[i].Value] = true
			out = append(out, merged[i], merged[i+1])
		}
	}
	return out, nil
}

func writeString(b *bytes.Buffer, s string) {
	q, _ := json.Marshal(s) // a string always marshals
	b.Write(q)
}

// joinPath appends a key. Field names written in lowerCamelCase (which
// protojson also accepts) become snake_case, to match the proto names;
// map keys such as "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
// stay as written.
func joinPath(path, key string) string {
	if isFieldName(key) {
		key = snake(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// snake converts a Go or JSON field name (ConnectTimeout, connectTimeout,
// Http2ProtocolOptions) to its proto name (connect_timeout,
// http2_protocol_options). Names already in snake_case are unchanged.
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r >= 'A' && r <= 'Z' {
			if i > 0 && s[i-1] != '_' && s[i-1] != '[' {
				b.WriteByte('_')
			}
			b.WriteRune(r + 'a' - 'A')
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func isFieldName(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}
