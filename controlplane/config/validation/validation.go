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
	"regexp"
	"strconv"
	"strings"

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

func (e *FieldError) Error() string {
	if e.Warning {
		return "warning: " + e.Path + ": " + e.Message
	}
	return e.Path + ": " + e.Message
}

// Validate checks one object. The error lists every problem found
// (errors.Join of *FieldError), each naming the field path; warnings are
// included with Warning set, so use Split to tell whether to reject.
func Validate(o *config.Object) error {
	v := &collector{}
	v.meta(o)
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
		if !ok || any(s) == nil {
			var want T
			v.add("spec", "holds %T; a %s needs %T (the decoder produced the wrong type)", spec, k.Kind, want)
			return
		}
		fn(v, s)
	}
}

// collector gathers FieldErrors in the order they are found.
type collector struct {
	list []error
}

func (v *collector) add(path, format string, args ...any) {
	v.list = append(v.list, &FieldError{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (v *collector) warn(path, format string, args ...any) {
	v.list = append(v.list, &FieldError{Path: path, Message: fmt.Sprintf(format, args...), Warning: true})
}

func (v *collector) join() error { return errors.Join(v.list...) }

func idx(path string, i int) string      { return path + "[" + strconv.Itoa(i) + "]" }
func key(path string, k string) string   { return path + "[" + k + "]" }
func field(path string, f string) string { return path + "." + f }

func (v *collector) meta(o *config.Object) {
	if o.Meta.Name == "" {
		v.add("metadata.name", "is empty; every object needs a name")
	} else if errs := validation.IsDNS1123Subdomain(o.Meta.Name); len(errs) > 0 {
		v.add("metadata.name", "%q is not a valid name: %s", o.Meta.Name, errs[0])
	}
	if ns := o.Meta.Namespace; ns != "" {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			v.add("metadata.namespace", "%q is not a valid namespace: %s", ns, errs[0])
		}
	}
	v.labels("metadata.labels", o.Meta.Labels)
}

// labels checks label keys and values as Kubernetes does.
func (v *collector) labels(path string, l map[string]string) {
	for _, k := range sortedKeys(l) {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			v.add(key(path, k), "label key %q is invalid: %s", k, errs[0])
		}
		if errs := validation.IsValidLabelValue(l[k]); len(errs) > 0 {
			v.add(key(path, k), "label value %q is invalid: %s", l[k], errs[0])
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
		if errs := validation.IsDNS1123Label(label); len(errs) > 0 {
			return fmt.Sprintf("%q is not a valid host: label %q: %s", h, label, errs[0])
		}
	}
	return ""
}

func (v *collector) host(path, h string) {
	if p := hostProblem(h); p != "" {
		v.add(path, "%s", p)
	}
}

// fqdn checks a host that may not be a wildcard (a route destination).
func (v *collector) destinationHost(path, h string) {
	if strings.Contains(h, "*") {
		v.add(path, "%q is a wildcard; a destination must name one service", h)
		return
	}
	v.host(path, h)
}

func (v *collector) port(path string, n uint32) {
	if n == 0 || n > 65535 {
		v.add(path, "port %d is out of range; use 1-65535", n)
	}
}

// duration checks a duration is at least min (Istio: 1ms for timeouts).
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
	if du > 0 && du.Milliseconds() < 1 {
		v.add(path, "duration %s is shorter than 1ms, the smallest Envoy honours", du)
	}
}

func (v *collector) regex(path, re string) {
	if _, err := regexp.Compile(re); err != nil {
		v.add(path, "regex %q does not compile under RE2: %v", re, err)
	}
}

func (v *collector) percent(path string, p float64) {
	if p < 0 || p > 100 {
		v.add(path, "percentage %v is out of range; use 0-100", p)
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

// headerName checks an HTTP header name as Istio does: a token, lowercase.
var headerToken = regexp.MustCompile(`^:?[!#$%&'*+\-.^_` + "`" + `|~0-9A-Za-z]+$`)

func (v *collector) headerName(path, name string) {
	switch {
	case name == "":
		v.add(path, "header name is empty")
	case !headerToken.MatchString(name):
		v.add(path, "header name %q is not a valid HTTP token", name)
	case strings.ToLower(name) != name:
		v.add(path, "header name %q must be lowercase; write %q", name, strings.ToLower(name))
	}
}

// exportTo checks the exportTo list: ".", "*", "~" or namespace names, with
// "~" and "*" each alone, as Istio's ValidateExportTo.
func (v *collector) exportTo(path string, list []string) {
	seen := map[string]bool{}
	for i, e := range list {
		p := idx(path, i)
		switch e {
		case ".", "*", "~":
		default:
			if errs := validation.IsDNS1123Label(e); len(errs) > 0 {
				v.add(p, "%q is not \".\", \"*\", \"~\" or a namespace name", e)
			}
		}
		if seen[e] {
			v.add(p, "%q is listed twice", e)
		}
		seen[e] = true
	}
	if len(list) > 1 && (seen["*"] || seen["~"]) {
		v.add(path, "\"*\" and \"~\" must be the only entry when present")
	}
}

// portName checks a port name as a DNS-1123 label (Istio uses it to derive
// the protocol, Kubernetes requires the form).
func (v *collector) portName(path, name string) {
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		v.add(path, "port name %q is invalid: %s", name, errs[0])
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
