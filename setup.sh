#!/usr/bin/env bash
# Set up hsbcala on a fresh machine. Idempotent: a second run checks and takes seconds.
#
#   1. Debian packages. As root with apt, installs what is missing: python3 and python3-venv (only while there
#      is no uv yet: step 2 needs them), the fonts of the synthetic demo lines (fonts-ebgaramond,
#      fonts-blankenburg, fontconfig) and, with --test, slurm-wlm, munge, lmod and chromium. Not root: names the packages
#      to ask an administrator for and stops (exit 1) before downloading anything.
#   2. uv: the copy of an earlier run, else the one on PATH, else uv (the version pinned in uv.lock) from
#      PyPI into a private virtualenv, ${HSBCALA_CACHE_DIR:-~/.cache/hsbcala}/bootstrap, made with the
#      system's `python3 -m venv` and that venv's own pip. The system Python's packages are never touched (PEP 668: no pip --user, no
#      --break-system-packages, no sudo pip).
#   3. Python 3.11 (TensorFlow 2.15 has wheels for Python 3.9-3.11 only): the system's if it is 3.11
#      (Debian 12: /usr/bin/python3.11), else a standalone CPython 3.11 via `uv python install 3.11`.
#   4. The launcher environment .venv from uv.lock (`uv sync --frozen`: hydra, submitit, mlflow; --test adds
#      pytest and ruff).
#   5. Both engine environments (Calamari 2 and 1) from envs/*.lock.txt under ~/.cache/hsbcala/envs (else
#      they are built on first use); the first time this downloads about 1.5 GB (TensorFlow).
#
# Usage: bash setup.sh [--test] [--no-fonts] [--no-engines]
#   --test        also the test extras (pytest) and, as root, Slurm + munge for the Slurm integration tests
#   --no-fonts    do not require the demo fonts (a machine that trains only on real lines)
#   --no-engines  skip step 5 (e.g. a cluster whose cluster.env names the site's venv; a uv engine
#                 environment is then built on its first use)
set -euo pipefail
cd "$(dirname "$0")"

with_tests=0
with_fonts=1
with_engines=1
for arg in "$@"; do
    case "$arg" in
        --test) with_tests=1 ;;
        --no-fonts) with_fonts=0 ;;
        --no-engines) with_engines=0 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup: error: unknown option $arg (see bash setup.sh --help)" >&2; exit 2 ;;
    esac
done

say() { echo "setup: $*" >&2; }
step="0/5 (options)"
trap 'echo "setup: error: step $step failed (exit $?); see the messages above" >&2' ERR
die() {
    echo "setup: error: $1" >&2
    shift
    for line in "$@"; do echo "setup:   $line" >&2; done
    exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }
deb_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# A demo font counts as present when its package is installed or its file lies where hsbcala looks for it
# (hsbcala/data/synth/fonts.py), e.g. unpacked by hand into ~/.local/share/fonts.
font_present() {  # package file
    deb_installed "$1" && return 0
    local d
    for d in /usr/share/fonts /usr/local/share/fonts "$HOME/.local/share/fonts" "$HOME/.fonts"; do
        [[ -d $d ]] && [[ -n $(find "$d" -name "$2" -print -quit 2>/dev/null) ]] && return 0
    done
    return 1
}

is_root=0
[[ $(id -u) -eq 0 ]] && is_root=1
has_apt=0
have apt-get && have dpkg-query && has_apt=1
bootstrap="${HSBCALA_CACHE_DIR:-$HOME/.cache/hsbcala}/bootstrap"
# The uv of the launcher environment, pinned in uv.lock, so the bootstrap uv is the same release.
uv_version=$(sed -n '/^name = "uv"$/{n;s/^version = "\(.*\)"$/\1/p;q;}' uv.lock)
[[ -n $uv_version ]] || die "uv.lock names no uv version (is this the hsbcala repository?)"

# uv already there? Prefer our own bootstrap copy, else the one on PATH.
uv=""
if [[ -x $bootstrap/bin/uv ]]; then
    uv="$bootstrap/bin/uv"
elif have uv; then
    uv=$(command -v uv)
fi

# ---- 1. Debian packages
step="1/5 (system packages)"
say "1/5 checking system packages"
admin=()     # needed, and only root can install them
optional=()  # installed when root, else only mentioned
if [[ -z $uv ]]; then
    if ! have python3; then
        admin+=(python3 python3-venv)
    elif ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        admin+=(python3-venv)  # Debian keeps ensurepip (python3 -m venv with pip) out of python3
    fi
