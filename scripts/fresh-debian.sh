#!/usr/bin/env bash
# Prove the README's first command, `bash setup.sh && .venv/bin/python train.py`, on a clean Debian 12.
#
# Builds a fresh root with `debootstrap --variant=minbase bookworm` (no Python at all, so no pip and no
# python3-venv either: setup.sh has to install Debian's own python3 3.11.2 and python3-venv itself), copies
# the repository into it (`git archive` of HEAD plus the working tree's setup.sh; nothing else of the working
# tree, never ../shared), bind-mounts /proc, /sys and /dev, and runs inside it, via chroot with a clean
# environment (HOME=/root, a plain PATH: no pyenv, no uv of this machine):
#
#   setup         bash setup.sh                        (the first time: about 1.5 GB from PyPI)
#   setup again   bash setup.sh                        (idempotent: must take seconds)
#   checks        python3 --version is 3.11.2; .venv and both engine environments run on /usr/bin/python3.11;
#                 the system Python got no packages (no pip module, still EXTERNALLY-MANAGED)
#   training      .venv/bin/python train.py train.epochs=1 data.synthetic.n_train=40 data.synthetic.n_val=10
#                 (the default demo, shortened: 1 epoch on 40 + 10 synthetic lines)
#
# then prints the time of each phase and the training's last lines. The mounts are undone by a trap on any
# exit; the chroot is removed unless --keep.
#
# Usage (as root): bash scripts/fresh-debian.sh [--keep] [--dir DIR] [--mirror URL]
#   --keep        keep the chroot afterwards (look around: chroot DIR /bin/bash; the training needs /proc,
#                 /sys and /dev mounted again)
#   --dir DIR     where the chroot goes (default /var/tmp/hsbcala-fresh-debian); a DIR left by an earlier
#                 run of this script is replaced, any other non-empty DIR is refused
#   --mirror URL  the Debian mirror (default: the first bookworm mirror in this machine's
#                 /etc/apt/sources.list and /etc/apt/sources.list.d/, else http://deb.debian.org/debian)
# Needs: root, debootstrap (installed with apt-get if missing), the network to the mirror and to PyPI,
# about 6 GB free under DIR. Takes a few minutes to ~20 min (mostly downloading TensorFlow).
#
# Local CA certificates: when this machine trusts extra CAs (/usr/local/share/ca-certificates, e.g. a
# TLS-inspecting proxy), they are copied into the chroot (with the ca-certificates package) and pip/uv are
# pointed at the resulting bundle, so the chroot reaches PyPI the way this machine does. So are
# http_proxy/https_proxy/no_proxy when set.
set -euo pipefail

PROG=fresh-debian
repo=$(cd "$(dirname "$0")/.." && pwd)
root=/var/tmp/hsbcala-fresh-debian
keep=0
mirror=""
MARKER=.hsbcala-fresh-debian
TRAIN_ARGS=(train.epochs=1 data.synthetic.n_train=40 data.synthetic.n_val=10)

