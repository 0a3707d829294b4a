#!/usr/bin/env bash
# A bounded soak test of the socketkit binary: each engine (async, sequential, threaded, pool, uring)
# serves `upper` on 127.0.0.1 TCP and UDP while `socketkit bench` drives a mix of load at it,
# 1,000,000 requests in all, then checks that nothing was lost and nothing leaked. Writes
# target/soak/results.ndjson (every run, every sample) and prints one summary line per engine.
#
#   bash scripts/soak.sh                   # 1,000,000 requests, release build (under a minute)
#   bash scripts/soak.sh --quick           # about 20,000 requests, dev build (CI; seconds)
#   bash scripts/soak.sh --requests 4000000 --engines async,pool --rounds 8
#
# Each engine gets an equal share of the requests, in a warm-up (a tenth of the share) and then
# --rounds rounds of the same mix: ping-pong over 8 persistent TCP connections (1 on the
# sequential engine, which serves one connection at a time), a connection per request with 4
# workers (short connections, so on the sequential engine they wait their turn in the listen
# queue), and UDP ping-pong over 4 sockets; 50%, 20% and 30% of each round. Every run is bounded
# by its request count and by a generous --duration, so it always stops by itself.
#
# The checks, per engine (exit status 1 if any failed, naming it; 2 for bad usage):
#   requests  every run answered all its requests, each reply verified: no mismatch, error,
#             time-out or loss (`socketkit bench --json`), and the bench exited 0
#   fds       after the warm-up and after every round, once the clients are gone, the server's
#             open descriptors are back to their count before any load (polled for up to 10 s:
#             closes are asynchronous)
#   threads   likewise for its threads (fixed on async and pool; the threaded engine's threads
#             end with their connections)
#   memory    VmRSS at the end is at most max(8 MiB, 25%) above VmRSS after the warm-up (the
#             allocator and the runtime have reached their working size by then)
#   alive     the server survived the load; stop: it exits 0 on SIGTERM; log: its stderr has no
#             WARN, ERROR or panic line
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,30s/^# \{0,1\}//p' "$0"
  echo
  echo "Options: --quick, --requests N (in all; default 1000000, 20000 with --quick),"
  echo "         --rounds N (default 4, 2 with --quick), --engines LIST (comma-separated),"
  echo "         --profile release|dev (the cargo profile: release, or dev with --quick)"
}

quick=0 total='' rounds='' profile='' engines_arg='async,sequential,threaded,pool,uring'
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --requests) total=${2:?--requests needs a number}; shift ;;
    --rounds) rounds=${2:?--rounds needs a number}; shift ;;
    --engines) engines_arg=${2:?--engines needs a list such as async,pool}; shift ;;
    --profile) profile=${2:?--profile needs release or dev}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "soak.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$quick" = 1 ]; then
  total=${total:-20000} rounds=${rounds:-2} profile=${profile:-dev}
else
  total=${total:-1000000} rounds=${rounds:-4} profile=${profile:-release}
fi
case $total in '' | *[!0-9]*) echo "soak.sh: --requests wants a positive number" >&2; exit 2 ;; esac
case $rounds in '' | *[!0-9]* | 0) echo "soak.sh: --rounds wants a positive number" >&2; exit 2 ;; esac
IFS=',' read -r -a engines <<<"$engines_arg"
[ "${#engines[@]}" -gt 0 ] || { echo "soak.sh: --engines wants at least one engine" >&2; exit 2; }
for e in "${engines[@]}"; do
  case $e in
    async | sequential | threaded | pool | uring) ;;
    *) echo "soak.sh: unknown engine '$e' (async, sequential, threaded, pool or uring)" >&2; exit 2 ;;
  esac
