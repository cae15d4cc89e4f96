// Package kubeca is the Kubernetes side of skiffd's CA, as istiod does it:
// callers of CreateCertificate are authenticated by a TokenReview of their
// service-account token (audience istio-ca), and the trust bundle is
// published to every selected namespace as the istio-ca-root-cert
// ConfigMap (key root-cert.pem), which injected proxies mount.
//
// RBAC skiffd's service account needs for this package:
//   - create tokenreviews.authentication.k8s.io (ClusterRole system:auth-delegator)
//   - get, list, watch namespaces
//   - get, list, watch, create, update configmaps (cluster-wide)
package kubeca
