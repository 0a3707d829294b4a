#!/usr/bin/env bash
# The benchmark report: socketkit's four engines against the slides' Python servers, Python's
# ThreadingTCPServer, a canonical tokio server and a one-thread C epoll server (built with `cc`;
# its column is n/a without one), all on loopback on this machine, driven by
# `socketkit bench`; and the pacing figure (--rate 1000 against closed loop, p50s). Writes target/bench-report/results.ndjson (every run), report.md and
# chart.svg (made by examples/bench_report.rs). See the README's "Benchmarks" section.
#
#   bash scripts/bench.sh                  # the full report: 3 runs per cell (about 9 minutes)
#   bash scripts/bench.sh --quick          # a smoke test of every cell (CI): tiny sizes, 1 run
#   bash scripts/bench.sh --runs 5 --duration 5s
#   bash scripts/bench.sh --against HEAD~1 --cells pingpong-50,udp-8 --servers async,uring,tokio
#   BENCH_CC=clang bash scripts/bench.sh   # the C compiler for the C peer (default cc)
#
# Each cell is the median of --runs runs; the runs are interleaved (run 1 of every server, then
# run 2 ...) so that drift on the machine hits every server alike. Every server is started
# afresh for each run, alone, on 127.0.0.1 port 0 (the port is read from its ready line), pinned
# to core 0 while `socketkit bench` runs on core 1 (taskset, when there are two cores). The
# server's CPU time (utime + stime from /proc/PID/stat) over the run, divided by its requests,
# is the efficiency figure the shared machine does not cap. Exit status 1 if any cell failed.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,19s/^# \{0,1\}//p' "$0"
  cat <<EOF

Options:
  --quick              tiny sizes, 1 run, a dev build: checks that every cell works
  --runs N             runs per cell (default 3; 1 with --quick)
  --duration DUR       each timed run (default 2s; 1s with --quick)
  --profile P          the cargo profile: release, or dev (the default with --quick)
  --cells LIST         only these cells, comma-separated, of
                         ${all_cells// /,}
  --servers LIST       only these servers, comma-separated (socketkit's engines by name), of
                         ${all_servers// /,}
  --against REV        A/B: also build socketkit at git revision REV and measure a
                       "socketkit@<rev> ENGINE" row beside every socketkit engine row,
                       interleaved with it (this tree first in odd runs, REV first in even
                       ones), under this tree's load generator; the report's A/B table gives
                       server CPU per request and throughput, this tree / REV. REV's source
                       goes to target/bench-ab/<rev>, its build to target/bench-ab/target;
                       both are kept, so a second run builds nothing. The pacing figure is
                       this tree's only.
  --out DIR            where results.ndjson, report.md, chart.svg and logs/ go
                       (default target/bench-report)

Exit status: 0; 1 if a cell failed; 2 for a usage error (an unknown option, cell, server, REV).
EOF
}

# The cells and servers there are: the ids of the arrays below (socketkit's engines without
# their socketkit- prefix); pacing is the pacing figure.
all_cells='pingpong-1 pingpong-50 connect-8 udp-1 udp-8 stream idle relay-stream pacing'
all_servers='async uring tokio c-epoll py-threading py-udp sequential threaded pool py-sequential py-threaded'

usage_error() {
  echo "bench.sh: $* (see --help)" >&2
  exit 2
}

quick=0 runs='' duration='' profile='' cells='' only_servers='' against='' out=target/bench-report
while [ $# -gt 0 ]; do
  case $1 in
    --runs | --duration | --profile | --cells | --servers | --against | --out)
      [ $# -ge 2 ] || usage_error "$1 needs a value" ;;
  esac
  case $1 in
    --quick) quick=1 ;;
    --runs) runs=$2; shift ;;
    --duration) duration=$2; shift ;;
    --profile) profile=$2; shift ;;
    --cells) cells=$2; shift ;;
    --servers) only_servers=$2; shift ;;
    --against) against=$2; shift ;;
    --out) out=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown option $1" ;;
  esac
  shift
done
case ${runs:-1} in '' | *[!0-9]* | 0) usage_error "--runs wants a positive number" ;; esac

