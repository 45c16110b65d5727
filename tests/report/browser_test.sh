#!/bin/bash
# The run report in a real browser (Debian's chromium-headless-shell, which install-deps.sh
# installs; skipped, saying why, where it is missing):
#   1. two short tpipe train runs (pp 2 and pp 1) write report.html; `tpipe report A B` compares them;
#   2. the browser loads each page with every request sent to a local proxy that counts them:
#      none may come (the page is self-contained), and the console must stay empty;
#   3. its DOM has the expected charts, each with a drawn path, and both timelines as images;
#   4. a PNG screenshot is taken (kept in the build directory: tests/report-screenshot.png).
# Usage: browser_test.sh TPIPE_BINARY SCREENSHOT_PNG
set -u
TPIPE=$(realpath "$1")
SHOT=$2
SKIP=77
BROWSER=$(command -v chromium-headless-shell || command -v chromium || true)
[ -n "$BROWSER" ] || { echo "skipped: no chromium-headless-shell (scripts/install-deps.sh installs it)"; exit $SKIP; }
command -v python3 >/dev/null || { echo "skipped: python3 counts the browser's requests"; exit $SKIP; }
WORK=$(mktemp -d)
PROXY_PID=
cleanup() { [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
cd "$WORK"

MODEL="--layers 2 --dim 32 --heads 2 --seq-len 32 --microbatch-size 4 --steps 6 --eval-every 3 --eval-batches 1"
"$TPIPE" train $MODEL --stages 2 --microbatches 4 --sample-chars 60 --clip 1 --out pp2 > pp2.log 2>&1 ||
  fail "tpipe train (pp 2): $(tail -3 pp2.log)"
"$TPIPE" train $MODEL --stages 1 --microbatches 4 --sample-chars 0 --out pp1 > pp1.log 2>&1 ||
  fail "tpipe train (pp 1): $(tail -3 pp1.log)"
for f in report.html run.json planned.svg timeline.svg metrics.jsonl; do
  [ -s "pp2/$f" ] || fail "tpipe train left no pp2/$f"
done
"$TPIPE" report pp1 pp2 --out compare.html > report.log 2>&1 || fail "tpipe report: $(cat report.log)"

# A proxy that only counts: any request the pages make reaches it.
python3 - > proxy.port <<'EOF' &
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
n = 0
while True:
    c, _ = s.accept()
    n += 1
    open("proxy.count", "w").write(str(n))
    c.close()
EOF
PROXY_PID=$!
for _ in $(seq 50); do [ -s proxy.port ] && break; sleep 0.1; done
PORT=$(cat proxy.port)
[ -n "$PORT" ] || fail "the counting proxy did not start"

browse() {  # PAGE WHAT...: runs the browser on PAGE; its stderr goes to $PAGE.err
  timeout 60 "$BROWSER" --no-sandbox --disable-gpu --hide-scrollbars --enable-logging=stderr --v=0 \
    --proxy-server="http://127.0.0.1:$PORT" --proxy-bypass-list='<-loopback>' "${@:2}" "file://$WORK/$1" \
    2> "$1.err"
}

for page in pp2/report.html compare.html; do
  browse "$page" --dump-dom > "$page.dom" || fail "the browser could not load $page: $(tail -3 "$page.err")"
  if grep -q "CONSOLE" "$page.err"; then fail "console messages on $page: $(grep CONSOLE "$page.err" | head -3)"; fi
  for id in chart-loss chart-loss-log chart-lr chart-grad-norm chart-throughput chart-gflops chart-bubble \
            chart-activations; do
    python3 - "$page.dom" "$id" <<'EOF' || fail "$page: chart $id is missing or draws nothing"
import re, sys
dom, chart = open(sys.argv[1]).read(), sys.argv[2]
m = re.search(r'<svg[^>]*id="%s"[^>]*>(.*?)</svg>' % re.escape(chart), dom, re.S)
paths = re.findall(r'<path class="series"[^>]* d="M[0-9.]+,[0-9.]+ L[^"]+"', m.group(1)) if m else []
sys.exit(0 if paths else 1)
EOF
  done
  for alt in "measured timeline" "planned timeline"; do
    grep -q "<img alt=\"$alt\" src=\"data:image/svg+xml;base64," "$page.dom" || fail "$page: no $alt image"
  done
done
grep -q 'data-series="pp1: train"' compare.html.dom && grep -q 'data-series="pp2: train"' compare.html.dom ||
  fail "compare.html does not overlay both runs' curves"
grep -q "<h2>Sample</h2>" pp2/report.html.dom || fail "pp2/report.html has no sample text"

browse pp2/report.html --screenshot="$WORK/shot.png" --window-size=1280,2400 > /dev/null ||
  fail "no screenshot: $(tail -3 pp2/report.html.err)"
[ "$(head -c 8 shot.png | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] || fail "the screenshot is not a PNG"
[ "$(stat -c %s shot.png)" -gt 50000 ] || fail "the screenshot is nearly empty ($(stat -c %s shot.png) bytes)"
cp shot.png "$SHOT"
sleep 0.3
REQUESTS=$(cat proxy.count 2>/dev/null || echo 0)
[ "$REQUESTS" = 0 ] || fail "the pages made $REQUESTS network requests"
echo "PASS: report.html and compare.html render with no console message and no request; screenshot $SHOT"
