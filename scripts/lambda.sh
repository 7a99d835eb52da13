# Shell functions to run the functions under `cargo lambda watch` on a free loopback port and
# invoke them. Source it from a script that already runs inside scripts/with-moto.sh.
#   lambda_start KEY=VALUE...   start the local Lambda API with these function variables
#   lambda_invoke NAME FILE     invoke function NAME with the JSON payload in FILE
#   lambda_stop                 stop it (call it from your EXIT trap)

lambda_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lambda_bin="$lambda_root/.venv/bin/cargo-lambda"
lambda_pid=""
lambda_port=""
lambda_log=""

lambda_free_port() {
  "$lambda_root/.venv/bin/python" -c \
    'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

lambda_start() {
  lambda_port="$(lambda_free_port)"
  lambda_log="${LAMBDA_LOG:-$(mktemp -t lambda.XXXXXX.log)}"
  local vars=()
  for pair in "$@"; do vars+=(--env-var "$pair"); done
  (cd "$lambda_root" && exec "$lambda_bin" lambda watch --quiet --ignore-changes \
    --invoke-address 127.0.0.1 --invoke-port "$lambda_port" "${vars[@]}") >"$lambda_log" 2>&1 &
  lambda_pid=$!
  for _ in $(seq 1 600); do
    if "$lambda_root/.venv/bin/python" -c \
      "import socket; socket.create_connection(('127.0.0.1', $lambda_port), 1)" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$lambda_pid" 2>/dev/null; then
      echo "cargo lambda watch stopped:" >&2
      cat "$lambda_log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "cargo lambda watch did not listen on port $lambda_port" >&2
  return 1
}

lambda_invoke() {
  (cd "$lambda_root" && "$lambda_bin" lambda invoke "$1" \
    --invoke-address 127.0.0.1 --invoke-port "$lambda_port" \
    --data-file "$2" --output-format json)
}

lambda_stop() {
  if [ -n "$lambda_pid" ]; then
    kill "$lambda_pid" 2>/dev/null || true
    wait "$lambda_pid" 2>/dev/null || true
    lambda_pid=""
  fi
}
