#!/usr/bin/env bash
# Installs what Strata needs on a Debian machine: Debian packages with apt-get and Rust targets
# with rustup. The runner (`qemu-runner`, when QEMU or the kernel's target is missing) and
# `.ci/run` both call this script, so they cannot drift apart.
#
#   scripts/setup.sh [--dry-run] [NEED...]
#
# NEED is a Debian package name or `target:TRIPLE` (a rustup target of the project's toolchain);
# with none, everything in NEEDS below. One line per need says what is there and why it is
# needed. --dry-run prints the commands instead of running them.
#
# QEMU's packages are kept at one release: the emulator must match the installed `qemu-utils`
# (`qemu-utils` 10.x *Breaks* Debian 12's 7.2 emulator). When the installed `qemu-utils` comes
# from backports, the emulator is taken from backports too, through a source line derived from
# the machine's own Debian source; if that fails, every QEMU package is installed from the
# release's main suite instead (downgrading qemu-img), never leaving two releases side by side.
set -euo pipefail
cd "$(dirname "$0")/.."

# need | why
NEEDS=(
    "qemu-system-x86|qemu-system-x86_64 boots the kernel"
    "qemu-system-arm|qemu-system-aarch64 boots the kernel on arm64 virt (qemu-runner boot --arch aarch64)"
    "qemu-system-misc|qemu-system-riscv64 boots the kernel on riscv64 virt (qemu-runner boot --arch riscv64)"
    "qemu-utils|qemu-img and qemu-io, the oracles the tests check Strata against"
    "zstd|the zstd command, the reference encoder block/tests/zstd_codec.rs checks the decoder against"
    "target:x86_64-unknown-none|the kernel's bare-metal target"
    "target:aarch64-unknown-none|examples/embed builds the embedding example for bare-metal arm64"
    "target:riscv64gc-unknown-none-elf|the kernel on riscv64 virt, and examples/embed for bare-metal riscv64"
    "dosfstools|mkfs.fat makes the FAT32 image tests/tests/fat_guest.rs reads through a qcow2 chain"
    "mtools|mcopy/mdir/mtype put files into and read them out of that FAT32 image"
)

DRY_RUN=0
if [[ ${1:-} == --dry-run ]]; then
    DRY_RUN=1
    shift
fi

say() { echo "setup: $*" >&2; }
die() { say "$*"; exit 1; }
run() {
    if ((DRY_RUN)); then
        echo "would run: $*" >&2
    else
        "$@"
    fi
}

# why NEED: the reason from NEEDS, or "asked for".
why() {
    local entry
    for entry in "${NEEDS[@]}"; do
        [[ ${entry%%|*} == "$1" ]] && { echo "${entry#*|}"; return; }
    done
    echo "asked for"
}

# installed_version PKG: the installed version, or nothing.
installed_version() {
    dpkg-query -W -f='${db:Status-Abbrev}|${Version}' "$1" 2>/dev/null \
        | awk -F'|' '$1 ~ /^ii/ { print $2 }' || true
}

