#!/usr/bin/env bash
# Bounded fuzzing (`make fuzz`): each target runs FUZZ_SECONDS (default 60), starting from the
# seed corpus in fuzz/corpus and keeping what it finds in fuzz/work. Then every template the
# rewriter's fuzzing kept is rewritten again and both sides go to cfn-lint: an output must
# never be rejected when its input is accepted. cargo-fuzz builds on the one stable
# toolchain here with `--sanitizer none`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
if [ ! -x .tools/bin/cargo-fuzz ]; then
  cargo install --locked --root .tools cargo-fuzz --version 0.13.2
fi
seconds="${FUZZ_SECONDS:-60}"

for target in env_parser envelope_opener template_rewriter; do
  mkdir -p "fuzz/work/$target"
  .tools/bin/cargo-fuzz run --fuzz-dir fuzz --sanitizer none "$target" \
    "fuzz/work/$target" "fuzz/corpus/$target" -- -max_total_time="$seconds"
done

out=fuzz/work/rewrites
rm -rf "$out" && mkdir -p "$out"
# Each input the rewriter's fuzzing kept runs once more, writing its template and rewrite.
REWRITES_OUT="$out" .tools/bin/cargo-fuzz run --fuzz-dir fuzz --sanitizer none \
  template_rewriter "fuzz/work/template_rewriter" "fuzz/corpus/template_rewriter" -- -runs=0

# One cfn-lint run over all outputs; only the failing ones have their input judged too.
.venv/bin/cfn-lint --ignore-checks W2001 --format parseable -- "$out"/*.out.json \
  >"$out/lint.txt" || true
rejected=0
for output in $(cut -d: -f1 "$out/lint.txt" | sort -u); do
  input="${output%.out.json}.in.json"
  if .venv/bin/cfn-lint --ignore-checks W2001 -- "$input" >/dev/null; then
    echo "cfn-lint rejects the rewrite of an accepted template: $output" >&2
    grep -F "$output" "$out/lint.txt" >&2
    rejected=$((rejected + 1))
  fi
done
checked="$(find "$out" -name '*.out.json' | wc -l)"
echo "fuzz: $checked rewritten templates checked with cfn-lint, $rejected rejected"
[ "$rejected" -eq 0 ]
