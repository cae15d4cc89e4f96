package validation

import "testing"

func TestDestinationRule(t *testing.T) {
	runCases(t, []vcase{
		{"valid", drDoc(`host: reviews
trafficPolicy:
  loadBalancer:
    consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 1024}}
    localityLbSetting:
      distribute:
      - from: us-west/zone1/*
        to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}
  connectionPool:
    tcp: {maxConnections: 100, connectTimeout: 30ms}
    http: {http1MaxPendingRequests: 10}
  outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m}
  tls: {mode: MUTUAL, credentialName: client-cred}
subsets:
- name: v1
  labels: {version: v1}
`), nil},
		{"duplicate subset", drDoc(`host: reviews
subsets:
- name: v1
  labels: {version: v1}
- name: v1
  labels: {version: v2}
- name: V_2
- labels: {version: v3}
`), []string{
			`spec.subsets[1].name: subset "v1" is already defined at spec.subsets[0]; subset names must be unique`,
			`spec.subsets[2].name: subset name "V_2" is invalid; use at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
			`spec.subsets[3].name: is empty; every subset needs a name`,
		}},
		{"host required", drDoc("host: \"\"\n"), []string{"spec.host: is empty; give a host name such as reviews.default.svc.cluster.local"}},
		{"empty traffic policy", drDoc("host: reviews\ntrafficPolicy: {}\n"), []string{"spec.trafficPolicy: is empty; set at least one field or remove it"}},
		{"consistent hash without key", drDoc("host: reviews\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {minimumRingSize: 10, maglev: {tableSize: 100}}\n"), []string{
			"spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize: applies to ring hash only and cannot be combined with maglev",
			"spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: 100 is not prime; Maglev needs a prime table size such as 65537",
			"warning: spec.trafficPolicy.loadBalancer.consistentHash: has no hash key, so every request hashes alike; set httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName",
		}},
		{"cookie without name", drDoc("host: reviews\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {httpCookie: {ttl: 0s}}\n"), []string{
			"spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name: is empty; name the cookie to hash on"}},
		{"locality distribute and failover", drDoc(`host: reviews
trafficPolicy:
  loadBalancer:
    localityLbSetting:
      distribute:
      - from: "us-west/*/zone"
        to: {"us-west/zone1": 50, "us-east": 40}
      failover:
      - from: us-east
        to: us-east
      - from: us-east/zone1
        to: eu
`), []string{
			"spec.trafficPolicy.loadBalancer.localityLbSetting: sets both distribute and failover; keep one",
			`spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].from: "us-west/*/zone": "*" may only be the whole last segment`,
			"spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to: weights sum to 90; the weights of a distribute entry must add up to 100",
			`spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]: fails over region "us-east" to itself; from and to must differ`,
			`spec.trafficPolicy.loadBalancer.localityLbSetting.failover[1].from: "us-east/zone1" is not a region; failover works between regions only`,
		}},
		{"connection pool ranges", drDoc(`host: reviews
trafficPolicy:
  connectionPool:
    tcp: {maxConnections: -1, connectTimeout: 0s}
    http: {http2MaxRequests: -5, idleTimeout: 0.0001s}
`), []string{
			"spec.trafficPolicy.connectionPool.tcp.maxConnections: -1 is negative; use 0 for the default or a positive limit",
			"spec.trafficPolicy.connectionPool.tcp.connectTimeout: duration 0s must be positive",
			"spec.trafficPolicy.connectionPool.http.http2MaxRequests: -5 is negative; use 0 for the default or a positive limit",
			"spec.trafficPolicy.connectionPool.http.idleTimeout: duration 100µs is not a whole number of milliseconds; Envoy honours durations to the millisecond",
		}},
		{"empty connection pool", drDoc("host: reviews\ntrafficPolicy:\n  connectionPool: {}\n"), []string{"spec.trafficPolicy.connectionPool: is empty; set tcp or http"}},
		{"outlier detection", drDoc(`host: reviews
trafficPolicy:
  outlierDetection:
    maxEjectionPercent: 101
    minHealthPercent: -1
    consecutiveLocalOriginFailures: 5
    interval: -1s
`), []string{
			"spec.trafficPolicy.outlierDetection.interval: duration -1s must be positive",
			"spec.trafficPolicy.outlierDetection.maxEjectionPercent: 101 is out of range; use 0-100",
			"spec.trafficPolicy.outlierDetection.minHealthPercent: -1 is out of range; use 0-100",
			"spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures: takes effect only with splitExternalLocalOriginErrors: true; set it or remove this field",
		}},
		{"mutual tls needs cert and key", drDoc("host: reviews\ntrafficPolicy:\n  tls: {mode: MUTUAL, caCertificates: /ca.pem}\n"), []string{
			"spec.trafficPolicy.tls.clientCertificate: is required for MUTUAL TLS unless credentialName is set",
			"spec.trafficPolicy.tls.privateKey: is required for MUTUAL TLS unless credentialName is set",
		}},
		{"credentialName and files", drDoc("host: reviews\ntrafficPolicy:\n  tls: {mode: SIMPLE, credentialName: c, caCertificates: /ca.pem}\n"), []string{
			"spec.trafficPolicy.tls: sets credentialName and certificate files; use one or the other"}},
		{"istio mutual with files", drDoc("host: reviews\ntrafficPolicy:\n  tls: {mode: ISTIO_MUTUAL, clientCertificate: /c.pem}\n"), []string{
			"spec.trafficPolicy.tls: mode ISTIO_MUTUAL uses no certificates of yours; remove clientCertificate, privateKey, caCertificates and credentialName"}},
		{"port level settings", drDoc(`host: reviews
trafficPolicy:
  portLevelSettings:
  - port: {number: 80}
    tls: {mode: SIMPLE}
  - port: {number: 80}
    loadBalancer: {simple: RANDOM}
  - loadBalancer: {simple: RANDOM}
  - port: {number: 81}
subsets:
- name: v1
  trafficPolicy:
    portLevelSettings:
    - port: {number: 80}
      tls: {mode: SIMPLE}
`), []string{
			"spec.trafficPolicy.portLevelSettings[1].port.number: port 80 already has settings at spec.trafficPolicy.portLevelSettings[0]; merge them",
			"spec.trafficPolicy.portLevelSettings[2].port: is required; name the port these settings apply to",
			"spec.trafficPolicy.portLevelSettings[3]: sets nothing for its port; set loadBalancer, connectionPool, outlierDetection or tls",
			"spec.subsets[0].trafficPolicy.portLevelSettings: is allowed only in the top-level trafficPolicy, not a subset's",
		}},
		{"tunnel", drDoc("host: reviews\ntrafficPolicy:\n  tunnel: {protocol: GET}\n"), []string{
			`spec.trafficPolicy.tunnel.protocol: "GET" is not a tunnel protocol; use CONNECT or POST`,
			"spec.trafficPolicy.tunnel.targetHost: is empty; give the host the tunnel connects to",
			"spec.trafficPolicy.tunnel.targetPort: port 0 is out of range; use 1-65535",
		}},
		{"maglev, warmup and deprecated fields", drDoc(`host: reviews
trafficPolicy:
  loadBalancer:
    consistentHash: {useSourceIp: true, minimumRingSize: 1024}
    warmup: {aggression: 0.5}
  outlierDetection: {consecutiveErrors: 5}
  connectionPool:
    http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}
subsets:
- name: v1
  trafficPolicy:
    loadBalancer:
      consistentHash: {useSourceIp: true, maglev: {tableSize: 5000011}}
`), []string{
			"spec.trafficPolicy.loadBalancer.warmup.duration: is required; give how long new endpoints ramp up",
			"spec.trafficPolicy.loadBalancer.warmup.aggression: 0.5 is below 1; use 1 for linear ramp-up or more for a steeper one",
			"spec.trafficPolicy.connectionPool.http.useClientProtocol: cannot be true with h2UpgradePolicy UPGRADE; keep one",
			"spec.subsets[0].trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: 5000011 is too large; Envoy takes primes below 5000011",
			"warning: spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize: is deprecated; use ringHash.minimumRingSize",
			"warning: spec.trafficPolicy.outlierDetection.consecutiveErrors: is deprecated; use consecutive5xxErrors or consecutiveGatewayErrors",
		}},
		{"tunnel with proxy protocol", drDoc("host: reviews\ntrafficPolicy:\n  tunnel: {targetHost: \"bad host\", targetPort: 80}\n  proxyProtocol: {version: V1}\n"), []string{
			"spec.trafficPolicy.proxyProtocol: cannot be combined with tunnel; keep one",
			`spec.trafficPolicy.tunnel.targetHost: "bad host" is neither a DNS name nor an IP address`,
		}},
		{"selector rule stays in its namespace", drDoc("host: reviews\nworkloadSelector: {matchLabels: {}}\nexportTo: [\".\", \"other\", \"~\"]\n"), []string{
			`spec.exportTo[2]: "~" (visible to no one) is allowed only on a ServiceEntry`,
			`spec.exportTo[1]: a DestinationRule with workloadSelector applies in its own namespace only; export it to "." or remove exportTo`,
			`spec.exportTo[2]: a DestinationRule with workloadSelector applies in its own namespace only; export it to "." or remove exportTo`,
			"warning: spec.workloadSelector.matchLabels: is empty, so the selector selects every workload in the namespace; give labels or remove the selector",
		}},
		{"workload selector wildcard", drDoc("host: reviews\nworkloadSelector:\n  matchLabels: {app: \"*\"}\n"), []string{
			"spec.workloadSelector.matchLabels[app]: wildcards are not supported in selectors; give exact label values",
			`spec.workloadSelector.matchLabels[app]: label value "*" is invalid; use at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit`,
		}},
	})
}