fi
if ((with_fonts)); then
    font_present fonts-ebgaramond EBGaramond12-Regular.otf || admin+=(fonts-ebgaramond)
    font_present fonts-blankenburg Blankenburg_UNZ1A.ttf || admin+=(fonts-blankenburg)
    ((is_root && has_apt)) && ! deb_installed fontconfig && optional+=(fontconfig)  # fc-list; nice to have
fi
if ((with_tests && has_apt)); then
    # chromium: the HTML reports are opened in a real headless browser (tests/test_htmlreport.py)
    for p in slurm-wlm munge lmod chromium; do deb_installed "$p" || optional+=("$p"); done
fi
missing=("${admin[@]}" "${optional[@]}")
if ((${#missing[@]})) && ((is_root && has_apt)); then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
        say "apt-get update (package lists missing or stale), then again"
        apt-get update -qq >/dev/null
        apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
elif ((${#admin[@]})); then
    why=()
    py_pkgs=$(printf '%s\n' "${admin[@]}" | grep '^python3' | paste -sd ' ' || true)
    [[ -n $py_pkgs ]] &&
        why+=("$py_pkgs: for 'python3 -m venv', with which setup.sh installs uv from PyPI into $bootstrap;"
            "  alternatively put a uv binary on PATH yourself (https://docs.astral.sh/uv/), then run setup.sh again.")
    [[ " ${admin[*]} " == *" fonts-"* ]] &&
        why+=("fonts-*: only the synthetic demo (the default training) needs them; 'bash setup.sh --no-fonts'"
            "  goes on without them (or unpack them yourself: apt-get download fonts-ebgaramond fonts-blankenburg;"
            "  dpkg-deb -x <each .deb> /tmp/f; cp the .otf/.ttf files from /tmp/f/usr/share/fonts to ~/.local/share/fonts).")
    if ((has_apt)); then
        die "missing Debian packages that only root can install; ask an administrator for:" \
            "apt-get install ${admin[*]}" "${why[@]}"
    fi
    die "no apt-get here; install the equivalents of these Debian packages: ${admin[*]}" \
        "(Python's venv module with ensurepip; the fonts EB Garamond and Blankenburg)" "${why[@]}"
fi
if ((${#optional[@]})) && ! ((is_root && has_apt)); then
    say "note: not installed (needs root): ${optional[*]}; the Slurm tests need root and skip without it"
fi

# ---- 2. uv
step="2/5 (uv)"
if [[ -z $uv ]]; then
    say "2/5 installing uv $uv_version from PyPI into its own venv $bootstrap (python3 -m venv + its pip)"
    rm -rf "$bootstrap"  # a half-made one from an interrupted run
    mkdir -p "$(dirname "$bootstrap")"
    python3 -m venv "$bootstrap"
    "$bootstrap/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$uv_version"
    uv="$bootstrap/bin/uv"
else
    say "2/5 uv: $uv ($("$uv" --version))"
fi

# ---- 3. Python 3.11
step="3/5 (Python 3.11)"
if py=$("$uv" python find 3.11 2>/dev/null); then
    say "3/5 Python 3.11: $py ($("$py" --version 2>&1))"
else
    say "3/5 no Python 3.11 here (python3 is $(python3 --version 2>&1 || echo missing)); TensorFlow 2.15 needs" \
        "3.9-3.11: installing a standalone CPython 3.11 with 'uv python install 3.11' (from GitHub)"
    "$uv" python install 3.11 ||
        die "could not get Python 3.11; install one, then run setup.sh again:" \
            "Ubuntu: sudo add-apt-repository ppa:deadsnakes/ppa && sudo apt-get install python3.11 python3.11-venv" \
            "a cluster: module load a Python 3.11 (module spider Python); or pyenv install 3.11"
fi

# ---- 4. the launcher environment
step="4/5 (.venv: uv sync --frozen)"
say "4/5 launcher environment .venv from uv.lock (uv sync --frozen)"
# --compile-bytecode: .pyc files written now, so every later start (a dry run: about 1 s) reads them even
# where PYTHONDONTWRITEBYTECODE is set or the venv is read-only
if ((with_tests)); then
    "$uv" sync --frozen --quiet --compile-bytecode
else
    "$uv" sync --frozen --quiet --no-dev --compile-bytecode
fi

# ---- 5. the engine environments
step="5/5 (engine environments)"
if ((with_engines)); then
    say "5/5 engine environments (Calamari 2 and 1) from envs/*.lock.txt"
    .venv/bin/python -m hsbcala.engines.envs cala2 cala1
else
    say "5/5 engine environments: skipped (--no-engines)"
fi
say "ready in ${SECONDS} s: .venv/bin/python train.py"