done
# Every run needs at least one request: 3 modes in the warm-up and in each round.
if [ "$total" -lt $((${#engines[@]} * 100 * (rounds + 1))) ]; then
  echo "soak.sh: --requests wants at least $((${#engines[@]} * 100 * (rounds + 1))) for ${#engines[@]} engine(s) and $rounds round(s)" >&2
  exit 2
fi
case $profile in
  release) bin=${CARGO_TARGET_DIR:-target}/release ;;
  dev) bin=${CARGO_TARGET_DIR:-target}/debug ;;
  *) echo "soak.sh: --profile is release or dev" >&2; exit 2 ;;
esac

settle_s=10        # how long descriptors and threads may take to come back after a run
rss_floor_kb=8192  # the memory check's tolerance: max(8 MiB, 25% of the warm RSS)
rss_share=25

out=target/soak
logs=$out/logs
rm -rf "$out"
mkdir -p "$logs"
results=$out/results.ndjson
: >"$results"

say() { printf 'soak: %s\n' "$*" >&2; }

say "building ($profile): socketkit"
cargo build --profile "$profile" --bin socketkit
sk=$bin/socketkit

# shellcheck source=scripts/lib.sh
. scripts/lib.sh # json_str, emit, rss_kb, threads, open_fds

commit=$(git describe --always --dirty 2>/dev/null || echo unknown)
cpu_model=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n 1)
emit "{\"type\":\"meta\",\"date\":$(json_str "$(date -u '+%Y-%m-%d %H:%M UTC')"),\
\"cores\":$(nproc),\"cpu\":$(json_str "${cpu_model:-unknown}"),\"kernel\":$(json_str "$(uname -sr)"),\
\"loadavg\":$(json_str "$(cut -d' ' -f1-3 /proc/loadavg)"),\"rustc\":$(json_str "$(rustc --version)"),\
\"profile\":$(json_str "$profile"),\"commit\":$(json_str "$commit"),\"quick\":$([ "$quick" = 1 ] && echo true || echo false),\
\"requests\":$total,\"rounds\":$rounds,\"engines\":$(json_str "$engines_arg"),\"settle_s\":$settle_s,\
\"rss_tolerance\":$(json_str "max(${rss_floor_kb} kB, ${rss_share}%)")}"

# --- processes ------------------------------------------------------------------------------

