#!/bin/sh
# Builds bpf/dnsbgpd_filter.o from bpf/dnsbgpd_filter.c with Debian's clang.
# The object is committed (the crate embeds it, so `cargo build` needs no
# clang); tests/bpf_object.rs rebuilds it and fails when the bytes differ.
# Usage: bpf/build.sh [OUT]   (default: bpf/dnsbgpd_filter.o)
# Deterministic: runs in bpf/ with relative paths and maps the directory out
# of the debug info, so the object does not depend on where the tree is.
set -eu
cd "$(dirname "$0")"
out=${1:-dnsbgpd_filter.o}
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
CLANG=${CLANG:-clang}
"$CLANG" -O2 -g -target bpf -mcpu=v3 \
    -I"/usr/include/$multiarch" \
    -fdebug-prefix-map="$PWD"=. -fdebug-compilation-dir=. \
    -Wall -Werror \
    -c dnsbgpd_filter.c -o "$out"
# Drop the DWARF sections (BTF stays: the loader needs it for the maps).
"${LLVM_STRIP:-llvm-strip}" -g "$out"
