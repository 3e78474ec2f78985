#!/bin/sh
# A small multi-tenant build for `tenant-guard cross` (see README.md).
#
#   build.sh clean     per-tenant outputs and a per-tenant cache: passes
#   build.sh leaky     a cache shared by all tenants: the first build leaves its
#                      API token there, the next one packs the cache into its
#                      bundle (base64, inside a tar.gz): fails, leak pinpointed
#   build.sh log-own   prints its own API token in its log: fails, unless
#                      tenant-guard.toml has `[cross] allow_own_in_logs = true`
#
# It runs in the current directory, once per tenant, with TENANT_SLUG,
# SECRET_MCP_ADDR and SECRET_MCP_TOKEN set by tenant-guard cross, and API_TOKEN
# given by `--inject API_TOKEN=api-token`.
set -eu

variant="${1:-clean}"
tenant="${TENANT_SLUG:?TENANT_SLUG is not set}"
out="out/$tenant"
stage="$out/.stage"

mkdir -p "$out" "$stage"
echo "building app for $tenant ($variant)"
printf 'app for %s\n' "$tenant" > "$out/app.txt"
printf '{"tenant": "%s", "vault": "%s"}\n' "$tenant" "${SECRET_MCP_ADDR:-}" > "$out/config.json"

case "$variant" in
clean)
    # Each tenant has its own cache: nothing crosses.
    mkdir -p "cache/$tenant"
    printf 'built %s\n' "$tenant" > "cache/$tenant/stamp"
    cp "cache/$tenant/stamp" "$stage/stamp"
    ;;
leaky)
    # One cache for every tenant. What a previous build left there is packed
    # into this tenant's bundle, base64-encoded.
    mkdir -p cache
    if [ -f cache/credentials ]; then
        base64 < cache/credentials | tr -d '\n' > "$stage/cache.b64"
    fi
    printf 'API_TOKEN=%s\n' "${API_TOKEN:?API_TOKEN is not set}" > cache/credentials
    printf 'built %s\n' "$tenant" > "$stage/stamp"
    ;;
log-own)
    printf 'built %s\n' "$tenant" > "$stage/stamp"
    echo "debug: using API token ${API_TOKEN:?API_TOKEN is not set}"
    ;;
*)
    echo "build.sh: unknown variant $variant (clean, leaky, log-own)" >&2
    exit 64
    ;;
esac

tar -czf "$out/bundle.tar.gz" -C "$stage" .
rm -rf "$stage"
echo "done: $out"
