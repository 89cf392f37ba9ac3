#!/usr/bin/env bash
# The whole test command: tools, types, lint/format, import rules, then every test file.
# Node 20 does not expand globs for --test, so the file list comes from find.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-tools.sh
npx --no-install tsc --noEmit
npx --no-install biome check .
# The import rules between layers (.dependency-cruiser.cjs).
npx --no-install depcruise src bench --config .dependency-cruiser.cjs --output-type err-long

mapfile -t files < <(find test -name '*.test.ts' | sort)
if ((${#files[@]} == 0)); then
  echo "no test files found" >&2
  exit 1
fi
exec node --import tsx --test --test-concurrency="${HVKIT_TEST_CONCURRENCY:-2}" \
  --test-timeout="${HVKIT_TEST_TIMEOUT_MS:-300000}" "${files[@]}"
