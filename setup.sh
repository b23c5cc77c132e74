#!/usr/bin/env bash
# Set up hsbcala on a fresh machine (idempotent; a second run takes seconds):
#   - uv (from PyPI) if it is missing;
#   - as root with apt: the fonts for the synthetic demo lines (fonts-ebgaramond, fonts-blankenburg) and,
#     with --test, Slurm and munge for the Slurm integration tests;
#   - the launcher environment .venv from uv.lock (hydra, submitit, mlflow; --test adds pytest);
#   - both engine environments (Calamari 2 and 1) from envs/*.lock.txt (otherwise built on first use).
# Usage: bash setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")"
with_tests=0
[[ "${1:-}" == "--test" ]] && with_tests=1

say() { echo "setup: $*" >&2; }

if ! command -v uv >/dev/null 2>&1; then
    say "installing uv"
    python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
    export PATH="$HOME/.local/bin:$PATH"
fi

apt_packages=(fonts-ebgaramond fonts-blankenburg fontconfig)
(( with_tests )) && apt_packages+=(slurm-wlm munge)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        say "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null; }
    else
        say "warning: please install these Debian packages (as root): ${missing[*]}"
    fi
fi

if (( with_tests )); then
    uv sync --frozen --quiet
else
    uv sync --frozen --quiet --no-dev
fi
say "launcher environment ready: .venv"
.venv/bin/python -m hsbcala.engines.envs cala2 cala1
