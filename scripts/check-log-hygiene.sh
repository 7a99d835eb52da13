#!/usr/bin/env bash
# After the test suite: searches every log line it left in target/test-logs (the integration
# tests' logs, the Lambda binaries' logs, the test runner's output) for every secret value the
# tests wrote. Prints where a value was found, never the value itself.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/test-logs
shopt -s nullglob
values=("$dir"/values-*.txt)
logs=("$dir"/*.log "$dir"/*.out)
if [ ${#values[@]} -eq 0 ] || [ ${#logs[@]} -eq 0 ]; then
  echo "log hygiene: nothing to check in $dir (run the tests first)" >&2
  exit 1
fi

sort -u "${values[@]}" >"$dir/all-values"
count="$(wc -l <"$dir/all-values")"
lines="$(cat "${logs[@]}" | wc -l)"
if hits="$(grep -n -F -f "$dir/all-values" "${logs[@]}" | cut -d: -f1,2)"; then
  echo "log hygiene: secret values found at these file:line places:" >&2
  echo "$hits" >&2
  exit 1
fi
echo "log hygiene: $count secret values, $lines log lines in ${#logs[@]} files: none found"
