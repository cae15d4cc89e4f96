package ca

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics carry Istio's citadel_server_* names so its dashboards and alerts
// read skiffd unchanged.
type metrics struct {
	csrs          prometheus.Counter     // citadel_server_csr_count
	issued        prometheus.Counter     // citadel_server_success_cert_issuance_count
	parseErrs     prometheus.Counter     // citadel_server_csr_parsing_err_count
	idErrs        prometheus.Counter     // citadel_server_id_extraction_err_count
	authnFailures prometheus.Counter     // citadel_server_authentication_failure_count
	signErrs      *prometheus.CounterVec // citadel_server_csr_sign_err_count{error_type}
	rootExpiry    prometheus.Gauge       // citadel_server_root_cert_expiry_timestamp
	chainExpiry   prometheus.Gauge       // citadel_server_cert_chain_expiry_timestamp
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		csrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citadel_server_csr_count", Help: "The number of CSRs received by Citadel server.",
		}),
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citadel_server_success_cert_issuance_count", Help: "The number of certificates issuances that have succeeded.",
		}),
		parseErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citadel_server_csr_parsing_err_count", Help: "The number of errors occurred when parsing the CSR.",
		}),
		idErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citadel_server_id_extraction_err_count", Help: "The number of errors occurred when extracting the ID from CSR.",
		}),
		authnFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "citadel_server_authentication_failure_count", Help: "The number of authentication failures.",
		}),
		signErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "citadel_server_csr_sign_err_count", Help: "The number of errors occurred when signing the CSR.",
		}, []string{"error_type"}),
		rootExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "citadel_server_root_cert_expiry_timestamp", Help: "The unix timestamp, in seconds, when Citadel root cert will expire.",
		}),
		chainExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "citadel_server_cert_chain_expiry_timestamp", Help: "The unix timestamp, in seconds, when Citadel cert chain will expire.",
		}),
	}
	for _, c := range []prometheus.Collector{m.csrs, m.issued, m.parseErrs, m.idErrs, m.authnFailures, m.signErrs, m.rootExpiry, m.chainExpiry} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("ca: registering metrics (is a second CA using the same registry?): %w", err)
		}
	}
	return m, nil
}