# Checks the comma-separated list $2 of --$1 against the names in $3.
selection() {
  local option=$1 list=$2 known=" $3 " name names=()
  IFS=',' read -r -a names <<<"$list"
  [ ${#names[@]} -gt 0 ] || usage_error "--$option needs at least one name"
  for name in "${names[@]}"; do
    [[ $known == *" $name "* ]] || usage_error "--$option: unknown name '$name' (known: ${3// /,})"
  done
}
[ -z "$cells" ] || { selection cells "$cells" "$all_cells" && cells=" ${cells//,/ } "; }
[ -z "$only_servers" ] || {
  selection servers "$only_servers" "$all_servers" && only_servers=" ${only_servers//,/ } "
}
# Whether cell $1 (a scenario id, or pacing) was asked for; whether server $1 (an id) was.
wanted_cell() { [ -z "$cells" ] || [[ $cells == *" $1 "* ]]; }
wanted_server() { [ -z "$only_servers" ] || [[ $only_servers == *" ${1#socketkit-} "* ]]; }

# --against: the revision, resolved before anything is built, so that a typo fails at once.
rev_full='' rev_short='' rev_subject=''
if [ -n "$against" ]; then
  git rev-parse --git-dir >/dev/null 2>&1 || usage_error "--against needs a git checkout"
  rev_full=$(git rev-parse --verify --quiet --end-of-options "$against^{commit}" 2>/dev/null) ||
    usage_error "--against: '$against' is not a commit git knows here"
  rev_short=$(git rev-parse --short "$rev_full")
  rev_subject=$(git log -1 --format=%s "$rev_full")
  [ ${#rev_subject} -le 80 ] || rev_subject="${rev_subject:0:77}..." # for the report's lines
  has_engine=0
  for name in async uring sequential threaded pool; do
    ! wanted_server "socketkit-$name" || has_engine=1
  done
  [ "$has_engine" = 1 ] || usage_error "--against pairs socketkit engine rows, and --servers names none"
fi

if [ "$quick" = 1 ]; then
  # A smoke test: every cell runs once, small enough for about half a minute in all. The
  # numbers mean nothing (and a dev build is used, which `cargo test` has mostly compiled).
  # A second a run, not less: the run's clock includes opening its connections, and 50 to a
  # thread-per-connection server (Python's or the threaded engine) in a dev build took more
  # than 250 ms on a busy 2-core machine, leaving a run that measured nothing.
  runs=${runs:-1} duration=${duration:-1s} profile=${profile:-dev}
  stream_bytes=8M stream_label='8 MiB' idle_wanted=100 idle_hold=2s
else
  runs=${runs:-3} duration=${duration:-2s} profile=${profile:-release}
  # The hold covers the opening too: the threaded engine needs about 5 s for 5,000 (a thread
  # each, and SYNs retried after 1 s and 3 s when its backlog of 128 overflows).
  stream_bytes=1G stream_label='1 GiB' idle_wanted=5000 idle_hold=8s
fi
case $profile in
  release) bin=target/release ;;
  dev) bin=target/debug ;;
  *) echo "bench.sh: --profile is release or dev" >&2; exit 2 ;;
esac
# The pool engine's threads, as in earlier reports (its poller holds the waiting connections, so
# the workers no longer bound the connections served, and the idle cell runs on it too).
pool_workers=64

out=${out%/}
logs=$out/logs
# Only what this script writes is removed: --out may name a directory that holds other things.
mkdir -p "$out"
rm -rf "$logs" "$out/results.ndjson" "$out/report.md" "$out/chart.svg" "$out/epoll_baseline"
mkdir -p "$logs"
results=$out/results.ndjson
: >"$results"

say() { printf 'bench: %s\n' "$*" >&2; }

py_wanted=0
for name in py-threading py-udp py-sequential py-threaded; do
  ! wanted_server "$name" || py_wanted=1
done
[ "$py_wanted" = 0 ] || command -v python3 >/dev/null ||
  { say "python3 is needed for the Python peers"; exit 1; }

say "building ($profile): socketkit, examples tokio_baseline and bench_report"
# One build with the plot feature, so the library is compiled once; the library and the
# binary do not use plotters, only examples/bench_report.rs does.
cargo build --profile "$profile" --features plot \
  --bin socketkit --example tokio_baseline --example bench_report
sk=$bin/socketkit
baseline=$bin/examples/tokio_baseline
report_tool=$bin/examples/bench_report

# --against: REV's source is a `git archive` of it in target/bench-ab/<rev> (no worktree to
# register or prune: a directory, reused while its .bench-ab-commit names the commit, replaced
# otherwise, and written under a temporary name first so an interrupted copy is never used).
# It builds into target/bench-ab/target, shared by every REV, so a second run (or another REV
# with the same dependencies) is warm. Same profile and features as this tree's, the binary
# alone: the example this tree builds beside it brings in every dev-dependency (criterion,
# proptest: minutes on a fresh machine) and unifies their features into the binary's, but those
# (tokio's signal, nix's signal and process) only add API, not code the servers run.
rev_sk='' ab_root=target/bench-ab ab_tmp=''
if [ -n "$rev_full" ]; then
  rev_src=$ab_root/$rev_short ab_target=$PWD/$ab_root/target
  mkdir -p "$ab_root"
  for stale in "$ab_root"/.tmp.*; do # left by a run that was killed
    [ -e "$stale" ] || continue
    kill -0 "${stale##*.}" 2>/dev/null || rm -rf "$stale"
  done
  if [ "$(cat "$rev_src/.bench-ab-commit" 2>/dev/null)" != "$rev_full" ]; then
    say "copying socketkit at $rev_short ($rev_subject) to $rev_src"
    rm -rf "$rev_src"
    ab_tmp=$ab_root/.tmp.$rev_short.$$
    mkdir "$ab_tmp"
    git archive --format=tar "$rev_full" | tar -x -C "$ab_tmp"
    # Its own workspace root: cargo must not look for one in the tree around it.
    grep -q '^\[workspace\]' "$ab_tmp/Cargo.toml" || printf '\n[workspace]\n' >>"$ab_tmp/Cargo.toml"
    echo "$rev_full" >"$ab_tmp/.bench-ab-commit"
    mv "$ab_tmp" "$rev_src"
    ab_tmp=''
  fi
  rev_build=(--bin socketkit)
  grep -q '^plot = ' "$rev_src/Cargo.toml" && rev_build+=(--features plot)
  say "building ($profile): socketkit at $rev_short in $rev_src"
  # In its own directory, so that cargo reads REV's configuration and lock file.
  if ! (cd "$rev_src" && CARGO_TARGET_DIR=$ab_target cargo build --profile "$profile" "${rev_build[@]}"); then
    say "FAILED: socketkit at $rev_short ($against) does not build"
    exit 1
  fi
  rev_sk=$ab_root/target/${bin#target/}/socketkit
fi

# The C peer, built afresh each time (a second or less) with $BENCH_CC, else cc (not $CC, which
# cargo's build scripts read too). Without a C compiler its column is n/a (said here and in the
# report's notes); a compiler that rejects the file is a failure.
epoll=$out/epoll_baseline c_missing='' c_failed='' c_compiler=${BENCH_CC:-cc}
if ! wanted_server c-epoll; then
  c_missing="not asked for (--servers)"
elif ! command -v "$c_compiler" >/dev/null; then
  c_missing="no C compiler ($c_compiler) on this machine"
  say "skipping the C epoll baseline: $c_missing"
elif ! "$c_compiler" -O2 -Wall -pthread -o "$epoll" benches/epoll_baseline.c \
  2>"$logs/epoll_baseline.cc.log"; then
  c_missing="benches/epoll_baseline.c did not compile (see logs/epoll_baseline.cc.log)"
  c_failed=1
  say "FAILED: $c_missing"
  cat "$logs/epoll_baseline.cc.log" >&2
fi

# --- the machine --------------------------------------------------------------------------

cores=$(nproc)
pin=0
if [ "$cores" -ge 2 ] && command -v taskset >/dev/null && taskset -c 1 true 2>/dev/null; then
  pin=1
fi
clk_tck=$(getconf CLK_TCK)

# Each held connection is a descriptor in the server and one in the load generator: raise the
# soft limit to the hard one, and hold fewer connections (saying so) if even that is too low.
nofile_before=$(ulimit -n)
nofile_hard=$(ulimit -Hn)
[ "$nofile_hard" = unlimited ] || [ "$nofile_before" = unlimited ] ||
  [ "$nofile_before" -ge "$nofile_hard" ] || ulimit -Sn "$nofile_hard" || true
nofile=$(ulimit -n)
idle_conns=$idle_wanted
if [ "$nofile" != unlimited ] && [ "$nofile" -lt $((idle_wanted + 100)) ]; then
  idle_conns=$((nofile > 101 ? nofile - 100 : 1))
  say "the descriptor limit ($nofile, hard $nofile_hard) allows $idle_conns idle connections, not $idle_wanted"
fi

# shellcheck source=scripts/lib.sh
. scripts/lib.sh # json_str, emit, rss_kb, threads, open_fds

commit=$(git describe --always --dirty 2>/dev/null || echo unknown)
cpu_model=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n 1)
emit "{\"type\":\"meta\",\"date\":$(json_str "$(date -u '+%Y-%m-%d %H:%M UTC')"),\
\"cores\":$cores,\"cpu\":$(json_str "${cpu_model:-unknown}"),\"kernel\":$(json_str "$(uname -sr)"),\
\"pinned\":$([ "$pin" = 1 ] && echo true || echo false),\"clk_tck\":$clk_tck,\
\"loadavg\":$(json_str "$(cut -d' ' -f1-3 /proc/loadavg)"),\
\"rustc\":$(json_str "$(rustc --version)"),\"python\":$(json_str "$(python3 --version 2>&1)"),\
\"profile\":$(json_str "$profile"),\"commit\":$(json_str "$commit"),\"quick\":$([ "$quick" = 1 ] && echo true || echo false),\
\"runs\":$runs,\"duration\":$(json_str "$duration"),\"stream_bytes\":$(json_str "$stream_bytes"),\
\"idle_wanted\":$idle_wanted,\"idle_connections\":$idle_conns,\"idle_hold\":$(json_str "$idle_hold"),\
\"nofile_before\":$(json_str "$nofile_before"),\"nofile\":$(json_str "$nofile"),\
\"nofile_hard\":$(json_str "$nofile_hard"),\"pool_workers\":$pool_workers,\
\"against\":$([ -z "$rev_full" ] && echo null || echo "{\"rev\":\"$rev_short\",\"commit\":\"$rev_full\",\
\"asked\":$(json_str "$against"),\"subject\":$(json_str "$rev_subject")}")}"

