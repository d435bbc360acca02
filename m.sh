#!/usr/bin/env bash
# m.sh: release builds of kcptun-rs for OpenWRT routers and Linux servers, plus their smoke test.
#
# Recipe: shared/spec/CROSS.md (measured). One toolchain for every target: Debian's rustc-web +
# rust-web-src at one pinned version, std rebuilt per target with -Zbuild-std, Debian's cross
# gccs as linkers and as libsodium's C compiler, Debian's musl-dev:<arch> for static musl.
# rustup is never used here (its toolchain and the Debian std source must not mix: §5 of CROSS.md).
#
# Profiles (see [profile.*] in Cargo.toml for the measured sizes):
#   host (x86_64 server)      -> `release`        opt-level 3, fat LTO: throughput first (issue 7)
#   every cross/router target -> `release-small`  inherits release, opt-level "z": flash first
# `--profile P` overrides both.
# Router builds also get panic = "immediate-abort" (the flash budget: mipsel 790 KB -> 462 KB,
# see Cargo.toml); it is set here through cargo's env overrides because it is unstable and a
# stable cargo refuses it in Cargo.toml. `--panic-messages` keeps the usual abort-with-message.
#
# Flags are only ever set per target (CARGO_TARGET_<TRIPLE>_RUSTFLAGS / _LINKER), never through
# a global RUSTFLAGS, so build scripts (libsodium's configure, proc macros) stay untouched.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE"

BIN=kcptun-rs
XC=${MSH_TARGET_DIR:-"$HERE/target/xc"}  # own target dir: does not thrash the rustup-built target/
RUST_VER=1.96.0                       # the one pinned toolchain; rust-web-src must match it
DEB_RUST_VER=1.96.0+dfsg1-1~deb12u2
ROUTER_PROFILE=release-small
HOST_PROFILE=release
MIPSEL_BUDGET=614400                  # 600 KiB: mipsel static must fit small-flash routers
export CARGO_TERM_COLOR=never

usage() {
    cat <<'EOF'
Usage: bash m.sh [options]

Builds static release binaries of kcptun-rs (into target/xc/<triple>/<profile>/kcptun-rs).

Targets (default: --all):
  --all               mipsel, armv7, aarch64 (static musl) and the native host build
  --routers           only the three router targets
  --targets LIST      comma-separated aliases or triples: mipsel armv7 aarch64 x86_64-musl host
                      (or any triple in the table below)
  --gnu               use the glibc triples (dynamic, glibc >= 2.34 on the device) for
                      mipsel/armv7/aarch64 instead of musl. Not for OpenWRT; glibc mipsel needs
                      an FPU (SIGILL on a 24Kc)
Build:
  --profile P         cargo profile for every target (default: release-small for routers,
                      release for the host)
  --jobs N            cargo -j (default 2)
  --no-build          reuse what target/xc holds (for --smoke/--dist)
  --panic-messages    router builds: keep panic = "abort" (prints the panic message, +330 KB
                      on mipsel) instead of "immediate-abort"
Setup and checks:
  --deps              install the build dependencies with apt-get (idempotent, needs root),
                      pin rustc-web/cargo-web/rust-web-src to one version and verify them;
                      then continue with the other options
  --deps-only         only --deps
  --check             only check that the tools are present, print what is missing, exit
After building:
  --smoke             run each binary under qemu-user (mipsel with -cpu 24Kc, no FPU):
                      --version, --genpsk, no ELF interpreter for musl, and a real TCP echo on
                      127.0.0.1 through a server and a client both running under qemu
  --dist [DIR]        copy the binaries to DIR (default dist/) as kcptun-rs-<triple>, write
                      SHA256SUMS and SIZES.txt
  -h, --help          this text

Examples:
  bash m.sh --deps --all --smoke --dist      # what the CI entry point runs
  bash m.sh --targets mipsel --smoke
  bash m.sh --gnu --routers --dist out/
EOF
}

