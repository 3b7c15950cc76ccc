#!/usr/bin/env bash
# Runs the tiny synth DAG (tests/configs/tiny.yaml) on a one-node SLURM on this machine,
# through workflow/profiles/slurm-cpu and snakemake-executor-plugin-slurm, and checks that
#   1. every job went through sbatch: `sacct` (slurmdbd + MariaDB accounting) lists one
#      COMPLETED allocation per Snakemake job, the same job ids as the plugin's per-job logs;
#   2. results/synth/tables/table3.csv is byte-for-byte the one a local run
#      (`snakemake --cores 2`) of the same config writes, and so are the metrics JSON files.
#
# Needs root and Debian/Ubuntu: installs slurmctld slurmd slurm-client slurmdbd munge
# mariadb-server with apt-get when they are missing (without starting their services).
# Everything it starts (munged unless one already answers, mariadbd, slurmdbd, slurmctld,
# slurmd) runs in the foreground under this script, from configuration and state in a
# temporary directory, on ports of its own; it is stopped by process id on exit, success or
# not (SIGINT/SIGTERM included; SLURM jobs still queued are cancelled first). The one file
# outside that directory is a symbolic link /etc/slurm/slurm.conf for the jobs' srun (see
# below), removed on exit; the script stops if a slurm.conf is already there. Exits nonzero
# on any failure. Opt in from pytest with
#   IAA_SLURM_TEST=1 pytest -m cluster
#
# Environment: IAA_PYTHON  the Python with iaa, snakemake and the plugin (default: the
#                          repository's .venv, else python3 on PATH)
#              IAA_SLURM_KEEP=1  keep the temporary directory (kept anyway on failure)
#              IAA_SLURM_PORT_BASE  first of four TCP ports to use (default 26810)
set -euo pipefail

START=$(date +%s)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
if [[ -n "${IAA_PYTHON:-}" ]]; then
    PY=$IAA_PYTHON
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
    PY=$ROOT/.venv/bin/python
else
    PY=$(command -v python3)
fi
# Jobs call `iaa` and `python -m snakemake`: put the environment's bin first on PATH
# (sbatch passes this environment on to the jobs with --export=ALL).
PY_BIN=$(dirname "$PY")
export PATH="$PY_BIN:$PATH"

log() { printf '[slurm-test %4ds] %s\n' "$(($(date +%s) - START))" "$*"; }
die() {
    log "FAIL: $*"
    exit 1
}

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts munged/slurmd)"
"$PY" -c "import snakemake_executor_plugin_slurm" 2>/dev/null ||
    die "snakemake-executor-plugin-slurm missing for $PY; pip install -e '.[cluster]'"

PKGS=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
PORT_BASE=${IAA_SLURM_PORT_BASE:-26810}
CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
DB_PORT=$((PORT_BASE + 3))
CLUSTER=iaatest
PARTITION=iaa
ACCOUNT=iaa

W=$(mktemp -d /tmp/iaa-slurm.XXXXXX)
chmod 755 "$W"
mkdir -p "$W"/{etc,log,run,state,spool,db}

PIDS=()    # daemons we started, stopped in reverse order
CHILD=""   # the foreground command (snakemake), stopped first
SLURM_UP=0
ETC_LINK=0 # 1 once /etc/slurm/slurm.conf links to our configuration