# --- servers and scenarios ----------------------------------------------------------------

# id|label|what it is. Also the order of the runs: the async engine next to the servers the
# report compares it with (tokio, C epoll, then Python: ThreadingTCPServer on TCP, the slides'
# server on UDP), so that their runs pair up in time.
servers=(
  "socketkit-async|socketkit async|socketkit serve upper -e async (tokio tasks; the default engine)"
  "socketkit-uring|socketkit uring|socketkit serve upper -e uring (io_uring: multishot accept and receive over a provided-buffer ring, one ring per thread; a thread per CPU it may run on)"
  "tokio|tokio baseline|benches/tokio_baseline.rs: accept loop, a task per connection, read, ASCII uppercase, write_all"
  "c-epoll|C epoll baseline|benches/epoll_baseline.c (cc -O2): one thread, level-triggered epoll, one read and one write per readable event, ASCII uppercase in place, the unsent rest of a short write kept until EPOLLOUT (no reading meanwhile); UDP on a second thread, blocking recvfrom/sendto"
  "py-threading|Python ThreadingTCPServer|scripts/peers/threading_line_server.py: socketserver.ThreadingTCPServer, persistent line handler"
  "py-udp|slides UDP|the slides' UDPServer.py (recvfrom(1024), sendto)"
  "socketkit-sequential|socketkit sequential|socketkit serve upper -e sequential (one connection at a time)"
  "socketkit-threaded|socketkit threaded|socketkit serve upper -e threaded (a thread per connection)"
  "socketkit-pool|socketkit pool|socketkit serve upper -e pool --workers $pool_workers (as in earlier reports)"
  "py-sequential|slides TCP sequential|the slides' iterative TCPServer.py (one recv(1024), reply, close)"
  "py-threaded|slides TCP threaded|the slides' TCPServer.py with a thread per connection (one recv, reply, close)"
)
# Only those asked for (--servers); with --against, REV's engine right after this tree's: the
# two runs of a pair follow each other (and swap places in even runs, see below).
chosen=()
for s in "${servers[@]}"; do
  IFS='|' read -r id label what <<<"$s"
  wanted_server "$id" || continue
  chosen+=("$s")
  if [ -n "$rev_full" ] && [[ $id == socketkit-* ]]; then
    chosen+=("socketkit@$rev_short-${id#socketkit-}|socketkit@$rev_short ${id#socketkit-}|$what, built \
from $rev_short ($rev_subject)|$id")
  fi
