// Package grafana holds Grafana dashboards for Istio's standard metrics
// (mesh, service and workload views), as JSON models Grafana imports.
package grafana

import "embed"

// Dashboards are the dashboard JSON files, by file name.
//
//go:embed *.json
var Dashboards embed.FS
