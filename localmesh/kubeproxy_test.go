package localmesh

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/memory"
)

// A sidecar-less pod reaches a Service's cluster IP as kube-proxy routes
// it: one DNAT per ready endpoint, each taken with kube-proxy's
// probabilities so the shares are even, targetPort resolved by number or
// container port name; unready and unselected pods get nothing.
func TestServiceRules(t *testing.T) {
	store := config.NewStore(nil, slog.New(slog.DiscardHandler))
	errs := memory.New(store).Apply("mesh.yaml", `
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: foo}
spec:
  clusterIP: 198.19.0.10
  selector: {app: httpbin}
  ports: [{name: http, port: 8000, targetPort: 8080}, {name: tcp, port: 9000, targetPort: echo}]
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: foo}
spec:
  clusterIP: None
  selector: {app: httpbin}
  ports: [{port: 80}]
`+podYAML("httpbin-a", "198.18.0.5", "httpbin", true)+podYAML("httpbin-b", "198.18.0.6", "httpbin", true)+
		podYAML("httpbin-c", "198.18.0.7", "httpbin", false)+podYAML("other", "198.18.0.8", "other", true))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	got := serviceRules(store.Snapshot())
	want := `*nat
:SKIFF-SERVICES - [0:0]
-A SKIFF-SERVICES -d 198.19.0.10/32 -p tcp --dport 8000 -m statistic --mode random --probability 0.50000 -j DNAT --to-destination 198.18.0.5:8080
-A SKIFF-SERVICES -d 198.19.0.10/32 -p tcp --dport 8000 -j DNAT --to-destination 198.18.0.6:8080
-A SKIFF-SERVICES -d 198.19.0.10/32 -p tcp --dport 9000 -m statistic --mode random --probability 0.50000 -j DNAT --to-destination 198.18.0.5:9001
-A SKIFF-SERVICES -d 198.19.0.10/32 -p tcp --dport 9000 -j DNAT --to-destination 198.18.0.6:9001
COMMIT
`
	if got != want {
		t.Errorf("rules:\n%s\nwant:\n%s", got, want)
	}
}

func podYAML(name, ip, app string, ready bool) string {
	status := "True"
	if !ready {
		status = "False"
	}
	return strings.NewReplacer("$NAME", name, "$IP", ip, "$APP", app, "$READY", status).Replace(`
---
apiVersion: v1
kind: Pod
metadata: {name: $NAME, namespace: foo, labels: {app: $APP}}
spec:
  containers: [{name: c, command: [x], ports: [{name: echo, containerPort: 9001}]}]
status:
  podIP: $IP
  conditions: [{type: Ready, status: "$READY"}]
`)
}
