#!/usr/bin/env bash
# Runs the env-sync, stack-inject and app-cleanup binaries under `cargo lambda watch` and invokes them with
# the fixture events and requests, checking what they return and leave in the emulator. Run inside scripts/with-moto.sh
# (`make test` does). Ends with the line "N passed, N failed".
set -uo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
source scripts/lambda.sh

work="$(mktemp -d -t env-sync-test.XXXXXX)"
finish() {
  lambda_stop
  if [ -n "${FUNCTIONS_LOG:-}" ]; then cp "$work/functions.log" "$FUNCTIONS_LOG"; fi
  rm -rf "$work"
}
trap finish EXIT
python=.venv/bin/python
emulator() { "$python" scripts/emulator_rack.py "$@"; }
field() { "$python" -c 'import json, sys; print(eval("d" + sys.argv[1], {"d": json.load(sys.stdin)}))' "$1"; }
fill() { # fixture bucket key > file
  sed -e "s/\"BUCKET\"/\"$2\"/g; s/:::BUCKET\"/:::$2\"/g; s#\"KEY\"#\"$3\"#" \
    -e "s/\"APP\"/\"${4:-}\"/; s/\"RELEASE\"/\"${5:-}\"/" "tests/fixtures/events/$1"
}

passed=0
failed=0
check() { # description expected actual
  if [ "$2" = "$3" ]; then
    passed=$((passed + 1)); echo "ok: $1"
  else
    failed=$((failed + 1)); echo "FAILED: $1: expected [$2], got [$3]"
  fi
}

rack="lambda$$"
app_info="$(emulator create-app --rack "$rack" --app web --release R1)" || exit 1
bucket="$(field '["bucket"]' <<<"$app_info")"
key_id="$(field '["key_id"]' <<<"$app_info")"
printf 'A=1\nB=lambda-value-two\n' >"$work/env1"
printf 'A=1\nB=lambda-value-three\n' >"$work/env2"
if [ -n "${FUNCTIONS_LOG:-}" ]; then
  printf 'lambda-value-two\nlambda-value-three\n' >"$(dirname "$FUNCTIONS_LOG")/values-lambda.txt"
fi
for n in 1 2; do
  cargo run --quiet -p rack-secrets --bin envelope -- seal --key-id "$key_id" \
    <"$work/env$n" >"$work/env$n.sealed" || exit 1
  emulator put-object --bucket "$bucket" --key "releases/R$n/env" --file "$work/env$n.sealed" >/dev/null
done

LAMBDA_LOG="$work/functions.log" lambda_start RACK="$rack" || exit 1

fill s3-object-created.json "$bucket" releases/R1/env >"$work/s3.json"
out="$(lambda_invoke env-sync "$work/s3.json")"
check "S3 notification stages the release" staged "$(field '["results"][0]["outcome"]' <<<"$out")"
check "the result names the app" web "$(field '["results"][0]["app"]' <<<"$out")"
version1="$(field '["results"][0]["version_id"]' <<<"$out")"
same="$(emulator compare-version --name "$rack/web" --version-id "$version1" --env-file "$work/env1")"
check "the version holds the env file" True "$(field '["same"]' <<<"$same")"

out="$(lambda_invoke env-sync "$work/s3.json")"
check "the replayed notification writes nothing" unchanged "$(field '["results"][0]["outcome"]' <<<"$out")"

fill eventbridge-object-created.json "$bucket" releases/R2/env >"$work/bridge.json"
out="$(lambda_invoke env-sync "$work/bridge.json")"
check "EventBridge Object Created stages the release" staged "$(field '["results"][0]["outcome"]' <<<"$out")"
version2="$(field '["results"][0]["version_id"]' <<<"$out")"
labels="$(emulator describe-secret --name "$rack/web")"
check "AWSCURRENT stays on the first version" "['AWSCURRENT']" \
  "$(field '["versions"]["'"$version1"'"]' <<<"$labels")"
check "the new version is STAGED" "['STAGED']" "$(field '["versions"]["'"$version2"'"]' <<<"$labels")"

fill s3-object-removed.json "$bucket" releases/R1/env >"$work/removed.json"
out="$(lambda_invoke env-sync "$work/removed.json")"
check "a removal is ignored" 0 "$(field '["results"].__len__()' <<<"$out")"

fill manual-sync.json "" "" web R1 >"$work/manual.json"
out="$(lambda_invoke env-sync "$work/manual.json")"
check "the manual sync finds the release already staged" unchanged \
  "$(field '["results"][0]["outcome"]' <<<"$out")"

