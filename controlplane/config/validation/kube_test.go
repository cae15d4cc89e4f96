package validation

import "testing"

func TestKubernetesKinds(t *testing.T) {
	runCases(t, []vcase{
		{"valid service", svcDoc("selector: {app: a}\nports:\n- {name: http, port: 80, targetPort: 8080}\n- {name: grpc-api, port: 90, targetPort: grpc, appProtocol: grpc}\n"), nil},
		{"service ports", svcDoc(`ports:
- {name: http, port: 80}
- {name: http, port: 80}
- {port: 0, protocol: HTTP}
- {name: Web, port: 81, targetPort: "bad_name"}
`), []string{
			`spec.ports[1].name: port name "http" is already used by spec.ports[0]; port names must be unique`,
			"spec.ports[1].port: port 80/TCP is already used by spec.ports[0]; each port and protocol may appear once",
			"spec.ports[2].name: is empty; a Service with several ports must name each, e.g. http-web",
			"spec.ports[2].port: port 0 is out of range; use 1-65535",
			`spec.ports[2].protocol: "HTTP" is not TCP, UDP or SCTP; put the application protocol in the port name prefix or appProtocol`,
			`spec.ports[3].name: port name "Web" is invalid; use at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
			`spec.ports[3].targetPort: "bad_name" is not a port number or container port name; use at most 15 lowercase letters, digits or '-', with at least one letter and no leading, trailing or double '-'`,
		}},
		{"service name starts with a letter", `apiVersion: v1
kind: Service
metadata: {name: 9lives}
spec: {ports: [{port: 80}]}
`, []string{`metadata.name: "9lives" is not a valid Service name; use at most 63 lowercase letters, digits or '-', starting with a letter and ending with a letter or digit`}},
		{"pod without command warns", podDoc("containers:\n- name: app\n  image: example/app\n"), []string{
			"warning: spec.containers[0].command: is empty; the local mesh (skiff up) runs a container's command as a process and will not start this one; Kubernetes runs the image's entrypoint"}},
		{"pod address", `apiVersion: v1
kind: Pod
metadata: {name: p}
spec: {containers: [{name: app, command: [/bin/app]}]}
status: {podIP: 127.0.2.2.1, podIPs: [{ip: 198.18.0.7}, {ip: nope}]}
`, []string{
			`status.podIP: "127.0.2.2.1" is not an IP address; write an IPv4 or IPv6 address such as 198.18.0.7`,
			`status.podIPs[1].ip: "nope" is not an IP address; write an IPv4 or IPv6 address such as 198.18.0.7`,
		}},
		{"deployment", depDoc(`selector: {matchLabels: {app: a}}
template:
  metadata: {labels: {app: b}}
  spec:
    containers:
    - {name: app, command: [/bin/app], ports: [{containerPort: 0, name: http}, {containerPort: 81, name: http}]}
    - {name: app, command: [/bin/app]}
`), []string{
			"spec.selector.matchLabels[app]: app=a does not match spec.template.metadata.labels; the Deployment would select none of its pods",
			"spec.template.spec.containers[0].ports[0].containerPort: port 0 is out of range; use 1-65535",
			`spec.template.spec.containers[0].ports[1].name: port name "http" is used twice in this container`,
			`spec.template.spec.containers[1].name: container name "app" is used twice`,
		}},
		{"metadata name", `apiVersion: v1
kind: Service
metadata: {name: Bad_Name, namespace: Default}
spec: {ports: [{port: 80}]}
`, []string{
			`metadata.name: "Bad_Name" is not a valid name; use at most 253 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit`,
			`metadata.namespace: "Default" is not a valid namespace; use at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
		}},
	})
}