stop_pid() { # pid name: SIGTERM, up to 30 s, then SIGKILL
    local pid=$1 name=$2 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    log "$name ($pid) ignored SIGTERM; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    set +e
    if [[ -n "$CHILD" ]]; then
        stop_pid "$CHILD" "snakemake"
    fi
    if ((SLURM_UP)); then
        # Jobs left over from a failed run: cancel them before their slurmd goes away.
        local ids
        mapfile -t ids < <(squeue -h -o %i 2>/dev/null)
        if ((${#ids[@]})); then
            log "cancelling leftover jobs: ${ids[*]}"
            scancel "${ids[@]}"
            for ((i = 0; i < 30; i++)); do
                [[ -z "$(squeue -h -o %i 2>/dev/null)" ]] && break
                sleep 1
            done
        fi
    fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]%%:*}" "${PIDS[i]#*:}"
    done
    if ((ETC_LINK)) && [[ "$(readlink "$ETC_CONF")" == "$SLURM_CONF" ]]; then
        rm -f "$ETC_CONF"
    fi
    if ((rc == 0)) && [[ "${IAA_SLURM_KEEP:-0}" != 1 ]]; then
        rm -rf "$W"
    else
        log "logs and results kept in $W"
    fi
    log "exit $rc after $(($(date +%s) - START)) s"
    exit "$rc"
}
trap cleanup EXIT
trap 'log "FAIL: line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

start_daemon() { # name logfile command...: runs in the foreground of a background subshell
    local name=$1 out=$2
    shift 2
    "$@" >"$out" 2>&1 &
    PIDS+=("$!:$name")
    log "started $name (pid $!)"
}

wait_for() { # seconds description command...
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 2; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        local entry
        for entry in "${PIDS[@]}"; do
            kill -0 "${entry%%:*}" 2>/dev/null || die "${entry#*:} died while waiting for $what (logs in $W/log)"
        done
        sleep 0.5
    done
    die "timed out after ${secs}s waiting for $what (logs in $W/log)"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- packages -------------------------------------------------------------------------
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    # Keep the packages' init scripts from starting services: this script starts its own.
    policy_made=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_made=1
    fi
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}") >"$W/log/apt.log" 2>&1 || {
        ((policy_made)) && rm -f /usr/sbin/policy-rc.d
        die "apt-get install failed; see $W/log/apt.log"
    }
    ((policy_made)) && rm -f /usr/sbin/policy-rc.d
fi

for port in $CTLD_PORT $SLURMD_PORT $DBD_PORT $DB_PORT; do
    port_free "$port" || die "port $port is in use; set IAA_SLURM_PORT_BASE to a free range"
done

# --- munge ------------------------------------------------------------------------------
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "using the munged already running"
else
    install -d -o munge -g munge -m 0755 /run/munge
    start_daemon munged "$W/log/munged.out" \
        setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground
    wait_for 20 "munge credentials" sh -c 'munge -n | unmunge'
fi

# --- MariaDB (for slurmdbd) -----------------------------------------------------------
DB_SOCK=$W/run/mysqld.sock
mariadb-install-db --no-defaults --user=root --datadir="$W/db" --skip-test-db \
    --auth-root-authentication-method=socket >"$W/log/mariadb-install.log" 2>&1 ||
    die "mariadb-install-db failed; see $W/log/mariadb-install.log"
start_daemon mariadbd "$W/log/mariadbd.out" \
    mariadbd --no-defaults --user=root --datadir="$W/db" --socket="$DB_SOCK" \
    --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
    --pid-file="$W/run/mysqld.pid" --log-error="$W/log/mariadb.err" \
    --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900
wait_for 60 "MariaDB" mariadb-admin --no-defaults --socket="$DB_SOCK" -u root ping
DB_PASS=iaa-$RANDOM$RANDOM
mariadb --no-defaults --socket="$DB_SOCK" -u root -e "
    CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || die "creating the slurm database user failed"

# --- SLURM configuration: one node, this machine -----------------------------------------
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
REAL_MB=$((MEM_MB * 9 / 10))
# The slurm-cpu profile asks up to 8000 MB for a synth job (pretrain).
((REAL_MB >= 8000)) || die "needs about 9 GB of memory for the synth jobs' requests (has $MEM_MB MB)"
export SLURM_CONF=$W/etc/slurm.conf
cat >"$SLURM_CONF" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$W/state
SlurmdSpoolDir=$W/spool
SlurmctldPidFile=$W/run/slurmctld.pid
SlurmdPidFile=$W/run/slurmd.pid
SlurmctldLogFile=$W/log/slurmctld.log
SlurmdLogFile=$W/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MailProg=/bin/true
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$HOST CPUs=$CPUS RealMemory=$REAL_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
# The plugin's job step (snakemake-executor-plugin-slurm-jobstep) drops every SLURM_*
# variable, SLURM_CONF included, from the environment of the `srun` it runs inside each
# job, so that srun only finds the configuration at SLURM's default path: link it there
# for the duration of the test (and refuse to touch a configuration that is already there).
ETC_CONF=/etc/slurm/slurm.conf
if [[ -L $ETC_CONF && "$(readlink "$ETC_CONF")" == /tmp/iaa-slurm.*/etc/slurm.conf && ! -e $ETC_CONF ]]; then
    rm -f "$ETC_CONF" # left behind by a run that was killed
fi
[[ -e $ETC_CONF || -L $ETC_CONF ]] &&
    die "$ETC_CONF exists: this machine has a SLURM configuration of its own; not touching it"
mkdir -p /etc/slurm
ln -s "$SLURM_CONF" "$ETC_CONF"
ETC_LINK=1
# slurmdbd reads slurmdbd.conf from the directory of $SLURM_CONF; it must be private.
cat >"$W/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$W/log/slurmdbd.log
PidFile=$W/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
chmod 600 "$W/etc/slurmdbd.conf"

start_daemon slurmdbd "$W/log/slurmdbd.out" slurmdbd -D
wait_for 60 "slurmdbd" sacctmgr -n list cluster
sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed"
sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description=iaa organization=iaa >/dev/null ||
    die "sacctmgr add account failed"
sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null || die "sacctmgr add user failed"

start_daemon slurmctld "$W/log/slurmctld.out" slurmctld -D -i
SLURM_UP=1
start_daemon slurmd "$W/log/slurmd.out" slurmd -D -N "$HOST"
node_idle() { [[ "$(sinfo -h -n "$HOST" -o %t 2>/dev/null)" == idle ]]; }
wait_for 90 "node $HOST idle in sinfo" node_idle
log "cluster up: $(sinfo -h -o '%P %D %t %c CPUs %m MB')"

# --- the same tiny DAG, locally and through SLURM ---------------------------------------
run_snakemake() { # workdir extra-args...
    local dir=$1
    shift
    mkdir -p "$dir"
    "$PY" -m snakemake --snakefile "$ROOT/Snakefile" --directory "$dir" \
        --configfile "$ROOT/tests/configs/tiny.yaml" --config "results_dir=$dir/results" \
        "$@" >"$dir/snakemake.log" 2>&1 &
    CHILD=$!
    local rc=0
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}

EXPECTED=$("$PY" -m snakemake --snakefile "$ROOT/Snakefile" --directory "$W/plan" \
    --configfile "$ROOT/tests/configs/tiny.yaml" --config "results_dir=$W/plan/results" \
    -n --cores 2 all 2>/dev/null | awk '$1 == "total" && !n {print $2; n = 1}')
[[ -n "$EXPECTED" ]] || die "could not plan the tiny DAG"
EXPECTED=$((EXPECTED - 1)) # `all` has no action and is not submitted
log "tiny DAG: $EXPECTED jobs"

log "SLURM run (--profile workflow/profiles/slurm-cpu)"
t0=$(date +%s)
SUBMIT_START=$(date +%Y-%m-%dT%H:%M:%S)
run_snakemake "$W/slurm" --profile "$ROOT/workflow/profiles/slurm-cpu" \
    --default-resources "slurm_partition=$PARTITION" "slurm_account=$ACCOUNT" \
    --slurm-status-command sacct --slurm-init-seconds-before-status-checks 2 \
    --slurm-keep-successful-logs all ||
    die "SLURM run failed; tail of $W/slurm/snakemake.log:
$(tail -40 "$W/slurm/snakemake.log")"
log "SLURM run done in $(($(date +%s) - t0)) s"

log "local run (snakemake --cores 2)"
t0=$(date +%s)
run_snakemake "$W/local" --cores 2 all ||
    die "local run failed; tail of $W/local/snakemake.log:
$(tail -30 "$W/local/snakemake.log")"
log "local run done in $(($(date +%s) - t0)) s"

# --- evidence that the jobs went through SLURM ------------------------------------------
# The plugin keeps one log per job, named by SLURM job id.
mapfile -t LOG_IDS < <(find "$W/slurm/.snakemake/slurm_logs" -name '*.log' -printf '%f\n' |
    sed 's/\.log$//' | sort -n)
((${#LOG_IDS[@]} == EXPECTED)) ||
    die "expected $EXPECTED per-job SLURM logs, found ${#LOG_IDS[@]}"
# Accounting: records reach slurmdbd shortly after the jobs end.
sacct_rows() {
    sacct -X -n -P -a --starttime "$SUBMIT_START" -o JobID,JobName,Partition,Account,State,ExitCode,Comment,Submit,Start,End
}
for ((i = 0; i < 30; i++)); do
    n=$(sacct_rows | awk -F'|' '$5 == "COMPLETED"' | wc -l)
    ((n >= EXPECTED)) && break
    sleep 1
done
sacct_rows >"$W/sacct.txt"
log "sacct lists $(wc -l <"$W/sacct.txt") jobs; first and last:"
sacct -X -a --starttime "$SUBMIT_START" -o JobID,JobName%36,Partition,Account,State,ExitCode,Comment%40 |
    sed -n '1,5p;$p'
mapfile -t ACCT_IDS < <(awk -F'|' '$5 == "COMPLETED" {print $1}' "$W/sacct.txt" | sort -n)
[[ "${ACCT_IDS[*]}" == "${LOG_IDS[*]}" ]] ||
    die "sacct's COMPLETED job ids differ from the plugin's job logs:
sacct: ${ACCT_IDS[*]}
logs:  ${LOG_IDS[*]}"
awk -F'|' -v p="$PARTITION" -v a="$ACCOUNT" '$3 != p || $4 != a {bad = 1} END {exit bad}' \
    "$W/sacct.txt" || die "a job ran outside partition $PARTITION / account $ACCOUNT"
n_rules=$(awk -F'|' '{split($7, c, "_wildcards"); print c[1]}' "$W/sacct.txt" | sort -u | wc -l)
log "sacct: $EXPECTED COMPLETED jobs, ids $(printf '%s' "${ACCT_IDS[0]}")..${ACCT_IDS[-1]}," \
    "same as the plugin's logs; $n_rules rules in the job comments"
n_alloc=$(grep -c "sched: Allocate JobId" "$W/log/slurmctld.log" || true)
log "slurmctld log: $n_alloc 'sched: Allocate JobId' lines"

# --- the table is the local run's ------------------------------------------------------
LOCAL_CSV=$W/local/results/synth/tables/table3.csv
SLURM_CSV=$W/slurm/results/synth/tables/table3.csv
if ! cmp -s "$LOCAL_CSV" "$SLURM_CSV"; then
    diff "$LOCAL_CSV" "$SLURM_CSV" || true
    die "table3.csv from the SLURM run differs from the local run's"
fi
log "table3.csv identical to the local run's ($(wc -l <"$SLURM_CSV") lines)"
# The table rounds to 4 decimals; the per-run metrics it is built from are full precision.
# (Training is deterministic for a given seed and thread count: the models and embeddings
# hold the same values too, though their files differ by the absolute paths they record.)
diff -r "$W/local/results/synth/metrics" "$W/slurm/results/synth/metrics" >"$W/metrics.diff" ||
    die "metrics JSON from the SLURM run differ from the local run's: $(head -20 "$W/metrics.diff")"
log "all $(find "$W/slurm/results/synth/metrics" -name '*.json' | wc -l) metrics JSON files identical too"
log "PASS in $(($(date +%s) - START)) s"