done
servers=("${chosen[@]}")

# id|label|unit|socketkit bench arguments (the endpoint comes first)
scenarios=(
  "pingpong-1|ping-pong 64 B, 1 connection|req/s|-m pingpong -c 1 --size 64 -d $duration"
  "pingpong-50|ping-pong 64 B, 50 connections|req/s|-m pingpong -c 50 --size 64 -d $duration"
  "connect-8|connect per request, 8 workers|req/s|-m connect -c 8 --size 64 -d $duration"
  "udp-1|UDP ping-pong, 1 socket|req/s|-m udp -c 1 --size 64 -d $duration"
  "udp-8|UDP ping-pong, 8 sockets|req/s|-m udp -c 8 --size 64 -d $duration"
  "stream|stream $stream_label (64-byte lines)|GB/s|-m stream -c 1 --size 64 --stream-bytes $stream_bytes -d 10m -w 30s"
  "idle|$idle_conns idle connections|KB/conn|-m idle -c $idle_conns --size 64 -d $idle_hold -w 30s"
  "relay-stream|stream $stream_label through socketkit relay (direct: the stream row)|GB/s|-m stream -c 1 --size 64 --stream-bytes $stream_bytes -d 10m -w 30s"
)
chosen=()
for s in "${scenarios[@]}"; do
  ! wanted_cell "${s%%|*}" || chosen+=("$s")
