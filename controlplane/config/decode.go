package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
)

// ObjectError is one problem met reading or validating config: where it is
// (file and line, object, field path) and what is wrong.
type ObjectError struct {
	// Pos is the offending field's line when known, else the document's.
	Pos Position
	// Key is the object the error is about; Key.Name is empty when the
	// document could not be read far enough to know it.
	Key Key
	// Path is the field path from the object's root ("spec.http[0].route").
	Path string
	// Message says what is wrong and, where it helps, what to do.
	Message string
	// Warning marks a finding that does not reject the object.
	Warning bool
	// Unreadable marks an error that stopped the whole origin (file) from
	// being read, such as a YAML syntax error: the store then keeps every
	// object the origin held before.
	Unreadable bool
}

// Error renders "file:line: Kind namespace/name: path: message", leaving out
// the parts not known.
func (e ObjectError) Error() string {
	var b strings.Builder
	if p := e.Pos.String(); p != "" {
		b.WriteString(p)
		b.WriteString(": ")
	}
	if e.Warning {
		b.WriteString("warning: ")
	}
	if e.Key.Name != "" {
		b.WriteString(e.Key.Kind.Kind)
		b.WriteByte(' ')
		if e.Key.Namespace != "" {
			b.WriteString(e.Key.Namespace)
			b.WriteByte('/')
		}
		b.WriteString(e.Key.Name)
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	return b.String()
}

// DefaultNamespace is the namespace of a namespaced object that names none.
const DefaultNamespace = "default"

// Decode reads every object in data, a stream of YAML documents (or JSON,
// which YAML includes) separated by "---", whose text came from file (used
// in positions and messages). Documents of `kind: List` contribute their
// items. Each object gets Source (file and its first line), a namespace
// ("default" when a namespaced kind names none) and, as ResourceVersion, a
// hash of its content, so a push can be traced to what the user wrote.
//
// Every error is an *ObjectError. A document with an error yields no object
// and does not stop the others; a YAML syntax error stops reading at that
// point and is marked Unreadable. Kinds Skiff does not read are errors
// listing the supported kinds, except the Kubernetes kinds in IgnoredKinds,
// which are skipped.
func Decode(data []byte, file string) ([]*Object, []error) {
	var objs []*Object
	var errs []error
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, syntaxError(file, err))
			break
		}
		if len(doc.Content) == 0 {
			continue // a document holding only comments
		}
		d := &docDecoder{file: file}
		d.document(doc.Content[0])
		objs = append(objs, d.objs...)
		errs = append(errs, d.errs...)
	}
	return objs, errs
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parserProblems are yaml.v3's parser (not scanner) messages: for those it
// reports the 0-based line of where the construct began, so one is added.
var parserProblems = map[string]bool{
	"did not find expected ',' or ']'": true, "did not find expected ',' or '}'": true,
	"did not find expected '-' indicator": true, "did not find expected <document start>": true,
	"did not find expected <stream-start>": true, "did not find expected key": true,
	"did not find expected node content": true, "found duplicate %TAG directive": true,
	"found duplicate %YAML directive": true, "found incompatible YAML document": true,
	"found undefined tag handle": true,
}

func syntaxError(file string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if parserProblems[msg] {
		line++
	}
	return &ObjectError{Pos: Position{file, line}, Message: "YAML syntax error: " + msg, Unreadable: true}
}

// docDecoder decodes one document (or a List's items) of one file.
type docDecoder struct {
	file string
	objs []*Object
	errs []error
}

// fail records an error about the object key at path and line.
func (d *docDecoder) fail(key Key, path string, line int, format string, args ...any) {
	d.errs = append(d.errs, &ObjectError{Pos: Position{d.file, line}, Key: key, Path: path, Message: fmt.Sprintf(format, args...)})
}

// field returns the value node of key in mapping m, or nil.
func field(m *yaml.Node, key string) *yaml.Node {
	if k := fieldKey(m, key); k != nil {
		return k.v
	}
	return nil
}

type keyValue struct{ k, v *yaml.Node }

// fieldKey returns the key and value nodes of key in mapping m, or nil.
func fieldKey(m *yaml.Node, key string) *keyValue {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return &keyValue{m.Content[i], m.Content[i+1]}
		}
	}
	return nil
}

// scalarField returns the text of a scalar field of m, or "".
func scalarField(m *yaml.Node, key string) string {
	if m == nil || m.Kind != yaml.MappingNode {
		return ""
	}
	if v := field(m, key); v != nil && v.Kind == yaml.ScalarNode && v.ShortTag() != "!!null" {
		return v.Value
	}
	return ""
}

