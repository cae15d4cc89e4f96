package server

import (
	"flag"
	"time"
)

// RegisterFlags binds skiffd's command-line flags to o, so skiffd and the
// copy built into skiff (`skiff __skiffd`) take the same ones.
func (o *Options) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.ConfigDir, "config-dir", "", "directory of Kubernetes-style YAML (Istio and Gateway API kinds, Services, Pods, …) to serve; watched for changes")
	fs.StringVar(&o.XDSAddr, "xds-addr", ":15010", "plaintext xDS (ADS) address")
	fs.StringVar(&o.SecureAddr, "secure-addr", ":15012", "xDS (ADS) and the CA (istio.v1.auth.IstioCertificateService) over TLS; \"\" serves neither")
	fs.StringVar(&o.MonitoringAddr, "monitoring-addr", ":15014", "debug endpoints and Prometheus metrics address")
	fs.StringVar(&o.ListenFDs, "listen-fds", "", "serve address flags on sockets a parent bound and passed down, as `FLAG=FD,…` (xds-addr, secure-addr, monitoring-addr; skiff up uses it so no other process takes a picked port)")
	fs.StringVar(&o.DomainSuffix, "domain", "cluster.local", "DNS domain suffix of services")
	fs.StringVar(&o.RootNamespace, "root-namespace", "", "namespace whose config applies mesh-wide (default: the mesh config's rootNamespace, istio-system)")
	fs.StringVar(&o.TrustDomain, "trust-domain", "", "SPIFFE trust domain of workload identities (default: the mesh config's trustDomain, cluster.local); contradicting --meshconfig is an error")
	fs.StringVar(&o.MeshConfigFile, "meshconfig", "", "`FILE` of Istio's MeshConfig YAML (the istio ConfigMap's mesh key): trustDomain, rootNamespace, extensionProviders, …")
	fs.StringVar(&o.CADir, "ca-dir", "", "`DIR` keeping the CA's self-signed root (made on first start; relative to the working directory); default "+DefaultCADir+", or in Kubernetes mode the Secret istio-ca-secret of the root namespace")
	fs.StringVar(&o.CACertsDir, "cacerts-dir", "", "`DIR` in Istio's plugged-in CA layout (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem); used instead of --ca-dir when its files exist, and reloaded when they change")
	fs.DurationVar(&o.WorkloadCertTTL, "workload-cert-ttl", 24*time.Hour, "validity of workload certificates when the request asks for none (Istio's DEFAULT_WORKLOAD_CERT_TTL)")
	fs.DurationVar(&o.MaxWorkloadCertTTL, "max-workload-cert-ttl", 90*24*time.Hour, "longest validity a workload may ask for (Istio's MAX_WORKLOAD_CERT_TTL)")
	fs.StringVar(&o.BootstrapTokensFile, "bootstrap-tokens", "", "`FILE` of bootstrap token hashes (JSON lines of {sha256, namespace, serviceAccount, expires}) whose tokens the CA accepts as \"authorization: Bearer TOKEN\"; watched (skiff up writes it)")
	fs.StringVar(&o.RootCertOut, "root-cert-out", "", "write the CA's trust bundle (PEM) to `FILE`, and rewrite it when the roots change")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "Kubernetes mode: read the mesh from the API server of this kubeconfig `FILE` (\"in-cluster\" in a pod); --config-dir may be given as well")
	fs.StringVar(&o.WebhookAddr, "webhook-addr", ":15017", "Kubernetes mode: the injection and validation webhooks over TLS (\"\" serves none)")
	fs.StringVar(&o.WebhookURL, "webhook-url", "", "Kubernetes mode: the https URL the API server calls the webhooks at (default: the istiod Service of the root namespace, port 443)")
	fs.StringVar(&o.Revision, "revision", "", "Kubernetes mode: this control plane's revision (istio.io/rev); empty is the default revision")
	fs.StringVar(&o.ProxyImage, "proxy-image", "", "Kubernetes mode: the sidecar image the injector writes (default ghcr.io/skiff-mesh/skiff-proxy:VERSION)")
	fs.BoolVar(&o.ValidationStatus, "validation-status", false, "Kubernetes mode: write validation messages into Istio objects' status (Istio's PILOT_ENABLE_STATUS)")
	fs.BoolVar(&o.LocalMesh, "local-mesh", false, "every workload has a sidecar unless it opts out (the local mesh); otherwise the injector's marks decide")
}
