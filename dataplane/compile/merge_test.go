package compile

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/skiff-mesh/skiff/dataplane/xdsclient"
)

func cl(name string) xdsclient.Resource {
	return xdsclient.Resource{Name: name, Message: &clusterv3.Cluster{Name: name}}
}

func names(m map[string]*Resource) string {
	return strings.Join(sortedKeys(m), ",")
}

// State of the world for CDS replaces the whole set; EDS keeps names the
// response did not carry; delta removes only what it names.
func TestMergeSemantics(t *testing.T) {
	m := New(Options{})
	next, changed, removed, err := m.merge(clusterType, &xdsclient.Update{Full: true, Version: "1",
		Resources: []xdsclient.Resource{cl("a"), cl("b")}})
	if err != nil || names(next) != "a,b" || strings.Join(changed, ",") != "a,b" || len(removed) != 0 {
		t.Fatalf("first CDS: %v %v %v %v", names(next), changed, removed, err)
	}
	m.dynamic[clusterType] = next

	// Same b, no a, new c: a removed, c changed, b untouched (and keeps its
	// last-updated time).
	next, changed, removed, err = m.merge(clusterType, &xdsclient.Update{Full: true, Version: "2",
		Resources: []xdsclient.Resource{cl("b"), cl("c")}})
	if err != nil || names(next) != "b,c" || strings.Join(changed, ",") != "c" || strings.Join(removed, ",") != "a" {
		t.Fatalf("second CDS: %v changed %v removed %v %v", names(next), changed, removed, err)
	}
	if next["b"].LastUpdated != m.dynamic[clusterType]["b"].LastUpdated || next["b"].Version != "2" {
		t.Errorf("unchanged cluster b: last updated moved or version not bumped: %+v", next["b"])
	}
	m.dynamic[clusterType] = next

	// Delta: only named removals.
	next, _, removed, err = m.merge(clusterType, &xdsclient.Update{Removed: []string{"c", "zzz"}})
	if err != nil || names(next) != "b" || strings.Join(removed, ",") != "c" {
		t.Fatalf("delta removal: %v removed %v %v", names(next), removed, err)
	}

	// EDS state of the world carries some subscribed names only.
	m.dynamic[endpointType] = map[string]*Resource{"x": {Message: &endpointv3.ClusterLoadAssignment{ClusterName: "x"}}}
	next, _, removed, err = m.merge(endpointType, &xdsclient.Update{Full: true,
		Resources: []xdsclient.Resource{{Name: "y", Message: &endpointv3.ClusterLoadAssignment{ClusterName: "y"}}}})
	if err != nil || names(next) != "x,y" || len(removed) != 0 {
		t.Fatalf("EDS keeps unlisted: %v removed %v %v", names(next), removed, err)
	}
}

func TestMergeRefusesDuplicatesAndStaticNames(t *testing.T) {
	m := New(Options{})
	m.static[clusterType] = map[string]*Resource{"xds": {Message: &clusterv3.Cluster{Name: "xds"}}}
	_, _, _, err := m.merge(clusterType, &xdsclient.Update{Full: true,
		Resources: []xdsclient.Resource{cl("a"), cl("a"), cl("xds")}})
	if err == nil {
		t.Fatal("duplicate and static-colliding names were accepted")
	}
	for _, want := range []string{`cluster "a": appears twice in one response`, `cluster "xds": a static resource of the same name exists in the bootstrap`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if len(m.dynamic[clusterType]) != 0 {
		t.Error("a refused update changed the applied state")
	}
}