done
scenarios=(${chosen[@]+"${chosen[@]}"})

# This tree's server id of server $1: socketkit@REV-ENGINE is socketkit-ENGINE.
this_tree() {
  case $1 in
    socketkit@*) echo "socketkit-${1#socketkit@*-}" ;;
    *) echo "$1" ;;
  esac
}

# Why server $2 cannot serve scenario $1 (prints nothing when it can): REV's engines as ours.
not_served() {
  case $(this_tree "$2"):$1 in
    socketkit-async:relay-stream) ;;
    *:relay-stream) echo "the relay row runs socketkit relay in front of socketkit async only" ;;
    c-epoll:*) [ -z "$c_missing" ] || echo "$c_missing" ;;
    py-sequential:connect-8 | py-threaded:connect-8) ;;
    py-sequential:* | py-threaded:*)
      echo "TCP, answers one recv(1024) and closes: connect-per-request only" ;;
    py-udp:udp-*) ;;
    py-udp:*) echo "UDP only" ;;
    py-threading:udp-*) echo "TCP only" ;;
    socketkit-sequential:pingpong-50 | socketkit-sequential:idle)
      echo "serves one connection at a time, until it closes: all but one of the connections would wait unanswered for the whole run" ;;
  esac
}

for s in "${servers[@]}"; do
  IFS='|' read -r id label what ab_of <<<"$s"
  emit "{\"type\":\"server\",\"id\":\"$id\",\"label\":$(json_str "$label"),\"what\":$(json_str "$what")\
$([ -z "${ab_of:-}" ] || echo ",\"ab_of\":\"$ab_of\",\"rev\":\"$rev_short\"")}"
done
for s in "${scenarios[@]}"; do
  IFS='|' read -r id label unit args <<<"$s"
  emit "{\"type\":\"scenario\",\"id\":\"$id\",\"label\":$(json_str "$label"),\"unit\":\"$unit\",\
\"args\":$(json_str "$args")}"
  for t in "${servers[@]}"; do
    server=${t%%|*}
    reason=$(not_served "$id" "$server")
    [ -z "$reason" ] ||
      emit "{\"type\":\"na\",\"scenario\":\"$id\",\"server\":\"$server\",\"reason\":$(json_str "$reason")}"
  done
done

# --- processes ------------------------------------------------------------------------------

