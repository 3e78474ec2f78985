#!/usr/bin/env bash
# Benchmark of `tenant-guard scan --fingerprints`: the scan benchmark's
# corpus (gen_corpus.py, ~1.05 GiB with its archives) scanned with and
# without a fingerprint file of 10,000 secret values, in the same run.
# The goal (issue 6): at most 1.5x the plain scan's time.
#
# usage: cli/tenant-guard/bench/run_fingerprint_bench.sh [CORPUS_DIR] [COUNT]
# needs: python3 >= 3.11. The corpus is written under /tmp and deleted at
# the end; the fingerprint file and its planted values too.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
corpus="${1:-/tmp/tg-fp-bench-corpus}"
count="${2:-10000}"
target="${CARGO_TARGET_DIR:-$repo/target}"
trap 'rm -rf "$corpus"' EXIT

cargo build --release -p tenant-guard -p tenant-vault-benches --bin tenant-guard --bin fp-gen \
    --manifest-path "$repo/Cargo.toml" >&2
tg="$target/release/tenant-guard"

[ -d "$corpus/text" ] || python3 "$here/gen_corpus.py" "$corpus"
rm -rf "$corpus/subset"   # the scan benchmark's slow-tool subset is not used here
"$target/release/fp-gen" "$count" "$corpus/../tg-fp-bench.fp" "$corpus/text/planted.txt"
fp="$corpus/../tg-fp-bench.fp"
trap 'rm -rf "$corpus" "$fp" "$fp.json"' EXIT

mib() { du -sm --apparent-size "$1" | cut -f1; }
# One run: "wall cpu" seconds (cpu = user + system), output discarded.
timed() {
    /usr/bin/time -f "%e %U %S" -o "$corpus/.time" "$@" > /dev/null 2>&1 || true
    python3 -c "w,u,s=map(float,open('$corpus/.time').read().split()[-3:]); print(w, u+s)"
}

cat "$corpus"/text/*/* > /dev/null  # warm the page cache
echo "corpus: $(mib "$corpus/text") MiB text + $(mib "$corpus/archives") MiB of archives on disk; fingerprint file: $(mib "$fp") MiB, $count values; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
export CI=true
# Exit code 1: the corpus has findings.
"$tg" scan --artifacts --format json --fingerprints "$fp" --output "$fp.json" "$corpus" 2>/dev/null || true
found=$(python3 -c "import json,sys; print(sum(f['kind']=='vault-secret' for f in json.load(open(sys.argv[1]))['findings']))" "$fp.json")
echo "vault-secret findings: $found (planted: $(wc -l < "$corpus/text/planted.txt"))"
# Five rounds, plain and with fingerprints alternating, so that both see the
# same machine; the best wall and CPU time of each is kept (other work on a
# shared machine only ever adds time).
for threads in 1 0; do
    label=$([ "$threads" = 1 ] && echo "1 thread " || echo "all cores")
    pw=99999; pc=99999; fw=99999; fc=99999
    for _ in 1 2 3 4 5; do
        read -r w c < <(timed "$tg" scan --artifacts --threads "$threads" --format json "$corpus")
        pw=$(python3 -c "print(min($pw, $w))"); pc=$(python3 -c "print(min($pc, $c))")
        read -r w c < <(timed "$tg" scan --artifacts --threads "$threads" --format json --fingerprints "$fp" "$corpus")
        fw=$(python3 -c "print(min($fw, $w))"); fc=$(python3 -c "print(min($fc, $c))")
    done
    echo "$label: plain wall $pw s cpu $pc s; with $count fingerprints wall $fw s cpu $fc s; ratio wall $(python3 -c "print(f'{$fw/$pw:.2f}')")x, cpu $(python3 -c "print(f'{$fc/$pc:.2f}')")x"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
