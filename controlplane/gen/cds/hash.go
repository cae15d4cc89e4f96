package cds

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	networking "istio.io/api/networking/v1alpha3"
)

// HashPolicy is the route hash policy that makes a consistent-hash load
// balancer (ringHash, maglev) work for traffic to port of the rule's host:
// Envoy hashes on the route, the cluster only picks the ring. It returns
// nil when the rule (with its port-level settings) asks for no
// consistent hashing. The routes generator calls it for each route
// destination without a subset; SubsetHashPolicy for one with a subset.
func HashPolicy(dr *networking.DestinationRule, port int) []*routev3.RouteAction_HashPolicy {
	return hashPolicy(TrafficPolicyFor(dr, port, nil).GetLoadBalancer().GetConsistentHash())
}

// SubsetHashPolicy is HashPolicy for a destination subset, whose own
// traffic policy overrides the rule's.
func SubsetHashPolicy(dr *networking.DestinationRule, port int, subset string) []*routev3.RouteAction_HashPolicy {
	for _, s := range dr.GetSubsets() {
		if s.GetName() == subset {
			return hashPolicy(TrafficPolicyFor(dr, port, s).GetLoadBalancer().GetConsistentHash())
		}
	}
	return HashPolicy(dr, port)
}

// hashPolicy maps Istio's hash key. A cookie's ttl is not passed on:
// skiff-proxy hashes on cookies the client sends but does not generate
// them, and would refuse the whole route for a ttl.
func hashPolicy(ch *networking.LoadBalancerSettings_ConsistentHashLB) []*routev3.RouteAction_HashPolicy {
	if ch == nil {
		return nil
	}
	var hp *routev3.RouteAction_HashPolicy
	switch {
	case ch.GetHttpHeaderName() != "":
		hp = &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
			Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: ch.GetHttpHeaderName()},
		}}
	case ch.GetHttpCookie() != nil:
		hp = &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{
			Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: ch.GetHttpCookie().GetName(), Path: ch.GetHttpCookie().GetPath()},
		}}
	case ch.GetUseSourceIp():
		hp = &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
			ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true},
		}}
	case ch.GetHttpQueryParameterName() != "":
		hp = &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_QueryParameter_{
			QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: ch.GetHttpQueryParameterName()},
		}}
	default:
		return nil
	}
	return []*routev3.RouteAction_HashPolicy{hp}
}