# ---------------------------------------------------------------------------------------------
# Target table: triple -> linker gcc | Debian arch of the musl sysroot | qemu command line
# ---------------------------------------------------------------------------------------------
declare -A T_CC T_ARCH T_QEMU
add_target() { T_CC[$1]=$2; T_ARCH[$1]=$3; T_QEMU[$1]=$4; }
add_target mipsel-unknown-linux-musl       mipsel-linux-musl-gcc      mipsel "qemu-mipsel -cpu 24Kc"
add_target armv7-unknown-linux-musleabihf  arm-linux-musleabihf-gcc   armhf  "qemu-arm -cpu cortex-a7"
add_target aarch64-unknown-linux-musl      aarch64-linux-musl-gcc     arm64  "qemu-aarch64 -cpu cortex-a53"
add_target x86_64-unknown-linux-musl       x86_64-linux-musl-gcc      amd64  ""
# glibc: qemu's default mipsel CPU (24Kf) has an FPU; glibc mipsel dies on a 24Kc.
add_target mipsel-unknown-linux-gnu        mipsel-linux-gnu-gcc       mipsel "qemu-mipsel -L /usr/mipsel-linux-gnu"
add_target armv7-unknown-linux-gnueabihf   arm-linux-gnueabihf-gcc    armhf  "qemu-arm -cpu cortex-a7 -L /usr/arm-linux-gnueabihf"
add_target aarch64-unknown-linux-gnu       aarch64-linux-gnu-gcc      arm64  "qemu-aarch64 -cpu cortex-a53 -L /usr/aarch64-linux-gnu"

host_triple() {
    if [[ -x /usr/bin/rustc ]]; then
        /usr/bin/rustc -vV | sed -n 's/^host: //p'
    else
        echo "$(uname -m)-unknown-linux-gnu"
    fi
}
HOST=$(host_triple)

# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------
LIBC=musl
SET=all
TARGET_LIST=""
PROFILE_OVERRIDE=""
JOBS=2
PANIC_IA=1
DO_DEPS=0 DEPS_ONLY=0 DO_CHECK=0 DO_BUILD=1 DO_SMOKE=0 DIST_DIR=""
while (($#)); do
    case $1 in
        --all) SET=all ;;
        --routers) SET=routers ;;
        --targets) TARGET_LIST=${2:?--targets needs a list}; SET=list; shift ;;
        --targets=*) TARGET_LIST=${1#*=}; SET=list ;;
        --gnu) LIBC=gnu ;;
        --profile) PROFILE_OVERRIDE=${2:?--profile needs a name}; shift ;;
        --profile=*) PROFILE_OVERRIDE=${1#*=} ;;
        --jobs|-j) JOBS=${2:?--jobs needs a number}; shift ;;
        --no-build) DO_BUILD=0 ;;
        --panic-messages) PANIC_IA=0 ;;
        --deps) DO_DEPS=1 ;;
        --deps-only) DO_DEPS=1; DEPS_ONLY=1 ;;
        --check) DO_CHECK=1 ;;
        --smoke) DO_SMOKE=1 ;;
        --dist)
            if [[ ${2:-} && ${2:0:1} != - ]]; then DIST_DIR=$2; shift; else DIST_DIR=dist; fi ;;
        --dist=*) DIST_DIR=${1#*=} ;;
        -h|--help) usage; exit 0 ;;
        *) echo "m.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

resolve_alias() {
    local suffix_mipsel=musl suffix_armv7=musleabihf suffix_aarch64=musl
    if [[ $LIBC == gnu ]]; then suffix_mipsel=gnu suffix_armv7=gnueabihf suffix_aarch64=gnu; fi
    case $1 in
        mipsel) echo "mipsel-unknown-linux-$suffix_mipsel" ;;
        armv7) echo "armv7-unknown-linux-$suffix_armv7" ;;
        aarch64) echo "aarch64-unknown-linux-$suffix_aarch64" ;;
        x86_64-musl) echo x86_64-unknown-linux-musl ;;
        host) echo "$HOST" ;;
        *) echo "$1" ;;
    esac
}

TARGETS=()
case $SET in
    all) for a in mipsel armv7 aarch64 host; do TARGETS+=("$(resolve_alias $a)"); done ;;
    routers) for a in mipsel armv7 aarch64; do TARGETS+=("$(resolve_alias $a)"); done ;;
    list)
        IFS=', ' read -r -a names <<<"$TARGET_LIST"
        for a in "${names[@]}"; do [[ $a ]] && TARGETS+=("$(resolve_alias "$a")"); done ;;
esac
for t in "${TARGETS[@]}"; do
    if [[ $t != "$HOST" && -z ${T_CC[$t]:-} ]]; then
        echo "m.sh: unknown target $t; known: ${!T_CC[*]} $HOST" >&2
        exit 2
    fi
done