say() { echo "$PROG: $*" >&2; }
die() { echo "$PROG: error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while (($#)); do
    case "$1" in
        --keep) keep=1 ;;
        --dir) [[ $# -ge 2 ]] || die "--dir needs a directory"; root=$2; shift ;;
        --dir=*) root=${1#--dir=} ;;
        --mirror) [[ $# -ge 2 ]] || die "--mirror needs a URL"; mirror=$2; shift ;;
        --mirror=*) mirror=${1#--mirror=} ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, chroot, mounts)"
[[ $root == /* ]] || root="$PWD/$root"
root=${root%/}
[[ $root =~ ^/[A-Za-z0-9._/+-]+$ ]] || die "--dir: use a plain absolute path (letters, digits, . _ - + /): $root"
case "$root" in / | /bin* | /boot* | /dev* | /etc* | /lib* | /proc* | /sbin* | /sys* | /usr | /usr/* | /var | /tmp | /home | /root)
    die "--dir $root: choose a directory of its own, e.g. /var/tmp/hsbcala-fresh-debian" ;;
esac
[[ -f $repo/setup.sh && -f $repo/uv.lock ]] || die "$repo is not the hsbcala repository"
git -C "$repo" rev-parse --verify -q HEAD >/dev/null || die "$repo: not a git checkout with a commit"

# ------------------------------------------------------------------------------------------------ timing
phases=()  # "name<TAB>seconds<TAB>status"
phase_name=""
phase_t0=0
begin() { phase_name=$1; phase_t0=$SECONDS; say "== $1"; }
end() { phases+=("$phase_name"$'\t'"$((SECONDS - phase_t0))"$'\t'"${1:-ok}"); phase_name=""; }
report() {
    local p name secs status total=0
    echo
    echo "$PROG: phase times"
    for p in "${phases[@]}"; do
        IFS=$'\t' read -r name secs status <<<"$p"
        printf '  %-34s %5d s  (%dm%02ds)  %s\n' "$name" "$secs" $((secs / 60)) $((secs % 60)) "$status"
        total=$((total + secs))
    done
    printf '  %-34s %5d s  (%dm%02ds)\n' total "$total" $((total / 60)) $((total % 60))
}
# Prefix each line with the seconds since the phase began (setup.sh's steps get their times this way).
stamp() {
    local line
    while IFS= read -r line; do printf '  [%4ds] %s\n' $((SECONDS - phase_t0)) "$line"; done
}

# Bytes received by this machine (all interfaces but lo): the download volume of a phase, give or take
# whatever else this machine receives meanwhile.
rx_bytes() { awk -F'[: ]+' 'NR > 2 && $2 != "lo" { s += $3 } END { printf "%.0f", s }' /proc/net/dev; }
mb_since() { echo $((($(rx_bytes) - $1) / 1000000)); }

# ------------------------------------------------------------------------------------------------ mounts
mounted() { grep -q " $1 " /proc/self/mountinfo; }
unmount_all() {
    local m
    for m in dev sys proc; do
        if mounted "$root/$m"; then umount -R "$root/$m" 2>/dev/null || umount -R -l "$root/$m" || true; fi
    done
}
still_mounted() { awk -v r="$root/" 'index($5, r) == 1 { print $5 }' /proc/self/mountinfo; }
remove_root() {
    unmount_all
    local left
    left=$(still_mounted)
    [[ -z $left ]] || { say "not removing $root: still mounted there: $left"; return 1; }
    rm -rf --one-file-system "$root"
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -n $phase_name ]] && end "FAILED (exit $rc)"
    unmount_all
    local hint=""
    if [[ -e $root/$MARKER ]]; then  # only a chroot this script made is ever removed
        ((keep)) || hint="; run with --keep to look inside the chroot"
        if ((keep)); then
            say "kept the chroot $root (enter it: chroot $root /bin/bash)"
        else
            begin "remove the chroot"
            if remove_root; then end; else end "left in place"; fi
        fi
    fi
    ((${#phases[@]} == 0)) || report
    ((rc == 0)) || say "failed (exit $rc)$hint"
    exit "$rc"
}

# ------------------------------------------------------------------------------------------------ mirror
host_mirror() {  # the first bookworm "deb" source of this machine's apt configuration
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
                           if ($(i + 1) == "bookworm") print $i }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        awk 'BEGIN { RS = ""; FS = "\n" }
             { types = suites = uris = ""; enabled = "yes"
               for (i = 1; i <= NF; i++) {
                 if ($i ~ /^[ \t]*#/ || index($i, ":") == 0) continue
                 key = tolower(substr($i, 1, index($i, ":") - 1)); val = substr($i, index($i, ":") + 1)
                 if (key == "types") types = val; else if (key == "suites") suites = val
                 else if (key == "uris") uris = val; else if (key == "enabled") enabled = tolower(val)
               }
               gsub(/[ \t]+/, " ", types); gsub(/[ \t]+/, " ", suites)
               if (enabled ~ /no/) next
               if ((" " types " ") ~ / deb / && (" " suites " ") ~ / bookworm /) { split(uris, u, " "); print u[1] }
             }' "$f"
    done
}
if [[ -z $mirror ]]; then
    mirror=$(host_mirror | grep -E '^(https?|ftp|file)://' | head -n 1 || true)
    mirror=${mirror:-http://deb.debian.org/debian}
fi

# ------------------------------------------------------------------------------------------------ run
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "repository $repo at $(git -C "$repo" rev-parse --short HEAD); chroot $root; mirror $mirror"

if [[ -e $root ]]; then
    if [[ -e $root/$MARKER ]]; then
        begin "remove the earlier chroot"
        remove_root || die "could not remove $root"
        end
    elif [[ -n $(ls -A "$root" 2>/dev/null) ]]; then
        die "$root exists and is not empty (and not from this script): choose another --dir"
    fi
fi

begin "debootstrap"
if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap on this machine"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq debootstrap >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq debootstrap >/dev/null; }
fi
mkdir -p "$root"
touch "$root/$MARKER"
extra_cas=()
for f in /usr/local/share/ca-certificates/*.crt; do [[ -f $f ]] && extra_cas+=("$f"); done
include=()
((${#extra_cas[@]})) && include=(--include=ca-certificates)
bootlog=$(mktemp /tmp/fresh-debian-debootstrap.XXXXXX)
rx0=$(rx_bytes)
if ! debootstrap --variant=minbase "${include[@]}" bookworm "$root" "$mirror" >"$bootlog" 2>&1; then
    tail -n 20 "$bootlog" >&2
    rm -f "$bootlog"
    die "debootstrap failed (mirror $mirror; choose another with --mirror)"
fi
rm -f "$bootlog"
echo "  debootstrap --variant=minbase ${include[*]} bookworm $root $mirror: $(mb_since "$rx0") MB received"
end

begin "copy repository, mount"
mkdir -p "$root/root/hsbcala"
git -C "$repo" archive --format=tar HEAD | tar -x -C "$root/root/hsbcala"
cp "$repo/setup.sh" "$root/root/hsbcala/setup.sh"  # the working tree's, possibly not committed yet
git -C "$repo" diff --quiet HEAD -- setup.sh || say "(setup.sh: the working tree's, which differs from HEAD)"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys" && mount --make-rslave "$root/sys"
mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev"  # with /dev/shm (multiprocessing) and /dev/pts
chroot_env=(HOME=/root USER=root LOGNAME=root SHELL=/bin/bash TERM=dumb LANG=C.UTF-8
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [[ -n ${!v:-} ]] && chroot_env+=("$v=${!v}")
done
if ((${#extra_cas[@]})); then
    cp "${extra_cas[@]}" "$root/usr/local/share/ca-certificates/"
    chroot "$root" /usr/bin/env -i "${chroot_env[@]}" update-ca-certificates >/dev/null 2>&1
    bundle=/etc/ssl/certs/ca-certificates.crt
    chroot_env+=("SSL_CERT_FILE=$bundle" "PIP_CERT=$bundle" "REQUESTS_CA_BUNDLE=$bundle")
    say "this machine's extra CA certificates (${#extra_cas[@]}) are trusted in the chroot too"
fi
echo "  $(du -sh --exclude=proc --exclude=sys --exclude=dev "$root" | cut -f1) in $root;" \
    "python3 in the chroot before setup: $(chroot "$root" /bin/sh -c 'command -v python3 || echo none')"
end

in_chroot() {  # run a bash command line in /root/hsbcala inside the chroot, with a clean environment
    chroot "$root" /usr/bin/env -i "${chroot_env[@]}" /bin/bash -c "cd /root/hsbcala && $1"
}

begin "setup.sh (fresh)"
rx0=$(rx_bytes)
in_chroot "bash setup.sh" 2>&1 | stamp
echo "  $(mb_since "$rx0") MB received by this machine during setup.sh"
end

begin "setup.sh again (idempotent)"
in_chroot "bash setup.sh" 2>&1 | stamp
end

begin "checks (system Python only)"
# shellcheck disable=SC2016 # expanded inside the chroot
in_chroot '
    set -euo pipefail
    v=$(python3 --version 2>&1); echo "python3 --version: $v ($(command -v python3))"
    [[ $v == "Python 3.11."* ]] || { echo "not Python 3.11"; exit 1; }
    [[ $v == "Python 3.11.2" ]] || echo "warning: Debian 12 ships 3.11.2, this is $v"
    base() { "$1" -c "import sys; print(sys._base_executable)"; }
    echo ".venv runs on: $(readlink -f "$(base .venv/bin/python)")"
    [[ $(readlink -f "$(base .venv/bin/python)") == /usr/bin/python3.11 ]]
    for env in /root/.cache/hsbcala/envs/*/; do
        [[ -x $env/bin/python ]] || continue
        echo "engine env $(basename "$env") runs on: $(readlink -f "$(base "$env/bin/python")")"
        [[ $(readlink -f "$(base "$env/bin/python")") == /usr/bin/python3.11 ]]
    done
    [[ ! -d /root/.local/share/uv/python ]] || { echo "uv downloaded its own Python:"; ls /root/.local/share/uv/python; exit 1; }
    if python3 -c "import pip" 2>/dev/null; then echo "the system Python has pip"; exit 1; fi
    echo "system Python untouched: no pip module, $(ls /usr/lib/python3.11/EXTERNALLY-MANAGED)"
    echo "sizes: $(du -sh /root/.cache/uv | cut -f1) uv cache (the downloads), $(du -sh .venv | cut -f1) .venv," \
         "$(du -sch /root/.cache/hsbcala/envs/*/ | tail -n 1 | cut -f1) engine environments"
' 2>&1 | stamp
end

begin "training (1 epoch, 40 + 10 lines)"
echo "  .venv/bin/python train.py ${TRAIN_ARGS[*]}"
set +e
in_chroot ".venv/bin/python train.py ${TRAIN_ARGS[*]} >/root/train.log 2>&1"
train_rc=$?
set -e
echo "  training's last lines (whole log: /root/train.log in the chroot):"
grep '^hsbcala: ' "$root/root/train.log" | sed 's/^/  | /' || true
echo "  | ... (the log's last lines but Calamari's benchmark table:)"
grep -v '^[|+]' "$root/root/train.log" | tail -n 6 | sed 's/^/  | /'
((train_rc == 0)) || { say "training failed (exit $train_rc)"; exit "$train_rc"; }
end

say "the README's first command works on a fresh Debian 12 with its system Python"
