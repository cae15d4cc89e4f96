package hcm

import (
	"net/url"
	"strings"
)

// normalizePath applies normalize_path (RFC 3986 remove_dot_segments) and
// merge_slashes to u before routing, so routes and filters such as RBAC
// see one spelling of each path. It touches u only when something changes.
func normalizePath(u *url.URL, dots, merge bool) {
	p := u.EscapedPath()
	if !(dots && strings.Contains(p, "/.")) && !(merge && strings.Contains(p, "//")) {
		return
	}
	var segs []string
	for _, seg := range strings.Split(p, "/")[1:] {
		switch {
		case dots && seg == ".":
		case dots && seg == "..":
			if len(segs) > 0 {
				segs = segs[:len(segs)-1]
			}
		case merge && seg == "" && len(segs) > 0 && segs[len(segs)-1] == "":
		default:
			segs = append(segs, seg)
		}
	}
	// A trailing "." or ".." leaves a directory path ("/a/b/.." → "/a/").
	if last := p[strings.LastIndexByte(p, '/')+1:]; dots && (last == "." || last == "..") {
		segs = append(segs, "")
	}
	np := "/" + strings.Join(segs, "/")
	if merge {
		for strings.Contains(np, "//") {
			np = strings.ReplaceAll(np, "//", "/")
		}
	}
	if np == p {
		return
	}
	if dec, err := url.PathUnescape(np); err == nil {
		u.Path, u.RawPath = dec, ""
		if u.EscapedPath() != np {
			u.RawPath = np
		}
	}
}
