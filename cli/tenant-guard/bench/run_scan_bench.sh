#!/usr/bin/env bash
# Benchmark of `tenant-guard scan` against `rg -F` (same keyword set) and
# detect-secrets (on a 50 MiB subset), all in the same run.
#
# usage: cli/tenant-guard/bench/run_scan_bench.sh [CORPUS_DIR]
# With TG_BEFORE=/path/to/an/older/tenant-guard, that binary is timed in the
# same run too (text, 1 thread and all cores), for before/after figures.
# needs: a release build (built here), ripgrep (apt-get install ripgrep),
#        detect-secrets (pip install detect-secrets), python3 >= 3.11.
# The corpus (~1.05 GiB) is written under /tmp and deleted at the end.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
corpus="${1:-/tmp/tg-bench-corpus}"
target="${CARGO_TARGET_DIR:-$repo/target}"
trap 'rm -rf "$corpus"' EXIT

cargo build --release -p tenant-guard --manifest-path "$repo/Cargo.toml" >&2
tg="$target/release/tenant-guard"

[ -d "$corpus/text" ] || python3 "$here/gen_corpus.py" "$corpus"
python3 - "$repo/policies/rules" > "$corpus/keywords.txt" <<'PY'
import glob, sys, tomllib
kws = set()
for f in glob.glob(sys.argv[1] + "/*.toml"):
    for r in tomllib.load(open(f, "rb")).get("rules", []):
        kws.update(k.lower() for k in r["keywords"])
print("\n".join(sorted(kws)))
PY

mib() { du -sm --apparent-size "$1" | cut -f1; }
# Best of three wall-clock seconds of a command (output discarded).
best() {
    local best=""
    for _ in 1 2 3; do
        local s e
        s=$(date +%s.%N); "$@" > /dev/null 2>&1 || true; e=$(date +%s.%N)
        best=$(python3 -c "b='$best'; t=$e-$s; print(t if not b or t < float(b) else b)")
    done
    echo "$best"
}
rate() { python3 -c "print(f'{$1/$2:.0f}')"; }

cat "$corpus"/text/*/* > /dev/null  # warm the page cache
text_mib=$(mib "$corpus/text"); all_mib=$(( text_mib + $(mib "$corpus/archives") ))
echo "corpus: $text_mib MiB text, archives $(mib "$corpus/archives") MiB on disk; $(wc -l < "$corpus/keywords.txt") keywords"

export CI=true
tg1=$(best "$tg" scan --artifacts --threads 1 --format json "$corpus/text")
tgn=$(best "$tg" scan --artifacts --format json "$corpus/text")
rg1=$(best rg -F -i -c -j1 --no-ignore -f "$corpus/keywords.txt" "$corpus/text")
rgn=$(best rg -F -i -c --no-ignore -f "$corpus/keywords.txt" "$corpus/text")
tga=$(best "$tg" scan --artifacts --format json "$corpus")
echo "text, 1 thread : tenant-guard $tg1 s ($(rate "$text_mib" "$tg1") MiB/s), rg -F $rg1 s ($(rate "$text_mib" "$rg1") MiB/s), ratio tg/rg speed $(python3 -c "print(f'{$rg1/$tg1:.2f}')")"
echo "text, all cores: tenant-guard $tgn s ($(rate "$text_mib" "$tgn") MiB/s), rg -F $rgn s ($(rate "$text_mib" "$rgn") MiB/s), ratio tg/rg speed $(python3 -c "print(f'{$rgn/$tgn:.2f}')")"
echo "text + archives, all cores: tenant-guard $tga s for $(mib "$corpus") MiB on disk"
if [ -n "${TG_BEFORE:-}" ]; then
    bt1=$(best "$TG_BEFORE" scan --artifacts --threads 1 --format json "$corpus/text")
    btn=$(best "$TG_BEFORE" scan --artifacts --format json "$corpus/text")
    echo "before ($TG_BEFORE): 1 thread $bt1 s ($(rate "$text_mib" "$bt1") MiB/s), all cores $btn s ($(rate "$text_mib" "$btn") MiB/s); speed-up $(python3 -c "print(f'{$bt1/$tg1:.2f}')") / $(python3 -c "print(f'{$btn/$tgn:.2f}')")"
fi

sub_mib=$(mib "$corpus/subset")
tgs=$(best "$tg" scan --artifacts --threads 1 --format json "$corpus/subset")
s=$(date +%s.%N); (cd "$corpus/subset" && detect-secrets scan --all-files . > /dev/null); e=$(date +%s.%N)
ds=$(python3 -c "print($e-$s)")
echo "subset $sub_mib MiB, 1 thread: tenant-guard $tgs s, detect-secrets $ds s, speed ratio $(python3 -c "print(f'{$ds/$tgs:.0f}')")x"
