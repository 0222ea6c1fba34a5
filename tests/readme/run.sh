#!/usr/bin/env bash
# Replays every command block of README.md, in order, against a real
# Gatehouse (fresh data directory, free port) and fails when an output no
# longer matches what the README shows. See tests/readme/README.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

for tool in bash curl python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    if [ "${CI:-}" = "true" ]; then
      echo "README replay: $tool is not installed (failing: CI must run this test)" >&2
      exit 1
    fi
    echo "" >&2
    echo "!!! SKIPPING the README replay: $tool is not installed" >&2
    echo "!!! Install bash, curl and python3 to run it." >&2
    echo "" >&2
    echo "README replay: $tool is not installed" >>"${GATEHOUSE_SKIPPED:-/dev/null}"
    exit 0
  fi
done

# With the workspace's features (as `cargo test --workspace` built them),
# so nothing is compiled a second time with a narrower feature set.
cargo build --quiet --workspace --bins
python3 tests/readme/replay.py "$root/target/debug/gatehouse"
