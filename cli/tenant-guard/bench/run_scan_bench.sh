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
# Each timing is the best of three runs, wall-clock and CPU (user + system)
# time; the load average is printed before and after, as the machine may be
# shared.
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
# Best of three runs of a command (output discarded): wall-clock seconds,
# then CPU (user + system) seconds, each the smallest of the three. CPU time
# moves less than wall time when other work shares the machine.
best() {
    python3 - "$@" <<'PY'
import os, subprocess, sys, time
runs = []
for _ in range(3):
    t = time.monotonic()
    p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, ru = os.wait4(p.pid, 0)
    runs.append((time.monotonic() - t, ru.ru_utime + ru.ru_stime))
print(f"{min(w for w, _ in runs):.3f} {min(c for _, c in runs):.3f}")
PY
}
rate() { python3 -c "print(f'{$1/$2:.0f}')"; }
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }

cat "$corpus"/text/*/* > /dev/null  # warm the page cache
text_mib=$(mib "$corpus/text"); all_mib=$(( text_mib + $(mib "$corpus/archives") ))
echo "corpus: $text_mib MiB text, archives $(mib "$corpus/archives") MiB on disk; $(wc -l < "$corpus/keywords.txt") keywords"

export CI=true
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
read -r tg1 tg1c < <(best "$tg" scan --artifacts --threads 1 --format json "$corpus/text")
read -r tgn tgnc < <(best "$tg" scan --artifacts --format json "$corpus/text")
read -r rg1 rg1c < <(best rg -F -i -c -j1 --no-ignore -f "$corpus/keywords.txt" "$corpus/text")
read -r rgn rgnc < <(best rg -F -i -c --no-ignore -f "$corpus/keywords.txt" "$corpus/text")
read -r tga tgac < <(best "$tg" scan --artifacts --format json "$corpus")
echo "text, 1 thread : tenant-guard $tg1 s ($(rate "$text_mib" "$tg1") MiB/s), rg -F $rg1 s ($(rate "$text_mib" "$rg1") MiB/s), ratio tg/rg speed $(ratio "$rg1" "$tg1")"
echo "                 CPU: tenant-guard $tg1c s ($(rate "$text_mib" "$tg1c") MiB per CPU-second), rg -F $rg1c s ($(rate "$text_mib" "$rg1c")), ratio $(ratio "$rg1c" "$tg1c")"
echo "text, all cores: tenant-guard $tgn s ($(rate "$text_mib" "$tgn") MiB/s), rg -F $rgn s ($(rate "$text_mib" "$rgn") MiB/s), ratio tg/rg speed $(ratio "$rgn" "$tgn")"
echo "                 CPU: tenant-guard $tgnc s, rg -F $rgnc s"
echo "text + archives, all cores: tenant-guard $tga s ($tgac s CPU) for $(mib "$corpus") MiB on disk"
if [ -n "${TG_BEFORE:-}" ]; then
    read -r bt1 bt1c < <(best "$TG_BEFORE" scan --artifacts --threads 1 --format json "$corpus/text")
    read -r btn btnc < <(best "$TG_BEFORE" scan --artifacts --format json "$corpus/text")
    echo "before ($TG_BEFORE): 1 thread $bt1 s ($(rate "$text_mib" "$bt1") MiB/s), all cores $btn s ($(rate "$text_mib" "$btn") MiB/s); speed-up $(ratio "$bt1" "$tg1") / $(ratio "$btn" "$tgn")"
    echo "                 CPU: 1 thread $bt1c s ($(rate "$text_mib" "$bt1c") MiB per CPU-second), all cores $btnc s; CPU ratio $(ratio "$bt1c" "$tg1c") / $(ratio "$btnc" "$tgnc")"
fi

sub_mib=$(mib "$corpus/subset")
read -r tgs _ < <(best "$tg" scan --artifacts --threads 1 --format json "$corpus/subset")
s=$(date +%s.%N); (cd "$corpus/subset" && detect-secrets scan --all-files . > /dev/null); e=$(date +%s.%N)
ds=$(python3 -c "print($e-$s)")
echo "subset $sub_mib MiB, 1 thread: tenant-guard $tgs s, detect-secrets $ds s, speed ratio $(python3 -c "print(f'{$ds/$tgs:.0f}')")x"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
