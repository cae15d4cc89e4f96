package localmesh

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/validation"
)

// One object of every kind config.Decode reads, written as users write
// them (durations, oneofs, int-or-string ports, a Gateway API status).
const everyKind = `apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop, labels: {app: reviews}}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080, targetPort: http-alt}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: bookinfo-reviews, namespace: shop}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: shop}
type: Opaque
data: {password: c2VjcmV0}
stringData: {user: admin}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {mode: fast}
binaryData: {blob: AAEC}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, namespace: shop, annotations: {note: "a: b"}}
spec:
  replicas: 2
  selector: {matchLabels: {app: reviews}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec:
      serviceAccountName: bookinfo-reviews
      containers:
      - name: reviews
        command: [bookinfo, reviews, -addr, "$(POD_IP):9080"]
        env:
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        - {name: MODE, valueFrom: {configMapKeyRef: {name: settings, key: mode}}}
        ports: [{containerPort: 9080, name: http-alt}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: external-1, namespace: shop, labels: {kubernetes.io/service-name: external}}
addressType: IPv4
endpoints: [{addresses: [198.18.7.7], conditions: {ready: true}}]
ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}, uri: {prefix: /r}}]
    fault: {delay: {fixedDelay: 7s, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v2}, weight: 50, headers: {request: {set: {x-a: b}}}}, {destination: {host: reviews, subset: v3}, weight: 50}]
    timeout: 2.5s
    retries: {attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,connect-failure"}
  - route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 1, connectTimeout: 30ms}, http: {http1MaxPendingRequests: 1}}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 3m, maxEjectionPercent: 100}
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin-ext, namespace: shop}
spec:
  hosts: [httpbin.org]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress: [{hosts: ["./*", "istio-system/*"]}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: shop}
spec: {address: 198.18.9.9, labels: {app: ratings}, serviceAccount: ratings, ports: {http: 9080}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: ratings-vm, namespace: shop}
spec:
  metadata: {labels: {app: ratings}}
  template: {serviceAccount: ratings}
  probe: {periodSeconds: 5, httpGet: {path: /ready, port: 9080}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}, portLevelMtls: {"9080": {mode: PERMISSIVE}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings, namespace: shop}
spec:
  selector: {matchLabels: {app: ratings}}
  action: ALLOW
  rules: [{from: [{source: {principals: ["cluster.local/ns/shop/sa/bookinfo-reviews"]}}], to: [{operation: {methods: [GET]}}], when: [{key: "request.headers[x-a]", values: [b]}]}]
---
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {name: jwt, namespace: shop}
spec: {jwtRules: [{issuer: "issuer@example.com", jwksUri: "https://example.com/jwks.json", forwardOriginalToken: true}]}
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec: {accessLogging: [{providers: [{name: envoy}]}], tracing: [{randomSamplingPercentage: 12.5}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: istio}
spec: {controllerName: istio.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: shop}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}}]
status:
  conditions: [{type: Accepted, status: "True", reason: Accepted, message: ok, lastTransitionTime: "2026-01-02T03:04:05Z", observedGeneration: 1}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bookinfo, namespace: shop}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /static}}, {headers: [{name: end-user, value: jason}]}]
    backendRefs: [{name: productpage, port: 9080, weight: 90}, {name: reviews, port: 9080, weight: 10}]
    timeouts: {request: 3s}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: shop}
spec:
  parentRefs: [{name: gw}]
  rules: [{matches: [{method: {service: echo.Echo, method: Say}}], backendRefs: [{name: echo, port: 7070}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: tcp, namespace: shop}
spec:
  parentRefs: [{name: gw, sectionName: tcp}]
  rules: [{backendRefs: [{name: tcp-echo, port: 9000}]}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow, namespace: shop}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: other}]
  to: [{group: "", kind: Service}]
`

// What skiffd reads from the mirror is what the supervisor's store holds:
// every kind Decode reads (the local mesh's cluster IPs and published
// running Pods with their status included) comes back equal, field for
// field, after encoding and decoding.
func TestMirrorEncodingRoundTrips(t *testing.T) {
	objs, errs := config.Decode([]byte(everyKind), "every.yaml")
	if len(errs) > 0 {
		t.Fatalf("decode: %v", errs)
	}
	vips := newServiceVIPs()
	for i, o := range objs {
		objs[i] = vips.transform(o)
	}
	// A running pod as the supervisor publishes it; times are kept to the
	// second in JSON, as by the API server.
	p := &pod{name: "reviews-v1-abc-xyz12", namespace: "shop", uid: newUID(), labels: map[string]string{"app": "reviews"},
		annotations: map[string]string{"sidecar.istio.io/inject": "true"}, serviceAccount: "bookinfo-reviews",
		spec:  &corev1.PodSpec{Containers: []corev1.Container{{Name: "reviews", Command: []string{"bookinfo"}}}},
		owner: &owner{name: "reviews-v1", uid: newUID()}, hash: "abc", ip: netip.MustParseAddr("127.10.0.7"),
		created: time.Now().Truncate(time.Second)}
	objs = append(objs, podObject(p, true))

	seen := map[config.Kind]bool{}
	for _, o := range objs {
		seen[o.Kind] = true
		b, err := encodeObject(o)
		if err != nil {
			t.Fatalf("%s: encode: %v", o.Key(), err)
		}
		back, errs := config.Decode(b, "mirror.json")
		if len(errs) > 0 || len(back) != 1 {
			t.Fatalf("%s: decoding its encoding: %v\n%s", o.Key(), errs, b)
		}
		got := back[0]
		if got.Key() != o.Key() {
			t.Errorf("%s came back as %s", o.Key(), got.Key())
			continue
		}
		if !sameMeta(o.Meta, got.Meta) {
			t.Errorf("%s: metadata changed:\nwant %+v\ngot  %+v", o.Key(), o.Meta, got.Meta)
		}
		if !sameSpec(o.Spec, got.Spec) {
			t.Errorf("%s: spec changed:\nwant %+v\ngot  %+v\nencoded: %s", o.Key(), o.Spec, got.Spec, b)
		}
		if !reflect.DeepEqual(o.Status, got.Status) {
			t.Errorf("%s: status changed:\nwant %+v\ngot  %+v", o.Key(), o.Status, got.Status)
		}
	}
	for _, k := range config.SupportedKinds() {
		if !seen[k] {
			t.Errorf("kind %s is not covered by this test", k)
		}
	}
	// The published Pod keeps what skiffd's endpoints come from.
	pb, _ := encodeObject(objs[len(objs)-1])
	back, _ := config.Decode(pb, "pod.json")
	if st := back[0].Spec.(*corev1.Pod).Status; st.PodIP != "127.10.0.7" || st.Conditions[0].Status != corev1.ConditionTrue {
		t.Errorf("published Pod's status after the round trip: %+v", st)
	}
}

