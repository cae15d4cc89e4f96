#!/usr/bin/env bash
# Not a peer (the leading "_" keeps the harness away): alternating A/B of two
# peers' two-hop chains, to measure a small CPU difference (e.g. metrics on
# versus off) that a single harness run on a shared machine cannot resolve.
# Per round, for each peer (order A B in odd rounds, B A in even ones, so a
# drift in background load cancels): a fresh upstream-facing instance and a
# client instance in front of it, a 2 s warm-up, then fortio -qps $QPS -c 16
# for $DURATION; proxy CPU from /proc/PID/stat of both instances.
#
#   SKIFF_PROXY=bin/skiff-proxy bench/peers/_ab.sh skiff-proxy-mtls skiff-proxy-mtls-metrics 6
#
# Prints one line per run and the mean and median paired difference.
# Ports 26101-26103 of 127.0.0.1 must be free.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export BENCH_DIR=${BENCH_DIR:-$here/../../../shared/bench}
a=${1:?usage: $0 PEER_A PEER_B [ROUNDS]} b=${2:?usage: $0 PEER_A PEER_B [ROUNDS]} rounds=${3:-6}
(( rounds >= 1 && rounds <= 20 )) || { echo "ROUNDS must be 1..20" >&2; exit 2; }
QPS=${QPS:-1000} DURATION=${DURATION:-15s}
FORTIO=${FORTIO:-$(command -v fortio || echo "$(go env GOPATH)/bin/fortio")}
w=$(mktemp -d)
up=26101 s_port=26102 c_port=26103
"$FORTIO" server -http-port 127.0.0.1:$up -grpc-port disabled -redirect-port disabled -tcp-port disabled \
  -udp-port disabled -loglevel Warning >"$w/up.log" 2>&1 &
upid=$!
cleanup() {
  for d in "$w"/*/; do [[ -f $d/peer ]] && bash "$here/$(cat "$d/peer").sh" stop "$d" >/dev/null 2>&1 || true; done
  kill "$upid" 2>/dev/null || true
  rm -rf "$w"
}
trap cleanup EXIT
cpu() { local s=0 p f; for p in "$@"; do read -r -a f <"/proc/$p/stat"; s=$((s + f[13] + f[14])); done; echo "$s"; }
url="http://127.0.0.1:$c_port/echo?size=1024"
for ((r = 1; r <= rounds; r++)); do
  order=("$a" "$b"); (( r % 2 )) || order=("$b" "$a")
  for peer in "${order[@]}"; do
    d=$w/$r-$peer; mkdir -p "$d/s" "$d/c"; echo "$peer" >"$d/s/peer"; echo "$peer" >"$d/c/peer"
    bash "$here/$peer.sh" check >/dev/null
    s=$(bash "$here/$peer.sh" start $up $s_port "$d/s"); c=$(bash "$here/$peer.sh" start $s_port $c_port "$d/c")
    for _ in $(seq 100); do [[ $(curl -s -o /dev/null -w '%{http_code}' "$url") == 200 ]] && break; sleep 0.1; done
    "$FORTIO" load -qps "$QPS" -c 16 -t 2s "$url" >/dev/null 2>&1
    c0=$(cpu "$s" "$c"); t0=$(date +%s.%N)
    "$FORTIO" load -qps "$QPS" -c 16 -t "$DURATION" -r 0.00001 -json "$d/f.json" "$url" >/dev/null 2>&1
    c1=$(cpu "$s" "$c"); t1=$(date +%s.%N)
    bash "$here/$peer.sh" stop "$d/c"; bash "$here/$peer.sh" stop "$d/s"; rm -f "$d/s/peer" "$d/c/peer"
    awk -v r="$r" -v p="$peer" -v c=$((c1 - c0)) -v t0="$t0" -v t1="$t1" -v hz="$(getconf CLK_TCK)" \
      -v q="$(jq .ActualQPS "$d/f.json")" -v e="$(jq '.DurationHistogram.Count - (.RetCodes["200"] // 0)' "$d/f.json")" \
      -v p99="$(jq '.DurationHistogram.Percentiles[] | select(.Percentile == 99) | .Value * 1000' "$d/f.json")" \
      'BEGIN { v = c / hz / (t1 - t0); printf "%d %s qps=%.1f p99_ms=%.3f errors=%d vcpu_per_1000rps_per_proxy=%.4f\n", r, p, q, p99, e, v / (q / 1000) / 2 }'
    sleep 1
  done
done | tee "$w/lines"
awk -v a="$a" -v b="$b" '
  { split($6, kv, "="); v[$1, $2] = kv[2] }
  END {
    n = 0
    for (r = 1; v[r, a] != ""; r++) { sa += v[r, a]; sb += v[r, b]; d[++n] = (v[r, b] / v[r, a] - 1) * 100 }
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (d[j] < d[i]) { t = d[i]; d[i] = d[j]; d[j] = t }
    med = (n % 2) ? d[(n + 1) / 2] : (d[n / 2] + d[n / 2 + 1]) / 2
    printf "mean vCPU/1000rps per proxy: %s %.4f, %s %.4f (%+.1f %%); median paired difference %+.1f %% over %d rounds\n", a, sa / n, b, sb / n, (sb / sa - 1) * 100, med, n
  }' "$w/lines"