is_host() { [[ $1 == "$HOST" ]]; }
is_musl() { [[ $1 == *-musl* ]]; }
profile_of() {
    if [[ $PROFILE_OVERRIDE ]]; then echo "$PROFILE_OVERRIDE"
    elif is_host "$1"; then echo "$HOST_PROFILE"
    else echo "$ROUTER_PROFILE"; fi
}
bin_of() { echo "$XC/$1/$(profile_of "$1")/$BIN"; }
upper() { local s=${1^^}; echo "${s//-/_}"; }

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'm.sh: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# --deps: apt packages, pinned toolchain
# ---------------------------------------------------------------------------------------------
RUST_PKGS=(rustc-web cargo-web libstd-rust-web-dev rust-web-src)
deps_packages() {
    local t
    local -A want=([qemu-user]=1 [musl-tools]=1 [file]=1 [binutils]=1 [python3]=1 [make]=1)
    for t in "${TARGETS[@]}"; do
        is_host "$t" && continue
        case $t in
            mipsel-*) want[gcc-mipsel-linux-gnu]=1; want[libc6-dev-mipsel-cross]=1 ;;
            armv7-*) want[gcc-arm-linux-gnueabihf]=1; want[libc6-dev-armhf-cross]=1 ;;
            aarch64-*) want[gcc-aarch64-linux-gnu]=1; want[libc6-dev-arm64-cross]=1 ;;
        esac
        if is_musl "$t" && [[ ${T_ARCH[$t]} != amd64 ]]; then want["musl-dev:${T_ARCH[$t]}"]=1; fi
        if is_musl "$t" && [[ ${T_ARCH[$t]} == amd64 ]]; then want[musl-dev]=1; fi
    done
    printf '%s\n' "${!want[@]}" | sort
}