func sameMeta(a, b metav1.ObjectMeta) bool {
	a.ResourceVersion, b.ResourceVersion = "", ""
	return reflect.DeepEqual(a, b)
}

// sameSpec compares specs, ignoring resourceVersion (Decode sets it to
// a digest of the document).
func sameSpec(a, b any) bool {
	if pa, ok := a.(proto.Message); ok {
		pb, ok := b.(proto.Message)
		return ok && proto.Equal(pa, pb)
	}
	if oa, ok := a.(metav1.Object); ok {
		ob, ok := b.(metav1.Object)
		if !ok {
			return false
		}
		rva, rvb := oa.GetResourceVersion(), ob.GetResourceVersion()
		oa.SetResourceVersion("")
		ob.SetResourceVersion("")
		defer oa.SetResourceVersion(rva)
		defer ob.SetResourceVersion(rvb)
	}
	return reflect.DeepEqual(a, b)
}

// The mirror follows the store: a file per object in force, the one
// preferred over another origin's; a deleted object's file emptied at
// once; the supervisor's PodTemplates never written.
func TestMirrorFollowsStore(t *testing.T) {
	store := config.NewStore(validation.Validate, nil)
	store.SetPreferred(func(origin string) bool { return origin == originApply })
	mr, err := newMirror(filepath.Join(t.TempDir(), "config"), store)
	if err != nil {
		t.Fatal(err)
	}
	mr.life = 200 * time.Millisecond
	store.Subscribe(func(c config.Change) { mr.update(c.Keys) })
	vips := newServiceVIPs()
	decode := func(y string) []*config.Object {
		objs, errs := config.Decode([]byte(y), "dir.yaml")
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		for i := range objs {
			objs[i] = vips.transform(objs[i])
		}
		return objs
	}
	vs := "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec: {hosts: [r], http: [{route: [{destination: {host: r}}], timeout: %s}]}\n"
	store.Replace("dir.yaml", decode(strings.ReplaceAll(vs, "%s", "1s")+"---\n"+soloPodYAML), nil)
	store.Upsert(originApply, decode(strings.ReplaceAll(vs, "%s", "2s"))[0])

	vsFile := mr.fileFor(config.Key{Kind: config.VirtualService, Namespace: "default", Name: "r"})
	waitFor(t, 5*time.Second, "the applied VirtualService in the mirror", func() bool {
		b, _ := os.ReadFile(vsFile)
		return strings.Contains(string(b), `"timeout":"2s"`)
	})
	entries, _ := os.ReadDir(mr.dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 1 {
		t.Errorf("mirror holds %v; want only the VirtualService (a bare Pod is the supervisor's PodTemplate)", names)
	}

	store.Delete(originApply, config.Key{Kind: config.VirtualService, Namespace: "default", Name: "r"})
	waitFor(t, 5*time.Second, "the directory's VirtualService back in the mirror", func() bool {
		b, _ := os.ReadFile(vsFile)
		return strings.Contains(string(b), `"timeout":"1s"`)
	})
	store.Replace("dir.yaml", nil, nil)
	waitFor(t, 5*time.Second, "the deleted VirtualService's file emptied", func() bool {
		b, err := os.ReadFile(vsFile)
		return err == nil && len(b) == 0
	})
	waitFor(t, 5*time.Second, "the emptied file removed", func() bool {
		_, err := os.Stat(vsFile)
		return os.IsNotExist(err)
	})

	// A fresh sync removes what the store no longer holds.
	write := filepath.Join(mr.dir, "Service.v1_default_gone.json")
	os.WriteFile(write, []byte("{}"), 0o644)
	mr.mu.Lock()
	mr.written[write] = [32]byte{1}
	mr.mu.Unlock()
	if err := mr.syncAll(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(write); err != nil || len(b) != 0 {
		t.Errorf("a file of a key the store does not hold: %q, %v; want it emptied", b, err)
	}
}

const soloPodYAML = `apiVersion: v1
kind: Pod
metadata: {name: solo}
spec:
  containers: [{name: app, command: [hello]}]
`
