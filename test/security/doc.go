// Package security replays Istio's security tasks on Skiff's local mesh,
// black box: mutual TLS migration and authentication policy
// (PeerAuthentication), authorization on HTTP and TCP traffic (ALLOW,
// DENY, AUDIT), JWT authentication (RequestAuthentication) and external
// authorization (CUSTOM). It builds the real binaries, runs one `skiff up
// testdata/mesh` with netns capture, applies each task's YAML with `skiff
// apply` and sends the task's requests with curl inside the client pods
// (`skiff exec`, the local mesh's kubectl exec).
//
// The tests need network namespaces and iptables, so they carry the netns
// build tag and run as root: go test -tags netns ./test/security/
// (scripts/test.sh does so when run as root, as CI does). Given the tag
// without root they fail rather than skip.
package security