started=() # every process started here, killed by PID on exit
cleanup() {
  local p
  for p in ${started[@]+"${started[@]}"}; do kill -KILL "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Whether PID $1 runs (a zombie does not).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# Starts engine $1 with its stderr in $2; sets pid, tcp_port, udp_port. Fails when the server
# does not print both ready lines within 20 s.
start_server() {
  local engine=$1 log=$2 i
  : >"$log"
  env -u RUST_LOG "$sk" serve upper -e "$engine" -l tcp://127.0.0.1:0 -l udp://127.0.0.1:0 \
    >"$log" 2>&1 &
  pid=$!
  started+=("$pid")
  tcp_port='' udp_port=''
  for ((i = 0; i < 400; i++)); do
    tcp_port=$(sed -n 's#.*listening on tcp://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$log")
    udp_port=$(sed -n 's#.*listening on udp://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$log")
    if [ -n "$tcp_port" ] && [ -n "$udp_port" ]; then
      # The engine asked for is the one that runs (uring must not fall back to async).
      grep -q "listening on tcp://.*, $engine)" "$log" || return 1
      return 0
    fi
    alive "$pid" || return 1
    sleep 0.05
  done
  return 1
}

# SIGTERM, then SIGKILL if it is still there after 10 s; reaps it and sets stop_rc.
stop_server() {
  local i
  stop_rc=0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    alive "$pid" || break
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || stop_rc=$?
}

# --- one engine -----------------------------------------------------------------------------

# A number field of a flat JSON report ("ok", "errors" ...), empty when it is missing.
json_num() { [[ $2 =~ \"$1\":([0-9]+) ]] && echo "${BASH_REMATCH[1]}" || true; }

failed_checks=() # of the engine being soaked: "check: what happened"
fail() {
  failed_checks+=("$1: $2")
  say "$engine: FAILED $1: $2"
}

# Whether the server still runs; the first time it does not, the alive check fails ($1: when).
server_alive() {
  alive "$pid" && return 0
  if [ "$died" = 0 ]; then
    local rc=0
    wait "$pid" 2>/dev/null || rc=$?
    fail alive "$1: exit status $rc; its last line: $(tail -n 1 "$logs/$engine.server.log")"
  fi
  died=1
  fds_now=null threads_now=null rss_now=''
  return 1
}

# One `socketkit bench` run: phase $1, mode $2, $3 requests over $4 connections.
run_bench() {
  local phase=$1 mode=$2 n=$3 conns=$4 endpoint tag rc=0 report error=''
  local ok mismatches errors timeouts losses bound bad
  case $mode in
    udp) endpoint=udp://127.0.0.1:$udp_port ;;
    *) endpoint=tcp://127.0.0.1:$tcp_port ;;
  esac
  tag=$engine.$phase.$mode
  # A floor of 100 requests/s and half a minute to spare: a bound for a run that hangs, never
  # one a healthy run reaches. `timeout` is the last resort should the bench itself not stop.
  bound=$((30 + n / 100))
  timeout -k 5 $((bound + 30)) "$sk" bench "$endpoint" -m "$mode" -c "$conns" -n "$n" \
    -d "${bound}s" --json >"$logs/$tag.json" 2>"$logs/$tag.err" || rc=$?
  report=$(head -c 100000 "$logs/$tag.json")
  case $report in "{"*) ;; *) report=null ;; esac
  ok=$(json_num ok "$report") mismatches=$(json_num mismatches "$report")
  errors=$(json_num errors "$report") timeouts=$(json_num timeouts "$report")
  losses=$(json_num losses "$report")
  bad=$((${mismatches:-0} + ${errors:-0} + ${timeouts:-0} + ${losses:-0}))
  if [ "$report" = null ] || [ -z "$ok" ]; then
    error="no report (bench exited $rc: $(tail -n 1 "$logs/$tag.err"))"
  elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    error="the bench did not stop by itself within $((bound + 30)) s"
  elif [ "$bad" -gt 0 ] || [ "$ok" != "$n" ] || [ "$rc" != 0 ]; then
    error="$ok of $n ok, $mismatches mismatches, $errors errors, $timeouts timeouts, $losses losses (bench exited $rc)"
    [ "$ok" = "$n" ] || [ "$bad" -gt 0 ] || error="$error: the ${bound}s bound came first"
  fi
  total_ok=$((total_ok + ${ok:-0})) total_bad=$((total_bad + bad))
  [ -z "$error" ] || fail requests "$phase $mode: $error"
  server_alive "died during $phase $mode" || error="${error:+$error; }the server died"
  emit "{\"type\":\"run\",\"engine\":\"$engine\",\"phase\":\"$phase\",\"mode\":\"$mode\",\
\"connections\":$conns,\"requests\":$n,\"rc\":$rc,\"error\":$([ -n "$error" ] && json_str "$error" || echo null),\
\"bench\":$report}"
}

# After phase $1: waits up to $settle_s for descriptors and threads to come back to their
# baseline, then samples the server (sets rss_now, fds_now, threads_now).
# Sets fds_base and threads_base once they have stopped changing (at most 10 s).
baseline_counts() {
  local i same=0 fds thr
  fds_base=$(open_fds "$pid") threads_base=$(threads "$pid")
  for ((i = 0; i < 200 && same < 5; i++)); do
    sleep 0.05
    fds=$(open_fds "$pid") thr=$(threads "$pid")
    if [ "$fds" = "$fds_base" ] && [ "$thr" = "$threads_base" ]; then
      same=$((same + 1))
    else
      fds_base=$fds threads_base=$thr same=0
    fi
  done
}

settle() {
  local phase=$1 i ms
  for ((i = 0; i < settle_s * 20; i++)); do
    alive "$pid" || break
    fds_now=$(open_fds "$pid") threads_now=$(threads "$pid")
    [ "$fds_now" != "$fds_base" ] || [ "$threads_now" != "$threads_base" ] || break
    sleep 0.05
  done
  ms=$((i * 50))
  if ! server_alive "died after $phase"; then
    emit "{\"type\":\"sample\",\"engine\":\"$engine\",\"phase\":\"$phase\",\"alive\":false}"
    return 1
  fi
  fds_now=$(open_fds "$pid") threads_now=$(threads "$pid") rss_now=$(rss_kb "$pid")
  emit "{\"type\":\"sample\",\"engine\":\"$engine\",\"phase\":\"$phase\",\"alive\":true,\
\"waited_ms\":$ms,\"fds\":$fds_now,\"threads\":$threads_now,\"rss_kb\":$rss_now,\
\"hwm_kb\":$(status_kb "$pid" VmHWM)}"
  [ "$fds_now" = "$fds_base" ] ||
    fail fds "after $phase: $fds_now open after ${settle_s} s, $fds_base before the load ($(ls -l "/proc/$pid/fd" 2>/dev/null | awk 'NR>1 {print $NF}' | sed 's/:\[.*//' | sort | uniq -c | tr -s ' \n' ' '))"
  [ "$threads_now" = "$threads_base" ] ||
    fail threads "after $phase: $threads_now threads after ${settle_s} s, $threads_base before the load"
}

# The warm-up or a round: $2 requests in the mix, as phase $1.
run_mix() {
  local phase=$1 n=$2 pingpong connect udp
  pingpong=$((n * 50 / 100)) connect=$((n * 20 / 100))
  udp=$((n - pingpong - connect))
  run_bench "$phase" pingpong "$pingpong" "$pingpong_conns"
  run_bench "$phase" connect "$connect" 4
  run_bench "$phase" udp "$udp" 4
  settle "$phase" || true
}

summary=()
engines_failed=()
share=$((total / ${#engines[@]}))
extra=$((total - share * ${#engines[@]})) # to the first engine, so that the total is exact
begun=$SECONDS
say "$total requests over ${#engines[@]} engine(s), a warm-up and $rounds round(s) each"

for engine in "${engines[@]}"; do
  failed_checks=()
  total_ok=0 total_bad=0
  mine=$((share + extra)) extra=0
  warm=$((mine / 10))
  per_round=$(((mine - warm) / rounds))
  pingpong_conns=8
  [ "$engine" != sequential ] || pingpong_conns=1
  rss_start=null rss_warm=null rss_end=null fds_base=null threads_base=null
  fds_now=null threads_now=null stop_rc=null hwm=null rss_now='' died=0
  t0=$SECONDS

  if ! start_server "$engine" "$logs/$engine.server.log"; then
    fail start "no ready line: $(tail -n 1 "$logs/$engine.server.log")"
    stop_server
  else
    # The baseline is taken once serving has started (an async runtime opens its descriptors
    # and threads after the ready line): one exchange, then counts that hold still for 0.25 s.
    "$sk" send -w 10s "tcp://127.0.0.1:$tcp_port" probe >/dev/null 2>&1 ||
      say "$engine: the probe before the baseline got no answer"
    baseline_counts
    rss_start=$(rss_kb "$pid")
    say "$engine: pid $pid, tcp $tcp_port, udp $udp_port; $fds_base fds, $threads_base threads, ${rss_start} kB"

    run_mix warmup "$warm"
    rss_warm=${rss_now:-null}
    for ((r = 1; r <= rounds; r++)); do
      n=$per_round
      [ "$r" != "$rounds" ] || n=$((mine - warm - per_round * (rounds - 1)))
      server_alive "gone before round $r" || break
      run_mix "round$r" "$n"
      say "$engine: round $r/$rounds: $fds_now fds, $threads_now threads, ${rss_now:-?} kB"
    done
    rss_end=${rss_now:-null}
    if [ "$died" = 0 ] && [ "$rss_warm" != null ] && [ "$rss_end" != null ]; then
      hwm=$(status_kb "$pid" VmHWM)
      allowed=$((rss_warm * rss_share / 100))
      [ "$allowed" -ge "$rss_floor_kb" ] || allowed=$rss_floor_kb
      [ $((rss_end - rss_warm)) -le "$allowed" ] ||
        fail memory "VmRSS grew from $rss_warm kB after the warm-up to $rss_end kB (more than $allowed kB)"
    fi
    stop_server
    [ "$died" = 1 ] || [ "$stop_rc" = 0 ] || fail stop "exited $stop_rc on SIGTERM"
    if bad_lines=$(grep -E '(^|[[:space:]])(WARN|ERROR)[[:space:]]|panicked' "$logs/$engine.server.log"); then
      fail log "$(printf '%s\n' "$bad_lines" | head -n 1) ($(printf '%s\n' "$bad_lines" | wc -l) line(s))"
    fi
  fi

  checks_json=$(for c in ${failed_checks[@]+"${failed_checks[@]}"}; do json_str "$c"; echo; done | paste -sd, -)
  emit "{\"type\":\"engine\",\"engine\":\"$engine\",\"requests\":$mine,\"ok\":$total_ok,\"bad\":$total_bad,\
\"rss_start_kb\":$rss_start,\"rss_warm_kb\":$rss_warm,\"rss_end_kb\":$rss_end,\"hwm_kb\":$hwm,\
\"fds_before\":$fds_base,\"fds_after\":$fds_now,\"threads_before\":$threads_base,\"threads_after\":$threads_now,\
\"stop_rc\":$stop_rc,\"seconds\":$((SECONDS - t0)),\"passed\":$([ "${#failed_checks[@]}" = 0 ] && echo true || echo false),\
\"failed\":[${checks_json}]}"

  if [ "${#failed_checks[@]}" = 0 ]; then
    result=ok
  else
    result="FAILED: $(for c in "${failed_checks[@]}"; do echo "${c%%:*}"; done | sort -u | paste -sd, -)"
    engines_failed+=("$engine")
  fi
  summary+=("$(printf '%-10s %9s %9s %7s %15s %9s %11s %5ss  %s' "$engine" "$total_ok" "$mine" \
    "$total_bad" "$rss_warm/$rss_end" "$fds_base/$fds_now" "$threads_base/$threads_now" \
    "$((SECONDS - t0))" "$result")")
  say "$engine: $result"
done

printf '%-10s %9s %9s %7s %15s %9s %11s %6s  %s\n' engine ok planned errors 'rss_kB warm/end' \
  'fds b/a' 'threads b/a' time result
printf '%s\n' "${summary[@]}"
say "$((SECONDS - begun)) s in all; wrote $results (logs in $logs/)"
if [ "${#engines_failed[@]}" -gt 0 ]; then
  say "failed: ${engines_failed[*]}"
  exit 1
fi
