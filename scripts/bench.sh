#!/usr/bin/env bash
# The benchmark suite: builds once, runs every benchmark, and writes their tables into
# BENCHMARKS.md between its <!-- bench:NAME --> markers. Takes about 10 minutes; run it on a
# quiet machine (it measures CPU). Needs what scripts/setup-debian.sh installs.
#   scripts/bench.sh                 all of them
#   scripts/bench.sh fanout latency  some of them (transcode, vp8, fanout, fanout-rtsp, first-frame, latency, rungs, browsers, stretch, focus, size; browsers needs root)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p scopecast -p scopecast-tests --bins
mkdir -p target/bench
which=("$@"); [ ${#which[@]} -gt 0 ] || which=(transcode vp8 fanout fanout-rtsp first-frame latency rungs browsers stretch focus size)
for b in "${which[@]}"; do
  echo "== $b" >&2
  case "$b" in
    transcode) target/release/transcode-bench --frames 150 --runs 7 > target/bench/transcode.md ;;
    vp8) target/release/vp8-bench --frames 150 --runs 5 > /dev/null ;;
    fanout) target/release/fanout-bench --viewers 1,10,50,100 --secs 5 --windows 3 > /dev/null ;;
    fanout-rtsp) target/release/fanout-bench --source rtsp --viewers 1,10 --secs 5 --windows 3 > /dev/null ;;
    first-frame) target/release/first-frame-bench --trials 15 > /dev/null ;;
    latency) target/release/latency-bench --secs 30 > /dev/null ;;
    rungs) target/release/rungs-bench --secs 20 > /dev/null ;;
    browsers) target/release/browsers-bench --secs 20 > /dev/null ;;
    stretch) target/release/stretch-bench --frames 100 --runs 5 > /dev/null ;;
    focus) target/release/focus-bench --frames 40 --runs 5 > /dev/null; which+=(reduced) ;;  # two tables
    size) scripts/player-size.sh > target/bench/size.md ;;
    *) echo "unknown benchmark $b" >&2; exit 2 ;;
  esac
done
python3 - "${which[@]}" <<'PY'
import re, sys, datetime
text = open("BENCHMARKS.md").read()
for name in sys.argv[1:]:
    table = open(f"target/bench/{name}.md").read().strip()
    stamp = f"Run of {datetime.date.today().isoformat()} (`scripts/bench.sh {name}`):"
    block = f"<!-- bench:{name} -->\n{stamp}\n\n{table}\n<!-- /bench:{name} -->"
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        print(f"BENCHMARKS.md has no <!-- bench:{name} --> marker; table left in target/bench/{name}.md", file=sys.stderr)
open("BENCHMARKS.md", "w").write(text)
PY
echo "BENCHMARKS.md updated" >&2
