//go:build netns

package kubelet_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/skiff-mesh/skiff/internal/testing/kubelet"
	"github.com/skiff-mesh/skiff/internal/testing/kubetest"
)

// The test binary doubles as the pods' program: with KUBELET_TESTAPP set it
// is a container (see testApp), not a test run.
func TestMain(m *testing.M) {
	if mode := os.Getenv("KUBELET_TESTAPP"); mode != "" {
		os.Exit(testApp(mode))
	}
	os.Exit(m.Run())
}

// testApp is a container: "init" writes data/msg into its emptyDir mount
// and exits; "serve" records what it sees of its pod in data/env and
// serves its root directory (its mounts) over HTTP on :8080; "sleep"
// waits to be stopped.
func testApp(mode string) int {
	switch mode {
	case "init":
		if err := os.WriteFile("data/msg", []byte("written by init"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	case "serve":
		host, _ := os.Hostname()
		env := fmt.Sprintf("uid=%d ip=%s ns=%s sa=%s cpu=%s mem=%s hostname=%s", os.Getuid(), os.Getenv("POD_IP"), os.Getenv("POD_NS"),
			os.Getenv("SA"), os.Getenv("CPU"), os.Getenv("MEM_MI"), host)
		if err := os.WriteFile("data/env", []byte(env), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := http.ListenAndServe(":8080", http.FileServer(http.Dir("."))); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	case "sleep":
		time.Sleep(time.Hour)
	}
	return 0
}

// A pod created through the API server runs as processes in its own
// network namespace: the init container first, then the native sidecar
// (which the app waits for), then the app as its user, with the downward
// API, resource env, a projected token and the volumes; its readiness
// probe is really probed, the pod's status makes the EndpointSlice
// controller publish it, and deleting it stops everything.
func TestPodLifecycle(t *testing.T) {
	env := kubetest.Start(t, kubetest.Options{ControllerManager: true, NoCRDs: true,
		Controllers: append([]string{"root-ca-certificate-publisher-controller"}, kubetest.DefaultControllers...)})
	cs := env.Clientset(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	k := kubelet.Start(t, cs, kubelet.Options{Programs: map[string]string{"testapp": self}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if _, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	always := corev1.ContainerRestartPolicyAlways
	uid := int64(1337) // the proxy's: the projected token is readable through fsGroup
	fsGroup := int64(1337)
	app := func(mode string) []corev1.EnvVar { return []corev1.EnvVar{{Name: "KUBELET_TESTAPP", Value: mode}} }
	mount := []corev1.VolumeMount{{Name: "data", MountPath: "/data"}, {Name: "token", MountPath: "/var/run/secrets/tokens"}, {Name: "podinfo", MountPath: "/etc/podinfo"}}
	expiry := int64(3600)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Labels: map[string]string{"app": "web", "version": "v1"}},
		Spec: corev1.PodSpec{
			SecurityContext: &corev1.PodSecurityContext{FSGroup: &fsGroup},
			InitContainers: []corev1.Container{
				{Name: "init", Image: "testapp", Command: []string{"testapp"}, Env: app("init"), VolumeMounts: mount},
				{Name: "sidecar", Image: "testapp", Command: []string{"testapp"}, Env: app("sleep"), RestartPolicy: &always,
					StartupProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-s", "data/msg"}}}, PeriodSeconds: 1},
					VolumeMounts: mount},
			},
			Containers: []corev1.Container{{
				Name: "web", Image: "testapp", Command: []string{"testapp"},
				Env: append(app("serve"),
					corev1.EnvVar{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
					corev1.EnvVar{Name: "POD_NS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
					corev1.EnvVar{Name: "SA", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.serviceAccountName"}}},
					corev1.EnvVar{Name: "CPU", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
					corev1.EnvVar{Name: "MEM_MI", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
				),
				Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				Resources:       corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1500m"), corev1.ResourceMemory: resource.MustParse("64Mi")}},
				ReadinessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/data/env", Port: intstr.FromString("http")}}, PeriodSeconds: 1},
				SecurityContext: &corev1.SecurityContext{RunAsUser: &uid},
				VolumeMounts:    mount,
			}},
			Volumes: []corev1.Volume{
				{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "token", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "istio-ca", ExpirationSeconds: &expiry, Path: "istio-token"}}}}}},
				{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
					{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}}}}},
			},
		},
	}
	// The default ServiceAccount comes from the controller-manager a moment
	// after the namespace; the ServiceAccount admission refuses pods until then.
	eventually(t, 60*time.Second, "creating pod web-1", func() error {
		_, err = cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
		return err
	})

	var ip string
	eventually(t, 60*time.Second, "pod web-1 Ready", func() error {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "web-1", metav1.GetOptions{})
		if err != nil {
			return err
		}
		ip = p.Status.PodIP
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				if p.Spec.NodeName != k.Node() {
					return fmt.Errorf("ready, yet bound to %q, not %q", p.Spec.NodeName, k.Node())
				}
				return nil
			}
		}
		return fmt.Errorf("phase %s, conditions %v, containers %v, init %v", p.Status.Phase, p.Status.Conditions, p.Status.ContainerStatuses, p.Status.InitContainerStatuses)
	})
	get := func(path string) string {
		t.Helper()
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
		resp, err := c.Get("http://" + net.JoinHostPort(ip, "8080") + path)
		if err != nil {
			t.Fatalf("GET %s from the pod: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s from the pod: %s %s", path, resp.Status, b)
		}
		return string(b)
	}
	if got := get("/data/msg"); got != "written by init" {
		t.Errorf("the emptyDir holds %q, want what the init container wrote", got)
	}
	want := fmt.Sprintf("uid=1337 ip=%s ns=default sa=default cpu=2 mem=64", ip)
	if got := get("/data/env"); !strings.HasPrefix(got, want) {
		t.Errorf("the app saw %q, want %q…", got, want)
	}
	if got := get("/etc/podinfo/labels"); got != "app=\"web\"\nversion=\"v1\"" {
		t.Errorf("downward-API labels file %q", got)
	}
	tok := strings.Split(get("/var/run/secrets/tokens/istio-token"), ".")
	if len(tok) != 3 {
		t.Fatalf("projected token %q is not a JWT", tok)
	}
	claims, _ := base64.RawURLEncoding.DecodeString(tok[1])
	if !strings.Contains(string(claims), `"aud":["istio-ca"]`) || !strings.Contains(string(claims), `"name":"web-1"`) {
		t.Errorf("projected token's claims %s: want audience istio-ca, bound to pod web-1", claims)
	}

	eventually(t, 60*time.Second, "the EndpointSlice of web with the pod's address ready", func() error {
		list, err := cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
		if err != nil {
			return err
		}
		for _, s := range list.Items {
			for _, e := range s.Endpoints {
				if len(e.Addresses) > 0 && e.Addresses[0] == ip && e.Conditions.Ready != nil && *e.Conditions.Ready {
					return nil
				}
			}
		}
		return fmt.Errorf("slices %v", list.Items)
	})

	// The pod's hosts file follows the Services, as cluster DNS would.
	late, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "late"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pn := k.PodNetwork("default", "web-1")
	if pn == nil {
		t.Fatal("PodNetwork(default, web-1) = nil for a running pod")
	}
	eventually(t, 30*time.Second, "Service late in pod web-1's hosts file", func() error {
		out, err := pn.Command(ctx, 1337, "getent", "hosts", "late.default.svc.cluster.local").Output()
		if err != nil {
			return fmt.Errorf("getent hosts inside the pod: %v", err)
		}
		if f := strings.Fields(string(out)); len(f) < 2 || f[0] != late.Spec.ClusterIP {
			return fmt.Errorf("late.default.svc.cluster.local resolves to %q inside the pod, want %s", out, late.Spec.ClusterIP)
		}
		return nil
	})

	if err := cs.CoreV1().Pods("default").Delete(ctx, "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "pod web-1 gone from the API server and its namespace removed", func() error {
		if _, err := cs.CoreV1().Pods("default").Get(ctx, "web-1", metav1.GetOptions{}); err == nil {
			return fmt.Errorf("still there")
		}
		out, _ := exec.Command("ip", "netns", "list").Output()
		if strings.Contains(string(out), "skk-web-1") {
			return fmt.Errorf("namespace skk-web-1 still there")
		}
		return nil
	})
	c := &http.Client{Timeout: 2 * time.Second}
	if _, err := c.Get("http://" + net.JoinHostPort(ip, "8080") + "/"); err == nil {
		t.Errorf("the pod's server still answers after the pod was deleted")
	}
}

func eventually(t *testing.T, limit time.Duration, what string, f func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if err = f(); err == nil {
			return
		}
	}
	t.Fatalf("%s: not within %v: %v", what, limit, err)
}
