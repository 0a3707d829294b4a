# Helpers shared by scripts/bench.sh and scripts/soak.sh (sourced, not run).

# A string as a JSON string literal (backslashes, quotes and control characters escaped).
json_str() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\t'/ }
  s=${s//$'\r'/ }
  s=${s//$'\n'/ }
  printf '"%s"' "$s"
}

# A field of /proc/PID/status (VmRSS, VmHWM in kB; Threads), empty once the process is gone.
status_kb() { sed -n "s/^$2:[[:space:]]*\([0-9]*\).*/\1/p" "/proc/$1/status" 2>/dev/null || true; }
rss_kb() { status_kb "$1" VmRSS; }
threads() { status_kb "$1" Threads; }

# How many descriptors PID $1 has open.
open_fds() {
  local fds=("/proc/$1/fd/"*)
  echo "${#fds[@]}"
}

# Appends one NDJSON line to the file named by $results.
emit() { printf '%s\n' "$1" >>"$results"; }
