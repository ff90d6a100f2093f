#!/usr/bin/env bash
# Builds kite's container image in one command: a static kite binary (glibc
# with crt-static), the machine's CA bundle, then the top-level Dockerfile.
#
#   scripts/build-image.sh                   # kite:latest, release profile (lto, strip)
#   scripts/build-image.sh kite:1.2.3        # another tag
#   KITE_PROFILE=image-test scripts/build-image.sh kite:test
#                                            # unoptimised and much quicker (the tests use it)
#   KITE_BUILD_ONLY=1 scripts/build-image.sh # only the static binary; prints its path
#                                            # (bench/run.sh measures that binary)
#
# The build has its own target directory (KITE_IMAGE_TARGET_DIR, default
# target/image): a static build shares no artefacts with a normal one, and a
# separate directory lets it run while `cargo test` holds target/.
set -euo pipefail
cd "$(dirname "$0")/.."

tag="${1:-kite:latest}"
profile="${KITE_PROFILE:-release}"
target_dir="${KITE_IMAGE_TARGET_DIR:-target/image}"
ca="${KITE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
triple="$(rustc -vV | sed -n 's/^host: //p')"

case "$triple" in
*-linux-gnu) ;;
*) echo "build-image.sh: builds a static Linux binary; this host is $triple" >&2; exit 2 ;;
esac
build_only="${KITE_BUILD_ONLY:-0}"
if [ "$build_only" != 1 ] && [ ! -s "$ca" ]; then
    echo "build-image.sh: no CA bundle at $ca (apt-get install ca-certificates, or set KITE_CA_BUNDLE)" >&2
    exit 2
fi
if [ "$build_only" != 1 ] && ! docker version >/dev/null 2>&1; then
    echo "build-image.sh: no Docker daemon answers (is it running, may this user use it?)" >&2
    exit 1
fi

# RUSTFLAGS with --target reaches only the target's crates, not build
# scripts or proc macros (which cannot be static).
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --locked --bin kite --profile "$profile" --target "$triple" --target-dir "$target_dir" >&2
case "$profile" in dev | test) dir=debug ;; *) dir="$profile" ;; esac
bin="$target_dir/$triple/$dir/kite"

if readelf -l "$bin" | grep -q 'Requesting program interpreter'; then
    echo "build-image.sh: $bin is dynamically linked; a scratch image needs a static one" >&2
    exit 1
fi

if [ "$build_only" = 1 ]; then
    echo "$bin"
    exit 0
fi

mkdir -p dist/image
cp "$bin" dist/image/kite
cp "$ca" dist/image/ca-certificates.crt
docker build --quiet --tag "$tag" . >/dev/null
echo "build-image.sh: $tag: binary $(stat -c %s dist/image/kite) bytes, image $(docker image inspect -f '{{.Size}}' "$tag") bytes"
