#!/usr/bin/env bash
# Soak benchmark (not a test): the daemon under the simulator at a sustainable rate plus hostile
# traffic, for MINUTES (default 30). Prints the daemon's resident memory at start and end (and its
# peak), frames analysed, and checks that every message is accounted for.
#
#   tools/soak.sh [MINUTES]
#
# Environment: BEAMWATCH (binary; default target/release/beamwatch), SOAK_SIZE (frame side, px;
# 256), SOAK_FPS (frames/s; 10), SOAK_MEMORY_MIB ([limits] memory_mib; 512), SOAK_OUT (folder
# kept for inspection; default a temporary one), PYTHON (python3).
#
# Hostile traffic, all the time (tools/soak_hostile.py): a peer sending a million zero-length
# parts in one message (every 5 s, cut off by the guard at the part cap), 40 idle connections to
# the ingest socket, 20 subscribers of the result PUB socket that connect and never read.
set -euo pipefail

minutes=${1:-30}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${BEAMWATCH:-$here/target/release/beamwatch}
size=${SOAK_SIZE:-256}
fps=${SOAK_FPS:-10}
memory=${SOAK_MEMORY_MIB:-512}
python=${PYTHON:-python3}
out=${SOAK_OUT:-$(mktemp -d /tmp/beamwatch-soak.XXXXXX)}
mkdir -p "$out"
[ -x "$bin" ] || { echo "no binary at $bin (cargo build --release)" >&2; exit 1; }

port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ingest=$(port)
results=$(port)
series_frames=100
series=$(( (minutes * 60 * fps + series_frames - 1) / series_frames ))

cat >"$out/soak.toml" <<EOF
[limits]
memory_mib = $memory
[analysis]
metric = "ssim"
[ingest]
endpoint = "tcp://127.0.0.1:$ingest"
mode = "bind"
[pipeline]
out_dir = "$out/daemon"
status_interval_s = 60
[sinks]
pub_endpoint = "tcp://127.0.0.1:$results"
[record]
enabled = false
[view]
enabled = false
EOF

status() { awk -v k="$2:" '$1==k {printf "%.1f", $2/1024}' "/proc/$1/status"; }

BEAMWATCH_LOG=beamwatch=info "$bin" run --config "$out/soak.toml" >"$out/daemon.out" 2>"$out/daemon.log" &
daemon=$!
cleanup() {
    [ -n "${hostile:-}" ] && kill "$hostile" 2>/dev/null || true
    [ -n "${sim:-}" ] && kill "$sim" 2>/dev/null || true
    kill "$daemon" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do
    "$python" -c "import socket; socket.create_connection(('127.0.0.1', $results), 1)" 2>/dev/null && break
    sleep 0.2
done
rss_start=$(status "$daemon" VmRSS)

"$python" "$here/tools/soak_hostile.py" "$ingest" "$results" >"$out/hostile.log" 2>&1 &
hostile=$!
started=$(date +%s)
"$bin" simulate --connect --endpoint "tcp://127.0.0.1:$ingest" --size "$size" --frames "$series_frames" \
    --fps "$fps" --series "$series" --onset-frame 40 >"$out/simulate.txt" 2>"$out/simulate.log" &
sim=$!
# The simulator stops after its series; the soak stops at MINUTES either way.
while kill -0 "$sim" 2>/dev/null && [ $(( $(date +%s) - started )) -lt $(( minutes * 60 )) ]; do
    sleep 5
done
if kill -0 "$sim" 2>/dev/null; then
    kill -INT "$sim" 2>/dev/null || true
fi
wait "$sim" 2>/dev/null || true
sim=
sleep 2 # the last frames through the analysis
rss_end=$(status "$daemon" VmRSS)
rss_peak=$(status "$daemon" VmHWM)
kill "$hostile" 2>/dev/null || true
wait "$hostile" 2>/dev/null || true
hostile=
kill -TERM "$daemon"
wait "$daemon" || { echo "the daemon failed; see $out/daemon.log" >&2; exit 1; }

"$python" - "$out" "$minutes" "$rss_start" "$rss_end" "$rss_peak" "$memory" <<'EOF'
import json, re, sys
out, minutes, rss_start, rss_end, rss_peak, memory = sys.argv[1:]
r = json.load(open(f"{out}/daemon/daemon_report.json"))
sim = open(f"{out}/simulate.txt").read()
m = re.search(r"sent (\d+) series, (\d+) frames \((\d+) messages\)", sim)
hostile = open(f"{out}/hostile.log").read().strip().splitlines()
decode_errors = sum(r["decode_errors"].values())
frames = r["frames_received"]
frames_done = r["frames_analysed"] + r["frames_skipped"] + r["frames_over_budget"] + r["analysis_errors"]
print(f"soak: {minutes} min, [limits] memory_mib = {memory}")
print(f"RSS start {rss_start} MiB, end {rss_end} MiB, peak {rss_peak} MiB")
print(f"messages received {r['messages']}, frames received {frames}, analysed {r['frames_analysed']}, "
      f"skipped {r['frames_skipped']}, over budget {r['frames_over_budget']}, analysis errors {r['analysis_errors']}")
print(f"decode errors {r['decode_errors']}, ignored {r['ignored_messages']}")
print(f"guard: connections {r['guard_connections']}, rejected {r['guard_rejected']}, "
      f"peers refused {r['guard_peers_refused']}, accept errors {r['guard_accept_errors']}")
print(f"budget: peak {r['budget_peak_mib']} MiB, refused {r['budget_refused']}")
print(f"results: published {r['results_published']}, dropped for slow subscribers "
      f"{r['results_dropped_slow_subscribers']}, dropped at the queue {r['results_dropped_queue']}")
print(f"hostile: {hostile[-1] if hostile else '(no report)'}")
ok = True
if m:
    series, sent_frames, sent_messages = map(int, m.groups())
    print(f"simulator: {series} series, {sent_frames} frames, {sent_messages} messages sent")
    # Series starts and ends are messages too; hostile peers deliver none (cut off mid-message).
    received_ok = r["messages"] == sent_messages
    print(f"every message accounted for: sent {sent_messages} = received {r['messages']}: {received_ok}")
    ok &= received_ok
else:
    print("simulator stopped early (no summary line); comparing the daemon's own accounts only")
print(f"frames received {frames} = analysed + skipped + over budget + errors {frames_done}: {frames == frames_done}")
ok &= frames == frames_done
sys.exit(0 if ok else 1)
EOF
echo "files: $out"
