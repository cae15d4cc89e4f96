// Package rbac is Envoy's role-based access control in skiff-proxy: the
// HTTP filter envoy.filters.http.rbac (typed_config
// envoy.extensions.filters.http.rbac.v3.RBAC, per-route RBACPerRoute) and
// the network filter envoy.filters.network.rbac
// (envoy.extensions.filters.network.rbac.v3.RBAC). Istio compiles every
// AuthorizationPolicy into these two filters.
//
// A config is compiled once into a tree of matchers (permissions and
// principals of envoy.config.rbac.v3) and evaluated per request or per
// connection without locks. Semantics follow Envoy: policies are tried in
// name order; ALLOW admits a request only when a policy matches, DENY
// refuses it when one does, LOG admits everything and sets the
// envoy.common access_log_hint metadata; shadow rules only count. HTTP
// denials are 403 "RBAC: access denied", TCP denials close the connection.
//
// Importing the package registers both filters (hcm.RegisterFilter and
// listener.RegisterNetworkFilter).
package rbac
