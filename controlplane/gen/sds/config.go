// Package sds owns the Secret (SDS) side of mesh TLS: how generated
// listeners and clusters name the secrets they need, as Istio names them,
// and the Secret resources skiffd itself serves over ADS.
//
// Two families of names exist. The workload's own identity, "default" (its
// certificate chain and key) and "ROOTCA" (the mesh's trust roots), is
// fetched from the local agent through the "sds-grpc" cluster: skiff-proxy
// answers those in-process and never asks skiffd. Credentials a user names
// (a Gateway's or DestinationRule's credentialName) are fetched from skiffd
// over the ADS stream as "kubernetes://NAME" and, for the CA that verifies
// peers, "kubernetes://NAME-cacert"; Generate serves them from Kubernetes
// Secrets in the config store.
package sds

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Names of the workload identity secrets and of the agent's cluster.
const (
	Default      = "default" // the workload certificate chain and key
	RootCA       = "ROOTCA"  // the mesh's trust roots
	AgentCluster = "sds-grpc"

	// KubernetesPrefix starts the SDS name of a Kubernetes Secret.
	KubernetesPrefix = "kubernetes://"
	// CASuffix ends the name of the CA half of a credential.
	CASuffix = "-cacert"
)

// Identity is the SDS reference to the workload's own certificate
// ("default") or roots ("ROOTCA"), served by the local agent on the
// "sds-grpc" cluster, shaped exactly as Istio shapes it.
func Identity(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{
		Name: name,
		SdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
				ApiType:                   corev3.ApiConfigSource_GRPC,
				SetNodeOnFirstMessageOnly: true,
				TransportApiVersion:       corev3.ApiVersion_V3,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: AgentCluster},
				}}},
			}},
			// The identity exists from the start: waiting for it is right.
			InitialFetchTimeout: durationpb.New(0),
			ResourceApiVersion:  corev3.ApiVersion_V3,
		},
	}
}

// Credential is the SDS reference to a user credential (credentialName),
// fetched from skiffd over ADS. Like Istio it sets no zero initial fetch
// timeout: a Secret that does not exist must not hold a listener back.
func Credential(credentialName string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{
		Name: ResourceName(credentialName),
		SdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			ResourceApiVersion:    corev3.ApiVersion_V3,
		},
	}
}

// ResourceName is the SDS name of a credentialName as Istio writes it:
// "kubernetes://NAME" for a bare name; a name with a scheme is kept
// ("sds://NAME" loses its scheme).
func ResourceName(credentialName string) string {
	if rest, ok := strings.CutPrefix(credentialName, "sds://"); ok {
		return rest
	}
	if strings.Contains(credentialName, "://") {
		return credentialName
	}
	return KubernetesPrefix + credentialName
}
