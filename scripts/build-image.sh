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
#   KITE_BUILD_ONLY=1 KITE_STRIP=0 scripts/build-image.sh
#                                            # the same binary with its symbol names
#                                            # (scripts/symbol-order.sh profiles it)
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

# The release link places the functions kite runs first and side by side
# (build/symbol-order.txt, from scripts/symbol-order.sh), so that the pages
# the kernel maps around the code it runs hold little else: fewer of the
# binary's pages stay resident. rustc links with its own lld on x86_64
# Linux; other linkers may not know the flag. KITE_SYMBOL_ORDER=0 skips it.
link_args=()
if [ "$profile" = release ] && [ "$triple" = x86_64-unknown-linux-gnu ] &&
    [ "${KITE_SYMBOL_ORDER:-1}" = 1 ] && [ -s build/symbol-order.txt ]; then
    # Named by its content: cargo relinks when the arguments change, not
    # when a file they name does.
    mkdir -p "$target_dir"
    order="$PWD/$target_dir/symbol-order-$(sha256sum build/symbol-order.txt | cut -c1-16).txt"
    cp build/symbol-order.txt "$order"
    link_args=(-C "link-arg=-Wl,--symbol-ordering-file=$order"
        -C link-arg=-Wl,--no-warn-symbol-ordering)
fi

# Unstripped, the code is the same: strip acts on the linked binary.
if [ "${KITE_STRIP:-1}" = 0 ]; then
    link_args+=(-C strip=none)
fi

# RUSTFLAGS with --target reaches only the target's crates, not build
# scripts or proc macros (which cannot be static); the link arguments reach
# kite's binary alone.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo rustc --locked --bin kite --profile "$profile" --target "$triple" \
    --target-dir "$target_dir" -- "${link_args[@]}" >&2
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
