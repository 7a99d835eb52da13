#!/usr/bin/env bash
# The main job end to end on the local emulator: a Convox app writes an encrypted env file,
# its S3 event reaches env-sync under `cargo lambda watch`, and the environment is staged as a
# version of the app's secret; then stack-inject rewrites a service template to read it and
# its custom resource makes the release live; a backfill adopts an older app, verify checks
# both, and app-cleanup removes a deleted app's secret. Run it with `make demo`; it exits
# non-zero when a step fails.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
source scripts/lambda.sh

rack=demo
app=web
release=RDEMOABCDEF
work="$(mktemp -d -t rack-secrets-demo.XXXXXX)"
cleanup() {
  lambda_stop
  if [ -n "${DEMO_KEEP_LOG:-}" ]; then cp "$work/functions.log" "$DEMO_KEEP_LOG"; fi
  rm -rf "$work"
}
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
API_TOKEN=demo-only-0123456789abcdef
DB_PASSWORD=demo-only-password
DB_USER=prod_user
REDIS_URL=redis://cache.internal:6379/0
WORKERS=4
ENV
cargo run --quiet -p rack-secrets --bin envelope -- seal --key-id "$key_id" <"$work/env" >"$work/env.sealed"
emulator put-object --bucket "$bucket" --key "releases/$release/env" --file "$work/env.sealed" >/dev/null
echo "wrote s3://$bucket/releases/$release/env ($(wc -c <"$work/env.sealed") bytes, encrypted)"

step "3. The S3 event reaches env-sync, running under cargo lambda watch"
sed -e "s/\"BUCKET\"/\"$bucket\"/g; s/:::BUCKET\"/:::$bucket\"/g" \
  -e "s#\"KEY\"#\"releases/$release/env\"#" \
  tests/fixtures/events/s3-object-created.json >"$work/event.json"
LAMBDA_LOG="$work/functions.log" lambda_start RACK="$rack" RUST_LOG="${DEMO_RUST_LOG:-info}"
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

step "5. Promote: the stack-inject macro rewrites the service's task definition"
"$python" - "$rack" "$bucket" "$release" >"$work/macro.json" <<'PY'
import json, sys
rack, bucket, release = sys.argv[1:]
with open("tests/fixtures/templates/service.request.json") as f:
    request = json.load(f)
