#!/usr/bin/env bash
# silica-crond under real systemd: boots a minimal Debian tree (debootstrap) with
# `systemd-nspawn --boot`, installs the binaries and systemd/silica-crond.service as the README
# says, and checks what an operator relies on:
#   - `systemctl start` returns once the daemon is ready (the socket answers at once);
#   - the client works inside; a manual run and a scheduled run complete, and jobs see none of
#     systemd's plumbing (NOTIFY_SOCKET, WATCHDOG_*);
#   - `systemctl reload` (good and bad file) and SIGHUP;
#   - a healthy daemon is never restarted by the watchdog;
#   - `systemctl stop` with a running job tree (a setsid grandchild ignoring SIGTERM included)
#     leaves nothing running, and the run is recorded as interrupted;
#   - a frozen daemon (SIGSTOP) is killed by the watchdog and restarted.
#
# Needs root, systemd-nspawn and debootstrap (installed with apt-get when missing), and network
# access to a Debian mirror the first time (the tree is cached). Takes about 2 minutes, plus
# about 1 minute for debootstrap on the first run.
#
# Environment:
#   SILICA_CRON_E2E_BIN_DIR  binaries to install (default target/debug; build them first)
#   SILICA_CRON_E2E_CACHE    where the Debian tree is kept (default /var/tmp/silica-cron-e2e)
#   SILICA_CRON_E2E_MIRROR   Debian mirror (default http://deb.debian.org/debian)
#   SILICA_CRON_E2E_KEEP=1   keep the run directory (logs) even on success
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
bin_dir=${SILICA_CRON_E2E_BIN_DIR:-$repo/target/debug}
cache=${SILICA_CRON_E2E_CACHE:-/var/tmp/silica-cron-e2e}
mirror=${SILICA_CRON_E2E_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
# minbase plus systemd, procps (ps) and pam_systemd (user managers need it).
packages=systemd,systemd-sysv,dbus,procps,libpam-systemd
rootfs=$cache/rootfs-$suite-$(printf %s "$packages" | cksum | cut -d' ' -f1)
machine=silica-e2e-$$
started=$SECONDS

say() { printf '==> %s\n' "$*"; }
die() {
    printf 'FAILED: %s\n' "$*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root (systemd-nspawn boots a container)"
for b in silica-crond silica-cron; do
    [ -x "$bin_dir/$b" ] || die "$bin_dir/$b is missing: run cargo build --workspace --bins"
done

need=()
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v nsenter >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The Debian tree, built once.
if [ ! -e "$rootfs/.complete" ]; then
    say "debootstrap $suite into $rootfs (once)"
    mkdir -p "$cache"
    rm -rf "$rootfs.new"
    debootstrap --variant=minbase --include="$packages" \
        "$suite" "$rootfs.new" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
        die "debootstrap failed; see $cache/debootstrap.log"
    touch "$rootfs.new/.complete"
    mv "$rootfs.new" "$rootfs"
fi

run=$(mktemp -d /tmp/silica-e2e.XXXXXX)
stage=$run/stage
mkdir -p "$stage/bin"
cp "$bin_dir/silica-crond" "$bin_dir/silica-cron" "$stage/bin/"
cp systemd/silica-crond.service systemd/sysusers.d/silica-cron.conf "$stage/"
mkdir -p "$stage/user"
cp systemd/user/silica-crond.service "$stage/user/"

cat >"$stage/fake-agent" <<'EOF'
#!/bin/sh
# Stands in for the agent: $1 is the prompt's text, $2 the job's name.
case "$1" in
env) env | sort ;;
tree)
    # A child, and a setsid grandchild that ignores SIGTERM: stopping must end them all.
    sleep 4242 &
    setsid sh -c 'trap "" TERM; sleep 4343' &
    echo "tree started"
    wait
    ;;
*) echo "ran: $1 (job $2)" ;;
esac
EOF
chmod 755 "$stage/fake-agent"

cat >"$stage/config.toml" <<'EOF'
# The same paths as the unit's environment, so a client run by hand finds the daemon.
database = "/var/lib/silica-cron/silica-cron.db"
socket = "/run/silica-cron/silica-crond.sock"
runner = ["/usr/local/bin/fake-agent", "{prompt}", "{job_name}"]
kill_grace = 3
EOF

# A short watchdog and restart delay, so the freeze test takes seconds.
cat >"$stage/e2e.conf" <<'EOF'
[Service]
WatchdogSec=3s
RestartSec=1s
EOF

