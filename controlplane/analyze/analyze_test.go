package analyze

import (
	"slices"
	"strings"
	"testing"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

func decode(t *testing.T, yaml string) []*config.Object {
	t.Helper()
	objs, errs := config.Decode([]byte(strings.TrimLeft(yaml, "\n")), "t.yaml")
	if len(errs) > 0 {
		t.Fatalf("test input does not decode: %v", errs)
	}
	return objs
}

func run(t *testing.T, yaml string, opts Options) []string {
	t.Helper()
	var out []string
	for _, m := range Analyze(decode(t, yaml), opts) {
		if m.Fix == "" {
			t.Errorf("%s: no fix", m)
		}
		out = append(out, m.String())
	}
	return out
}

const reviews = `
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1}
spec:
  selector: {matchLabels: {app: reviews}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec: {containers: [{name: r, image: r}]}
`

func TestAnalyzers(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		opts Options
		want []string
	}{{
		name: "missing gateway",
		yaml: reviews + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  gateways: [bookinfo-gateway]
  http:
  - route:
    - destination: {host: reviews}
`,
		want: []string{`Error [IST0101] (VirtualService default/reviews t.yaml:22) Referenced gateway not found: "bookinfo-gateway"`},
	}, {
		name: "missing host and subset",
		yaml: reviews + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
  - route:
    - destination: {host: nowhere}
`,
		want: []string{
			`Error [IST0101] (VirtualService default/reviews t.yaml:24) Referenced host+subset in destinationrule not found: "reviews+v1"`,
			`Warning [IST0130] (VirtualService default/reviews t.yaml:25) VirtualService rule #1 not used (only the last rule can have no matches).`,
			`Error [IST0101] (VirtualService default/reviews t.yaml:26) Referenced host not found: "nowhere"`,
		},
	}, {
		name: "subset selecting no pod, routed",
		yaml: reviews + `---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v4, labels: {version: v4}}
  - {name: v5, labels: {version: v5}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews.default.svc.cluster.local, subset: v4}
      weight: 50
`,
		want: []string{`Error [IST0173] (DestinationRule default/reviews t.yaml:24) The Subset v4 defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream).`},
	}, {
		name: "destination rule host unknown",
		yaml: `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reveiws
`,
		want: []string{`Warning [IST0174] (DestinationRule default/reviews t.yaml:5) The host reveiws defined in the DestinationRule does not match any services in the mesh.`},
	}, {
		name: "conflicting mesh virtual services",
		yaml: reviews + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: c, namespace: other}
spec:
  hosts: [reviews.default.svc.cluster.local]
  exportTo: ["."]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]
`,
		want: []string{
			`Error [IST0109] (VirtualService default/a t.yaml:21) The VirtualServices default/a,default/b associated with mesh gateway define the same host reviews.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.`,
			`Error [IST0109] (VirtualService default/b t.yaml:28) The VirtualServices default/a,default/b associated with mesh gateway define the same host reviews.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.`,
		},
	}, {
		name: "port names",
		yaml: `
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: web, port: 80, targetPort: 8080}
  - {name: http-api, port: 81}
  - {name: metrics, port: 82, appProtocol: http}
  - {name: dns, port: 53, protocol: UDP}