func (d *docDecoder) document(n *yaml.Node) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
			return // an empty document between two "---"
		}
		d.fail(Key{}, "", n.Line, "document is not an object: a Kubernetes-style document is a mapping with apiVersion, kind and metadata")
		return
	}
	apiVersion, kind := scalarField(n, "apiVersion"), scalarField(n, "kind")
	switch {
	case apiVersion == "" && kind == "":
		d.fail(Key{}, "", n.Line, "document has no apiVersion and no kind; every document needs both (e.g. apiVersion: networking.istio.io/v1, kind: VirtualService)")
		return
	case apiVersion == "":
		d.fail(Key{}, "apiVersion", n.Line, "missing; a %s needs its apiVersion", kind)
		return
	case kind == "":
		d.fail(Key{}, "kind", n.Line, "missing; apiVersion %s needs a kind", apiVersion)
		return
	}
	if kind == "List" && apiVersion == "v1" {
		d.list(n)
		return
	}
	ki, ignored := lookupKind(apiVersion, kind)
	if ignored {
		return
	}
	if ki == nil {
		line := n.Line
		if k := field(n, "kind"); k != nil {
			line = k.Line
		}
		if vs := knownVersions(apiVersion, kind); vs != nil {
			d.fail(Key{}, "apiVersion", line, "%s is not served at %s; use one of the versions %s", kind, apiVersion, strings.Join(vs, ", "))
			return
		}
		d.fail(Key{}, "", line, "unknown kind %q (apiVersion %q); Skiff reads %s", kind, apiVersion, supportedList())
		return
	}
	meta := field(n, "metadata")
	key := Key{Kind: ki.kind, Namespace: scalarField(meta, "namespace"), Name: scalarField(meta, "name")}
	if key.Namespace == "" && ki.namespaced {
		key.Namespace = DefaultNamespace
	}
	if o := d.object(n, ki, key); o != nil {
		d.objs = append(d.objs, o)
	}
}

func (d *docDecoder) list(n *yaml.Node) {
	items := field(n, "items")
	if items == nil || items.ShortTag() == "!!null" {
		return
	}
	if items.Kind != yaml.SequenceNode {
		d.fail(Key{}, "items", items.Line, "must be a list of objects")
		return
	}
	for _, it := range items.Content {
		d.document(it)
	}
}

// object decodes one document of a known kind; nil when it has errors.
func (d *docDecoder) object(n *yaml.Node, ki *kindInfo, key Key) *Object {
	paths := make(map[string]int)
	whole, err := toJSON(n, "", paths)
	if err != nil {
		var ne *nodeError
		errors.As(err, &ne)
		d.fail(key, ne.path, ne.line, "%s", ne.msg)
		return nil
	}
	sum := sha256.Sum256(whole.buf.Bytes())
	o := &Object{Kind: ki.kind, Source: Position{d.file, n.Line}, lines: paths}

	if ki.family == kubeFamily {
		obj := ki.newSpec()
		if !d.strict(key, whole, obj) {
			return nil
		}
		m := obj.(metav1.ObjectMetaAccessor).GetObjectMeta().(*metav1.ObjectMeta)
		if m.Namespace == "" && ki.namespaced {
			m.Namespace = DefaultNamespace
		}
		m.ResourceVersion = hex.EncodeToString(sum[:8])
		o.Meta = *m
		o.Spec = obj
		return d.named(o, n)
	}

	ok := true
	for i := 0; i+1 < len(n.Content); i += 2 {
		switch k := n.Content[i]; k.Value {
		case "apiVersion", "kind", "metadata", "spec", "status":
		default:
			d.fail(key, k.Value, k.Line, "unknown field %q; a %s has apiVersion, kind, metadata, spec and status", k.Value, ki.kind.Kind)
			ok = false
		}
	}
	if m := field(n, "metadata"); m != nil {
		ok = d.sub(key, m, "metadata", &o.Meta, nil) && ok
	}
	if ki.namespaced && o.Meta.Namespace == "" {
		o.Meta.Namespace = DefaultNamespace
	}
	o.Meta.ResourceVersion = hex.EncodeToString(sum[:8])
	spec := ki.newSpec()
	if s := field(n, "spec"); s != nil {
		ok = d.sub(key, s, "spec", spec, ki) && ok
	}
	o.Spec = spec
	if s := field(n, "status"); s != nil && ki.newStatus != nil {
		status := ki.newStatus()
		ok = d.sub(key, s, "status", status, ki) && ok
		o.Status = status
	}
	if !ok {
		return nil
	}
	return d.named(o, n)
}

// named checks the object has a name; nil if not.
func (d *docDecoder) named(o *Object, n *yaml.Node) *Object {
	if o.Meta.Name == "" {
		line := n.Line
		if m := fieldKey(n, "metadata"); m != nil {
			line = m.k.Line
		}
		d.fail(Key{Kind: o.Kind}, "metadata.name", line, "missing; every %s needs a name", o.Kind.Kind)
		return nil
	}
	return o
}

