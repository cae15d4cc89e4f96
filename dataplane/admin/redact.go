package admin

import (
	"sync"

	"github.com/cncf/xds/go/udpa/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// redacted replaces sensitive strings and bytes, as in Envoy's dumps.
const redacted = "[redacted]"

// sensitiveFields caches, per field, whether it carries
// (udpa.annotations.sensitive) = true.
var sensitiveFields sync.Map // protoreflect.FullName → bool

func isSensitive(fd protoreflect.FieldDescriptor) bool {
	if v, ok := sensitiveFields.Load(fd.FullName()); ok {
		return v.(bool)
	}
	s := false
	if opts := fd.Options(); opts != nil {
		s, _ = proto.GetExtension(opts, annotations.E_Sensitive).(bool)
	}
	sensitiveFields.Store(fd.FullName(), s)
	return s
}

// redact applies Envoy's MessageUtil::redact: inside a field marked
// sensitive (or any message below one) strings and bytes become
// "[redacted]" and other scalars are cleared; Any values are unpacked,
// redacted and packed again. It reports whether m changed.
func redact(m protoreflect.Message, sensitive bool) bool {
	if m.Descriptor().FullName() == "google.protobuf.Any" {
		return redactAny(m, sensitive)
	}
	changed := false
	var set []protoreflect.FieldDescriptor
	var clear []protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		s := sensitive || isSensitive(fd)
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					changed = redact(mv.Message(), s) || changed
					return true
				})
			} else if s {
				clear = append(clear, fd)
			}
		case fd.IsList():
			l := v.List()
			switch {
			case fd.Message() != nil:
				for i := 0; i < l.Len(); i++ {
					changed = redact(l.Get(i).Message(), s) || changed
				}
			case s && fd.Kind() == protoreflect.StringKind:
				for i := 0; i < l.Len(); i++ {
					l.Set(i, protoreflect.ValueOfString(redacted))
				}
				changed = true
			case s && fd.Kind() == protoreflect.BytesKind:
				for i := 0; i < l.Len(); i++ {
					l.Set(i, protoreflect.ValueOfBytes([]byte(redacted)))
				}
				changed = true
			case s:
				clear = append(clear, fd)
			}
		case fd.Message() != nil:
			changed = redact(v.Message(), s) || changed
		case s && (fd.Kind() == protoreflect.StringKind || fd.Kind() == protoreflect.BytesKind):
			set = append(set, fd)
		case s:
			clear = append(clear, fd)
		}
		return true
	})
	// Fields are replaced after Range: changing a message while ranging
	// over it is not defined.
	for _, fd := range set {
		if fd.Kind() == protoreflect.StringKind {
			m.Set(fd, protoreflect.ValueOfString(redacted))
		} else {
			m.Set(fd, protoreflect.ValueOfBytes([]byte(redacted)))
		}
	}
	for _, fd := range clear {
		m.Clear(fd)
	}
	return changed || len(set) > 0 || len(clear) > 0
}

// redactAny redacts inside an Any whose type is linked into the binary; an
// unknown type is left as it is, since its fields cannot be told apart.
func redactAny(m protoreflect.Message, sensitive bool) bool {
	a, ok := m.Interface().(*anypb.Any)
	if !ok {
		return false
	}
	inner, err := a.UnmarshalNew()
	if err != nil {
		return false
	}
	if !redact(inner.ProtoReflect(), sensitive) {
		return false
	}
	if err := anypb.MarshalFrom(a, inner, proto.MarshalOptions{Deterministic: true}); err != nil {
		return false
	}
	return true
}
