package analyze

import (
	"github.com/skiff-mesh/skiff/controlplane/config"
)

// SchemaMessages turns what decoding and validation found (the store's
// Errors) into messages, as istioctl analyze reports invalid objects:
// SchemaValidationError (IST0106) for what rejects an object,
// SchemaWarning (IST0133) for warnings.
func SchemaMessages(errs []config.ObjectError) []Message {
	out := make([]Message, 0, len(errs))
	for _, e := range errs {
		t, text := SchemaValidationError, "Schema validation error: "
		if e.Warning {
			t, text = SchemaWarning, "Schema validation warning: "
		}
		if e.Path != "" {
			text += e.Path + ": "
		}
		out = append(out, Message{Type: t, Object: e.Key, Pos: e.Pos, Path: e.Path, Text: text + e.Message, Fix: fixFor(e)})
	}
	return out
}

func fixFor(e config.ObjectError) string {
	switch {
	case e.Warning && e.Path != "":
		return "Review " + e.Path + "; the object is applied, but may not do what you expect."
	case e.Warning:
		return "Review the object; it is applied, but may not do what you expect."
	case e.Path == "":
		return "Correct the document as the message says; it is not applied until it is valid."
	}
	return "Correct " + e.Path + " as the message says; the object is not applied until it is valid."
}
