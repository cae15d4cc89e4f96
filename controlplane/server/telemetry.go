package server

import (
	"log/slog"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"

	"github.com/skiff-mesh/skiff/controlplane/gen/lds"
	"github.com/skiff-mesh/skiff/controlplane/gen/telemetry"
)

// listenerTelemetry decorates every sidecar and gateway listener with
// Istio's metadata exchange, stats, tracing and access logs, from the mesh
// config (defaultProviders, extensionProviders, accessLogFile/Encoding/
// Format, enableTracing, defaultConfig.tracing) and the Telemetry objects
// of each config version. What cannot apply (a provider the mesh config
// lacks, a collector not in the registry) is logged once per version.
func listenerTelemetry(mesh *meshv1alpha1.MeshConfig, log *slog.Logger) lds.Telemetry {
	return telemetry.New(telemetry.Options{Mesh: mesh, Logger: log})
}