started=() # every process started here, killed by PID on exit
cleanup() {
  local p
  for p in ${started[@]+"${started[@]}"}; do kill -KILL "$p" 2>/dev/null || true; done
  [ -z "$ab_tmp" ] || rm -rf "$ab_tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs a command on the server's (the load generator's) core. They exec, so that `f ... &`
# leaves the command's own PID in $!; in the foreground, call them in a subshell.
on_server_core() { if [ "$pin" = 1 ]; then exec taskset -c 0 "$@"; else exec "$@"; fi; }
on_bench_core() { if [ "$pin" = 1 ]; then exec taskset -c 1 "$@"; else exec "$@"; fi; }

# Whether PID $1 runs (a zombie does not).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# utime + stime of PID $1 in clock ticks.
cpu_ticks() {
  local stat
  stat=$(cat "/proc/$1/stat")
  stat=${stat##*) }
  # shellcheck disable=SC2086 # split the fields on purpose; utime and stime are fields 14, 15
  set -- $stat
  echo $((${12} + ${13}))
}

# The machine's busy and total clock ticks, over all its cores (/proc/stat; steal counts busy).
machine_ticks() {
  local cpu user nice system idle iowait irq softirq steal rest
  read -r cpu user nice system idle iowait irq softirq steal rest </proc/stat
  echo "$((user + nice + system + irq + softirq + steal)) \
$((user + nice + system + idle + iowait + irq + softirq + steal))"
}

# CPU ticks of this script's children that have been waited for (cutime + cstime): around a
# load generator's run, its own CPU time.
children_ticks() {
  local stat
  stat=$(cat "/proc/$$/stat")
  stat=${stat##*) }
  # shellcheck disable=SC2086 # fields 16 and 17
  set -- $stat
  echo $((${14} + ${15}))
}

# Starts server $1 with its output in $2; sets pid, tcp_port, udp_port. Fails when the server
# does not print its ready line within 20 s.
start_server() {
  local id=$1 log=$2 i
  : >"$log"
  case $id in
    socketkit*)
      local engine=${id#socketkit[-@]} extra=() binary=$sk
      [[ $id != socketkit@* ]] || engine=${engine#*-} binary=$rev_sk
      [ "$engine" != pool ] || extra=(--workers "$pool_workers")
      on_server_core "$binary" serve upper -e "$engine" ${extra[@]+"${extra[@]}"} \
        -l tcp://127.0.0.1:0 -l udp://127.0.0.1:0 >"$log" 2>&1 &
      ;;
    tokio) on_server_core "$baseline" --tcp 127.0.0.1:0 --udp 127.0.0.1:0 >"$log" 2>&1 & ;;
    c-epoll) on_server_core "$epoll" --tcp 127.0.0.1:0 --udp 127.0.0.1:0 >"$log" 2>&1 & ;;
    py-threading) on_server_core python3 scripts/peers/threading_line_server.py 0 >"$log" 2>&1 & ;;
    py-sequential) on_server_core python3 scripts/peers/tcp_server_sequential.py 0 >"$log" 2>&1 & ;;
    py-threaded) on_server_core python3 scripts/peers/tcp_server_threaded.py 0 >"$log" 2>&1 & ;;
    py-udp) on_server_core python3 scripts/peers/udp_server.py 0 >"$log" 2>&1 & ;;
  esac
  pid=$!
  started+=("$pid")
  tcp_port='' udp_port=''
  for ((i = 0; i < 400; i++)); do
    case $id in
      socketkit* | tokio | c-epoll)
        tcp_port=$(sed -n 's#.*listening on tcp://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$log")
        udp_port=$(sed -n 's#.*listening on udp://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$log")
        ;;
      py-udp) udp_port=$(sed -n 's/^The server is ready to receive on port \([0-9]*\).*/\1/p' "$log") ;;
      py-*) tcp_port=$(sed -n 's/^The server is ready to receive on port \([0-9]*\).*/\1/p' "$log") ;;
    esac
    case $id in
      socketkit*)
        # The engine asked for is the one that runs (uring must not fall back to async).
        if [ -n "$tcp_port" ] && [ -n "$udp_port" ]; then
          grep -q "listening on tcp://.*, ${engine})" "$log" || return 1
          return 0
        fi
        ;;
      tokio | c-epoll) [ -z "$tcp_port" ] || [ -z "$udp_port" ] || return 0 ;;
      *) [ -z "$tcp_port$udp_port" ] || return 0 ;;
    esac
    alive "$pid" || return 1
    sleep 0.05
  done
  return 1
}