request["templateParameterValues"].update(Rack=rack, Settings=bucket, Release=release)
print(json.dumps(request))
PY
lambda_invoke stack-inject "$work/macro.json" >"$work/macro.out" || fail "stack-inject invocation failed"
[ "$(field '["status"]' <"$work/macro.out")" = success ] || fail "the macro did not succeed"
"$python" - "$work/macro.json" "$work/macro.out" <<'PY'
import json, sys
before = json.load(open(sys.argv[1]))["fragment"]
after = json.load(open(sys.argv[2]))["fragment"]
def show(title, fragment):
    container = fragment["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    print(f"-- {title}")
    for entry in container.get("Environment", []):
        print(f"  Environment  {entry['Name']:16} {json.dumps(entry['Value'])}")
    for entry in container.get("Secrets", []):
        print(f"  Secrets      {entry['Name']:16} {entry['ValueFrom']}")
    for policy in fragment["Resources"]["ExecutionRole"]["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            print(f"  ExecutionRole may {statement['Action']} on {statement['Resource']}")
show("before (convox.yml allows DB_USER,DB_PASSWORD,API_TOKEN,MISSING_KEY)", before)
show("after", after)
PY
secrets_count="$(field '["fragment"]["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]["Secrets"].__len__()' <"$work/macro.out")"
[ "$secrets_count" -gt 0 ] || fail "no secrets were injected"

step "6. The custom resource makes the release live and answers CloudFormation"
answer_url="$(emulator presign-put --bucket "$rack-cfn-answers" --key promote | field '["url"]')"
"$python" - "$answer_url" "$app" "$release" >"$work/promote.json" <<'PY'
import json, sys
url, app, release = sys.argv[1:]
print(json.dumps({
    "RequestType": "Create", "ResponseURL": url, "RequestId": "demo-promote",
    "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/demo-web/1",
    "LogicalResourceId": "RackSecrets", "ResourceType": "Custom::RackSecrets",
    "ResourceProperties": {"App": app, "Release": release},
}))
PY
lambda_invoke stack-inject "$work/promote.json" >/dev/null || fail "stack-inject invocation failed"
answer="$(emulator read-json --bucket "$rack-cfn-answers" --key promote | tee "$work/answer.out")"
[ "$(field '["Status"]' <<<"$answer")" = SUCCESS ] || fail "the custom resource answered $answer"
echo "answer on the ResponseURL: $answer"
echo "AWSCURRENT is on: $(emulator describe-secret --name "$rack/$app" | field '["versions"]')"

step "7. Backfill: an app whose env was written before rack-secrets came is staged and made live"
worker_info="$(emulator create-app --rack "$rack" --app worker --release RWORKER0001)"
worker_bucket="$(field '["bucket"]' <<<"$worker_info")"
printf 'QUEUE=jobs\nWORKER_TOKEN=demo-only-worker-token\n' >"$work/worker.env"
cargo run --quiet -p rack-secrets --bin envelope -- seal --key-id "$(field '["key_id"]' <<<"$worker_info")" \
  <"$work/worker.env" >"$work/worker.sealed"
emulator put-object --bucket "$worker_bucket" --key releases/RWORKER0001/env --file "$work/worker.sealed" >/dev/null
echo '{"backfill": {}}' >"$work/backfill.json"
lambda_invoke env-sync "$work/backfill.json" >"$work/backfill.out" || fail "backfill failed"
"$python" - "$work/backfill.out" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
for r in report["results"]:
    print(f"  {r['app']:8} {r['outcome']:10} release {r['release']}  version {r['version_id']}")
print("  counts:", report["counts"], " cursor:", report["cursor"])
PY
[ "$(field '["counts"].get("failed", 0)' <"$work/backfill.out")" = 0 ] || fail "the backfill had failures"

step "8. Verify: AWSCURRENT against each app's live release"
echo '{"verify": {}}' >"$work/verify.json"
lambda_invoke env-sync "$work/verify.json" >"$work/verify.out" || fail "verify failed"
"$python" - "$work/verify.out" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(f"  {r['app']:8} {r['outcome']}")
PY
[ "$(field '["counts"].get("in_sync", 0)' <"$work/verify.out")" = 2 ] || fail "expected both apps in sync"

step "9. The app 'worker' is deleted: app-cleanup schedules its secret for deletion"
stack_id="$(emulator delete-app --rack "$rack" --app worker | field '["stack_id"]')"
sed -e "s#STACK_ID#$stack_id#g; s#STATUS#DELETE_COMPLETE#" \
  tests/fixtures/events/stack-status-change.json >"$work/deleted.json"
lambda_invoke app-cleanup "$work/deleted.json" >"$work/cleanup.out" || fail "app-cleanup failed"
[ "$(field '["results"][0]["outcome"]' <"$work/cleanup.out")" = deleted ] || fail "the secret was not deleted"
echo "result: $(cat "$work/cleanup.out")"
echo "secret $rack/worker is deleted on: $(emulator describe-secret --name "$rack/worker" | field '["deletion_date"]')"

step "The functions' log lines and metrics"
grep -h -E '^\{' "$work/functions.log" | grep -v 'AWS_LAMBDA_MAX_CONCURRENCY' || true
for value in demo-only-password demo-only-0123456789abcdef demo-only-worker-token; do
  if grep -q "$value" "$work/functions.log" "$work"/*.out "$work/first.json" "$work/second.json"; then
    fail "a secret value reached a log or a response"
  fi
done
printf '\ndemo passed: staged once, replay wrote nothing, task definition rewritten, release live,\n'
printf 'backfilled, verified, cleaned up; no value in any log or response\n'
