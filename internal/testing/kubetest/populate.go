package kubetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// Populate creates, in a new namespace ns, services Services and pods Pods
// (spread evenly over the Services' selectors) with 16 requests in
// flight, and waits until the controller-manager (when running) has made
// an EndpointSlice per Service; for the scale measurements.
func Populate(b testing.TB, cs kubernetes.Interface, ns string, services, pods int) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		b.Fatal(err)
	}
	start := time.Now()
	work := make(chan func() error)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for fn := range work {
				if err := fn(); err != nil {
					mu.Lock()
					first = cmpErr(first, err)
					mu.Unlock()
				}
			}
		}()
	}
	for i := range services {
		work <- func() error {
			_, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i), Labels: map[string]string{"app": fmt.Sprintf("app-%d", i)}},
				Spec: corev1.ServiceSpec{Selector: map[string]string{"app": fmt.Sprintf("app-%d", i)},
					Ports: []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(8080)}, {Name: "grpc", Port: 9090}}},
			}, metav1.CreateOptions{})
			return err
		}
	}
	for i := range pods {
		work <- func() error {
			app := fmt.Sprintf("app-%d", i%services)
			_, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", app, i), Labels: map[string]string{
					"app": app, "version": "v1", "pod-template-hash": "5d8f7c9b4"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: "example.com/" + app + ":1",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "grpc", ContainerPort: 9090}},
					Env:   []corev1.EnvVar{{Name: "MODE", Value: "production"}, {Name: "LOG_LEVEL", Value: "info"}},
				}}},
			}, metav1.CreateOptions{})
			return err
		}
	}
	close(work)
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
	// The controller-manager makes one EndpointSlice per Service.
	for {
		l, err := cs.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err == nil && len(l.Items) >= services {
			break
		}
		if ctx.Err() != nil {
			b.Fatalf("EndpointSlices for %d Services not made in time: %v", services, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.Logf("created %d Services and %d Pods (and their EndpointSlices) in %v", services, pods, time.Since(start).Round(time.Millisecond))
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
