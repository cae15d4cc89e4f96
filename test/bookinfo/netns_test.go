//go:build netns

package bookinfo

import "testing"

// TestBookinfoNetns replays the tasks with each pod in its own network
// namespace and Istio's iptables capture (root only; CI runs as root with
// -tags=netns): the applications call http://reviews:9080/ and so on
// by name, and their sidecars capture the calls.
func TestBookinfoNetns(t *testing.T) {
	t.Parallel()
	// The pods reach skiffd through the bridge; port 0 so as not to collide
	// with another skiffd on this host.
	m := startMesh(t, "netns", "--xds-addr", "198.18.0.1:0")
	replayTasks(t, m)
}