# Starts `socketkit relay` (binary $3) from a free port to endpoint $1, output in $2; sets
# relay_pid and relay_port. Fails when it does not print its ready line within 20 s.
start_relay() {
  local i
  on_server_core "$3" relay tcp://127.0.0.1:0 "$1" >"$2" 2>&1 &
  relay_pid=$!
  started+=("$relay_pid")
  for ((i = 0; i < 400; i++)); do
    relay_port=$(sed -n 's#.*listening on tcp://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$2")
    [ -z "$relay_port" ] || return 0
    alive "$relay_pid" || return 1
    sleep 0.05
  done
  return 1
}

# CPU ticks of the server, and of the relay in front of it if there is one.
path_ticks() {
  local ticks
  ticks=$(cpu_ticks "$pid")
  [ -z "${relay_pid:-}" ] || ticks=$((ticks + $(cpu_ticks "$relay_pid")))
  echo "$ticks"
}

# SIGTERM, then SIGKILL if it is still there after 5 s; reaps it.
stop_server() {
  local i
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    alive "$pid" || break
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

failures=0
[ -z "$c_failed" ] || failures=1

# One run of scenario $1 against server $2: start it, measure, stop it, append the record.
run_cell() {
  local scenario=$1 server=$2 run=$3 args=$4
  local tag="$scenario.$server.$run" error='' rc=0 endpoint before after
  local rss_before=null rss_held=null held=null short=false base_fds
  local machine_before machine_after children_before children_after others=null
  if ! start_server "$server" "$logs/$tag.server.log"; then
    error="the server did not start: $(tail -n 1 "$logs/$tag.server.log")"
    stop_server
  else
    case $scenario in
      udp-*) endpoint=udp://127.0.0.1:$udp_port ;;
      *) endpoint=tcp://127.0.0.1:$tcp_port ;;
    esac
    relay_pid=''
    if [ "$scenario" = relay-stream ]; then
      # The relay's CPU counts with the server's: the cell's CPU is the whole path's.
      # REV's relay in front of REV's engine: the A/B is of the whole path.
      local relay_binary=$sk
      [[ $server != socketkit@* ]] || relay_binary=$rev_sk
      if start_relay "$endpoint" "$logs/$tag.relay.log" "$relay_binary"; then
        endpoint=tcp://127.0.0.1:$relay_port
      else
        error="the relay did not start: $(tail -n 1 "$logs/$tag.relay.log")"
        kill -KILL "$relay_pid" 2>/dev/null || true
        relay_pid=''
      fi
    fi
    # shellcheck disable=SC2206 # the arguments are split on spaces on purpose
    local bench=("$sk" bench "$endpoint" $args --json)
    before=$(path_ticks) machine_before=$(machine_ticks) children_before=$(children_ticks)
    if [ "$scenario" = idle ]; then
      # Sample the server's memory while the load generator holds the connections: the last
      # sample taken while all of them were open at once (its descriptor count shows that).
      rss_before=$(rss_kb "$pid")
      base_fds=$(open_fds "$pid")
      on_bench_core "${bench[@]}" >"$logs/$tag.json" 2>"$logs/$tag.err" &
      local bench_pid=$!
      started+=("$bench_pid")
      held=0
      while alive "$bench_pid"; do
        local fds rss
        fds=$(open_fds "$pid") rss=$(rss_kb "$pid")
        [ $((fds - base_fds)) -le "$held" ] || held=$((fds - base_fds))
        [ $((fds - base_fds)) -lt "$idle_conns" ] || rss_held=$rss
        sleep 0.1
      done
      wait "$bench_pid" || rc=$?
      if [ "$rss_held" = null ]; then
        # The bench opens all of them at once. The Python peers' listen backlog (5) drops most
        # of such a burst, and the retried SYNs come too late: that is a finding about the peer
        # (the cell says how many it held), and a failure for socketkit and the tokio baseline.
        case $server:$rc in
          py-*:0 | py-*:5) short=true rc=0 ;;
          *) error="only $held of $idle_conns connections were open at once" ;;
        esac
      fi
    elif [ -z "$error" ]; then
      (on_bench_core "${bench[@]}") >"$logs/$tag.json" 2>"$logs/$tag.err" || rc=$?
    fi
    if alive "$pid"; then
      after=$(path_ticks) machine_after=$(machine_ticks) children_after=$(children_ticks)
      # What the rest of the machine did meanwhile: busy ticks that were neither the server's
      # nor the load generator's, as a share of all the ticks of all cores.
      local busy total
      busy=$((${machine_after% *} - ${machine_before% *}))
      total=$((${machine_after#* } - ${machine_before#* }))
      busy=$((busy - (after - before) - (children_after - children_before)))
      [ "$total" -le 0 ] || others=$((busy < 0 ? 0 : 1000 * busy / total))
    else
      error="the server died during the run: $(tail -n 1 "$logs/$tag.server.log")"
    fi
    [ -z "$relay_pid" ] || { kill -KILL "$relay_pid" 2>/dev/null || true; wait "$relay_pid" 2>/dev/null || true; }
    stop_server
    if [ "$rc" != 0 ] && [ -z "$error" ]; then
      error="socketkit bench exited $rc: $(tail -n 1 "$logs/$tag.err")"
    fi
  fi
  local report cpu=null
  [ -z "${after:-}" ] || cpu=$((after - before))
  report=$(head -c 100000 "$logs/$tag.json" 2>/dev/null || true)
  case $report in "{"*) ;; *) report=null ;; esac
  # A run that answered nothing (say, its time was up before a connection was made) has no
  # figure: a failure, though the bench exits 0 for it.
  if [ -z "$error" ] && [ "$short" = false ] && ! [[ $report =~ \"ok\":[1-9] ]]; then
    error="no request was answered$(sed -n '$s/^/: /p' "$logs/$tag.err" 2>/dev/null)"
  fi
  emit "{\"type\":\"run\",\"scenario\":\"$scenario\",\"server\":\"$server\",\"run\":$run,\"others_permille\":$others,\
\"error\":$([ -n "$error" ] && json_str "$error" || echo null),\"cpu_ticks\":$cpu,\
\"rss_before_kb\":${rss_before:-null},\"rss_held_kb\":${rss_held:-null},\"held\":$held,\"short\":$short,\"bench\":$report}"
  if [ -n "$error" ]; then
    failures=$((failures + 1))
    say "$tag: FAILED: $error"
  elif [ "$short" = true ]; then
    say "$tag: held at most $held of $idle_conns connections at once (a limit of the peer)"
  else
    say "$tag: ok"
  fi
}

say "$cores cores, $([ "$pin" = 1 ] && echo 'server on core 0, bench on core 1' || echo 'not pinned'); $runs run(s) per cell"
# The order of the servers in odd runs, and in even runs: there each A/B pair swaps places
# (ABBA), so that drift within a pair's minute cancels over two runs instead of favouring one.
order_odd=() order_even=()
for t in "${servers[@]}"; do
  server=${t%%|*}
  order_odd+=("$server")
  if [[ $server == socketkit@* ]]; then
    last=$((${#order_even[@]} - 1))
    order_even=("${order_even[@]:0:last}" "$server" "${order_even[last]}")
  else
    order_even+=("$server")
  fi
done
for s in ${scenarios[@]+"${scenarios[@]}"}; do
  IFS='|' read -r scenario _ _ args <<<"$s"
  for ((run = 1; run <= runs; run++)); do
    if ((run % 2)); then order=("${order_odd[@]}"); else order=("${order_even[@]}"); fi
    for server in "${order[@]}"; do
      [ -n "$(not_served "$scenario" "$server")" ] || run_cell "$scenario" "$server" "$run" "$args"
    done
  done
done

# The pacing figure: against `serve` (the async engine), one connection at a fixed 1,000
# requests/s and then closed loop, same server process. Target (a figure, not a test): the
# paced p50 within 3x the closed-loop p50 plus 100 µs; the report also gives the bench's own
# schedule lag, so a miss can be told apart from the server.
# Against this tree's async engine: only when both the cell and the server are asked for.
pacing_runs=0
if wanted_cell pacing && wanted_server socketkit-async; then pacing_runs=$runs; fi
for ((run = 1; run <= pacing_runs; run++)); do
  tag=pacing.$run error='' closed=null paced=null
  if start_server socketkit-async "$logs/$tag.server.log"; then
    for kind in closed paced; do
      extra=()
      [ "$kind" = closed ] || extra=(--rate 1000)
      rc=0
      (on_bench_core "$sk" bench "tcp://127.0.0.1:$tcp_port" -m pingpong -c 1 --size 64 \
        -d "$duration" ${extra[@]+"${extra[@]}"} --json) >"$logs/$tag.$kind.json" \
        2>"$logs/$tag.$kind.err" || rc=$?
      [ "$rc" = 0 ] || error="${error:+$error; }$kind run: bench exited $rc: $(tail -n 1 "$logs/$tag.$kind.err")"
      report=$(head -c 100000 "$logs/$tag.$kind.json" 2>/dev/null || true)
      case $report in "{"*) ;; *) report=null ;; esac
      if [ "$kind" = closed ]; then closed=$report; else paced=$report; fi
    done
  else
    error="the server did not start: $(tail -n 1 "$logs/$tag.server.log")"
  fi
  stop_server
  emit "{\"type\":\"pacing\",\"run\":$run,\"rate\":1000,\
\"error\":$([ -n "$error" ] && json_str "$error" || echo null),\"closed\":$closed,\"paced\":$paced}"
  if [ -n "$error" ]; then
    failures=$((failures + 1))
    say "$tag: FAILED: $error"
  else
    say "$tag: ok"
  fi
done

"$report_tool" "$results" "$out"
say "wrote $out/report.md, $out/chart.svg and $out/results.ndjson"
if [ "$failures" -gt 0 ]; then
  say "$failures run(s) failed (see $out/report.md and $logs/)"
  exit 1
fi
