package analyze

import (
	"fmt"
	"strings"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// Level is a message's severity, as istioctl names them.
type Level int

// The levels, least severe first.
const (
	Info Level = iota
	Warning
	Error
)

func (l Level) String() string {
	switch l {
	case Info:
		return "Info"
	case Warning:
		return "Warning"
	case Error:
		return "Error"
	}
	return fmt.Sprintf("Level(%d)", int(l))
}

// ParseLevel reads a level as istioctl's --failure-threshold and
// --output-threshold do: Info, Warning or Error, in any case.
func ParseLevel(s string) (Level, error) {
	for _, l := range []Level{Info, Warning, Error} {
		if strings.EqualFold(s, l.String()) {
			return l, nil
		}
	}
	return 0, fmt.Errorf("%q is not a level: use Info, Warning or Error", s)
}

// MessageType is one kind of finding, with Istio's code, name and level
// (istio.io/latest/docs/reference/config/analysis), so scripts and
// suppressions written for istioctl analyze keep working.
type MessageType struct {
	Code  string
	Name  string
	Level Level
}

// The message types Skiff's analyzers report.
var (
	ReferencedResourceNotFound                = &MessageType{"IST0101", "ReferencedResourceNotFound", Error}
	NamespaceNotInjected                      = &MessageType{"IST0102", "NamespaceNotInjected", Info}
	SchemaValidationError                     = &MessageType{"IST0106", "SchemaValidationError", Error}
	ConflictingMeshGatewayVirtualServiceHosts = &MessageType{"IST0109", "ConflictingMeshGatewayVirtualServiceHosts", Error}
	PortNameIsNotUnderNamingConvention        = &MessageType{"IST0118", "PortNameIsNotUnderNamingConvention", Info}
	NoMatchingWorkloadsFound                  = &MessageType{"IST0127", "NoMatchingWorkloadsFound", Warning}
	VirtualServiceUnreachableRule             = &MessageType{"IST0130", "VirtualServiceUnreachableRule", Warning}
	VirtualServiceIneffectiveMatch            = &MessageType{"IST0131", "VirtualServiceIneffectiveMatch", Info}
	VirtualServiceHostNotFoundInGateway       = &MessageType{"IST0132", "VirtualServiceHostNotFoundInGateway", Warning}
	SchemaWarning                             = &MessageType{"IST0133", "SchemaWarning", Warning}
	GatewayPortNotDefinedOnService            = &MessageType{"IST0162", "GatewayPortNotDefinedOnService", Warning}
	DestinationRuleSubsetNotSelectPods        = &MessageType{"IST0173", "DestinationRuleSubsetNotSelectPods", Error}
	UnknownDestinationRuleHost                = &MessageType{"IST0174", "UnknownDestinationRuleHost", Warning}
)

// MessageTypes lists every type above, by code.
func MessageTypes() []*MessageType {
	return []*MessageType{
		ReferencedResourceNotFound, NamespaceNotInjected, SchemaValidationError,
		ConflictingMeshGatewayVirtualServiceHosts, PortNameIsNotUnderNamingConvention,
		NoMatchingWorkloadsFound, VirtualServiceUnreachableRule, VirtualServiceIneffectiveMatch,
		VirtualServiceHostNotFoundInGateway, SchemaWarning, GatewayPortNotDefinedOnService,
		DestinationRuleSubsetNotSelectPods, UnknownDestinationRuleHost,
	}
}

// Message is one finding about one object.
type Message struct {
	Type *MessageType
	// Object is the object the finding is about; Key.Name is empty when
	// the document could not be read far enough to name it.
	Object config.Key
	// Pos is the file and line of the offending field (else of the
	// object's document); empty for objects that came from no file.
	Pos config.Position
	// Path is the offending field's path, "spec.gateways[0]", when known.
	Path string
	// Text is the finding, worded as Istio words it.
	Text string
	// Fix says what to change.
	Fix string
}

// Origin names the object as istioctl does: "VirtualService default/reviews".
func (m Message) Origin() string {
	if m.Object.Name == "" {
		return ""
	}
	if m.Object.Namespace == "" {
		return m.Object.Kind.Kind + " " + m.Object.Name
	}
	return m.Object.Kind.Kind + " " + m.Object.Namespace + "/" + m.Object.Name
}

// String renders the message as istioctl's log format does:
// `Error [IST0101] (VirtualService default/reviews bookinfo.yaml:12) Referenced gateway not found: "bookinfo-gateway"`.
func (m Message) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s [%s]", m.Type.Level, m.Type.Code)
	origin, pos := m.Origin(), m.Pos.String()
	switch {
	case origin != "" && pos != "":
		fmt.Fprintf(&b, " (%s %s)", origin, pos)
	case origin != "":
		fmt.Fprintf(&b, " (%s)", origin)
	case pos != "":
		fmt.Fprintf(&b, " (%s)", pos)
	}
	b.WriteByte(' ')
	b.WriteString(m.Text)
	return b.String()
}

// DocumentationURL is Istio's page for the message's code.
func (m Message) DocumentationURL() string {
	return "https://istio.io/latest/docs/reference/config/analysis/" + strings.ToLower(m.Type.Code) + "/"
}

// report builds a message about o at field path.
func report(t *MessageType, o *config.Object, path, fix, format string, args ...any) Message {
	pos := o.Source
	if path != "" {
		if l := o.FieldLine(path); l != 0 {
			pos.Line = l
		}
	}
	return Message{Type: t, Object: o.Key(), Pos: pos, Path: path, Text: fmt.Sprintf(format, args...), Fix: fix}
}
