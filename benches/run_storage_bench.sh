#!/usr/bin/env bash
# Storage benchmark (issue 8): Get and Put throughput of the Secret MCP
# server on PostgreSQL against SQLite, and with one against two servers on
# one PostgreSQL database, all in the same run on this machine, reported as
# ratios. Uses the load generator (benches/src/bin/smcp-load.rs).
#
# Runs, each measured by smcp-load at the same concurrency and duration:
#   sqlite      server in the generator's process, SQLite file in /dev/shm
#   pg-inproc   the same, on PostgreSQL
#   pg-1        one `smcp-load --serve` process on PostgreSQL, generator apart
#   pg-2        two such processes on the same database, the generator's
#               connections spread over both
# PostgreSQL is a throwaway cluster started here (as the `postgres` user when
# run as root) with its data in /dev/shm like the SQLite file, so that
# neither pays for a disk flush; it is stopped and removed at the end.
#
# usage: benches/run_storage_bench.sh [DURATION] [CONCURRENCY_LIST]
#        (defaults: 5s and 16,64)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
duration="${1:-5s}"
conc="${2:-16,64}"
target="${CARGO_TARGET_DIR:-$repo/target}"

cargo build --release -p tenant-vault-benches --bin smcp-load \
    --manifest-path "$repo/Cargo.toml" >&2
load="$target/release/smcp-load"

pgbin=""
for d in "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")" \
    /usr/lib/postgresql/*/bin /usr/local/bin; do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then pgbin="$d"; break; fi
done
[ -n "$pgbin" ] || { echo "no initdb/pg_ctl: install Debian's postgresql package" >&2; exit 2; }

work="$(mktemp -d /dev/shm/smcp-storage-bench.XXXXXX)"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$work"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    as_pg "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
as_pg "$pgbin/initdb" -D "$work/pg" -A trust -U postgres --no-sync >/dev/null
as_pg "$pgbin/pg_ctl" -D "$work/pg" -w -l "$work/pg.log" start \
    -o "-p $port -k $work -c listen_addresses=127.0.0.1 -c max_connections=200" >/dev/null
psql="$pgbin/psql"; [ -x "$psql" ] || psql="psql"
db() {
    "$psql" -h 127.0.0.1 -p "$port" -U postgres -qc "CREATE DATABASE $1" postgres >/dev/null
    echo "postgres://postgres@127.0.0.1:$port/$1"
}

common=(--ops get,put --concurrency "$conc" --duration "$duration" --warmup 1s --connections 8)
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); PostgreSQL $("$pgbin/pg_ctl" --version | awk '{print $NF}')" >&2

"$load" "${common[@]}" --json "$work/sqlite.json" >&2
"$load" "${common[@]}" --storage "$(db bench_inproc)" --json "$work/pg-inproc.json" >&2

# One database, served by one and then two server processes.
shared="$(db bench_shared)"
# Started in this shell (not in a command substitution's subshell), so
# that `cleanup` knows their pids and stops them.
serve() {
    "$load" --serve 127.0.0.1:0 --storage "$shared" --key-file "$work/vault.key" \
        > "$work/serve-$1.out" 2>&1 &
    pids+=($!)
}
addr_of() {
    local out="$work/serve-$1.out"
    for _ in $(seq 1 600); do
        grep -q '^addr=' "$out" 2>/dev/null && break
        sleep 0.1
    done
    grep '^addr=' "$out" | cut -d= -f2
}
serve a
a="$(addr_of a)"
token="$(grep '^token=' "$work/serve-a.out" | cut -d= -f2)"
"$load" "${common[@]}" --addr "$a" --token "$token" --json "$work/pg-1.json" >&2
serve b
b="$(addr_of b)"
"$load" "${common[@]}" --addr "$a,$b" --token "$token" --json "$work/pg-2.json" >&2

python3 - "$work" "$conc" <<'EOF'
import json, sys
work, conc = sys.argv[1], sys.argv[2]
runs = ["sqlite", "pg-inproc", "pg-1", "pg-2"]
res = {}
for r in runs:
    doc = json.load(open(f"{work}/{r}.json"))
    for m in doc["results"]:
        res[(r, m["op"], m["concurrency"])] = m
print(f"{'op':<4} {'conc':>4} " + " ".join(f"{r + ' /s':>14}" for r in runs)
      + f" {'pg/sqlite':>10} {'2 srv/1':>8}")
for op in ["Get", "Put"]:
    for c in [int(x) for x in conc.split(",")]:
        t = {r: res[(r, op, c)]["throughput_per_sec"] for r in runs}
        errs = sum(res[(r, op, c)]["errors"] for r in runs)
        print(f"{op:<4} {c:>4} " + " ".join(f"{t[r]:>14.0f}" for r in runs)
              + f" {t['pg-inproc'] / t['sqlite']:>10.2f} {t['pg-2'] / t['pg-1']:>8.2f}"
              + (f"  ({errs} errors)" if errs else ""))
EOF