`,
		want: []string{`Info [IST0118] (Service default/web t.yaml:7) Port name web (port: 80, targetPort: 8080) doesn't follow the naming convention of Istio port.`},
	}, {
		name: "gateway selector matches nothing (kubernetes)",
		yaml: `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
`,
		want: []string{`Error [IST0101] (Gateway default/gw t.yaml:5) Referenced selector not found: "istio=ingressgateway"`},
	}, {
		name: "gateway on the built-in ingress gateway, wrong port (local mesh)",
		opts: Options{LocalMesh: true},
		yaml: `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}
  - {port: {number: 80, name: http2, protocol: HTTP}, hosts: ["*"]}
  - {port: {number: 9090, name: http3, protocol: HTTP}, hosts: ["*"]}
`,
		want: []string{`Warning [IST0162] (Gateway default/gw t.yaml:9) The gateway is listening on a target port (port 9090) that is not defined in the Service associated with its workload instances (Pod selector istio=ingressgateway). If you need to access the gateway port through the gateway Service, it will not be available.`},
	}, {
		name: "virtual service host not in gateway",
		opts: Options{LocalMesh: true},
		yaml: reviews + `---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["testing.com"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: testing-service}
spec:
  hosts: [wrong.com]
  gateways: [istio-system/gw]
  http: [{route: [{destination: {host: reviews}}]}]
`,
		want: []string{`Warning [IST0132] (VirtualService default/testing-service t.yaml:29) one or more host [wrong.com] defined in VirtualService default/testing-service not found in Gateway istio-system/gw.`},
	}, {
		name: "policies selecting nothing",
		yaml: reviews + `---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap}
spec:
  selector: {matchLabels: {app: revews}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: pa}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra, namespace: istio-system}
spec:
  selector: {matchLabels: {app: reviews}}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ra2, namespace: other}
spec:
  selector: {matchLabels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  workloadSelector: {labels: {app: ratings}}
  egress: [{hosts: ["./*"]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: tel}
spec:
  selector: {matchLabels: {app: ratings}}
`,
		want: []string{
			`Warning [IST0127] (AuthorizationPolicy default/ap t.yaml:21) No matching workloads for this resource with the following labels: app=revews`,
			`Warning [IST0127] (RequestAuthentication other/ra2 t.yaml:40) No matching workloads for this resource with the following labels: app=reviews`,
			`Error [IST0101] (Sidecar default/sc t.yaml:46) Referenced selector not found: "app=ratings"`,
			`Warning [IST0127] (Telemetry default/tel t.yaml:53) No matching workloads for this resource with the following labels: app=ratings`,
		},
	}, {
		name: "unreachable rules and ineffective matches",
		yaml: reviews + `---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /a}}, {headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews}}]
  - name: dup
    match: [{name: again, headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
  - name: late
    match: [{uri: {prefix: /b}}]
    route: [{destination: {host: reviews}}]
`,
		want: []string{
			`Info [IST0131] (VirtualService default/reviews t.yaml:25) VirtualService rule #1 match #1 is not used (duplicate/overlapping match in rule #0).`,
			`Warning [IST0130] (VirtualService default/reviews t.yaml:27) VirtualService rule "dup" not used (all matches used by prior rules).`,
			`Info [IST0131] (VirtualService default/reviews t.yaml:28) VirtualService rule "dup" match "again" is not used (duplicate/overlapping match in rule #0).`,
			`Warning [IST0130] (VirtualService default/reviews t.yaml:31) VirtualService rule "late" not used (only the last rule can have no matches).`,
		},
	}, {
		name: "namespace not injected (kubernetes)",
		opts: Options{NamespaceInjection: true},
		yaml: `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Namespace
metadata: {name: empty}
---
apiVersion: v1
kind: Namespace
metadata: {name: labelled, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: shop, labels: {app: p}}
spec: {containers: [{name: c, image: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: labelled}
spec: {containers: [{name: c, image: c}]}
`,
		want: []string{`Info [IST0102] (Namespace shop t.yaml:3) The namespace is not enabled for Istio injection. Run 'kubectl label namespace shop istio-injection=enabled' to enable it, or 'kubectl label namespace shop istio-injection=disabled' to explicitly mark it as not needing injection.`},
	}, {
		name: "namespace injection is not checked for the local mesh",
		opts: Options{LocalMesh: true},
		yaml: `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: shop}
spec: {containers: [{name: c, image: c}]}
`,
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := run(t, c.yaml, c.opts)
			if !slices.Equal(got, c.want) {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
}

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]Level{"info": Info, "Warning": Warning, "ERROR": Error} {
		if got, err := ParseLevel(in); err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseLevel("fatal"); err == nil {
		t.Error("ParseLevel(fatal) succeeded")
	}
}
