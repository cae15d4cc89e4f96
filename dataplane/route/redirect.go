package route

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// Redirect answers with a 3xx and a Location built from the request.
type Redirect struct {
	scheme     string // "" keeps the request's
	host       string
	port       string // "" keeps (or drops a default) port
	path       string // path_redirect; may carry a query
	hasPath    bool
	prefix     string // prefix_rewrite
	hasPrefix  bool
	re         *regexp.Regexp
	sub        string
	stripQuery bool
	code       int
	entry      *Entry // for the matched prefix
}

func compileRedirect(ra *routev3.RedirectAction, e *Entry) (*Redirect, error) {
	r := &Redirect{host: ra.GetHostRedirect(), stripQuery: ra.GetStripQuery(), entry: e}
	switch s := ra.GetSchemeRewriteSpecifier().(type) {
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			r.scheme = "https"
		}
	case *routev3.RedirectAction_SchemeRedirect:
		r.scheme = strings.ToLower(s.SchemeRedirect)
	}
	if p := ra.GetPortRedirect(); p != 0 {
		if p > 65535 {
			return nil, fmt.Errorf("port_redirect: %d is not a port", p)
		}
		r.port = strconv.Itoa(int(p))
	}
	switch s := ra.GetPathRewriteSpecifier().(type) {
	case *routev3.RedirectAction_PathRedirect:
		if !strings.HasPrefix(s.PathRedirect, "/") {
			return nil, fmt.Errorf("path_redirect: %q must start with /", s.PathRedirect)
		}
		r.path, r.hasPath = s.PathRedirect, true
	case *routev3.RedirectAction_PrefixRewrite:
		r.prefix, r.hasPrefix = s.PrefixRewrite, true
	case *routev3.RedirectAction_RegexRewrite:
		re, sub, err := compileRewrite(s.RegexRewrite)
		if err != nil {
			return nil, fmt.Errorf("regex_rewrite.%w", err)
		}
		r.re, r.sub = re, sub
	case nil:
	default:
		return nil, errors.New("path_rewrite_specifier: is not supported")
	}
	switch ra.GetResponseCode() {
	case routev3.RedirectAction_MOVED_PERMANENTLY:
		r.code = http.StatusMovedPermanently
	case routev3.RedirectAction_FOUND:
		r.code = http.StatusFound
	case routev3.RedirectAction_SEE_OTHER:
		r.code = http.StatusSeeOther
	case routev3.RedirectAction_TEMPORARY_REDIRECT:
		r.code = http.StatusTemporaryRedirect
	case routev3.RedirectAction_PERMANENT_REDIRECT:
		r.code = http.StatusPermanentRedirect
	default:
		return nil, fmt.Errorf("response_code: %v is not supported", ra.GetResponseCode())
	}
	return r, nil
}

// Location returns the redirect status and the absolute Location URL for
// req. On a scheme redirect an explicit default port of the source scheme
// (http :80, https :443) is dropped, as Envoy documents; host_redirect
// drops the request's port unless port_redirect sets one.
func (r *Redirect) Location(req *http.Request) (code int, location string) {
	origScheme := forwardedProto(req)
	sch := origScheme
	if r.scheme != "" {
		sch = r.scheme
	}
	host, port := splitHostPort(req.Host)
	if r.host != "" {
		h, p := splitHostPort(r.host)
		host = h
		if p != "" {
			port = p
		} else {
			port = ""
		}
	}
	switch {
	case r.port != "":
		port = r.port
	case r.scheme != "" && ((origScheme == "http" && port == "80") || (origScheme == "https" && port == "443")):
		port = ""
	}
	path := req.URL.EscapedPath()
	query := req.URL.RawQuery
	switch {
	case r.hasPath:
		p, q, hasQ := strings.Cut(r.path, "?")
		path = p
		if hasQ {
			query = q
		}
	case r.hasPrefix:
		if r.entry == nil || r.entry.wholePath {
			path = r.prefix
		} else {
			path = r.prefix + path[min(len(r.entry.prefix), len(path)):]
		}
	case r.re != nil:
		path = r.re.ReplaceAllString(path, r.sub)
	}
	if r.stripQuery && !(r.hasPath && strings.Contains(r.path, "?")) {
		query = ""
	}
	var b strings.Builder
	b.WriteString(sch)
	b.WriteString("://")
	b.WriteString(host)
	if port != "" {
		b.WriteByte(':')
		b.WriteString(port)
	}
	b.WriteString(path)
	if query != "" {
		b.WriteByte('?')
		b.WriteString(query)
	}
	return r.code, b.String()
}

// splitHostPort splits "host:port" ("[v6]:port" too); port is "" when
// absent.
func splitHostPort(hp string) (string, string) {
	h := stripPort(hp)
	if len(h) == len(hp) {
		return hp, ""
	}
	return h, hp[len(h)+1:]
}
