// Package kubeinject is `skiff kube-inject`, istioctl kube-inject's job:
// read Kubernetes YAML, add Skiff's sidecar to every workload Istio would
// inject, and write the documents back in order. It works offline: the
// namespace is not known, so only the pod's own labels and annotations
// decide (sidecar.istio.io/inject: "false" opts out). Comments are not kept.
package kubeinject

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/skiff-mesh/skiff/controlplane/inject"
	"github.com/skiff-mesh/skiff/controlplane/server"
)

// options are the command's flags.
type options struct {
	in, out      string
	meshConfig   string
	injectConfig string
	image        string
	revision     string
	native, cni  bool
}

// Run is `skiff kube-inject -f FILE|- [-o FILE] [--meshconfig FILE]
// [--injectconfig FILE]`. It returns the exit code: 0, 1 when the input
// cannot be injected (nothing is written), 2 for bad flags.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("skiff kube-inject", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	for _, n := range []string{"f", "filename"} {
		fs.StringVar(&o.in, n, "", "input Kubernetes YAML, or - for stdin (also -f)")
	}
	for _, n := range []string{"o", "output"} {
		fs.StringVar(&o.out, n, "", "write the result to this file instead of stdout")
	}
	for _, n := range []string{"meshconfig", "meshConfigFile"} {
		fs.StringVar(&o.meshConfig, n, "", "Istio MeshConfig YAML (the istio ConfigMap's mesh key): trustDomain, defaultConfig")
	}
	for _, n := range []string{"injectconfig", "injectConfigFile"} {
		fs.StringVar(&o.injectConfig, n, "", "injector settings YAML: image, revision, nativeSidecar, cni, caAddress, clusterID, meshID, trustDomain")
	}
	fs.StringVar(&o.image, "image", "", "sidecar image (default "+inject.DefaultImage()+")")
	fs.StringVar(&o.revision, "revision", "", "control plane revision (istio.io/rev) to inject for")
	fs.BoolVar(&o.native, "native-sidecar", false, "inject istio-proxy as a native sidecar (init container, restartPolicy Always; Kubernetes ≥ 1.29)")
	fs.BoolVar(&o.cni, "cni", false, "the Istio CNI plugin sets up capture: inject no istio-init")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.in == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "skiff kube-inject: give the input with -f FILE (or -f - for stdin), and no other arguments")
		return 2
	}
	opts, err := o.injectOptions()
	if err != nil {
		fmt.Fprintln(stderr, "skiff kube-inject:", err)
		return 2
	}
	name, src := o.in, stdin
	if o.in != "-" {
		f, err := os.Open(o.in)
		if err != nil {
			fmt.Fprintln(stderr, "skiff kube-inject:", err)
			return 1
		}
		defer f.Close()
		src = f
	} else {
		name = "<stdin>"
	}
	data, err := io.ReadAll(src)
	if err != nil {
		fmt.Fprintf(stderr, "skiff kube-inject: reading %s: %v\n", name, err)
		return 1
	}
	out, warnings, err := Inject(name, data, opts)
	for _, w := range warnings {
		fmt.Fprintln(stderr, w)
	}
	if err != nil {
		fmt.Fprintln(stderr, "skiff kube-inject:", err)
		return 1
	}
	if o.out != "" {
		if err := os.WriteFile(o.out, out, 0o644); err != nil {
			fmt.Fprintln(stderr, "skiff kube-inject:", err)
			return 1
		}
		return 0
	}
	if _, err := stdout.Write(out); err != nil {
		fmt.Fprintln(stderr, "skiff kube-inject:", err)
		return 1
	}
	return 0
}

func (o options) injectOptions() (inject.Options, error) {
	var opts inject.Options
	if o.injectConfig != "" {
		b, err := os.ReadFile(o.injectConfig)
		if err != nil {
			return opts, err
		}
		if err := yaml.UnmarshalStrict(b, &opts); err != nil {
			return opts, fmt.Errorf("%s: %v; known fields are image, revision, nativeSidecar, cni, enableNamespacesByDefault, caAddress, clusterID, meshID, trustDomain, proxyConfig", o.injectConfig, err)
		}
	}
	if o.meshConfig != "" {
		mc, err := server.LoadMeshConfig(o.meshConfig)
		if err != nil {
			return opts, err
		}
		opts.TrustDomain = mc.GetTrustDomain()
		if dc := mc.GetDefaultConfig(); dc != nil {
			opts.MeshID = dc.GetMeshId()
			b, err := protojson.Marshal(dc)
			if err != nil {
				return opts, fmt.Errorf("%s: defaultConfig: %v", o.meshConfig, err)
			}
			var c bytes.Buffer
			if err := json.Compact(&c, b); err != nil {
				return opts, err
			}
			opts.ProxyConfig = c.String()
		}
	}
	if o.image != "" {
		opts.Image = o.image
	}
	if o.revision != "" {
		opts.Revision = o.revision
	}
	opts.NativeSidecar = opts.NativeSidecar || o.native
	opts.CNI = opts.CNI || o.cni
	return opts, nil
}

