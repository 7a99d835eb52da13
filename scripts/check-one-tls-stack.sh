#!/usr/bin/env bash
# Fails when the functions link a second generation of hyper or rustls (the AWS SDK's legacy
# HTTP client comes with its default features): one TLS stack keeps builds and binaries small.
set -euo pipefail
cd "$(dirname "$0")/.."
tree="$(cargo tree --workspace -e normal --prefix none)"
status=0
for crate in hyper rustls; do
  versions="$(grep -E "^$crate v" <<<"$tree" | awk '{print $2}' | cut -d. -f1,2 | sort -u)"
  echo "$crate: $(echo "$versions" | tr '\n' ' ')"
  if [ "$(echo "$versions" | grep -c .)" -ne 1 ]; then
    echo "more than one generation of $crate is linked; see 'cargo tree -i $crate'" >&2
    status=1
  fi
done
exit $status
