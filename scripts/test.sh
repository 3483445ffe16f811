#!/usr/bin/env bash
# The whole test suite: real alembic for the interop tests, the binaries the end-to-end tests
# start, then every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-alembic.sh >/dev/null
cargo build --workspace --bins
cargo test --workspace "$@"