echo '{"nonsense": true}' >"$work/bad.json"
if lambda_invoke env-sync "$work/bad.json" >"$work/bad.out" 2>&1; then bad=accepted; else bad=refused; fi
check "an unknown payload is refused" refused "$bad"
check "the refusal names the accepted payloads" 1 "$(grep -c '"sync"' "$work/bad.out")"

"$python" - "$rack" "$bucket" >"$work/macro.json" <<'PY'
import json, sys
rack, bucket = sys.argv[1:]
request = json.load(open("tests/fixtures/templates/service.request.json"))
request["templateParameterValues"].update(Rack=rack, Settings=bucket, Release="R2")
for entry in request["fragment"]["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]["Environment"]:
    if entry["Name"] == "CONVOX_ENV_VARS":
        entry["Value"] = "*"
print(json.dumps(request))
PY
out="$(lambda_invoke stack-inject "$work/macro.json")"
check "the macro answers success" success "$(field '["status"]' <<<"$out")"
check "the macro echoes the request id" 5b1a9e5c-7d1e-4f3a-9a61-1c2d3e4f5a6b "$(field '["requestId"]' <<<"$out")"
secrets="$(field '["fragment"]["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"][0]["Secrets"]' <<<"$out")"
check "every key of R2 is injected, pinned to its version" \
  "['A', 'B'] {'$version2'}" \
  "$("$python" -c 'import ast, sys; s = ast.literal_eval(sys.argv[1]); print([e["Name"] for e in s], {e["ValueFrom"].rsplit(":", 1)[1] for e in s})' "$secrets")"

echo '{"requestId": "r-bad", "fragment": 7}' >"$work/bad-macro.json"
out="$(lambda_invoke stack-inject "$work/bad-macro.json")"
check "a malformed macro request fails with its id" "failure r-bad" \
  "$(field '["status"]' <<<"$out") $(field '["requestId"]' <<<"$out")"

url="$(emulator presign-put --bucket "$rack-answers" --key create | field '["url"]')"
"$python" -c 'import json, sys; print(json.dumps({"RequestType": "Create", "ResponseURL": sys.argv[1],
  "StackId": "stack", "RequestId": "req-1", "LogicalResourceId": "RackSecrets",
  "ResourceProperties": {"App": "web", "Release": "R2"}}))' "$url" >"$work/create.json"
lambda_invoke stack-inject "$work/create.json" >/dev/null
answer="$(emulator read-json --bucket "$rack-answers" --key create)"
check "the custom resource answers SUCCESS on its URL" SUCCESS "$(field '["Status"]' <<<"$answer")"
check "its physical id is the secret name" "$rack/web" "$(field '["PhysicalResourceId"]' <<<"$answer")"
check "AWSCURRENT moved to R2's version" "['STAGED', 'AWSCURRENT']" \
  "$(emulator describe-secret --name "$rack/web" | field '["versions"]["'"$version2"'"]')"

echo '{"render": {"app": "web", "release": "R1", "allowed": "B"}}' >"$work/render.json"
out="$(lambda_invoke stack-inject "$work/render.json")"
check "render gives one entry for the one allowed key" "B $version1" \
  "$(field '["secrets"][0]["name"]' <<<"$out") $(field '["version_id"]' <<<"$out")"

echo '{"verify": {"apps": ["web"]}}' >"$work/verify.json"
out="$(lambda_invoke env-sync "$work/verify.json")"
# The stack's output still names R1 as live, while R2 was promoted: B differs.
check "verify names the key that differs from the live release" "drift ['B']" \
  "$(field '["results"][0]["outcome"]' <<<"$out") $(field '["results"][0]["drift"]["changed"]' <<<"$out")"

stack_id="$(emulator delete-app --rack "$rack" --app web | field '["stack_id"]')"
sed -e "s#STACK_ID#$stack_id#g; s#STATUS#DELETE_COMPLETE#" \
  tests/fixtures/events/stack-status-change.json >"$work/deleted.json"
out="$(lambda_invoke app-cleanup "$work/deleted.json")"
check "app-cleanup schedules the deleted app's secret for deletion" deleted \
  "$(field '["results"][0]["outcome"]' <<<"$out")"
check "the secret has a deletion date" True \
  "$(emulator describe-secret --name "$rack/web" | field '["deletion_date"] is not None')"

values_seen="$(grep -c -e 'lambda-value-two' -e 'lambda-value-three' "$work/functions.log")"
check "no value in the functions' log" 0 "$values_seen"

echo "functions under cargo lambda: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