pkg_installed() { # pkg[:arch] [version]
    local st
    st=$(dpkg-query -W -f='${db:Status-Abbrev}|${Version}' "$1" 2>/dev/null) || return 1
    [[ ${st%%|*} == "ii " ]] || return 1
    [[ -z ${2:-} || ${st#*|} == "$2" ]]
}

# The bookworm-security armhf index of this mirror fails its size check, and apt then drops the
# whole security batch, amd64 included, so rustc-web 1.96 (a security update) is not seen. We run
# apt with a private copy of the system's sources in which the security suites are limited to
# the native arch (no foreign package we need comes from security), and a private lists dir.
# The system's own apt configuration is left untouched.
APT_ALT="$XC/apt"
apt_alt_setup() {
    local native f out
    native=$(dpkg --print-architecture)
    rm -rf "$APT_ALT/sources.list.d"
    mkdir -p "$APT_ALT/sources.list.d" "$APT_ALT/lists/partial"
    : >"$APT_ALT/sources.list"
    if [[ -f /etc/apt/sources.list ]]; then
        sed -E "/^deb[^#]*-security/{/\[/!s/^(deb(-src)?) /\1 [arch=$native] /;/arch=/!s/^(deb(-src)?) \[/\1 [arch=$native /}" \
            /etc/apt/sources.list >"$APT_ALT/sources.list"
    fi
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        out="$APT_ALT/sources.list.d/$(basename "$f")"
        case $f in
            *.list)
                sed -E "/^deb[^#]*-security/{/\[/!s/^(deb(-src)?) /\1 [arch=$native] /;/arch=/!s/^(deb(-src)?) \[/\1 [arch=$native /}" \
                    "$f" >"$out" ;;
            *.sources)  # deb822: add Architectures to stanzas whose Suites name a -security suite
                awk -v arch="$native" '
                    function flush() { if (n) { for (i = 1; i <= n; i++) print buf[i];
                        if (sec && !hasarch) print "Architectures: " arch; } n = 0; sec = 0; hasarch = 0 }
                    /^[[:space:]]*$/ { flush(); print; next }
                    { buf[++n] = $0 }
                    /^Suites:.*-security/ { sec = 1 }
                    /^Architectures:/ { hasarch = 1 }
                    END { flush() }' "$f" >"$out" ;;
        esac
    done
    APTO=(-o "Dir::Etc::SourceList=$APT_ALT/sources.list"
          -o "Dir::Etc::SourceParts=$APT_ALT/sources.list.d"
          -o "Dir::State::Lists=$APT_ALT/lists"
          -o "DPkg::Lock::Timeout=600")
}

check_rust_pin() {
    local v src
    [[ -x /usr/bin/rustc && -x /usr/bin/cargo ]] || { echo "missing /usr/bin/rustc or /usr/bin/cargo"; return 1; }
    v=$(/usr/bin/rustc -V | awk '{print $2}')
    [[ $v == "$RUST_VER" ]] || { echo "/usr/bin/rustc is $v, m.sh pins $RUST_VER"; return 1; }
    src=$(readlink -f /usr/lib/rustlib/src/rust 2>/dev/null || true)
    [[ $src == "/usr/src/rustc-$RUST_VER" && -d $src/library/std ]] || {
        echo "std source is '${src:-absent}', want /usr/src/rustc-$RUST_VER (rust-web-src=$DEB_RUST_VER):"
        echo "a compiler and std source of different versions fail with unknown lang items"
        return 1
    }
}

do_deps() {
    local SUDO="" p missing=() pins=()
    if ((EUID != 0)); then command -v sudo >/dev/null || die "--deps needs root"; SUDO=sudo; fi
    local -a want; mapfile -t want < <(deps_packages)
    for p in "${RUST_PKGS[@]}"; do
        pkg_installed "$p" "$DEB_RUST_VER" || missing+=("$p=$DEB_RUST_VER")
    done
    for p in "${want[@]}"; do pkg_installed "$p" || missing+=("$p"); done
    if ((${#missing[@]} == 0)); then
        log "deps: all present (rustc-web $DEB_RUST_VER and ${#want[@]} others)"
    else
        log "deps: installing ${missing[*]}"
        local arch
        for arch in $(for t in "${TARGETS[@]}"; do is_host "$t" || { is_musl "$t" && echo "${T_ARCH[$t]}"; }; done | sort -u); do
            [[ $arch == "$(dpkg --print-architecture)" ]] && continue
            dpkg --print-foreign-architectures | grep -qx "$arch" || $SUDO dpkg --add-architecture "$arch"
        done
        apt_alt_setup
        nice -n 19 $SUDO apt-get "${APTO[@]}" update -q || die "apt-get update failed"
        # The four Rust packages are pinned to one version together: a newer rustc with an
        # older rust-web-src (or the reverse) breaks -Zbuild-std.
        for p in "${RUST_PKGS[@]}"; do pins+=("$p=$DEB_RUST_VER"); done
        DEBIAN_FRONTEND=noninteractive nice -n 19 $SUDO apt-get "${APTO[@]}" install -y -q \
            --no-install-recommends --allow-downgrades "${pins[@]}" "${want[@]}" ||
            die "apt-get install failed"
    fi
    local why; why=$(check_rust_pin) || die "toolchain check: $why"
    log "deps: /usr/bin/rustc $RUST_VER matches /usr/src/rustc-$RUST_VER"
}

# ---------------------------------------------------------------------------------------------
# --check
# ---------------------------------------------------------------------------------------------
do_check() {
    local bad=0 t tool why
    if why=$(check_rust_pin); then echo "ok      rustc/cargo $RUST_VER + std source"
    else echo "MISSING toolchain: $why"; bad=1; fi
    local -a tools=(python3 readelf file make)
    for t in "${TARGETS[@]}"; do
        is_host "$t" && continue
        tools+=("${T_CC[$t]}")
        [[ ${T_QEMU[$t]} ]] && tools+=("${T_QEMU[$t]%% *}")
    done
    for tool in $(printf '%s\n' "${tools[@]}" | sort -u); do
        if command -v "$tool" >/dev/null; then echo "ok      $tool"; else echo "MISSING $tool"; bad=1; fi
    done
    if ((bad)); then
        echo "--deps would install: ${RUST_PKGS[*]/%/=$DEB_RUST_VER} $(deps_packages | tr '\n' ' ')"
        return 1
    fi
}

# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------
# Two musl workarounds (CROSS.md §4): Debian ships no musl libunwind.a, so std's `-lunwind`
# gets gcc's unwinder (libgcc_eh.a); and Debian's libgcc_eh.a (gcc 12, built against glibc)
# calls glibc's _dl_find_object, which musl lacks: a stub returning -1 makes the unwinder fall
# back to dl_iterate_phdr.
musl_stub() { # triple -> prints the stub dir
    local t=$1 cc=${T_CC[$1]} dir="$XC/musl-stub/${T_ARCH[$1]}"
    mkdir -p "$dir"
    if [[ ! -e $dir/libunwind.a ]]; then
        ln -sf "$("$cc" -print-file-name=libgcc_eh.a)" "$dir/libunwind.a"
    fi
    if [[ ! -e $dir/dlfo_stub.o ]]; then
        cat >"$dir/dlfo_stub.c" <<'EOF'
/* musl has no _dl_find_object; -1 = "not found", libgcc then uses dl_iterate_phdr. */
struct dl_find_object;
int _dl_find_object(void *pc, struct dl_find_object *result);
int _dl_find_object(void *pc, struct dl_find_object *result)
{
    (void)pc;
    (void)result;
    return -1;
}
EOF
        "$cc" -O2 -fPIC -c "$dir/dlfo_stub.c" -o "$dir/dlfo_stub.o"
    fi
    echo "$dir"
    : "$t"
}

# mipsel musl: Rust's target is soft-float, but Debian's musl libc.a is hard-float (FPXX). Any
# libm call from Rust (bloomfilter's f64::ln, ceil, round) would link musl's hard-float code:
# SIGILL on an FPU-less router (OpenWRT kernels have no FPU emulator) and, worse, the wrong
# calling convention (soft-float passes doubles in integer registers). So we build Rust's own
# libm (the copy in the std source) soft-float into one object and put it first on the link
# line (-Z pre-link-arg), which keeps libc.a's math members out.
soft_libm() { # triple -> prints the object's path
    local t=$1 dir="$XC/softm" T; T=$(upper "$t")
    local obj="$dir/$t/softm.o"
    if [[ -s $obj ]]; then echo "$obj"; return; fi
    mkdir -p "$dir/src" "$dir/$t"
    cat >"$dir/src/Cargo.toml" <<EOF
[package]
name = "softm"
version = "0.0.0"
edition = "2021"
publish = false
[lib]
crate-type = ["staticlib"]
path = "lib.rs"
[dependencies]
libm = { path = "/usr/src/rustc-$RUST_VER/library/compiler-builtins/libm", default-features = false }
[profile.release]
opt-level = "s"
panic = "abort"
lto = true
codegen-units = 1
[workspace]
EOF
    cat >"$dir/src/lib.rs" <<'EOF'
//! C libm symbols backed by Rust's soft-float libm, for soft-float mipsel builds (see m.sh).
#![no_std]
macro_rules! export {
    ($($name:ident($($a:ident: $t:ty),*) -> $r:ty;)*) => {$(
        #[no_mangle]
        pub extern "C" fn $name($($a: $t),*) -> $r { libm::$name($($a),*) }
    )*};
}
export! {
    log(x: f64) -> f64; log2(x: f64) -> f64; log10(x: f64) -> f64; log1p(x: f64) -> f64;
    exp(x: f64) -> f64; exp2(x: f64) -> f64; expm1(x: f64) -> f64; pow(x: f64, y: f64) -> f64;
    ceil(x: f64) -> f64; floor(x: f64) -> f64; round(x: f64) -> f64; trunc(x: f64) -> f64;
    sqrt(x: f64) -> f64; fmod(x: f64, y: f64) -> f64; cbrt(x: f64) -> f64;
    hypot(x: f64, y: f64) -> f64; sin(x: f64) -> f64; cos(x: f64) -> f64; tan(x: f64) -> f64;
    atan2(y: f64, x: f64) -> f64;
    logf(x: f32) -> f32; log2f(x: f32) -> f32; log10f(x: f32) -> f32; expf(x: f32) -> f32;
    powf(x: f32, y: f32) -> f32; ceilf(x: f32) -> f32; floorf(x: f32) -> f32;
    roundf(x: f32) -> f32; truncf(x: f32) -> f32; sqrtf(x: f32) -> f32;
    fmodf(x: f32, y: f32) -> f32;
}
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
EOF
    # Path dependencies only (no registry): --offline. Its own target dir and profile.
    log "soft-float libm for $t"
    nice -n 19 env -u RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS -u RUSTUP_TOOLCHAIN \
        PATH="/usr/bin:/bin:$PATH" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
        "CARGO_TARGET_${T}_RUSTFLAGS=-C relocation-model=static" \
        /usr/bin/cargo build --offline --release --manifest-path "$dir/src/Cargo.toml" \
        --target "$t" --target-dir "$dir/target" -Zbuild-std=core >&2 || return 1
    # The staticlib also holds compiler_builtins; we want only the LTO'd object of the shim,
    # whose sole global definitions are the exported C functions.
    local a="$dir/target/$t/release/libsoftm.a" member
    member=$(ar t "$a" | grep '^softm-' | head -1)
    [[ $member ]] || return 1
    (cd "$dir/$t" && ar x "$a" "$member" && mv -f "$member" softm.o)
    echo "$obj"
}

declare -A B_TIME B_STATUS
build_one() {
    local t=$1 prof; prof=$(profile_of "$t")
    local -a args=(build --locked --profile "$prof" --target "$t" --target-dir "$XC" --bin "$BIN" -j "$JOBS")
    # env -u before the assignments: no global RUSTFLAGS can leak in; /usr/bin first in PATH so
    # that no rustup proxy is picked up by cargo or the build scripts.
    local -a envs=(-u RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS
                   -u RUSTUP_TOOLCHAIN PATH="/usr/bin:/bin:$PATH" RUSTC=/usr/bin/rustc
                   RUSTC_BOOTSTRAP=1)
    local T; T=$(upper "$t")
    if ! is_host "$t"; then
        # build-std: a std compiled with our profile (smaller), and the only way to get a std for
        # targets Debian ships none for. panic_abort because the profiles use panic = "abort".
        args+=("-Zbuild-std=std,panic_abort")
        envs+=("CARGO_TARGET_${T}_LINKER=${T_CC[$t]}")
        if is_musl "$t"; then
            local stub; stub=$(musl_stub "$t")
            # +crt-static: mipsel-musl defaults to dynamic. relocation-model=static: no static-pie
            # (Debian's musl specs do not know it; x86_64 would get an ELF interpreter).
            # link-self-contained=no: crt objects and libc.a from Debian's musl-dev:<arch>.
            local flags="-C target-feature=+crt-static -C relocation-model=static -C link-self-contained=no -L native=$stub -C link-arg=$stub/dlfo_stub.o"
            if [[ $t == mips*-musl ]]; then
                local softm
                softm=$(soft_libm "$t") || { B_STATUS[$t]="FAIL(softm)"; B_TIME[$t]=0; return; }
                flags+=" -Z pre-link-arg=$softm"
                # ld aligns MIPS segments to 64 KiB in the file; routers use 4 KiB pages, so
                # 4 KiB alignment is enough and saves up to 60 KiB of padding.
                flags+=" -C link-arg=-Wl,-z,max-page-size=4096"
            fi
            envs+=("CARGO_TARGET_${T}_RUSTFLAGS=$flags")
        fi
        if ((PANIC_IA)) && [[ $prof == "$ROUTER_PROFILE" ]]; then
            local P; P=$(upper "$prof")
            envs+=("CARGO_PROFILE_${P}_PANIC=immediate-abort" CARGO_UNSTABLE_PANIC_IMMEDIATE_ABORT=true)
        fi
    fi
    log "build $t (profile $prof)"
    local t0=$SECONDS rc=0
    nice -n 19 env "${envs[@]}" /usr/bin/cargo "${args[@]}" || rc=$?
    B_TIME[$t]=$((SECONDS - t0))
    if ((rc == 0)); then B_STATUS[$t]=ok; else B_STATUS[$t]="FAIL($rc)"; fi
    log "build $t: ${B_STATUS[$t]} in ${B_TIME[$t]} s"
}

# ---------------------------------------------------------------------------------------------
# Smoke test under qemu-user
# ---------------------------------------------------------------------------------------------
# A small python3 helper: an echo server, a client that pushes random bytes through a port and
# compares what comes back, and a free-port finder.
write_helper() {
    cat >"$1" <<'EOF'
import hashlib, os, socket, sys, threading, time

def free_port(kind):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); print(p)

def echo_server(portfile):
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0)); srv.listen(16)
    with open(portfile + ".tmp", "w") as f: f.write(str(srv.getsockname()[1]))
    os.rename(portfile + ".tmp", portfile)
    def serve(c):
        with c:
            while True:
                b = c.recv(65536)
                if not b: break
                c.sendall(b)
            try: c.shutdown(socket.SHUT_WR)
            except OSError: pass
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()

def client(port, nbytes, timeout):
    data = os.urandom(nbytes); deadline = time.time() + timeout
    while True:  # the client binary may still be starting under qemu
        try: s = socket.create_connection(("127.0.0.1", port), timeout=2); break
        except OSError:
            if time.time() > deadline: print("connect: failed"); sys.exit(1)
            time.sleep(0.2)
    s.settimeout(max(1.0, deadline - time.time()))
    t0 = time.time()
    def push():
        try: s.sendall(data); s.shutdown(socket.SHUT_WR)
        except OSError as e: print("send:", e)
    th = threading.Thread(target=push, daemon=True); th.start()
    got = bytearray(); eof = False
    try:
        while len(got) < nbytes:
            b = s.recv(65536)
            if not b: eof = True; break
            got += b
        if not eof:
            s.settimeout(5); eof = s.recv(1) == b""
    except OSError as e: print("recv:", e)
    dt = time.time() - t0; ok = bytes(got) == data
    print("sent %d B, got %d B back in %.2f s (%.0f KiB/s), sha256 %s, eof %s, match=%s" % (
        nbytes, len(got), dt, len(got) / 1024 / max(dt, 1e-6),
        hashlib.sha256(bytes(got)).hexdigest()[:16], "yes" if eof else "no", ok))
    sys.exit(0 if ok else 1)

cmd = sys.argv[1]
if cmd == "free-port": free_port(sys.argv[2])
elif cmd == "echo-server": echo_server(sys.argv[2])
elif cmd == "client": client(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
EOF
}

declare -A S_RESULT
SMOKE_PIDS=()
smoke_cleanup() {
    local p
    for p in "${SMOKE_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${SMOKE_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    SMOKE_PIDS=()
}
trap smoke_cleanup EXIT

smoke_one() {
    local t=$1 bin; bin=$(bin_of "$t")
    local -a q=(); [[ ${T_QEMU[$t]:-} ]] && read -r -a q <<<"${T_QEMU[$t]}"
    local dir="$XC/smoke/$t" res=() out rc
    rm -rf "$dir"; mkdir -p "$dir"
    log "smoke $t: ${q[*]:-native} $bin"
    if [[ ! -x $bin ]]; then S_RESULT[$t]="FAIL(no binary)"; return; fi
    printf '  file: %s\n' "$(file -b "$bin")"

    # 1. static: a musl binary with an ELF interpreter would need ld-musl on the router.
    if is_musl "$t"; then
        if readelf -lW "$bin" | grep -q INTERP; then res+=("interp:FAIL"); echo "  interp: FAIL (has an ELF interpreter)"
        else res+=("static:ok"); echo "  interp: none (static)"; fi
    fi
    # 1b. mips: FPU instructions left in the binary. Informational: musl's printf_core (float
    # formats) and gcc's unwinder keep some that are never reached; the qemu -cpu 24Kc runs
    # below are what proves the paths we use are FPU-free.
    if [[ $t == mips* ]] && command -v mipsel-linux-gnu-objdump >/dev/null; then
        local nfpu
        nfpu=$(mipsel-linux-gnu-objdump -d "$bin" | grep -cE $'\t(lwc1|swc1|ldc1|sdc1|mtc1|mfc1|mthc1|mfhc1|cfc1|ctc1|c\\.[a-z]+\\.[sd]|bc1[tf]|cvt\\.|(add|sub|mul|div|mov|neg|abs|sqrt)\\.[sd])\t' || true)
        echo "  fpu instructions in the binary: $nfpu (informational)"
    fi
    # 2. --version
    rc=0; out=$(timeout 60 "${q[@]}" "$bin" --version 2>&1) || rc=$?
    if ((rc == 0)) && grep -q "[0-9]\+\.[0-9]\+\.[0-9]\+" <<<"$out"; then
        res+=("version:ok"); echo "  --version: $(head -1 <<<"$out")"
    else res+=("version:FAIL"); echo "  --version: FAIL (exit $rc, output '$(head -c 200 <<<"$out")')"; fi
    # 3. --genpsk: one line of base64 for 32 bytes (44 chars)
    local psk=""
    rc=0; out=$(timeout 60 "${q[@]}" "$bin" --genpsk xchacha20poly1305_ietf 2>&1) || rc=$?
    psk=$(grep -oE '^[A-Za-z0-9+/]{43}=$' <<<"$out" | head -1 || true)
    if ((rc == 0)) && [[ $psk ]] && [[ $(base64 -d <<<"$psk" | wc -c) == 32 ]]; then
        res+=("genpsk:ok"); echo "  --genpsk: ${psk:0:6}... (32 bytes)"
    else res+=("genpsk:FAIL"); echo "  --genpsk: FAIL (exit $rc, output '$(head -c 200 <<<"$out")')"
        psk=$(head -c 32 /dev/urandom | base64)   # still try the forwarding run
    fi
    # 4. forwarding: python echo <- server (qemu) <- KCP/UDP <- client (qemu) <- python client
    local helper="$XC/smoke/helper.py" kport lport eport
    write_helper "$helper"
    kport=$(python3 "$helper" free-port udp); lport=$(python3 "$helper" free-port tcp)
    python3 "$helper" echo-server "$dir/echo.port" & SMOKE_PIDS+=($!)
    for _ in $(seq 50); do [[ -s $dir/echo.port ]] && break; sleep 0.1; done
    eport=$(cat "$dir/echo.port")
    cat >"$dir/server.json" <<EOF
{
  "kcp_bind": "127.0.0.1:$kport",
  "connect": "127.0.0.1:$eport",
  "method": "xchacha20poly1305_ietf",
  "psk": "$psk",
  "loglevel": 5
}
EOF
    cat >"$dir/client.json" <<EOF
{
  "listen": "127.0.0.1:$lport",
  "kcp_connect": "127.0.0.1:$kport",
  "method": "xchacha20poly1305_ietf",
  "psk": "$psk",
  "loglevel": 5
}
EOF
    "${q[@]}" "$bin" -c "$dir/server.json" >"$dir/server.log" 2>&1 & SMOKE_PIDS+=($!)
    "${q[@]}" "$bin" -c "$dir/client.json" >"$dir/client.log" 2>&1 & SMOKE_PIDS+=($!)
    rc=0; out=$(python3 "$helper" client "$lport" 1048576 60 2>&1) || rc=$?
    local alive=""
    kill -0 "${SMOKE_PIDS[-2]}" 2>/dev/null || alive+=" server exited early;"
    kill -0 "${SMOKE_PIDS[-1]}" 2>/dev/null || alive+=" client exited early;"
    smoke_cleanup
    if ((rc == 0)); then res+=("forward:ok"); echo "  forward: $out"
    else
        res+=("forward:FAIL")
        echo "  forward: FAIL: $out${alive}"
        echo "    logs: $dir/server.log $dir/client.log (last lines below)"
        tail -n 3 "$dir/server.log" "$dir/client.log" 2>/dev/null | sed 's/^/    /'
    fi
    S_RESULT[$t]="${res[*]}"
}

# ---------------------------------------------------------------------------------------------
# Dist
# ---------------------------------------------------------------------------------------------
do_dist() {
    local d=$1 t bin name size
    mkdir -p "$d"
    : >"$d/SIZES.txt"
    printf '%-34s %-14s %10s %8s %s\n' target profile bytes KiB file >>"$d/SIZES.txt"
    for t in "${TARGETS[@]}"; do
        bin=$(bin_of "$t"); [[ -x $bin ]] || continue
        name="$BIN-$t"
        cp "$bin" "$d/$name"
        size=$(stat -c %s "$bin")
        printf '%-34s %-14s %10d %8s %s\n' "$t" "$(profile_of "$t")" "$size" \
            "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1024 }')" \
            "$(file -b "$bin" | cut -d, -f1-2)" >>"$d/SIZES.txt"
    done
    (cd "$d" && sha256sum "$BIN"-* >SHA256SUMS)
    log "dist: $d"
    cat "$d/SIZES.txt"
}

# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
for v in RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_ENCODED_RUSTFLAGS; do
    [[ ${!v:-} ]] && log "note: ignoring global $v (m.sh only uses per-target flags)"
done

if ((DO_CHECK)); then do_check; exit $?; fi
if ((DO_DEPS)); then do_deps; ((DEPS_ONLY)) && exit 0; fi
if ((DO_BUILD)); then
    why=$(check_rust_pin) || die "$why (run: bash m.sh --deps)"
    for t in "${TARGETS[@]}"; do build_one "$t"; done
fi
if ((DO_SMOKE)); then
    command -v python3 >/dev/null || die "--smoke needs python3"
    for t in "${TARGETS[@]}"; do smoke_one "$t"; done
fi
[[ $DIST_DIR ]] && do_dist "$DIST_DIR"

# Summary, and the exit status: any failed build, smoke step or budget fails the run.
fail=0
printf '\n%-34s %-14s %-8s %6s %10s  %s\n' target profile build secs bytes smoke
for t in "${TARGETS[@]}"; do
    bin=$(bin_of "$t"); size=-
    [[ -f $bin ]] && size=$(stat -c %s "$bin")
    st=${B_STATUS[$t]:-skipped}; [[ $st == ok || $st == skipped ]] || fail=1
    sm=${S_RESULT[$t]:--}; [[ $sm == *FAIL* ]] && fail=1
    if [[ $t == mipsel-unknown-linux-musl && $size != - ]] && ((size > MIPSEL_BUDGET)); then
        sm+=" budget:FAIL(>$MIPSEL_BUDGET)"; fail=1
    fi
    printf '%-34s %-14s %-8s %6s %10s  %s\n' "$t" "$(profile_of "$t")" "$st" "${B_TIME[$t]:--}" "$size" "$sm"
done
exit $fail
