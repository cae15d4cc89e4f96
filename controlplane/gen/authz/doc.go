// Package authz turns Istio's AuthorizationPolicy and RequestAuthentication
// into the HTTP and network filters istiod puts on a workload's inbound
// chains (and a gateway's chains): jwt_authn for RequestAuthentication, the
// RBAC shadow filter plus ext_authz for CUSTOM, and one RBAC filter each for
// AUDIT, DENY and ALLOW, shaped and named as Istio names them
// (ns[NS]-policy[NAME]-rule[i], istio_dry_run_* and istio_ext_authz_ stat
// prefixes), so real Envoy and skiff-proxy accept the same output.
//
// Build is a pure function of the workload (namespace, labels, gateway
// name), the policies and the MeshConfig. What Istio refuses or skips comes
// back as warnings naming the object and field, never as a failure: a bad
// rule drops out of an ALLOW policy (it then allows less) and out of a
// DENY or AUDIT policy only the bad value drops (it then matches more), as
// in istiod.
package authz