# upstream VERSION: the release without epoch and Debian revision (1:10.0.2+ds-2~bpo12+1 -> 10.0.2).
upstream() { local v=${1#*:}; v=${v%%-*}; echo "${v%%+*}"; }

# ---- Rust targets ----

ensure_target() {
    local triple=$1 why
    why=$(why "target:$triple")
    if command -v rustup >/dev/null; then
        if rustup target list --installed | grep -qx "$triple"; then
            say "$triple: installed ($why)"
            return
        fi
        say "$triple: missing, adding with rustup ($why)"
        run rustup target add "$triple" >&2
        return
    fi
    if [[ -d "$(rustc --print sysroot)/lib/rustlib/$triple/lib" ]]; then
        say "$triple: installed ($why)"
    else
        die "$triple: missing and rustup is not available; add the target to your toolchain ($why)"
    fi
}

# ---- Debian packages ----

CODENAME=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
BACKPORTS="$CODENAME-backports"
BACKPORTS_FILE=/etc/apt/sources.list.d/strata-backports.sources

# Waits up to 10 minutes for another apt or dpkg to finish instead of failing at once.
apt_get() {
    run env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=600 "$@" >&2
}

# has_backports_source: true if some configured source serves $BACKPORTS.
has_backports_source() {
    grep -rqsE "(^|[[:space:]])$BACKPORTS([[:space:]]|$)" /etc/apt/sources.list /etc/apt/sources.list.d/
}

# write_file FILE TEXT (or show it, with --dry-run).
write_file() {
    if ((DRY_RUN)); then
        printf 'would write %s:\n%s\n' "$1" "$2" >&2
    else
        printf '%s\n' "$2" >"$1"
    fi
}

# add_backports_source: writes a source for $BACKPORTS, copied from the configured source that
# serves the bare release suite ($CODENAME): same URIs, components and key. Writes no host name
# of its own. Fails if no such source is found.
add_backports_source() {
    local f stanza
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        # The first deb822 stanza whose Types has deb and whose Suites has the bare codename.
        stanza=$(awk -v suite="$CODENAME" '
            function flush() {
                if (!done && types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uris != "") {
                    print "Types: deb"; print "URIs: " uris; print "Suites: " suite "-backports"
                    print "Components: " comps
                    if (signed != "") print "Signed-By: " signed
                    done = 1
                }
                types = suites = uris = comps = signed = ""
            }
            /^[[:space:]]*$/ { flush(); next }
            /^#/ { next }
            /^Types:/      { sub(/^Types:[[:space:]]*/, "");      types = $0 }
            /^URIs:/       { sub(/^URIs:[[:space:]]*/, "");       uris = $0 }
            /^Suites:/     { sub(/^Suites:[[:space:]]*/, "");     suites = $0 }
            /^Components:/ { sub(/^Components:[[:space:]]*/, ""); comps = $0 }
            /^Signed-By:/  { sub(/^Signed-By:[[:space:]]*/, "");  signed = $0 }
            END { flush() }' "$f")
        if [[ -n $stanza ]]; then
            say "adding $BACKPORTS, derived from the $CODENAME source in $f"
            write_file "$BACKPORTS_FILE" "# Added by Strata's scripts/setup.sh, derived from $f.
$stanza"
            return 0
        fi
    done
    # One-line format: deb [options] URI SUITE COMPONENTS...
    local line
    line=$(grep -hsE "^deb[[:space:]]" /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
        | awk -v suite="$CODENAME" '{ i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            if ($(i + 1) == suite) { $(i + 1) = suite "-backports"; print; exit } }')
    [[ -n $line ]] || return 1
    say "adding $BACKPORTS, derived from the $CODENAME line in the one-line sources"
    write_file "${BACKPORTS_FILE%.sources}.list" "# Added by Strata's scripts/setup.sh.
$line"
}

# qemu_family: the QEMU packages installed now (their releases must stay equal).
qemu_family() {
    dpkg-query -W -f='${db:Status-Abbrev}|${Package}\n' 'qemu-utils' 'qemu-system-*' 'qemu-block-extra' 2>/dev/null \
        | awk -F'|' '$1 ~ /^ii/ { print $2 }' || true
}

# releases_agree: true if every installed QEMU package has the same upstream release.
releases_agree() {
    local p releases=""
    for p in $(qemu_family); do
        releases+="$(upstream "$(installed_version "$p")")"$'\n'
    done
    [[ $(sort -u <<<"$releases" | grep -c .) -le 1 ]]
}

# ensure_packages PKG...: installs the missing ones; QEMU's packages at one release.
ensure_packages() {
    local p v missing=() qemu=() others=()
    for p in "$@"; do
        v=$(installed_version "$p")
        if [[ -n $v ]]; then
            say "$p $v: installed ($(why "$p"))"
        else
            missing+=("$p")
            say "$p: missing, installing ($(why "$p"))"
        fi
        [[ $p == qemu-* ]] && qemu+=("$p")
    done
    if ((${#missing[@]} == 0)) && releases_agree; then
        return
    fi
    ((EUID == 0)) || die "not root: run as root: scripts/setup.sh $*"
    command -v apt-get >/dev/null || die "apt-get is not available: install ${missing[*]} by hand"
    for p in "${missing[@]}"; do [[ $p == qemu-* ]] || others+=("$p"); done
    apt_get update
    ((${#others[@]} == 0)) || apt_get install --no-install-recommends "${others[@]}"
    ((${#qemu[@]} == 0)) && return
    # Every QEMU package on the machine joins the install, so all end at one release.
    local family
    mapfile -t family < <( (printf '%s\n' "${qemu[@]}"; qemu_family) | sort -u)
    local utils
    utils=$(installed_version qemu-utils)
    if [[ $utils == *~bpo* && -n $CODENAME ]]; then
        say "qemu-utils $utils comes from $BACKPORTS: taking ${family[*]} from there too"
        if { has_backports_source || add_backports_source; } \
            && apt_get update \
            && apt_get install --no-install-recommends -t "$BACKPORTS" "${family[@]}"; then
            check_qemu_releases
            return
        fi
        say "$BACKPORTS failed: installing ${family[*]} from $CODENAME instead (qemu-img goes back to its release)"
    fi
    local pinned=()
    for p in "${family[@]}"; do pinned+=("$p${CODENAME:+/$CODENAME}"); done
    apt_get install --no-install-recommends --allow-downgrades "${pinned[@]}"
    check_qemu_releases
}

# check_qemu_releases: fails unless the QEMU packages now agree; says which release they are.
check_qemu_releases() {
    ((DRY_RUN)) && return
    releases_agree || die "QEMU packages at different releases: $(for p in $(qemu_family); do printf '%s=%s ' "$p" "$(installed_version "$p")"; done)"
    local p
    for p in $(qemu_family); do say "$p $(installed_version "$p"): installed"; done
}

# ---- main ----

if (($# == 0)); then
    for entry in "${NEEDS[@]}"; do set -- "$@" "${entry%%|*}"; done
fi
packages=()
for need in "$@"; do
    case $need in
        target:*) ensure_target "${need#target:}" ;;
        -*) die "unknown option $need (usage: scripts/setup.sh [--dry-run] [PACKAGE|target:TRIPLE]...)" ;;
        *) packages+=("$need") ;;
    esac
done
if ((${#packages[@]})); then
    # One installer at a time: the runner's test processes may all find QEMU missing at once.
    exec 9>/tmp/strata-setup.lock
    flock 9
    ensure_packages "${packages[@]}"
fi
