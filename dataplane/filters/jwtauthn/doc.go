// Package jwtauthn is Envoy's JWT authentication HTTP filter in
// skiff-proxy: envoy.filters.http.jwt_authn (typed_config
// envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication, per-route
// PerRouteConfig). Istio compiles every RequestAuthentication into it.
//
// The package owns JOSE verification (RS*, PS*, ES* with the standard
// library), JWKS from inline config or fetched through a cluster of the
// proxy with caching and refresh, token extraction (headers, query
// parameters, cookies), the requirement tree (provider_name, requires_any,
// requires_all, allow_missing, allow_missing_or_failed) and the outputs of a
// verified token: the payload in the stream's dynamic metadata under
// "envoy.filters.http.jwt_authn", forward_payload_header and
// claim_to_headers. Failures answer 401 (403 for a disallowed audience)
// with Envoy's status texts and a www-authenticate header.
//
// Importing the package registers the filter with hcm.RegisterFilter.
package jwtauthn
