package localmesh

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"VAR_A": "A", "VAR_B": "B", "VAR_EMPTY": ""}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	for in, want := range map[string]string{
		"$(VAR_A)":           "A",
		"___$(VAR_B)___":     "___B___",
		"$(VAR_A)-$(VAR_B)":  "A-B",
		"$(VAR_EMPTY)x":      "x",
		"$(VAR_DNE)":         "$(VAR_DNE)", // unknown: left as written
		"$$(VAR_B)":          "$(VAR_B)",   // escaped
		"$$$(VAR_A)":         "$A",
		"$$$$(VAR_A)":        "$$(VAR_A)",
		"$(VAR_A":            "$(VAR_A", // unclosed
		"$VAR_A":             "$VAR_A",  // no parentheses: not a reference
		"$$":                 "$",
		"a$":                 "a$",
		"$()":                "$()",
		"f$(VAR_A)$(VAR_A)":  "fAA",
		"$(VAR_A)$$(VAR_B)$": "A$(VAR_B)$",
		"no refs at all":     "no refs at all",
	} {
		if got := Expand(in, lookup); got != want {
			t.Errorf("Expand(%q) = %q, want %q", in, got, want)
		}
	}
}

// The example of Kubernetes' "Define Dependent Environment Variables"
// task: a value sees the entries before it, not those after; "$$" escapes.
func TestContainerEnvDependentVariables(t *testing.T) {
	c := &corev1.Container{Env: []corev1.EnvVar{
		{Name: "SERVICE_PORT", Value: "80"},
		{Name: "SERVICE_IP", Value: "172.17.0.1"},
		{Name: "UNCHANGED_REFERENCE", Value: "$(PROTOCOL)://$(SERVICE_IP):$(SERVICE_PORT)"},
		{Name: "PROTOCOL", Value: "https"},
		{Name: "SERVICE_ADDRESS", Value: "$(PROTOCOL)://$(SERVICE_IP):$(SERVICE_PORT)"},
		{Name: "ESCAPED_REFERENCE", Value: "$$(PROTOCOL)://$(SERVICE_IP):$(SERVICE_PORT)"},
	}}
	env, err := ContainerEnv(c, PodFacts{}, nil, "spec.containers[0]")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range env {
		got[e.Name] = e.Value
	}
	for name, want := range map[string]string{
		"UNCHANGED_REFERENCE": "$(PROTOCOL)://172.17.0.1:80",
		"SERVICE_ADDRESS":     "https://172.17.0.1:80",
		"ESCAPED_REFERENCE":   "$(PROTOCOL)://172.17.0.1:80",
	} {
		if got[name] != want {
			t.Errorf("%s = %q, want %q", name, got[name], want)
		}
	}
}

func TestContainerEnvDownwardAPI(t *testing.T) {
	ref := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}
	c := &corev1.Container{
		Command: []string{"app", "--listen=$(POD_IP):9080", "--id=$(POD_NAME).$(POD_NAMESPACE)", "$(MISSING)"},
		Args:    []string{"--version=$(VERSION)"},
		Env: []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: ref("metadata.name")},
			{Name: "POD_NAMESPACE", ValueFrom: ref("metadata.namespace")},
			{Name: "POD_UID", ValueFrom: ref("metadata.uid")},
			{Name: "POD_IP", ValueFrom: ref("status.podIP")},
			{Name: "POD_IPS", ValueFrom: ref("status.podIPs")},
			{Name: "HOST_IP", ValueFrom: ref("status.hostIP")},
			{Name: "NODE", ValueFrom: ref("spec.nodeName")},
			{Name: "SA", ValueFrom: ref("spec.serviceAccountName")},
			{Name: "VERSION", ValueFrom: ref("metadata.labels['version']")},
			{Name: "NOTE", ValueFrom: ref(`metadata.annotations["note"]`)},
			{Name: "HOME", Value: "/override"},
		},
	}
	pod := PodFacts{Name: "reviews-v1-abc", Namespace: "default", UID: "u-1", PodIP: "127.10.0.7", HostIP: "127.0.0.1",
		NodeName: "local", ServiceAccount: "bookinfo-reviews",
		Labels: map[string]string{"version": "v1"}, Annotations: map[string]string{"note": "hi"}}
	env, err := ContainerEnv(c, pod, []EnvVar{{"HOME", "/root"}, {"PATH", "/bin"}}, "spec.containers[0]")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, e := range env {
		lines = append(lines, e.Name+"="+e.Value)
	}
	want := "HOME=/override PATH=/bin POD_NAME=reviews-v1-abc POD_NAMESPACE=default POD_UID=u-1 POD_IP=127.10.0.7 POD_IPS=127.10.0.7 " +
		"HOST_IP=127.0.0.1 NODE=local SA=bookinfo-reviews VERSION=v1 NOTE=hi"
	if got := strings.Join(lines, " "); got != want {
		t.Errorf("env:\n got %s\nwant %s", got, want)
	}
	argv := ExpandCommand(append(c.Command, c.Args...), env)
	if got, want := strings.Join(argv, " "), "app --listen=127.10.0.7:9080 --id=reviews-v1-abc.default $(MISSING) --version=v1"; got != want {
		t.Errorf("argv = %q, want %q", got, want)
	}
}

