package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"gopkg.in/yaml.v3"
)

// The decoders Skiff relies on (protojson, Kubernetes' strict JSON) read
// JSON and report errors by byte offset or line. To turn those into the
// user's YAML line and a field path, a YAML node tree is written as JSON
// with every key and every list element on a line of its own, and each JSON
// line remembers the path and YAML line it came from.

// lineRef is where one line of generated JSON came from.
type lineRef struct {
	path string // field path from the object's root ("spec.http[0].route")
	line int    // line in the YAML file
}

// nodeError is a problem found while converting YAML to JSON.
type nodeError struct {
	path string
	line int
	msg  string
}

func (e *nodeError) Error() string { return e.msg }

// maxJSONSize bounds the JSON one document may expand to, so a file of
// nested aliases ("billion laughs") cannot exhaust memory.
const maxJSONSize = 64 << 20

type jsonWriter struct {
	buf   bytes.Buffer
	lines []lineRef      // lines[i] describes JSON line i+1
	paths map[string]int // every field path seen → its YAML line; nil if not wanted
}

// toJSON writes n (a mapping, sequence or scalar) as JSON. Paths start at
// prefix. If paths is non-nil, every path met is recorded in it.
func toJSON(n *yaml.Node, prefix string, paths map[string]int) (*jsonWriter, error) {
	w := &jsonWriter{paths: paths}
	w.lines = append(w.lines, lineRef{prefix, n.Line})
	if err := w.value(n, prefix, 0); err != nil {
		return nil, err
	}
	return w, nil
}

// newline starts a JSON line that stands for path at YAML line line.
func (w *jsonWriter) newline(path string, line int) {
	w.buf.WriteByte('\n')
	w.lines = append(w.lines, lineRef{path, line})
}

// at returns where the JSON byte offset off came from.
func (w *jsonWriter) at(off int64) lineRef {
	if off > int64(w.buf.Len()) {
		off = int64(w.buf.Len())
	}
	n := bytes.Count(w.buf.Bytes()[:off], []byte{'\n'})
	return w.lines[n]
}

// atLine returns where JSON line l (1-based) came from.
func (w *jsonWriter) atLine(l int) lineRef {
	if l < 1 {
		l = 1
	}
	if l > len(w.lines) {
		l = len(w.lines)
	}
	return w.lines[l-1]
}

func (w *jsonWriter) value(n *yaml.Node, path string, depth int) error {
	if depth > 1000 {
		return &nodeError{path, n.Line, "nested too deeply"}
	}
	if w.buf.Len() > maxJSONSize {
		return &nodeError{path, n.Line, fmt.Sprintf("expands to more than %d MiB of JSON (aliases nested too deeply?)", maxJSONSize>>20)}
	}
	if w.paths != nil {
		if _, ok := w.paths[path]; !ok {
			w.paths[path] = n.Line
		}
	}
	switch n.Kind {
	case yaml.AliasNode:
		return w.value(n.Alias, path, depth+1)
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			w.buf.WriteString("null")
			return nil
		}
		return w.value(n.Content[0], path, depth+1)
	case yaml.MappingNode:
		w.buf.WriteByte('{')
		seen := make(map[string]int, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return &nodeError{path, k.Line, "a mapping key must be a plain value, not a list or mapping"}
			}
			if k.ShortTag() == "!!merge" {
				return &nodeError{path, k.Line, "merge keys (<<) are not supported; write the fields out"}
			}
			child := k.Value
			if path != "" {
				child = path + "." + k.Value
			}
			if first, dup := seen[k.Value]; dup {
				return &nodeError{child, k.Line, fmt.Sprintf("field %q is set twice (first at line %d); keep one", k.Value, first)}
			}
			seen[k.Value] = k.Line
			if w.paths != nil {
				if _, ok := w.paths[child]; !ok {
					w.paths[child] = k.Line // a field's line is its key's, not its value's
				}
			}
			if i > 0 {
				w.buf.WriteByte(',')
			}
			w.newline(child, k.Line)
			key, _ := json.Marshal(k.Value)
			w.buf.Write(key)
			w.buf.WriteByte(':')
			if err := w.value(v, child, depth+1); err != nil {
				return err
			}
		}
		if len(n.Content) > 0 {
			w.newline(path, n.Line)
		}
		w.buf.WriteByte('}')
		return nil
	case yaml.SequenceNode:
		w.buf.WriteByte('[')
		for i, e := range n.Content {
			if i > 0 {
				w.buf.WriteByte(',')
			}
			child := path + "[" + strconv.Itoa(i) + "]"
			w.newline(child, e.Line)
			if err := w.value(e, child, depth+1); err != nil {
				return err
			}
		}
		if len(n.Content) > 0 {
			w.newline(path, n.Line)
		}
		w.buf.WriteByte(']')
		return nil
	case yaml.ScalarNode:
		return w.scalar(n, path)
	}
	return &nodeError{path, n.Line, "unexpected YAML node"}
}

// scalar writes a YAML scalar as the JSON value its resolved tag says.
func (w *jsonWriter) scalar(n *yaml.Node, path string) error {
	switch n.ShortTag() {
	case "!!null":
		w.buf.WriteString("null")
		return nil
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return &nodeError{path, n.Line, err.Error()}
		}
		w.buf.WriteString(strconv.FormatBool(b))
		return nil
	case "!!int":
		var i int64
		if err := n.Decode(&i); err == nil {
			w.buf.WriteString(strconv.FormatInt(i, 10))
			return nil
		}
		var u uint64
		if err := n.Decode(&u); err != nil {
			return &nodeError{path, n.Line, fmt.Sprintf("number %s is out of range", n.Value)}
		}
		w.buf.WriteString(strconv.FormatUint(u, 10))
		return nil
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil {
			return &nodeError{path, n.Line, err.Error()}
		}
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return &nodeError{path, n.Line, fmt.Sprintf("%s is not a finite number", n.Value)}
		}
		w.buf.WriteString(strconv.FormatFloat(f, 'g', -1, 64))
		return nil
	}
	// Strings, timestamps, binary and custom tags all reach the decoders
	// as the text the user wrote.
	s, _ := json.Marshal(n.Value)
	w.buf.Write(s)
	return nil
}