// doc is one YAML document of the input and the line it starts on.
type doc struct {
	text string
	line int
}

// splitDocs cuts multi-document YAML at "---" lines.
func splitDocs(data []byte) []doc {
	var docs []doc
	var cur strings.Builder
	start := 1
	lines := strings.SplitAfter(string(data), "\n")
	for i, l := range lines {
		t := strings.TrimRight(l, "\r\n")
		if t == "---" || strings.HasPrefix(t, "--- ") || strings.HasPrefix(t, "---\t") {
			docs = append(docs, doc{cur.String(), start})
			cur.Reset()
			start = i + 2
			continue
		}
		cur.WriteString(l)
	}
	return append(docs, doc{cur.String(), start})
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// Inject injects every document of data (named name in messages) and
// returns the documents joined with "---". Documents that are not
// injected are written back as they were read; warnings say why a
// workload was skipped.
func Inject(name string, data []byte, opts inject.Options) ([]byte, []string, error) {
	var out bytes.Buffer
	var warnings []string
	first := true
	for _, d := range splitDocs(data) {
		if isBlank(d.text) {
			continue
		}
		res, warn, err := injectDoc(d, opts)
		if err != nil {
			return nil, warnings, fmt.Errorf("%s:%s", name, err)
		}
		if warn != "" {
			warnings = append(warnings, fmt.Sprintf("%s:%d: %s", name, d.line, warn))
		}
		if !first {
			out.WriteString("---\n")
		}
		first = false
		out.WriteString(res)
		if !strings.HasSuffix(res, "\n") {
			out.WriteByte('\n')
		}
	}
	return out.Bytes(), warnings, nil
}

func isBlank(s string) bool {
	for _, l := range strings.Split(s, "\n") {
		t := strings.TrimSpace(l)
		if t != "" && !strings.HasPrefix(t, "#") {
			return false
		}
	}
	return true
}

// injectDoc returns the document's output text, a warning, or an error
// that starts with the line number.
func injectDoc(d doc, opts inject.Options) (string, string, error) {
	js, err := yaml.YAMLToJSON([]byte(d.text))
	if err != nil {
		line := d.line
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			n, _ := strconv.Atoi(m[1])
			line += n - 1
		}
		return "", "", fmt.Errorf("%d: not valid YAML: %v", line, err)
	}
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name, Namespace string
		} `json:"metadata"`
	}
	if err := json.Unmarshal(js, &tm); err != nil {
		// A scalar or a list: not a Kubernetes object, pass it through.
		return d.text, "", nil
	}
	obj := newObject(tm.APIVersion, tm.Kind)
	if obj == nil {
		return d.text, "", nil
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	if err := dec.Decode(obj); err != nil {
		return "", "", fmt.Errorf("%d: %s %s: %v; fix the field's type", d.line, tm.Kind, tm.Metadata.Name, err)
	}
	res, dcs, err := inject.Object(obj, opts)
	what := tm.Kind + " " + tm.Metadata.Name
	if err != nil {
		return "", "", fmt.Errorf("%d: %s: %v", lineOf(d, err.Error()), what, err)
	}
	if !dcs.Inject {
		return d.text, "skipping " + what + ": " + dcs.Reason, nil
	}
	y, err := yaml.Marshal(res)
	if err != nil {
		return "", "", fmt.Errorf("%d: %s: %v", d.line, what, err)
	}
	return string(y), "", nil
}

// lineOf finds the line of the annotation an error names, else the
// document's first line.
func lineOf(d doc, msg string) int {
	if i := strings.Index(msg, `annotations["`); i >= 0 {
		key := msg[i+len(`annotations["`):]
		if j := strings.Index(key, `"`); j > 0 {
			key = key[:j]
			for n, l := range strings.Split(d.text, "\n") {
				if strings.Contains(l, key) {
					return d.line + n
				}
			}
		}
	}
	return d.line
}

// newObject returns an empty typed object for the workload kinds Object
// injects, or nil for every other kind.
func newObject(apiVersion, kind string) runtime.Object {
	switch apiVersion + "/" + kind {
	case "v1/Pod":
		return &corev1.Pod{}
	case "v1/ReplicationController":
		return &corev1.ReplicationController{}
	case "v1/PodTemplate":
		return &corev1.PodTemplate{}
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}
	case "apps/v1/DaemonSet":
		return &appsv1.DaemonSet{}
	case "apps/v1/ReplicaSet":
		return &appsv1.ReplicaSet{}
	case "batch/v1/Job":
		return &batchv1.Job{}
	case "batch/v1/CronJob":
		return &batchv1.CronJob{}
	}
	return nil
}
