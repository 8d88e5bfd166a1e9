#!/usr/bin/env bash
# Tries the README on a machine put back into a new machine's state, then restores this one.
#
#   scripts/fresh-machine.sh [--ci] STATE
#
# STATE is what the new machine has of QEMU before the run:
#   nothing    no QEMU package at all
#   utils10    qemu-utils 10.x only (as this project's new machines come: from backports,
#              with no backports source configured)
#   both72     Debian 12's qemu-system-x86 and qemu-utils 7.2
# In every state the toolchain lacks the x86_64-unknown-none target and no source line of
# Strata's is configured. The script clones main (what is committed) into a temporary directory
# and runs the README's two commands exactly as the README writes them (the first two `sh` blocks
# under "The two commands"), timing each; with --ci it runs `.ci/run` instead. On exit, however
# it ends, it puts back the packages, target and sources it found. Before it removes a package it
# keeps a copy (dpkg-repack, in /var/cache/strata-fresh), and it stops if it cannot.
#
# Not reset: cargo's download cache (~/.cargo/registry) and apt's package cache, so crates and
# packages are not downloaded again.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=/var/cache/strata-fresh
TARGET=x86_64-unknown-none
STRATA_SOURCES=(/etc/apt/sources.list.d/strata-backports.sources /etc/apt/sources.list.d/strata-backports.list)
CODENAME=$(. /etc/os-release && echo "$VERSION_CODENAME")

say() { echo "fresh-machine: $*" >&2; }
die() { say "$*"; exit 1; }

CI=0
if [[ ${1:-} == --ci ]]; then CI=1; shift; fi
STATE=${1:-}
case $STATE in
    nothing | utils10 | both72) ;;
    *) die "usage: scripts/fresh-machine.sh [--ci] nothing|utils10|both72" ;;
esac
((EUID == 0)) || die "must run as root (it installs and removes packages)"

apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0 "$@" >/dev/null; }

# The QEMU packages installed now, as NAME=VERSION lines.
qemu_installed() {
    dpkg-query -W -f='${db:Status-Abbrev}|${Package}=${Version}\n' \
        'qemu-utils' 'qemu-system-*' 'qemu-block-extra' 2>/dev/null \
        | awk -F'|' '$1 ~ /^ii/ { print $2 }' || true
}