func TestContainerEnvErrors(t *testing.T) {
	for _, tc := range []struct {
		env  corev1.EnvVar
		want string
	}{
		{corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.phase"}}},
			`spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: "status.phase" is not a field the downward API gives env`},
		{corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}},
			`"metadata.labels" is not a field`},
		{corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Key: "k"}}},
			"spec.containers[0].env[0].valueFrom: Secret default/creds not found; declare it in the mesh's manifests, or mark the reference optional"},
		{corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}, Key: "missing"}}},
			`spec.containers[0].env[0].valueFrom: ConfigMap default/settings has no key "missing"`},
		{corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
			"spec.containers[0].env[0].valueFrom.resourceFieldRef: the local mesh sets no resource limits"},
	} {
		_, err := ContainerEnv(&corev1.Container{Env: []corev1.EnvVar{tc.env}}, withData(PodFacts{Namespace: "default"}), nil, "spec.containers[0]")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want it to contain %q", tc.env, err, tc.want)
		}
	}
}

// withData gives a pod one ConfigMap, settings, and one Secret, creds, is
// missing.
func withData(f PodFacts) PodFacts {
	f.Data = func(kind, name string) (map[string]string, bool) {
		if kind == "ConfigMap" && name == "settings" {
			return map[string]string{"LOG_LEVEL": "debug", "mode": "fast"}, true
		}
		return nil, false
	}
	return f
}

// ConfigMaps and Secrets feed env as in Kubernetes: envFrom first (with its
// prefix), env after it and over it; an optional reference to what does
// not exist leaves the variable unset.
func TestContainerEnvConfigMaps(t *testing.T) {
	yes := true
	ref := func(name, key string, optional *bool) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key, Optional: optional}}
	}
	c := &corev1.Container{
		EnvFrom: []corev1.EnvFromSource{
			{Prefix: "APP_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}},
			{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "creds"}, Optional: &yes}},
		},
		Env: []corev1.EnvVar{
			{Name: "MODE", ValueFrom: ref("settings", "mode", nil)},
			{Name: "APP_LOG_LEVEL", Value: "info-$(MODE)"},
			{Name: "GONE", ValueFrom: ref("absent", "k", &yes)},
			{Name: "ALSO_GONE", ValueFrom: ref("settings", "nokey", &yes)},
		},
	}
	env, err := ContainerEnv(c, withData(PodFacts{Namespace: "default"}), nil, "spec.containers[0]")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, e := range env {
		lines = append(lines, e.Name+"="+e.Value)
	}
	if got, want := strings.Join(lines, " "), "APP_LOG_LEVEL=info-fast APP_mode=fast MODE=fast"; got != want {
		t.Errorf("env:\n got %s\nwant %s", got, want)
	}
}
