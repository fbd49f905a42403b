#!/usr/bin/env bash
# Runs each example app as a person would (`cargo run --example <app> -- --dev`), on a free port,
# and calls it with curl as the README shows: health, a dev token, onboarding, a project, and
# the 401 / 403 / 415 answers. Exits non-zero on any unexpected answer.
set -euo pipefail
cd "$(dirname "$0")/.."

check() { # check <what> <expected> <actual>
  if [ "$2" != "$3" ]; then echo "smoke: $1: expected $2, got $3" >&2; exit 1; fi
  echo "smoke: $1: $3"
}

for app in axum_app actix_app; do
  cargo build -q --example "$app"
  # Without --dev and without Clerk's settings it refuses to start, and says why.
  if out="$(env -u CLERK_ISSUER cargo run -q --example "$app" -- --port 0 2>&1)"; then
    echo "smoke: $app started without --dev or CLERK_ISSUER" >&2; exit 1
  fi
  check "$app refuses without --dev" yes "$(grep -q -- '--dev' <<<"$out" && echo yes || echo no)"
  log="$(mktemp)"
  cargo run -q --example "$app" -- --dev --port 0 >"$log" 2>&1 &
  pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  base=""
  for _ in $(seq 1 300); do
    base="$(sed -n 's/^Listening on \(http:[^ ]*\).*/\1/p' "$log")"
    [ -n "$base" ] && break
    kill -0 $pid 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.2
  done
  [ -n "$base" ] || { echo "smoke: $app did not start"; cat "$log"; exit 1; }
  echo "smoke: $app at $base"
  # The log must not hold a database password.
  if grep -q ':[^*@/][^@/]*@' <(grep -o 'postgres://[^ ]*' "$log"); then
    echo "smoke: $app printed a database password" >&2; exit 1
  fi
  check "$app GET /health" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$base/health")"
  check "$app no token" 401 "$(curl -s -o /dev/null -w '%{http_code}' "$base/api/projects")"
  json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
  token="$(curl -s -X POST "$base/dev/token" -H 'content-type: application/json' \
    -d '{"user_id":"user_alice"}' | json '["token"]')"
  check "$app no organization" 403 "$(curl -s -o /dev/null -w '%{http_code}' \
    -H "authorization: Bearer $token" "$base/api/projects")"
  org="$(curl -s -X POST "$base/api/organizations" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' -d '{"name":"Acme","slug":"acme"}' | json '["external_id"]')"
  token="$(curl -s -X POST "$base/dev/token" -H 'content-type: application/json' \
    -d "{\"user_id\":\"user_alice\",\"org_id\":\"$org\"}" | json '["token"]')"
  check "$app create project" 201 "$(curl -s -o /dev/null -w '%{http_code}' -X POST \
    -H "authorization: Bearer $token" -H 'content-type: application/json' \
    -d '{"name":"Rocket skates"}' "$base/api/projects")"
  check "$app list projects" "Rocket skates" "$(curl -s -H "authorization: Bearer $token" \
    "$base/api/projects" | json '[0]["name"]')"
  # A body without its content type is refused in the API's JSON shape, not the framework's text.
  check "$app body without content type" 415:unsupported_media_type "$(curl -s -X POST \
    -H "authorization: Bearer $token" -d '{"name":"Giant magnet"}' "$base/api/projects" \
    -w ':%{http_code}' | python3 -c "import json,sys; b,s=sys.stdin.read().rsplit(':',1); print(s+':'+json.loads(b)['error'])")"
  kill $pid; wait $pid 2>/dev/null || true
  trap - EXIT
done
