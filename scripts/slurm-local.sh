#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for tests and CI.
#
#   scripts/slurm-local.sh install   apt-get install slurm-wlm + munge (if missing)
#   scripts/slurm-local.sh up        start munged, slurmctld, slurmd; wait until the node is idle
#   scripts/slurm-local.sh down      cancel jobs, stop the daemons this script started
#   scripts/slurm-local.sh status    exit 0 when the cluster answers and the node is usable
#
# Everything Slurm writes (state, spool, logs, pid files) lives under the state directory
# ${HSBCALA_SLURM_DIR:-/var/tmp/hsbcala-slurm}. The only file written outside of it is
# /etc/slurm/slurm.conf (the path every Slurm client reads by default, so plain `sinfo`, `sbatch`
# and submitit work without SLURM_CONF); it carries a marker line, and a slurm.conf that this
# script did not write is never overwritten.
#
# Cluster shape: one node named `hostname -s` (NodeAddr 127.0.0.1) with its real CPU topology
# (from `slurmd -C`) and RealMemory a bit below the machine's memory, one partition `debug`.
# Runs as root without systemd and without cgroups (containers, CI VMs).
#
# Environment: HSBCALA_SLURM_DIR (state dir), HSBCALA_SLURM_UP_TIMEOUT (seconds `up` waits for
# the node, default 30), HSBCALA_SLURM_CRED_EXPIRE (see AuthInfo below, default 10).
set -euo pipefail

