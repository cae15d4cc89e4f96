# Sourced by the mTLS peers (the leading "_" keeps the harness from taking
# it for a peer): what their sidecars share. certs DIR makes, once per run, a root and the workload
# certificates spiffe://cluster.local/ns/bench/sa/{client,server} with
# openssl: ECDSA P-256, or RSA 2048 with MTLS_KEY=rsa (istio-agent's default).
certs() {
  local d=$1
  [[ -s $d/server.pem ]] && return 0
  mkdir -p "$d"
  local keyopt=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
  [[ ${MTLS_KEY:-ec} == rsa ]] && keyopt=(-newkey rsa:2048)
  openssl req -x509 "${keyopt[@]}" -nodes -days 2 -subj "/O=cluster.local" \
    -keyout "$d/root.key" -out "$d/root.pem" -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  for sa in client server; do
    openssl req -new "${keyopt[@]}" -nodes -subj "/" -keyout "$d/$sa.key" -out "$d/$sa.csr" 2>/dev/null
    printf 'subjectAltName=URI:spiffe://cluster.local/ns/bench/sa/%s\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=critical,CA:FALSE\n' "$sa" >"$d/$sa.ext"
    openssl x509 -req -in "$d/$sa.csr" -CA "$d/root.pem" -CAkey "$d/root.key" -CAcreateserial \
      -days 1 -extfile "$d/$sa.ext" -out "$d/$sa.pem" 2>/dev/null
  done
}

# inbound_chains CERTS ME HCM prints a listener's filters and chains as an
# Istio sidecar's inbound has them in PERMISSIVE mode: tls_inspector, a
# chain for Istio mTLS (ALPN istio, client certificate required, SPIFFE URI
# SAN checked; ME's certificate) and one for plaintext, both running HCM
# (YAML indented for a listener's filters).
inbound_chains() {
  local c=$1 me=$2 hcm=$3
  cat <<EOF
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }
    filter_chains:
    - name: mtls
      filter_chain_match: { transport_protocol: tls, application_protocols: [istio-peer-exchange, istio] }
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates: [{certificate_chain: {filename: $c/$me.pem}, private_key: {filename: $c/$me.key}}]
            validation_context:
              trusted_ca: {filename: $c/root.pem}
              match_typed_subject_alt_names: [{san_type: URI, matcher: {prefix: "spiffe://cluster.local/"}}]
      filters:
$hcm
    - name: plaintext
      filter_chain_match: { transport_protocol: raw_buffer }
      filters:
$hcm
EOF
}
