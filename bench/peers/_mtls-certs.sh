# Sourced by the mTLS peers (the leading "_" keeps the harness from taking
# it for a peer). certs DIR makes, once per run, a root and the workload
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
