// Package validation checks decoded config objects as strictly as Istio's
// admission webhook does, and across objects as `istioctl analyze` does
// (CheckReferences). It owns no decoding: it sees config.Object values whose
// Spec already holds the published Go type, and reports every problem with
// the field path it sits at, so the store can reject one object, keep the
// rest, and tell the user exactly what to change.
package validation

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// FieldError is one problem in one object, at one field path.
type FieldError struct {
	// Path is the field path from the object's root, e.g. "spec.http[0].route[1].weight".
	Path string
	// Message says what is wrong and what to do.
	Message string
	// Warning marks a finding that does not make the object invalid.
	Warning bool
}

// Error renders "path: message", or "warning: path: message" for a warning.
func (e *FieldError) Error() string {
	if e.Warning {
		return "warning: " + e.Path + ": " + e.Message
	}
	return e.Path + ": " + e.Message
}

// FieldPath and IsWarning let the store place and classify the error
// without parsing its text.
func (e *FieldError) FieldPath() string { return e.Path }

// IsWarning reports whether the finding leaves the object valid.
func (e *FieldError) IsWarning() bool { return e.Warning }

// Validate checks one object. The error lists every problem found
// (errors.Join of *FieldError), each naming the field path; warnings are
// included with Warning set, so use Split to tell whether to reject.
func Validate(o *config.Object) error {
	v := &collector{namespace: o.Meta.Namespace}
	v.meta(o)
	// Istio names a Gateway's listeners after it, so no dots.
	if o.Kind == config.Gateway && o.Meta.Name != "" && dnsSubdomain(o.Meta.Name) == "" && dnsLabel(o.Meta.Name) != "" {
		v.add("metadata.name", "%q is not a valid Gateway name; %s", o.Meta.Name, labelRule)
	}
	if fn, ok := validators[o.Kind]; ok {
		fn(v, o.Spec)
	}
	return v.join()
}

// Split separates the FieldErrors joined in err into errors (which make
// the object invalid) and warnings. Anything in err that is not a
// FieldError counts as an error with an empty path.
func Split(err error) (errs, warnings []*FieldError) {
	if err == nil {
		return nil, nil
	}
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	for _, e := range list {
		var fe *FieldError
		if !errors.As(e, &fe) {
			fe = &FieldError{Message: e.Error()}
		}
		if fe.Warning {
			warnings = append(warnings, fe)
		} else {
			errs = append(errs, fe)
		}
	}
	return errs, warnings
}

// validators maps each kind to the check of its Spec. A kind with no entry
// (Namespace, Secret, …) has nothing to check beyond its metadata.
var validators = map[config.Kind]func(*collector, any){}

// register adds the check for one kind; a Spec of another type than the one
// object.go documents for the kind is itself an error, not a panic.
func register[T any](k config.Kind, fn func(*collector, T)) {
	validators[k] = func(v *collector, spec any) {
		s, ok := spec.(T)
		if !ok || isNil(s) {
			var want T
			v.add("spec", "holds %T; a %s needs %T (the decoder produced the wrong type)", spec, k.Kind, want)
			return
		}
		fn(v, s)
	}
}

// isNil reports whether x is nil or a nil pointer.
func isNil(x any) bool {
	if x == nil {
		return true
	}
	rv := reflect.ValueOf(x)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}

// collector gathers FieldErrors in the order they are found.
type collector struct {
	list []error
	// namespace is the object's, for rules that compare with it.
	namespace string
}

