package localmesh

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Expand applies Kubernetes' variable references to s, as the kubelet does
// for env values, command and args: "$(NAME)" becomes the value lookup
// returns for NAME; a name lookup does not know, an unclosed "$(" and a
// "$" before anything else are left as written; "$$" is an escaped "$".
func Expand(s string, lookup func(name string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		switch next := s[i+1]; next {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
			b.WriteByte(next)
			i++
		}
	}
	return b.String()
}

// PodFacts are what the downward API can tell a container about its pod,
// and where its ConfigMaps and Secrets come from.
type PodFacts struct {
	Name, Namespace, UID string
	Labels, Annotations  map[string]string
	NodeName             string
	ServiceAccount       string
	PodIP, HostIP        string
	// Data reads a ConfigMap's or Secret's data in the pod's namespace
	// (kind "ConfigMap" or "Secret"); nil skips the lookups, for checks
	// made before a pod exists.
	Data func(kind, name string) (map[string]string, bool)
}

// ContainerEnv returns the environment the kubelet would give container c
// of a pod: envFrom's ConfigMaps and Secrets first, then each env entry,
// its value expanded against the variables before it, fieldRef values
// read from the pod; base entries come first and may be overridden. path
// is the container's field path ("spec.containers[0]") for errors.
func ContainerEnv(c *corev1.Container, pod PodFacts, base []EnvVar, path string) ([]EnvVar, error) {
	env := append([]EnvVar(nil), base...)
	index := map[string]int{}
	for i, e := range env {
		index[e.Name] = i
	}
	set := func(name, value string) {
		if j, ok := index[name]; ok {
			env[j].Value = value
		} else {
			index[name] = len(env)
			env = append(env, EnvVar{name, value})
		}
	}
	lookup := func(name string) (string, bool) {
		if i, ok := index[name]; ok {
			return env[i].Value, true
		}
		return "", false
	}
	for i, from := range c.EnvFrom {
		kind, name, optional := "ConfigMap", "", false
		switch {
		case from.ConfigMapRef != nil:
			name, optional = from.ConfigMapRef.Name, deref(from.ConfigMapRef.Optional)
		case from.SecretRef != nil:
			kind, name, optional = "Secret", from.SecretRef.Name, deref(from.SecretRef.Optional)
		default:
			continue
		}
		data, err := pod.read(kind, name, optional)
		if err != nil {
			return nil, fmt.Errorf("%s.envFrom[%d]: %w", path, i, err)
		}
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			set(from.Prefix+k, data[k])
		}
	}
	for i, e := range c.Env {
		var v string
		switch {
		case e.ValueFrom == nil:
			v = Expand(e.Value, lookup)
		case e.ValueFrom.FieldRef != nil:
			var err error
			if v, err = fieldValue(e.ValueFrom.FieldRef.FieldPath, pod); err != nil {
				return nil, fmt.Errorf("%s.env[%d].valueFrom.fieldRef.fieldPath: %w", path, i, err)
			}
		case e.ValueFrom.ConfigMapKeyRef != nil, e.ValueFrom.SecretKeyRef != nil:
			kind, name, key, optional := "ConfigMap", "", "", false
			if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
				name, key, optional = r.Name, r.Key, deref(r.Optional)
			} else {
				r := e.ValueFrom.SecretKeyRef
				kind, name, key, optional = "Secret", r.Name, r.Key, deref(r.Optional)
			}
			data, err := pod.read(kind, name, optional)
			if err != nil {
				return nil, fmt.Errorf("%s.env[%d].valueFrom: %w", path, i, err)
			}
			val, ok := data[key]
			if !ok && data != nil && !optional {
				return nil, fmt.Errorf("%s.env[%d].valueFrom: %s %s/%s has no key %q; add it, or mark the reference optional", path, i, kind, pod.Namespace, name, key)
			}
			if !ok {
				continue // optional and absent: the variable is not set, as in Kubernetes
			}
			v = val
		case e.ValueFrom.ResourceFieldRef != nil:
			return nil, fmt.Errorf("%s.env[%d].valueFrom.resourceFieldRef: the local mesh sets no resource limits; give the variable a value instead", path, i)
		default:
			return nil, fmt.Errorf("%s.env[%d].valueFrom: the local mesh reads fieldRef, configMapKeyRef and secretKeyRef; give the variable a value instead", path, i)
		}
		set(e.Name, v)
	}
	return env, nil
}

// read fetches a ConfigMap's or Secret's data; a missing one is an error
// unless optional (then nil data). Without a Data source (checks before a
// pod exists) it returns nil, nil.
func (pod PodFacts) read(kind, name string, optional bool) (map[string]string, error) {
	if pod.Data == nil {
		return nil, nil
	}
	data, ok := pod.Data(kind, name)
	if !ok && !optional {
		return nil, fmt.Errorf("%s %s/%s not found; declare it in the mesh's manifests, or mark the reference optional", kind, pod.Namespace, name)
	}
	return data, nil
}

func deref(b *bool) bool { return b != nil && *b }

// EnvVar is one variable of a process's environment.
type EnvVar struct{ Name, Value string }

// fieldValue answers a downward-API fieldRef, with the fields the kubelet
// supports for env (metadata.labels['k'] and metadata.annotations['k']
// name one key).
func fieldValue(path string, pod PodFacts) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return pod.UID, nil
	case "spec.nodeName":
		return pod.NodeName, nil
	case "spec.serviceAccountName":
		return pod.ServiceAccount, nil
	case "status.podIP", "status.podIPs":
		return pod.PodIP, nil
	case "status.hostIP", "status.hostIPs":
		return pod.HostIP, nil
	}
	for prefix, m := range map[string]map[string]string{"metadata.labels": pod.Labels, "metadata.annotations": pod.Annotations} {
		rest, ok := strings.CutPrefix(path, prefix)
		if !ok {
			continue
		}
		key, ok := subscript(rest)
		if !ok {
			break
		}
		return m[key], nil
	}
	return "", fmt.Errorf("%q is not a field the downward API gives env: use metadata.name, metadata.namespace, metadata.uid, metadata.labels['KEY'], metadata.annotations['KEY'], spec.nodeName, spec.serviceAccountName, status.podIP, status.podIPs or status.hostIP", path)
}

// subscript reads "['key']" (or with double quotes).
func subscript(s string) (string, bool) {
	if len(s) < 5 || s[0] != '[' || s[len(s)-1] != ']' {
		return "", false
	}
	inner := s[1 : len(s)-1]
	q := inner[0]
	if (q != '\'' && q != '"') || inner[len(inner)-1] != q || len(inner) < 3 {
		return "", false
	}
	return inner[1 : len(inner)-1], true
}

// ExpandCommand expands a container's command and args against its
// environment, as the kubelet does.
func ExpandCommand(argv []string, env []EnvVar) []string {
	m := make(map[string]string, len(env))
	for _, e := range env {
		m[e.Name] = e.Value
	}
	lookup := func(name string) (string, bool) { v, ok := m[name]; return v, ok }
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = Expand(a, lookup)
	}
	return out
}
