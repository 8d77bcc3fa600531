#!/usr/bin/env bash
# Runs the whole test suite. Installs the Debian packages the integration
# tests need (real resolvers and routers) when they are missing; needs root
# for that. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

# command → Debian package
packages=(
    "unbound:unbound"
    "unbound-checkconf:unbound"
    "named:bind9"
    "named-checkconf:bind9"
    "nsd:nsd"
    "nsd-checkconf:nsd"
    "dig:bind9-dnsutils"
    "fstrm_capture:fstrm-bin"
    "bird:bird2"
    "birdc:bird2"
    "gobgpd:gobgpd"
    "gobgp:gobgpd"
    "vtysh:frr"
    "ip:iproute2"
    "openssl:openssl"
    "systemd-analyze:systemd"
    "rpm:rpm"
    "rpmbuild:rpm"
    "setpriv:util-linux"
    "man:man-db"
    "clang:clang"
    "llvm-strip:llvm"
    "bpftool:bpftool"
    "faketime:faketime"
)
missing=()
for pair in "${packages[@]}"; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    if ! command -v "$cmd" >/dev/null 2>&1; then
        [[ " ${missing[*]-} " == *" $pkg "* ]] || missing+=("$pkg")
    fi
done
# Headers without a command: the eBPF object rebuild (tests/bpf_object.rs).
[[ -e /usr/include/bpf/bpf_helpers.h ]] || missing+=("libbpf-dev")
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        echo "scripts/test.sh: installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "scripts/test.sh: missing packages ${missing[*]} (run as root to install them);" \
            "tests needing them will skip (or fail with CI=true)" >&2
    fi
fi

cargo test --locked "$@"

# The fuzz smoke runs (scripts/fuzz.sh: every fuzz target built and run
# briefly) belong to the whole suite: they run when no arguments narrow the
# tests, unless FUZZ_SMOKE=0 outside CI. Under CI=true a missing nightly
# toolchain or cargo-fuzz is a failure.
if (($# == 0)) && { [[ ${CI:-} == true ]] || [[ ${FUZZ_SMOKE:-1} != 0 ]]; }; then
    scripts/fuzz.sh smoke
fi