func (v *collector) add(path, format string, args ...any) {
	v.list = append(v.list, &FieldError{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (v *collector) warn(path, format string, args ...any) {
	v.list = append(v.list, &FieldError{Path: path, Message: fmt.Sprintf(format, args...), Warning: true})
}

func (v *collector) join() error { return errors.Join(v.list...) }

// The Kubernetes name checks explain themselves with a regex; these say
// the rule in words.
const (
	labelRule     = "use at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit"
	subdomainRule = "use at most 253 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit"
)

// dnsLabel returns what is wrong with s as a DNS-1123 label, or "".
func dnsLabel(s string) string {
	if len(validation.IsDNS1123Label(s)) > 0 {
		return labelRule
	}
	return ""
}

// dnsSubdomain returns what is wrong with s as a DNS-1123 subdomain, or "".
func dnsSubdomain(s string) string {
	if len(validation.IsDNS1123Subdomain(s)) > 0 {
		return subdomainRule
	}
	return ""
}

func idx(path string, i int) string      { return path + "[" + strconv.Itoa(i) + "]" }
func key(path string, k string) string   { return path + "[" + k + "]" }
func field(path string, f string) string { return path + "." + f }

func (v *collector) meta(o *config.Object) {
	if o.Meta.Name == "" {
		v.add("metadata.name", "is empty; every object needs a name")
	} else if msg := dnsSubdomain(o.Meta.Name); msg != "" {
		v.add("metadata.name", "%q is not a valid name; %s", o.Meta.Name, msg)
	}
	if ns := o.Meta.Namespace; ns != "" {
		if msg := dnsLabel(ns); msg != "" {
			v.add("metadata.namespace", "%q is not a valid namespace; %s", ns, msg)
		}
	}
	v.labels("metadata.labels", o.Meta.Labels)
}

// labels checks label keys and values as Kubernetes does.
func (v *collector) labels(path string, l map[string]string) {
	for _, k := range sortedKeys(l) {
		if len(validation.IsQualifiedName(k)) > 0 {
			v.add(key(path, k), "label key %q is invalid; use [prefix/]name where name is at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, and prefix a DNS subdomain", k)
		}
		if len(validation.IsValidLabelValue(l[k])) > 0 {
			v.add(key(path, k), "label value %q is invalid; use at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit", l[k])
		}
	}
}

// host checks a host as Istio's ValidateWildcardDomain does: a DNS name,
// optionally starting with "*." or being "*", each label DNS-1123, at most
// 255 characters. Short names ("reviews") are allowed.
func hostProblem(h string) string {
	if h == "" {
		return "is empty; give a host name such as reviews.default.svc.cluster.local"
	}
	if len(h) > 255 {
		return fmt.Sprintf("%q is longer than 255 characters", h)
	}
	if h == "*" {
		return ""
	}
	name := h
	if strings.HasPrefix(h, "*") {
		if !strings.HasPrefix(h, "*.") {
			return fmt.Sprintf("%q is not a valid host: a wildcard must be the whole first label, as in *.example.com", h)
		}
		name = h[2:]
	}
	if strings.Contains(name, "*") {
		return fmt.Sprintf("%q is not a valid host: a wildcard is allowed only as the first label (*.example.com)", h)
	}
	if strings.Contains(name, "/") {
		return fmt.Sprintf("%q is not a valid host: use a DNS name without a namespace or path", h)
	}
	// A trailing dot is the fully-qualified form; Istio accepts it.
	name = strings.TrimSuffix(name, ".")
	for _, label := range strings.Split(name, ".") {
		if msg := dnsLabel(label); msg != "" {
			return fmt.Sprintf("%q is not a valid host: label %q is invalid; %s", h, label, msg)
		}
	}
	return ""
}

func (v *collector) host(path, h string) {
	if p := hostProblem(h); p != "" {
		v.add(path, "%s", p)
	}
}

func (v *collector) port(path string, n uint32) {
	if n == 0 || n > 65535 {
		v.add(path, "port %d is out of range; use 1-65535", n)
	}
}

// duration checks a duration as Istio's ValidateDuration: positive (or
// zero where allowZero says zero means "off") and in whole milliseconds.
func (v *collector) duration(path string, d *durationpb.Duration, allowZero bool) {
	if d == nil {
		return
	}
	if err := d.CheckValid(); err != nil {
		v.add(path, "is not a valid duration: %v", err)
		return
	}
	du := d.AsDuration()
	if du < 0 || (!allowZero && du == 0) {
		v.add(path, "duration %s must be positive", du)
		return
	}
	if du%time.Millisecond != 0 {
		v.add(path, "duration %s is not a whole number of milliseconds; Envoy honours durations to the millisecond", du)
	}
}

// maxRegex is Istio's limit: Envoy bounds RE2 program size, which grows
// with the pattern's length.
const maxRegex = 1024

func (v *collector) regex(path, re string) {
	if len(re) > maxRegex {
		v.add(path, "regex is %d characters; the limit is %d", len(re), maxRegex)
		return
	}
	if _, err := regexp.Compile(re); err != nil {
		v.add(path, "regex %q does not compile under RE2: %v", re, err)
	}
}

// percent checks an Istio Percent: 0, or 0.0001 (Envoy's finest
// resolution) to 100.
func (v *collector) percent(path string, p float64) {
	if p < 0 || p > 100 {
		v.add(path, "percentage %v is out of range; use 0-100", p)
	} else if p > 0 && p < 0.0001 {
		v.add(path, "percentage %v is below 0.0001, the finest Envoy honours; use 0 or at least 0.0001", p)
	}
}

// cidr accepts an IP address or a CIDR block, as Istio's ValidateIPSubnet.
func cidrProblem(s string) string {
	if strings.Contains(s, "/") {
		if _, err := netip.ParsePrefix(s); err != nil {
			return fmt.Sprintf("%q is not a valid CIDR block: %v", s, err)
		}
		return ""
	}
	if _, err := netip.ParseAddr(s); err != nil {
		return fmt.Sprintf("%q is not an IP address or CIDR block", s)
	}
	return ""
}

func (v *collector) cidr(path, s string) {
	if p := cidrProblem(s); p != "" {
		v.add(path, "%s", p)
	}
}

// headerToken is RFC 7230's token, what Istio accepts as a header name.
var headerToken = regexp.MustCompile(`^[!#$%&'*+\-.^_` + "`" + `|~0-9A-Za-z]+$`)

// headerName checks an HTTP header name. Istio's API says header names
// are lowercase but its validation accepts any token (Envoy compares names
// case-insensitively), so upper case is a warning, not an error.
func (v *collector) headerName(path, name string) {
	switch {
	case name == "":
		v.add(path, "header name is empty")
	case !headerToken.MatchString(name):
		v.add(path, "header name %q is not a valid HTTP token", name)
	case strings.ToLower(name) != name:
		v.warn(path, "header name %q should be lowercase, as Istio's API asks; write %q", name, strings.ToLower(name))
	}
}

// exportTo checks the exportTo list: ".", "*", namespace names, and for a
// ServiceEntry "~" (visible to no one), with "~" and "*" each alone, as
// Istio's ValidateExportTo.
func (v *collector) exportTo(path string, list []string, noneOK bool) {
	seen := map[string]bool{}
	for i, e := range list {
		p := idx(path, i)
		switch e {
		case ".", "*":
		case "~":
			if !noneOK {
				v.add(p, "\"~\" (visible to no one) is allowed only on a ServiceEntry")
			}
		default:
			if msg := dnsLabel(e); msg != "" {
				v.add(p, "%q is not \".\", \"*\", \"~\" or a namespace name", e)
			}
		}
		if seen[e] {
			v.add(p, "%q is listed twice", e)
		}
		seen[e] = true
	}
	if len(list) > 1 && (seen["*"] || (noneOK && seen["~"])) {
		v.add(path, "\"*\" and \"~\" must be the only entry when present")
	}
}

// portName checks a port name as a DNS-1123 label (Istio uses it to derive
// the protocol, Kubernetes requires the form).
func (v *collector) portName(path, name string) {
	if msg := dnsLabel(name); msg != "" {
		v.add(path, "port name %q is invalid; %s", name, msg)
	}
}

// protocols Istio knows by name (protocol.Parse); anything else is refused.
var protocols = map[string]bool{
	"HTTP": true, "HTTPS": true, "HTTP2": true, "GRPC": true, "GRPC-WEB": true,
	"TCP": true, "TLS": true, "MONGO": true, "REDIS": true, "MYSQL": true, "UDP": true,
	"HBONE": true, "HTTP_PROXY": true,
}

func (v *collector) protocol(path, p string) {
	if !protocols[strings.ToUpper(p)] {
		v.add(path, "protocol %q is unknown; use one of HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, MONGO, REDIS, MYSQL", p)
	}
}
