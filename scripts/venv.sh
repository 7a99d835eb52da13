#!/usr/bin/env bash
# Creates .venv with the pinned local tools: moto's server, cargo-lambda and cfn-lint.
# Reruns are cheap: a stamp file records the pins that were installed.
set -euo pipefail
cd "$(dirname "$0")/.."

pins=(
  "moto[server]==5.2.5"
  "cargo-lambda==1.9.2"
  "cfn-lint==1.58.0"
)
stamp=.venv/.pins

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "${pins[*]}" ]; then
  exit 0
fi

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check "${pins[@]}"
printf '%s' "${pins[*]}" > "$stamp"
echo "venv: installed ${pins[*]}"