// sub decodes the subtree n (at path) into v: with protojson when ki is an
// Istio kind and v its spec, else with Kubernetes' strict JSON rules.
func (d *docDecoder) sub(key Key, n *yaml.Node, path string, v any, ki *kindInfo) bool {
	if n.ShortTag() == "!!null" {
		return true
	}
	if ki != nil && ki.family == istioFamily && path == "spec" {
		normalizeDurations(n, v.(proto.Message).ProtoReflect().Descriptor())
	}
	w, err := toJSON(n, path, nil)
	if err != nil {
		var ne *nodeError
		errors.As(err, &ne)
		d.fail(key, ne.path, ne.line, "%s", ne.msg)
		return false
	}
	if ki != nil && ki.family == istioFamily && path == "spec" {
		return d.proto(key, w, v.(proto.Message))
	}
	return d.strict(key, w, v)
}

// protojsonErrRE matches protojson's "(line L:C): message"; protobuf
// randomly puts a non-breaking space after "proto:" so that nobody matches
// its messages exactly, hence the loose prefix.
var protojsonErrRE = regexp.MustCompile(`^proto:\s*(?:syntax error )?\(line (\d+):(\d+)\): (.*)$`)

func (d *docDecoder) proto(key Key, w *jsonWriter, m proto.Message) bool {
	err := protojson.Unmarshal(w.buf.Bytes(), m)
	if err == nil {
		return true
	}
	msg := strings.ReplaceAll(err.Error(), "\u00a0", " ")
	ref := w.atLine(1)
	if g := protojsonErrRE.FindStringSubmatch(msg); g != nil {
		l, _ := strconv.Atoi(g[1])
		ref = w.atLine(l)
		msg = g[3]
	} else {
		msg = strings.TrimSpace(strings.TrimPrefix(msg, "proto:"))
	}
	d.fail(key, ref.path, ref.line, "%s", msg)
	return false
}

// strict decodes w into v as the Kubernetes API server does: field names
// case-sensitive, unknown and duplicate fields refused.
func (d *docDecoder) strict(key Key, w *jsonWriter, v any) bool {
	strictErrs, err := kjson.UnmarshalStrict(w.buf.Bytes(), v)
	if err != nil {
		ref, msg := w.atLine(1), err.Error()
		if te := typeError(err); te != nil {
			ref = w.at(te.offset)
			msg = fmt.Sprintf("wrong type: got %s, want %s", te.value, te.typ)
		} else if isSyntax, off := kjson.SyntaxErrorOffset(err); isSyntax {
			ref = w.at(off)
		}
		d.fail(key, ref.path, ref.line, "%s", strings.TrimPrefix(msg, "json: "))
		return false
	}
	prefix := w.atLine(1).path
	for _, e := range strictErrs {
		var fe kjson.FieldError
		if !errors.As(e, &fe) {
			d.fail(key, prefix, w.atLine(1).line, "%s", e.Error())
			continue
		}
		p := fe.FieldPath()
		if prefix != "" {
			p = prefix + "." + p
		}
		line := w.atLine(1).line
		for _, r := range w.lines {
			if r.path == p {
				line = r.line
				break
			}
		}
		what := "unknown field"
		if strings.HasPrefix(e.Error(), "duplicate field") {
			what = "duplicate field"
		}
		d.fail(key, p, line, "%s %q", what, lastSegment(p))
	}
	return len(strictErrs) == 0
}

// lastSegment returns the field name at the end of a path ("c" of "a.b[0].c").
func lastSegment(p string) string {
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[i+1:]
	}
	return p
}

type jsonTypeError struct {
	value  string
	typ    string
	offset int64
}

// typeError reads sigs.k8s.io/json's UnmarshalTypeError, an internal type
// whose fields match encoding/json's, by reflection.
func typeError(err error) *jsonTypeError {
	v := reflect.ValueOf(err)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct || v.Elem().Type().Name() != "UnmarshalTypeError" {
		return nil
	}
	s := v.Elem()
	val, typ, off := s.FieldByName("Value"), s.FieldByName("Type"), s.FieldByName("Offset")
	if !val.IsValid() || !typ.IsValid() || !off.IsValid() {
		return nil
	}
	te := &jsonTypeError{value: val.String(), offset: off.Int()}
	if t, ok := typ.Interface().(reflect.Type); ok && t != nil {
		te.typ = t.String()
	}
	return te
}

// FieldLine returns the YAML line of the field at path (as validators and
// decoders write it: "spec.http[0].route[1].weight"), or of its nearest
// enclosing field the file has, or 0 when the object did not come from a
// file.
func (o *Object) FieldLine(path string) int {
	if o.lines == nil {
		return 0
	}
	for p := path; p != ""; {
		if l, ok := o.lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return o.Source.Line
}