PROG="slurm-local"
STATE_DIR="${HSBCALA_SLURM_DIR:-/var/tmp/hsbcala-slurm}"
case "$STATE_DIR" in /*) ;; *) STATE_DIR="$PWD/$STATE_DIR" ;; esac
RUN_DIR="$STATE_DIR/run"
LOG_DIR="$STATE_DIR/log"
SLURM_CONF_FILE="/etc/slurm/slurm.conf"
MARKER="# Managed by hsbcala scripts/slurm-local.sh"
PARTITION="debug"
UP_TIMEOUT_S="${HSBCALA_SLURM_UP_TIMEOUT:-30}"
CRED_EXPIRE_S="${HSBCALA_SLURM_CRED_EXPIRE:-10}"
MUNGE_SOCKET="/run/munge/munge.socket.2"  # munge's and Slurm's default; both sides must agree
HOST="$(hostname -s)"

die() { echo "$PROG: error: $*" >&2; exit 1; }
info() { echo "$PROG: $*"; }
need_root() { [[ "$(id -u)" == 0 ]] || die "not root: cannot $1 Slurm"; }
have() { command -v "$1" >/dev/null 2>&1; }
slurm_version() { dpkg-query -W -f='slurm-wlm ${Version}' slurm-wlm 2>/dev/null || sinfo --version; }

installed() {
  have slurmctld && have slurmd && have sinfo && have sbatch && have scontrol \
    && have munged && have munge && have unmunge && have mungekey
}

# --- processes -------------------------------------------------------------------------------
# pid_of NAME FILE: print the pid in FILE if that process is alive and really is NAME.
pid_of() {
  local name=$1 file=$2 pid comm
  [[ -s "$file" ]] || return 1
  pid="$(tr -dc '0-9' <"$file")"
  [[ -n "$pid" && -r "/proc/$pid/comm" ]] || return 1
  comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
  [[ "$comm" == "$name"* ]] || return 1
  echo "$pid"
}

# stop_pidfile NAME FILE SECONDS: SIGTERM, wait, then SIGKILL the daemon in FILE (if ours).
stop_pidfile() {
  local name=$1 file=$2 wait_s=$3 pid i
  if pid="$(pid_of "$name" "$file")"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < wait_s * 10; i++)); do
      [[ -d "/proc/$pid" ]] || break
      sleep 0.1
    done
    if [[ -d "/proc/$pid" ]]; then
      info "$name (pid $pid) ignored SIGTERM for ${wait_s}s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
    info "stopped $name (pid $pid)"
  fi
  rm -f "$file"
}

# our_stepds: pids of the slurmstepd processes (one per job step; they outlive slurmd by design)
# that belong to this cluster. Their environment is wiped, but they keep our slurmd log open.
our_stepds() {
  local p
  for p in $(pgrep -x slurmstepd || true); do
    if [[ "$(readlink -f /proc/"$p"/fd/* 2>/dev/null)" == *"$LOG_DIR/slurmd.log"* ]]; then
      echo "$p"
    fi
  done
}

# tree_pids PID: PID and all its descendants.
tree_pids() {
  local c
  echo "$1"
  for c in $(pgrep -P "$1" || true); do tree_pids "$c"; done
}

# --- health checks ---------------------------------------------------------------------------
munge_ok() { munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }

# node_state: the node's short state as sinfo prints it (idle, mix, alloc, down*, drain, unk*...).
node_state() { sinfo -h -p "$PARTITION" -n "$HOST" -o %t 2>/dev/null | head -n1; }

# Usable = the controller answers, the node accepts jobs, and the local slurmd answers (slurmctld
# notices a dead slurmd only after SlurmdTimeout). A state suffix such as '*' (not responding),
# '~' (powered off), '#', '!', '%' or '$' means the node does not accept jobs.
slurm_ok() {
  local st
  st="$(node_state)" || return 1
  [[ "$st" =~ ^(idle|mix|mixed|alloc|allocated|comp|completing)$ ]] || return 1
  scontrol show slurmd >/dev/null 2>&1
}

conf_is_ours() { [[ ! -e "$SLURM_CONF_FILE" ]] || grep -qF "$MARKER" "$SLURM_CONF_FILE"; }

# --- install ---------------------------------------------------------------------------------
cmd_install() {
  if installed; then
    info "slurm-wlm and munge already installed ($(slurm_version))"
    return 0
  fi
  need_root install
  have apt-get || die "apt-get not found: install slurm-wlm and munge by hand"
  # On a machine with systemd, the packages' postinst would start munge/slurmd/slurmctld at once
  # (slurmctld without a config, occupying the ports). Deny service starts while installing, the
  # Debian way, unless a policy-rc.d already exists (container images ship one).
  local made_policy="" pkgs=(slurm-wlm munge) rc=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${pkgs[@]}" || rc=$?
  if [[ $rc != 0 ]]; then
    # A fresh machine may have empty package lists: update once and retry.
    info "apt-get install failed (rc=$rc); running apt-get update and retrying"
    rc=0
    { apt-get update -q && apt-get install -y -q --no-install-recommends "${pkgs[@]}"; } || rc=$?
  fi
  [[ -n "$made_policy" ]] && rm -f /usr/sbin/policy-rc.d
  [[ $rc == 0 ]] || die "apt-get install ${pkgs[*]} failed (rc=$rc)"
  installed || die "slurm-wlm/munge installed but their commands are missing from PATH"
  info "installed $(slurm_version)"
}

# --- up --------------------------------------------------------------------------------------
start_munge() {
  if munge_ok; then
    return 0  # a munged already serves the default socket (ours or the system's): reuse it
  fi
  stop_pidfile munged "$RUN_DIR/munged.pid" 5  # a munged of ours that no longer answers
  local key=/etc/munge/munge.key i
  if [[ ! -s "$key" ]]; then
    info "creating munge key $key"
    mkdir -p /etc/munge
    mungekey --create --keyfile="$key" --force
  fi
  if id munge >/dev/null 2>&1; then
    chown munge:munge /etc/munge "$key"
  fi
  chmod 700 /etc/munge
  chmod 400 "$key"
  mkdir -p /run/munge /var/lib/munge
  chmod 755 /run/munge
  # --force: otherwise munged refuses to run as root with a key and dirs owned by user munge.
  munged --force --socket="$MUNGE_SOCKET" --key-file="$key" \
    --pid-file="$RUN_DIR/munged.pid" --log-file="$LOG_DIR/munged.log" \
    || die "munged failed to start: see $LOG_DIR/munged.log"
  for ((i = 0; i < 50; i++)); do
    if munge_ok; then
      info "started munged (pid $(cat "$RUN_DIR/munged.pid" 2>/dev/null))"
      return 0
    fi
    sleep 0.1
  done
  die "munged started but does not answer on $MUNGE_SOCKET: see $LOG_DIR/munged.log"
}

# node_line: the NodeName line. CPU topology from `slurmd -C` (= what slurmd reports when it
# registers; a mismatch would drain the node). RealMemory a bit below the machine's memory:
# slurmd drains a node whose configured RealMemory is above what it finds.
node_line() {
  local hw cpus topo="" total_mb margin
  hw="$(slurmd -C 2>/dev/null | head -n1 || true)"
  total_mb="$(free -m | awk '/^Mem:/ {print $2}')"
  margin=$((total_mb / 20))            # 5 % ...
  ((margin < 256)) && margin=256       # ... but at least 256 MiB
  if [[ "$hw" =~ CPUs=([0-9]+)\ (Boards=[0-9]+\ SocketsPerBoard=[0-9]+\ CoresPerSocket=[0-9]+\ ThreadsPerCore=[0-9]+) ]]; then
    cpus="${BASH_REMATCH[1]}"
    topo=" ${BASH_REMATCH[2]}"
  else
    cpus="$(nproc)"
  fi
  echo "NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus$topo RealMemory=$((total_mb - margin)) State=UNKNOWN"
}

write_conf() {
  mkdir -p "$STATE_DIR/etc" "$STATE_DIR/spool/slurmctld" "$STATE_DIR/spool/slurmd" "$RUN_DIR" "$LOG_DIR"
  local conf="$STATE_DIR/etc/slurm.conf"
  cat >"$conf" <<EOF
$MARKER (state dir $STATE_DIR).
# Rewritten by every 'up' that has to start Slurm; edits here are lost.
ClusterName=hsbcala
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job must wait before it may start again (default 120 s).
# submitit requeues itself on timeout, so keep it short: a local machine needs no long credentials.
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=$CRED_EXPIRE_S

# No cgroups in this container: track processes through /proc, no task binding/confinement.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none

# Two 1-cpu jobs side by side: cores and memory are the consumables. Without a default memory per
# CPU, a job without --mem would be given the whole node's memory and block every other job.
# (Memory is only booked, not enforced: that would need cgroups or OverMemoryKill.)
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
# Pending jobs that no event wakes (a requeued job once cred_expire has passed) are looked at by
# the main loop every 60 s and by backfill every 30 s by default: poll more often.
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2

# submitit asks for --signal=USR2@<delay> and, on that signal, checkpoints and runs
# 'scontrol requeue'. Note slurmctld checks time limits only every 30 s and sends the warning
# signal up to 30 s early, so a job with --time=1 gets it somewhere in [29, 59] s for a 1 s delay.
JobRequeue=1
ReturnToService=2
SlurmctldTimeout=10
SlurmdTimeout=30
KillWait=5
MinJobAge=30
InactiveLimit=0
Waittime=0
MailProg=/bin/true

# Accounting: only the per-job gatherer (sstat, exit summaries). There is no slurmdbd, so 'sacct'
# answers "Slurm accounting storage is disabled" (submitit tolerates that: it reads its own result
# files). Finished jobs are appended to a text file instead, readable with 'sacct -c'.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.txt

SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
StateSaveLocation=$STATE_DIR/spool/slurmctld
SlurmdSpoolDir=$STATE_DIR/spool/slurmd
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

$(node_line)
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
  conf_is_ours || die "$SLURM_CONF_FILE exists and was not written by this script: refusing to overwrite it"
  mkdir -p "$(dirname "$SLURM_CONF_FILE")"
  install -m 644 "$conf" "$SLURM_CONF_FILE"
}

wait_ready() {
  local deadline=$((SECONDS + UP_TIMEOUT_S)) st resumed=""
  while ((SECONDS < deadline)); do
    slurm_ok && return 0
    st="$(node_state || true)"
    # A node left DOWN/DRAINED by an earlier run that ReturnToService=2 did not bring back: resume once.
    if [[ -z "$resumed" && "$st" =~ ^(down|drain|drng|fail) ]]; then
      scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
      resumed=1
    fi
    sleep 0.5
  done
  return 1
}

cmd_up() {
  need_root start
  installed || die "slurm-wlm/munge not installed: run 'scripts/slurm-local.sh install' first"
  if munge_ok && [[ -e "$SLURM_CONF_FILE" ]] && conf_is_ours && slurm_ok; then
    info "already up: node $HOST $(node_state) in partition $PARTITION"
    return 0
  fi
  conf_is_ours || die "$SLURM_CONF_FILE exists and was not written by this script: refusing to overwrite it"
  local t0=$SECONDS
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  start_munge
  # Something is missing or unhealthy: (re)start our Slurm daemons with a fresh config.
  stop_pidfile slurmd "$RUN_DIR/slurmd.pid" 10
  stop_pidfile slurmctld "$RUN_DIR/slurmctld.pid" 15
  write_conf
  # -i: ignore unreadable state files of an earlier run instead of refusing to start.
  slurmctld -i -f "$SLURM_CONF_FILE" || die "slurmctld failed to start: see $LOG_DIR/slurmctld.log"
  slurmd -f "$SLURM_CONF_FILE" || die "slurmd failed to start: see $LOG_DIR/slurmd.log"
  if ! wait_ready; then
    echo "$PROG: last lines of $LOG_DIR/slurmctld.log:" >&2
    tail -n 5 "$LOG_DIR/slurmctld.log" >&2 2>/dev/null || true
    echo "$PROG: last lines of $LOG_DIR/slurmd.log:" >&2
    tail -n 5 "$LOG_DIR/slurmd.log" >&2 2>/dev/null || true
    die "Slurm not ready after ${UP_TIMEOUT_S}s (node $HOST state: '$(node_state || true)')"
  fi
  info "up in $((SECONDS - t0))s: node $HOST $(node_state) in partition $PARTITION, state dir $STATE_DIR"
}

# --- down ------------------------------------------------------------------------------------
cmd_down() {
  need_root stop
  local ids pids i
  if pid_of slurmctld "$RUN_DIR/slurmctld.pid" >/dev/null; then
    # Cancel every job first: the job steps would otherwise keep running without slurmd.
    ids="$(squeue -h -o %A 2>/dev/null | tr '\n' ' ' || true)"
    if [[ -n "${ids// /}" ]]; then
      info "cancelling jobs: $ids"
      # shellcheck disable=SC2086
      scancel $ids 2>/dev/null || true
    fi
  fi
  # Give the job steps time to end (KillWait=5), then kill what is left of them.
  for ((i = 0; i < 100; i++)); do
    [[ -z "$(our_stepds)" ]] && break
    sleep 0.1
  done
  pids=""
  for i in $(our_stepds); do pids+=" $(tree_pids "$i" | tr '\n' ' ')"; done
  if [[ -n "${pids// /}" ]]; then
    info "killing leftover job processes:$pids"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
  fi
  stop_pidfile slurmd "$RUN_DIR/slurmd.pid" 10
  stop_pidfile slurmctld "$RUN_DIR/slurmctld.pid" 15
  stop_pidfile munged "$RUN_DIR/munged.pid" 5
  info "down (state dir $STATE_DIR kept)"
}

# --- status ----------------------------------------------------------------------------------
cmd_status() {
  if ! installed; then
    echo "$PROG: down: slurm-wlm/munge not installed"
    return 1
  fi
  if ! munge_ok; then
    echo "$PROG: down: munged does not answer on $MUNGE_SOCKET"
    return 1
  fi
  if ! scontrol ping >/dev/null 2>&1; then
    echo "$PROG: down: slurmctld does not answer"
    return 1
  fi
  if ! scontrol show slurmd >/dev/null 2>&1; then
    echo "$PROG: down: slurmd on $HOST does not answer"
    return 1
  fi
  if ! slurm_ok; then
    echo "$PROG: down: node $HOST not usable (state: '$(node_state || true)')"
    return 1
  fi
  echo "$PROG: up: node $HOST $(node_state) in partition $PARTITION, state dir $STATE_DIR"
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 {install|up|down|status}" >&2
    exit 2
    ;;
esac