# deb_of NAME VERSION: the kept copy of that package, if any.
deb_of() {
    local v=${2#*:}
    compgen -G "$CACHE/${1}_${v}_*.deb" | head -1 || true
}

# keep_copies: a .deb of every QEMU package installed now, so it can be put back.
keep_copies() {
    mkdir -p "$CACHE"
    command -v dpkg-repack >/dev/null || apt_get install --no-install-recommends dpkg-repack
    local pv
    for pv in $(qemu_installed); do
        [[ -n $(deb_of "${pv%%=*}" "${pv#*=}") ]] && continue
        (cd "$CACHE" && dpkg-repack "${pv%%=*}" >/dev/null 2>&1) \
            || die "cannot keep a copy of ${pv%%=*}; not removing anything"
        [[ -n $(deb_of "${pv%%=*}" "${pv#*=}") ]] || die "no copy of $pv in $CACHE; not removing anything"
    done
}

remove_qemu() {
    local pkgs
    pkgs=$(qemu_installed | cut -d= -f1 | tr '\n' ' ')
    [[ -z $pkgs ]] || apt_get remove $pkgs
}

remove_strata_sources() {
    local f changed=0
    for f in "${STRATA_SOURCES[@]}"; do
        [[ -f $f ]] && { rm -f "$f"; changed=1; }
    done
    ((changed == 0)) || apt_get update
}

# ---- the state found, and putting it back ----

FOUND_QEMU=$(qemu_installed)
FOUND_TARGET=0
(cd "$ROOT" && rustup target list --installed | grep -qx "$TARGET") && FOUND_TARGET=1
# The other targets and the small tools setup.sh installs, which a new machine lacks too: the
# ones present now are put back on exit.
EXTRA_TARGETS=(aarch64-unknown-none riscv64gc-unknown-none-elf)
EXTRA_PKGS=(dosfstools mtools)
FOUND_EXTRA_TARGETS=$(cd "$ROOT" && rustup target list --installed | grep -xF "${EXTRA_TARGETS[@]/#/-e}" || true)
FOUND_EXTRA_PKGS=$(dpkg-query -W -f='${db:Status-Abbrev}|${Package}\n' "${EXTRA_PKGS[@]}" 2>/dev/null | awk -F'|' '$1 ~ /^ii/ { print $2 }' || true)
FOUND_SOURCES=$(mktemp -d)
for f in "${STRATA_SOURCES[@]}"; do [[ -f $f ]] && cp "$f" "$FOUND_SOURCES/"; done
WORK=$(mktemp -d /tmp/strata-fresh.XXXXXX)

restore() {
    local rc=$?
    set +e
    say "restoring the state found"
    for f in "${STRATA_SOURCES[@]}"; do
        [[ -f $FOUND_SOURCES/$(basename "$f") ]] && cp "$FOUND_SOURCES/$(basename "$f")" "$f" || rm -f "$f"
    done
    apt_get update
    local now debs=() pv
    now=$(qemu_installed)
    if [[ $now != "$FOUND_QEMU" ]]; then
        remove_qemu
        for pv in $FOUND_QEMU; do debs+=("$(deb_of "${pv%%=*}" "${pv#*=}")"); done
        ((${#debs[@]} == 0)) || apt_get install --no-install-recommends --allow-downgrades "${debs[@]}"
    fi
    [[ $(qemu_installed) == "$FOUND_QEMU" ]] || say "WARNING: QEMU packages not restored: found [$FOUND_QEMU], now [$(qemu_installed)]"
    cd "$ROOT"
    if ((FOUND_TARGET)); then rustup target add "$TARGET" >/dev/null 2>&1; else rustup target remove "$TARGET" >/dev/null 2>&1; fi
    for t in $FOUND_EXTRA_TARGETS; do rustup target add "$t" >/dev/null 2>&1 || true; done
    [[ -z $FOUND_EXTRA_PKGS ]] || apt_get install --no-install-recommends $FOUND_EXTRA_PKGS || true
    rm -rf "$WORK" "$FOUND_SOURCES"
    exit "$rc"
}
trap restore EXIT

# ---- entering the state asked for ----

keep_copies
say "found: ${FOUND_QEMU//$'\n'/ } target $TARGET $( ((FOUND_TARGET)) && echo present || echo absent)"
remove_strata_sources
case $STATE in
    nothing) remove_qemu ;;
    utils10)
        deb=$(compgen -G "$CACHE/qemu-utils_10.*.deb" | sort -V | tail -1 || true)
        [[ -n $deb ]] || die "no kept copy of qemu-utils 10.x in $CACHE (install it once from $CODENAME-backports)"
        remove_qemu
        apt_get install --no-install-recommends --allow-downgrades "$deb"
        ;;
    both72)
        remove_qemu
        apt_get install --no-install-recommends --allow-downgrades "qemu-system-x86/$CODENAME" "qemu-utils/$CODENAME"
        ;;
esac
(cd "$ROOT" && rustup target remove "$TARGET" >/dev/null 2>&1 || true)
for t in "${EXTRA_TARGETS[@]}"; do (cd "$ROOT" && rustup target remove "$t" >/dev/null 2>&1 || true); done
[[ -z $FOUND_EXTRA_PKGS ]] || apt_get remove $FOUND_EXTRA_PKGS
say "state $STATE: $(qemu_installed | tr "\n" " ")(target $TARGET absent)"

# ---- the run ----

git clone -q --branch main "$ROOT" "$WORK/strata"
cd "$WORK/strata"
say "clone of main at $(git rev-parse --short HEAD) in $WORK/strata"

# The README's commands, exactly as written: the `sh` blocks of "## The two commands".
readme_commands() {
    awk '/^## /{ in_section = ($0 == "## The two commands") }
         in_section && /^```sh$/ { block = 1; next }
         block && /^```$/ { block = 0; print "\x1e"; next }
         block { print }' README.md
}
commands=()
while IFS= read -r -d $'\x1e' block; do
    block=${block#$'\n'}
    [[ -n ${block//[$'\n ']/} ]] && commands+=("${block%$'\n'}")
done < <(readme_commands)
((CI)) && commands=(".ci/run")
((${#commands[@]} >= 1)) || die "no commands found in the README's \"The two commands\" section"

report=()
status=0
for cmd in "${commands[@]}"; do
    say "running: $cmd"
    start=$(date +%s)
    set +e
    bash -c "$cmd" >"$WORK/out.log" 2>&1
    rc=$?
    set -e
    secs=$(($(date +%s) - start))
    tail -5 "$WORK/out.log" | sed 's/^/    /' >&2
    if ((rc != 0)); then
        cp "$WORK/out.log" "/tmp/strata-fresh-$STATE-failed.log"
        say "FAILED ($rc): $cmd; whole output in /tmp/strata-fresh-$STATE-failed.log"
        status=1
    fi
    report+=("$(printf '%-8s %5ds  exit %d  %s' "$STATE" "$secs" "$rc" "$cmd")")
done
say "QEMU after the run: $(qemu_installed | tr '\n' ' ')"
printf '%s\n' "${report[@]}"
exit $status
