// Package bootstrap owns reading an Envoy v3 bootstrap as `envoy -c` takes
// it (YAML or JSON, typed_config Anys resolved through the types registered
// by xdstypes, unknown fields refused, proto validation rules enforced) and
// the few questions the proxy asks of it: where the ADS server is, whether
// it speaks delta, which node to announce.
//
// Errors name the file, the YAML line and the field path:
//
//	front.yaml:37: static_resources.clusters[0].connect_timeout: invalid google.protobuf.Duration value "fast"
package bootstrap

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"gopkg.in/yaml.v3"

	// Register every message a typed_config may name.
	_ "github.com/skiff-mesh/skiff/dataplane/xdstypes"
)

// Load reads and parses the bootstrap file at path.
func Load(path string) (*bootstrapv3.Bootstrap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return Parse(data, path)
}

// Parse parses a bootstrap in YAML or JSON; name is the file name used in
// errors.
func Parse(data []byte, name string) (*bootstrapv3.Bootstrap, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			return nil, fmt.Errorf("%s:%s: %s", name, m[1], msg[len(m[0]):])
		}
		return nil, fmt.Errorf("%s: %s", name, msg)
	}
	if root.Kind == 0 || (root.Kind == yaml.DocumentNode && len(root.Content) == 0) {
		return nil, fmt.Errorf("%s: empty bootstrap", name)
	}
	if top := root.Content[0]; top.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: the bootstrap must be a mapping", name, top.Line)
	}
	doc, err := yamlToJSON(&root)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(doc.buf.Bytes(), b); err != nil {
		return nil, jsonError(name, doc, err)
	}
	var errs []error
	for _, fe := range validate(b) {
		loc := name
		if l := doc.lineOf(fe.path); l > 0 {
			loc = name + ":" + strconv.Itoa(l)
		}
		errs = append(errs, fmt.Errorf("%s: %s: %s", loc, fe.path, fe.reason))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return b, nil
}

var yamlLine = regexp.MustCompile(`^line (\d+): `)

// protojson reports positions as "(line L:C)" in the JSON it was given;
// its message format is deliberately unstable, so only that part is relied on.
var protojsonPos = regexp.MustCompile(`^proto:[\s\x{00a0}]*(?:syntax error[\s\x{00a0}]*)?\(line (\d+):\d+\):[\s\x{00a0}]*`)

func jsonError(name string, doc *jsonDoc, err error) error {
	msg := err.Error()
	m := protojsonPos.FindStringSubmatch(msg)
	if m == nil {
		return fmt.Errorf("%s: %s", name, strings.TrimSpace(strings.TrimPrefix(msg, "proto:")))
	}
	n, _ := strconv.Atoi(m[1])
	o := doc.origin(n)
	rest := msg[len(m[0]):]
	switch {
	case o.line > 0 && o.path != "":
		return fmt.Errorf("%s:%d: %s: %s", name, o.line, o.path, rest)
	case o.line > 0:
		return fmt.Errorf("%s:%d: %s", name, o.line, rest)
	}
	return fmt.Errorf("%s: %s", name, rest)
}

type fieldError struct {
	path, reason string
}

// validate runs protoc-gen-validate on b and, since those rules stop at an
// Any, on every message held in a typed_config too.
func validate(b *bootstrapv3.Bootstrap) []fieldError {
	var out []fieldError
	flattenPGV(b.ValidateAll(), "", &out)
	walkAnys(b.ProtoReflect(), "", &out)
	return out
}

// pgvError is the shape of every protoc-gen-validate error.
type pgvError interface {
	Field() string
	Reason() string
	Cause() error
}

// flattenPGV turns a nest of PGV errors into one field path per violation.
func flattenPGV(err error, prefix string, out *[]fieldError) {
	if err == nil {
		return
	}
	if m, ok := err.(interface{ AllErrors() []error }); ok {
		for _, e := range m.AllErrors() {
			flattenPGV(e, prefix, out)
		}
		return
	}
	if v, ok := err.(pgvError); ok {
		p := prefix
		if f := pgvField(v.Field()); f != "" {
			if p != "" && !strings.HasPrefix(f, "[") {
				p += "."
			}
			p += f
		}
		if c := v.Cause(); c != nil {
			flattenPGV(c, p, out)
			return
		}
		*out = append(*out, fieldError{path: p, reason: v.Reason()})
		return
	}
	*out = append(*out, fieldError{path: prefix, reason: err.Error()})
}

// walkAnys validates the message inside every Any under m.
func walkAnys(m protoreflect.Message, path string, out *[]fieldError) {
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			*out = append(*out, fieldError{path: path, reason: err.Error()})
			return
		}
		if v, ok := inner.(interface{ ValidateAll() error }); ok {
			flattenPGV(v.ValidateAll(), path, out)
		}
		walkAnys(inner.ProtoReflect(), path, out)
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			return true
		}
		p := string(fd.Name())
		if path != "" {
			p = path + "." + p
		}
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				walkAnys(l.Get(i).Message(), fmt.Sprintf("%s[%d]", p, i), out)
			}
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					walkAnys(mv.Message(), p+"."+k.String(), out)
					return true
				})
			}
		default:
			walkAnys(v.Message(), p, out)
		}
		return true
	})
}

// pgvField converts a PGV field ("Clusters[0]", "FilterMetadata[key]") to
// its proto name, leaving any index or map key as it is.
func pgvField(f string) string {
	if i := strings.IndexByte(f, '['); i >= 0 {
		return snake(f[:i]) + f[i:]
	}
	return snake(f)
}