# On a host without systemd (a VM or container whose init is something else) nspawn cannot ask
# for a scope: it runs in a cgroup of its own made here (--keep-unit), not at the host's root.
cgroups=()
nspawn_args=(--register=no)
if [ ! -d /run/systemd/system ]; then
    for h in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do
        if [ -e "$h/cgroup.procs" ] && [ -w "$h" ]; then
            mkdir -p "$h/$machine"
            cgroups+=("$h/$machine")
        fi
        # On a pure cgroup v2 host /sys/fs/cgroup is the only hierarchy.
        [ "$h" = /sys/fs/cgroup ] && [ ${#cgroups[@]} -gt 0 ] && break
    done
    nspawn_args+=(--keep-unit)
fi

nspawn_pid=
leader=
# Waits up to $2 tenths of a second for process $1 to end.
gone() {
    for _ in $(seq "$2"); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    return 1
}
cleanup() {
    local rc=$?
    if [ -n "$leader" ] && kill -0 "$leader" 2>/dev/null; then
        nsenter -t "$leader" -a journalctl --no-pager -o short-monotonic >"$run/journal.txt" 2>&1 || true
    fi
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        # SIGTERM makes nspawn halt the container cleanly; a second one ends it at once.
        # (SIGKILL would orphan the container's processes instead.)
        kill -TERM "$nspawn_pid"
        gone "$nspawn_pid" 300 || { kill -TERM "$nspawn_pid"; gone "$nspawn_pid" 100; } || true
        wait "$nspawn_pid" 2>/dev/null || true
    fi
    # Anything still in the cgroups made here was started by this run.
    for c in "${cgroups[@]}"; do
        [ -d "$c" ] || continue
        find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r pid; do
            kill -KILL "$pid" 2>/dev/null || true
        done
        sleep 0.2
        find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    if [ $rc -eq 0 ] && [ "${SILICA_CRON_E2E_KEEP:-}" != 1 ]; then
        rm -rf "$run"
    else
        echo "logs kept in $run" >&2
    fi
}
trap cleanup EXIT

say "booting $rootfs with systemd-nspawn"
# --volatile=overlay: the cached tree stays pristine; every write goes to a tmpfs overlay.
(
    for c in "${cgroups[@]}"; do echo "$BASHPID" >"$c/cgroup.procs"; done
    exec systemd-nspawn -D "$rootfs" -M "$machine" --boot --volatile=overlay \
        --console=pipe "${nspawn_args[@]}" --bind-ro="$stage:/mnt/silica"
) >"$run/nspawn.log" 2>&1 &
nspawn_pid=$!

# The container's init is nspawn's child once it has become systemd (before that, the child is
# nspawn's own helper).
for _ in $(seq 300); do
    leader=$(cat /proc/"$nspawn_pid"/task/*/children 2>/dev/null | awk '{print $1; exit}')
    [ -n "$leader" ] && [ "$(cat /proc/"$leader"/comm 2>/dev/null)" = systemd ] &&
        [ -S /proc/"$leader"/root/run/systemd/private ] && break
    leader=
    kill -0 "$nspawn_pid" 2>/dev/null || die "systemd-nspawn exited: $(cat "$run/nspawn.log")"
    sleep 0.1
done
[ -n "$leader" ] || die "no container init after 30 s: $(cat "$run/nspawn.log")"

# Runs a command inside the container, with a plain environment.
ctr() {
    nsenter -t "$leader" -a -r -w env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"
}
# The client as the service's user (the daemon admits only its own uid).
client() { ctr setpriv --reuid=silica-cron --regid=silica-cron --clear-groups silica-cron "$@"; }
prop() { ctr systemctl show -p "$1" --value silica-crond.service; }
journal() { ctr journalctl -u silica-crond.service --no-pager -o cat "$@"; }
diagnose() {
    ctr systemctl status silica-crond.service --no-pager -l || true
    journal -n 100 || true
}
fail() {
    printf 'FAILED: %s\n' "$*" >&2
    diagnose >&2
    exit 1
}
# Waits up to $1 seconds for a command to succeed.
until_ok() {
    local limit=$1
    shift
    local end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.2
    done
}

state=$(ctr timeout 60 systemctl is-system-running --wait || true)
case "$state" in
running | degraded) ;;
*) die "the container did not boot (state: ${state:-none}): $(cat "$run/nspawn.log")" ;;
esac
say "container booted ($state) in $((SECONDS - started)) s"

say "installing the binaries, the unit, the user and the configuration"
ctr install -m 755 /mnt/silica/bin/silica-crond /mnt/silica/bin/silica-cron /mnt/silica/fake-agent /usr/local/bin/
ctr install -m 644 /mnt/silica/silica-crond.service /etc/systemd/system/
ctr install -D -m 644 /mnt/silica/silica-cron.conf /etc/sysusers.d/silica-cron.conf
ctr install -D -m 644 /mnt/silica/config.toml /etc/silica-cron/config.toml
ctr systemd-sysusers
ctr mkdir -p /home/probe
out=$(ctr systemd-analyze verify silica-crond.service 2>&1) || true
[ -z "$out" ] || fail "systemd-analyze verify inside the container: $out"
ctr install -D -m 644 /mnt/silica/e2e.conf /etc/systemd/system/silica-crond.service.d/e2e.conf
ctr systemctl daemon-reload

say "systemctl start returns once the daemon is ready"
ctr systemctl start silica-crond.service || fail "systemctl start failed"
# No retry: Type=notify means the socket answers as soon as start has returned.
status=$(client status) || fail "silica-cron status right after start: $status"
grep -q '^scheduler: *running' <<<"$status" || fail "status: $status"
[ "$(prop ActiveState)/$(prop SubState)" = active/running ] || fail "not active/running"
[ "$(prop StatusText)" = "scheduler: running" ] || fail "StatusText: $(prop StatusText)"
main_pid=$(prop MainPID)
echo "$status" | sed 's/^/    /'
# The sandbox is in force (nspawn could have refused parts of it silently).
proc_status=$(ctr cat /proc/"$main_pid"/status)
grep -q '^NoNewPrivs:[[:space:]]*1' <<<"$proc_status" || fail "NoNewPrivs is not set"
grep -q '^Seccomp:[[:space:]]*2' <<<"$proc_status" || fail "no seccomp filter"
grep -q '^CapEff:[[:space:]]*0*$' <<<"$proc_status" || fail "the daemon has capabilities"
ctr nsenter -t "$main_pid" -m sh -c '! touch /usr/.silica-e2e 2>/dev/null' || fail "/usr is writable in the sandbox"
ctr nsenter -t "$main_pid" -m sh -c '! ls /home/probe 2>/dev/null' || fail "/home is visible in the sandbox"

say "a manual run completes, and jobs see none of systemd's plumbing"
client prompts add env env >/dev/null
out=$(client prompts run env --wait) || fail "manual run: $out"
grep -q '^SILICA_CRON_PROMPT=env$' <<<"$out" || fail "the run's output: $out"
grep -q '^USER=silica-cron$' <<<"$out" || fail "the job did not run as silica-cron: $out"
if grep -E '^(NOTIFY_SOCKET|WATCHDOG_USEC|WATCHDOG_PID|INVOCATION_ID|LISTEN_)' <<<"$out"; then
    fail "a job saw the service manager's variables"
fi

say "a scheduled job fires (within the next minute)"
client prompts add hello hello >/dev/null
client jobs add every --prompt hello --cron '* * * * *' >/dev/null

say "systemctl reload: a good file, a bad file (kept running), SIGHUP"
ctr systemctl reload silica-crond.service || fail "systemctl reload failed"
until_ok 10 ctr sh -c "journalctl -u silica-crond.service -o cat | grep -q 'configuration reloaded'" ||
    fail "no 'configuration reloaded' in the journal"
ctr cp /etc/silica-cron/config.toml /etc/silica-cron/config.good
ctr sh -c 'echo "max_concurrent_runs = 0" >> /etc/silica-cron/config.toml'
if ctr systemctl reload silica-crond.service 2>"$run/bad-reload.err"; then
    fail "systemctl reload accepted a bad configuration file"
fi
[ "$(prop ActiveState)" = active ] || fail "a bad reload stopped the daemon"
ctr systemctl kill --kill-whom=main -s HUP silica-crond.service
until_ok 10 ctr sh -c "[ \"\$(systemctl show -p StatusText --value silica-crond)\" != 'scheduler: running' ]" ||
    fail "SIGHUP with a bad file: the status line does not say the reload failed"
echo "    after SIGHUP with a bad file: $(prop StatusText)"
ctr mv /etc/silica-cron/config.good /etc/silica-cron/config.toml
ctr systemctl kill --kill-whom=main -s HUP silica-crond.service
until_ok 10 ctr sh -c "[ \"\$(systemctl show -p StatusText --value silica-crond)\" = 'scheduler: running' ]" ||
    fail "SIGHUP with the good file did not restore the status"
[ "$(prop MainPID)" = "$main_pid" ] || fail "reloads restarted the daemon"

until_ok 75 ctr sh -c "setpriv --reuid=silica-cron --regid=silica-cron --clear-groups silica-cron executions list --job every | grep -q completed" ||
    fail "the every-minute job did not complete a run within 75 s: $(client executions list)"
echo "    $(client executions list --job every | sed -n 2p)"
[ "$(prop NRestarts)" = 0 ] && [ "$(prop MainPID)" = "$main_pid" ] ||
    fail "the watchdog restarted a healthy daemon (NRestarts=$(prop NRestarts))"
echo "    the daemon ran $((SECONDS - started)) s in, WatchdogSec=3s, never restarted"

say "systemctl stop with a running job tree leaves nothing running"
client prompts add tree tree >/dev/null
run_id=$(client prompts run tree | grep -o '[0-9]\+' | head -n1)
until_ok 10 ctr sh -c 'ps -eo args | grep -q "^sleep 4343" && ps -eo args | grep -q "^sleep 4242"' ||
    fail "the job tree did not start: $(ctr ps -eo pid,ppid,args)"
t0=$SECONDS
ctr systemctl stop silica-crond.service || fail "systemctl stop failed"
echo "    stopped in $((SECONDS - t0)) s"
if ctr ps -eo pid,args | grep -E 'sleep 4[23]4[23]|silica-crond'; then
    fail "processes left after stop"
fi
[ "$(prop Result)" = success ] || fail "stop result: $(prop Result)"
# (The journal is read whole first: with pipefail, grep leaving early would fail the pipe.)
if grep -E 'Killing process|remains running|State .* timed out' <<<"$(journal)"; then
    fail "systemd had to kill what the daemon should have stopped"
fi
ctr systemctl start silica-crond.service || fail "restart after stop failed"
shown=$(client executions show "$run_id") || fail "executions show $run_id: $shown"
grep -q interrupted <<<"$shown" || fail "the stopped run is not recorded as interrupted: $shown"

say "a frozen daemon is killed by the watchdog and restarted"
frozen=$(prop MainPID)
restarts=$(prop NRestarts)
ctr kill -STOP "$frozen"
t0=$SECONDS
until_ok 30 ctr sh -c "pid=\$(systemctl show -p MainPID --value silica-crond); [ \"\$pid\" != 0 ] && [ \"\$pid\" != $frozen ] && [ \"\$(systemctl show -p SubState --value silica-crond)\" = running ]" ||
    fail "no restart within 30 s of the freeze"
echo "    restarted $((SECONDS - t0)) s after the freeze"
grep -q 'Watchdog timeout' <<<"$(journal)" || fail "the journal does not show a watchdog timeout"
[ "$(prop NRestarts)" -gt "$restarts" ] || fail "NRestarts did not grow"
ctr sh -c "! kill -0 $frozen 2>/dev/null" || fail "the frozen daemon ($frozen) still exists"
client status >/dev/null || fail "status after the watchdog restart"

ctr systemctl stop silica-crond.service

say "the user unit under a user manager"
ctr useradd --create-home tester
uid=$(ctr id -u tester)
ctr install -D -m 644 /mnt/silica/user/silica-crond.service /etc/systemd/user/silica-crond.service
ctr loginctl enable-linger tester
until_ok 20 ctr test -S "/run/user/$uid/systemd/private" || fail "no user manager for tester"
as_tester() {
    ctr setpriv --reuid=tester --regid=tester --init-groups env HOME=/home/tester \
        XDG_RUNTIME_DIR="/run/user/$uid" SILICA_CRON_SOCKET="/run/user/$uid/silica-cron/silica-crond.sock" "$@"
}
as_tester systemctl --user start silica-crond.service || fail "systemctl --user start failed"
status=$(as_tester silica-cron status) || fail "silica-cron status (user unit): $status"
grep -q '^scheduler: *running' <<<"$status" || fail "status (user unit): $status"
[ "$(as_tester systemctl --user show -p StatusText --value silica-crond)" = "scheduler: running" ] ||
    fail "user unit StatusText"
as_tester silica-cron prompts add hi hi >/dev/null
out=$(as_tester silica-cron prompts run hi --wait) || fail "a run under the user unit: $out"
as_tester systemctl --user reload silica-crond.service || fail "systemctl --user reload failed"
as_tester systemctl --user stop silica-crond.service || fail "systemctl --user stop failed"
echo "    $(grep '^database' <<<"$status")"

say "all checks passed in $((SECONDS - started)) s"
