#!/usr/bin/env bash
# The whole test suite: formatting, lints, tests, docs. README's second command.
set -euo pipefail
cd "$(dirname "$0")/.."

# tests/tests/python_client.rs runs the Python example client (examples/python/).
if ! python3 -c 'import grpc, grpc_tools' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check \
        -r examples/python/requirements.txt
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# tenant-vault's conformance suite (behaviour, access, integrity, model) once
# more against PostgreSQL instead of SQLite: TV_STORE picks the backend in
# crates/tenant-vault/tests/common/mod.rs, and pg-harness starts a throwaway
# cluster (needs Debian's `postgresql` package).
# (--workspace with the test targets named keeps the workspace's feature
# set, so nothing is rebuilt.)
TV_STORE=postgres cargo test --workspace --locked \
    --test behaviour --test access --test integrity --test model --test postgres
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
