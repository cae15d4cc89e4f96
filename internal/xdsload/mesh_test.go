package xdsload_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/validation"
	"github.com/skiff-mesh/skiff/internal/xdsload"
)

// load reads every generated file with skiffd's own decoder and validator,
// as `skiffd --config-dir` would, and fails on any error or warning.
func load(t *testing.T, dir string) map[string]*config.Object {
	t.Helper()
	objs := map[string]*config.Object{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") {
			t.Errorf("temporary file %s left behind", path)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		os, errs := config.Decode(data, path)
		for _, e := range errs {
			t.Errorf("decode: %v", e)
		}
		for _, o := range os {
			if err := validation.Validate(o); err != nil {
				t.Errorf("%s %s/%s: %v", o.Kind.Kind, o.Meta.Namespace, o.Meta.Name, err)
			}
			objs[fmt.Sprintf("%s %s/%s", o.Kind.Kind, o.Meta.Namespace, o.Meta.Name)] = o
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func TestGeneratedMeshLoadsAndChangesOneFile(t *testing.T) {
	dir := t.TempDir()
	m, err := xdsload.Generate(dir, xdsload.Spec{Services: 4, Endpoints: 2, Namespaces: 2, SplitEvery: 2, Port: 9080})
	if err != nil {
		t.Fatal(err)
	}
	objs := load(t, dir)
	var kinds []string
	for k := range objs {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	want := "DestinationRule load-0/svc-0,DestinationRule load-0/svc-2," +
		"Namespace /load-0,Namespace /load-1," +
		"Pod load-0/svc-0-v1-0,Pod load-0/svc-0-v2-1,Pod load-0/svc-2-v1-0,Pod load-0/svc-2-v2-1," +
		"Pod load-1/svc-1-v1-0,Pod load-1/svc-1-v2-1,Pod load-1/svc-3-v1-0,Pod load-1/svc-3-v2-1," +
		"Service load-0/svc-0,Service load-0/svc-2,Service load-1/svc-1,Service load-1/svc-3," +
		"ServiceAccount load-0/svc-0,ServiceAccount load-0/svc-2,ServiceAccount load-1/svc-1,ServiceAccount load-1/svc-3," +
		"VirtualService load-0/svc-0,VirtualService load-0/svc-2,VirtualService load-1/svc-1,VirtualService load-1/svc-3"
	if got := strings.Join(kinds, ","); got != want {
		t.Fatalf("objects:\n%s\nwant:\n%s", got, want)
	}

	pod := objs["Pod load-1/svc-3-v2-1"].Spec.(*corev1.Pod)
	ip := netip.MustParseAddr(pod.Status.PodIP)
	if !netip.MustParsePrefix("198.18.0.0/16").Contains(ip) || pod.Status.PodIP != m.Pods[7].IP {
		t.Errorf("pod IP %s, want %s in 198.18.0.0/16", pod.Status.PodIP, m.Pods[7].IP)
	}
	if pod.Labels["app"] != "svc-3" || pod.Labels["version"] != "v2" || pod.Spec.ServiceAccountName != "svc-3" ||
		len(pod.Status.Conditions) != 1 || pod.Status.Conditions[0].Type != corev1.PodReady || pod.Status.Conditions[0].Status != corev1.ConditionTrue {
		t.Errorf("pod labels %v, service account %q, conditions %v", pod.Labels, pod.Spec.ServiceAccountName, pod.Status.Conditions)
	}
	svc := objs["Service load-1/svc-3"].Spec.(*corev1.Service)
	if p := svc.Spec.Ports; len(p) != 1 || p[0].Name != "http" || p[0].Port != 9080 || svc.Spec.Selector["app"] != "svc-3" {
		t.Errorf("service ports %v selector %v", p, svc.Spec.Selector)
	}

	s := m.Services[2]
	if err := m.SetWeight(s, 30); err != nil {
		t.Fatal(err)
	}
	if err := m.SetWeight(m.Services[1], 30); err == nil {
		t.Errorf("SetWeight on a service without subsets succeeded")
	}
	moved := s.Pods[0]
	newIP, err := m.NextIP()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.MovePod(moved, newIP); err != nil {
		t.Fatal(err)
	}
	if newIP != "198.18.0.9" {
		t.Errorf("first address after 8 pods is %s, want 198.18.0.9", newIP)
	}
	objs = load(t, dir)
	vs := objs["VirtualService load-0/svc-2"].Spec.(*networking.VirtualService)
	var weights []string
	for _, d := range vs.GetHttp()[0].GetRoute() {
		weights = append(weights, fmt.Sprintf("%s=%d", d.GetDestination().GetSubset(), d.GetWeight()))
	}
	if got := strings.Join(weights, " "); got != "v1=30 v2=70" {
		t.Errorf("weights after SetWeight(30): %s", got)
	}
	if got := objs["Pod load-0/svc-2-v1-0"].Spec.(*corev1.Pod).Status.PodIP; got != "198.18.0.9" {
		t.Errorf("moved pod has IP %s, want 198.18.0.9", got)
	}
	if got := objs["Pod load-0/svc-2-v2-1"].Spec.(*corev1.Pod).Status.PodIP; got != m.Pods[5].IP || got == "198.18.0.9" {
		t.Errorf("the other pod of the service changed IP to %s", got)
	}
}

func TestPodAddressesStayInRange(t *testing.T) {
	m, err := xdsload.Generate(t.TempDir(), xdsload.Spec{Services: 1, Endpoints: 1, Namespaces: 1})
	if err != nil {
		t.Fatal(err)
	}
	var last string
	for i := 0; i < 70000; i++ {
		ip, err := m.NextIP()
		if err != nil {
			break
		}
		last = ip
	}
	_, err = m.NextIP()
	if last != "198.18.255.254" {
		t.Errorf("last address handed out %s, want 198.18.255.254", last)
	}
	if err == nil || !strings.Contains(err.Error(), "outside 198.18.0.0/16") {
		t.Errorf("running out of addresses: %v", err)
	}
}

func TestGenerateRefusesAUsedDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "old.yaml"), []byte("kind: Namespace\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := xdsload.Generate(dir, xdsload.Spec{Services: 1, Endpoints: 1, Namespaces: 1})
	if err == nil || err.Error() != "config directory "+dir+" is not empty: give a new or empty directory, the load tool writes the whole mesh" {
		t.Errorf("error %v", err)
	}
}
