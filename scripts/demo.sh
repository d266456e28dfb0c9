#!/usr/bin/env bash
# The demo: edgesnap with examples/edgesnap.toml (index in ./data, snapshots in ./snapshots,
# domain localhost, app *, every 5 s, both modes), one sample stream pushed
# with ffmpeg in real time, then where the JPGs are and what the API says.
set -euo pipefail
bin="$1"
cd "$(dirname "$0")/.."
export EDGESNAP_OPERATOR_TOKEN="${EDGESNAP_OPERATOR_TOKEN:-demo-operator-token-0123}"
api="http://127.0.0.1:8080"

"$bin" check-config examples/edgesnap.toml
start_host() {
  "$bin" serve --config examples/edgesnap.toml 2> data-demo.log &
  host=$!
  for _ in $(seq 100); do curl -sf "$api/healthz" >/dev/null && return 0; kill -0 $host 2>/dev/null || break; sleep 0.1; done
  curl -sf "$api/healthz" >/dev/null
}
trap 'kill -TERM $host 2>/dev/null; wait $host 2>/dev/null || true' EXIT
if ! start_host; then
  if grep -q "move it away" data-demo.log; then
    # An index from an older edgesnap (no migrations before 1.0): keep it aside.
    aside="data/index.redb.$(date +%s).old"
    mv data/index.redb "$aside"
    echo "demo: ./data/index.redb was written by an older edgesnap; moved to $aside"
    start_host || { echo "edgesnap did not start; see data-demo.log"; tail -5 data-demo.log; exit 1; }
  else
    echo "edgesnap did not start; see data-demo.log"; tail -5 data-demo.log; exit 1
  fi
fi

start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
echo "pushing 16 s of a test pattern to rtmp://127.0.0.1:1935/live/cam1 (real time)..."
ffmpeg -hide_banner -loglevel error -re -f lavfi -i "testsrc2=size=1280x720:rate=25" -t 16 \
  -c:v libx264 -preset veryfast -g 50 -pix_fmt yuv420p -f flv rtmp://127.0.0.1:1935/live/cam1
sleep 1
end=$(date -u -d '+1 minute' +%Y-%m-%dT%H:%M:%SZ)

echo
echo "snapshots in ./snapshots:"
find snapshots -name '*.jpg' | sort | sed 's/^/  /'
echo
echo "GET /v1/domains/localhost/snapshots?app=live&stream=cam1&start_time=$start&end_time=$end"
curl -sf -H "Authorization: Bearer $EDGESNAP_OPERATOR_TOKEN" \
  "$api/v1/domains/localhost/snapshots?app=live&stream=cam1&start_time=$start&end_time=$end&limit=100" \
  | python3 -m json.tool
echo
echo "the same through the CLI: edgesnap snapshots ls --domain localhost --app live --stream cam1 --since 5m"
EDGESNAP_SERVER="$api" "$bin" snapshots ls --domain localhost --app live --stream cam1 --since 5m
echo
echo "Open any \"url\" above in a browser while the host runs. To keep it running:"
echo "  EDGESNAP_OPERATOR_TOKEN=$EDGESNAP_OPERATOR_TOKEN $bin serve --config examples/edgesnap.toml"
echo "and open the console at $api/console/ (sign in with the token $EDGESNAP_OPERATOR_TOKEN)."
