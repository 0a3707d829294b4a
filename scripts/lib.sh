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

# Appends one NDJSON line to the file named by $results.
emit() { printf '%s\n' "$1" >>"$results"; }
