#!/usr/bin/env bash
# The main job end to end on the local emulator: a Convox app writes an encrypted env file,
# its S3 event reaches env-sync under `cargo lambda watch`, and the environment is staged as a
# version of the app's secret. Run it with `make demo`; it exits non-zero when a step fails.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
source scripts/lambda.sh

rack=demo
app=web
release=RDEMOABCDEF
work="$(mktemp -d -t rack-secrets-demo.XXXXXX)"
cleanup() { lambda_stop; rm -rf "$work"; }
trap cleanup EXIT

python=.venv/bin/python
emulator() { "$python" scripts/emulator_rack.py "$@"; }
field() { "$python" -c 'import json, sys; print(eval("d" + sys.argv[1], {"d": json.load(sys.stdin)}))' "$1"; }
step() { printf '\n== %s\n' "$*"; }
fail() { echo "demo failed: $*" >&2; exit 1; }

step "1. A rack '$rack' in the emulator: a KMS key and the app stack $rack-$app"
app_info="$(emulator create-app --rack "$rack" --app "$app" --release "$release")"
bucket="$(field '["bucket"]' <<<"$app_info")"
key_id="$(field '["key_id"]' <<<"$app_info")"
echo "stack $rack-$app, Settings bucket $bucket, rack key $key_id"

step "2. 'convox env set' writes releases/$release/env, sealed with the rack key"
cat >"$work/env" <<'ENV'
DATABASE_URL=postgres://app:demo-only-password@db.internal:5432/app
REDIS_URL=redis://cache.internal:6379/0
SECRET_KEY_BASE=demo-only-0123456789abcdef
WORKERS=4
ENV
cargo run --quiet -p rack-secrets --bin envelope -- seal --key-id "$key_id" <"$work/env" >"$work/env.sealed"
emulator put-object --bucket "$bucket" --key "releases/$release/env" --file "$work/env.sealed" >/dev/null
echo "wrote s3://$bucket/releases/$release/env ($(wc -c <"$work/env.sealed") bytes, encrypted)"

step "3. The S3 event reaches env-sync, running under cargo lambda watch"
sed -e "s/\"BUCKET\"/\"$bucket\"/g; s/:::BUCKET\"/:::$bucket\"/g" \
  -e "s#\"KEY\"#\"releases/$release/env\"#" \
  tests/fixtures/events/s3-object-created.json >"$work/event.json"
LAMBDA_LOG="$work/env-sync.log" lambda_start RACK="$rack"
lambda_invoke env-sync "$work/event.json" >"$work/first.json" || fail "env-sync invocation failed"
outcome="$(field '["results"][0]["outcome"]' <"$work/first.json")"
[ "$outcome" = staged ] || fail "expected outcome staged, got $outcome"
version_id="$(field '["results"][0]["version_id"]' <"$work/first.json")"
secret="$(emulator describe-secret --name "$rack/$app")"
comparison="$(emulator compare-version --name "$rack/$app" --version-id "$version_id" --env-file "$work/env")"
[ "$(field '["same"]' <<<"$comparison")" = True ] || fail "the staged version differs from the env file"
echo "outcome:     $outcome"
echo "secret ARN:  $(field '["arn"]' <<<"$secret")"
echo "version id:  $version_id"
echo "labels:      $(field '["versions"]["'"$version_id"'"]' <<<"$secret")"
echo "keys:        $(field '["keys"]' <<<"$comparison")"
echo "(a secret's first version also carries AWSCURRENT: Secrets Manager gives it one)"
echo "the staged version holds exactly the env file's keys and values (compared, not shown)"

step "4. The same event delivered again writes nothing"
lambda_invoke env-sync "$work/event.json" >"$work/second.json" || fail "env-sync invocation failed"
outcome="$(field '["results"][0]["outcome"]' <"$work/second.json")"
[ "$outcome" = unchanged ] || fail "expected outcome unchanged, got $outcome"
again="$(emulator describe-secret --name "$rack/$app")"
[ "$(field '["versions"]' <<<"$again")" = "$(field '["versions"]' <<<"$secret")" ] ||
  fail "the secret's versions changed on replay"
echo "outcome:     $outcome (same version id $(field '["results"][0]["version_id"]' <"$work/second.json"))"
echo "versions:    $(field '["versions"]' <<<"$again")"

step "env-sync's log lines and metrics for these two events"
grep -E '^\{' "$work/env-sync.log" | grep -v 'AWS_LAMBDA_MAX_CONCURRENCY' || true
for value in demo-only-password demo-only-0123456789abcdef; do
  if grep -q "$value" "$work/env-sync.log" "$work/first.json" "$work/second.json"; then
    fail "a secret value reached a log or a response"
  fi
done
printf '\ndemo passed: staged once, replay wrote nothing, no value in any log\n'
