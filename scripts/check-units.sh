#!/usr/bin/env bash
# Lints the systemd units.
#  - `systemd-analyze verify` must print nothing. It exits 0 on unknown keys and misspelt
#    directives (it only warns), so any output at all is a failure here.
#  - `systemd-analyze security --offline=true`: the exposure score must not exceed the
#    threshold (README, "Installing as a service", records the current scores).
# ExecStart= paths must exist for verify, so the units are checked in a private mount
# namespace where /usr/local/bin holds stand-ins for the two binaries: nothing on the host
# changes. Needs root, or unprivileged user namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

# Exposure thresholds (0 = fully locked down, 10 = no sandbox). Raise them only with a reason
# written next to the directive that costs it.
system_max=${SILICA_CRON_SYSTEM_EXPOSURE_MAX:-1.5}
user_max=${SILICA_CRON_USER_EXPOSURE_MAX:-7.0}

system_unit=systemd/silica-crond.service
user_unit=systemd/user/silica-crond.service

command -v systemd-analyze >/dev/null ||
    { echo "systemd-analyze not found (Debian: apt-get install systemd)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/runtime"
chmod 700 "$work/runtime"
for b in silica-crond silica-cron; do
    printf '#!/bin/sh\nexit 0\n' >"$work/bin/$b"
    chmod 755 "$work/bin/$b"
done

unshare_args=(--mount)
[ "$(id -u)" = 0 ] || unshare_args+=(--map-root-user)

# Whatever systemd-analyze verify says about each unit (nothing when clean), after a first
# line that says the namespace was set up.
verify_output=$(
    XDG_RUNTIME_DIR="$work/runtime" unshare "${unshare_args[@]}" sh -c '
        mount --bind "$1/bin" /usr/local/bin || exit 1
        echo "namespace ready"
        systemd-analyze verify "$2" 2>&1
        systemd-analyze --user verify "$3" 2>&1
    ' sh "$work" "$PWD/$system_unit" "$PWD/$user_unit" 2>/dev/null
) || true
if [ "$(head -n1 <<<"$verify_output")" = "namespace ready" ]; then
    verify_output=$(tail -n +2 <<<"$verify_output")
else
    # No mount namespace here (an unprivileged container): verify copies whose binary paths
    # point at the stand-ins instead. Only those two paths differ from the shipped units.
    echo "verify: no private mount namespace; checking copies with ExecStart/ExecReload in $work/bin"
    mkdir -p "$work/system" "$work/user"
    sed "s|/usr/local/bin/|$work/bin/|g" "$system_unit" >"$work/system/silica-crond.service"
    sed "s|/usr/local/bin/|$work/bin/|g" "$user_unit" >"$work/user/silica-crond.service"
    verify_output=$(
        XDG_RUNTIME_DIR="$work/runtime" systemd-analyze verify "$work/system/silica-crond.service" 2>&1
        XDG_RUNTIME_DIR="$work/runtime" systemd-analyze --user verify "$work/user/silica-crond.service" 2>&1
    ) || true
fi
if [ -n "$verify_output" ]; then
    echo "systemd-analyze verify is not silent:" >&2
    echo "$verify_output" >&2
    exit 1
fi
echo "verify: $system_unit and $user_unit: clean"

# The overall exposure of unit $1 (more systemd-analyze options after it), e.g. 1.3.
exposure() {
    local unit=$1 out
    shift
    out=$(XDG_RUNTIME_DIR="$work/runtime" systemd-analyze "$@" security --offline=true --no-pager "$unit" 2>&1) || true
    sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out"
}

failed=0
check() {
    local name=$1 score=$2 max=$3
    if [ -z "$score" ]; then
        echo "security: no exposure score for $name" >&2
        failed=1
    elif awk -v s="$score" -v m="$max" 'BEGIN { exit !(s > m) }'; then
        echo "security: $name exposure $score is above the threshold $max" >&2
        failed=1
    else
        echo "security: $name exposure $score (threshold $max)"
    fi
}
check "$system_unit" "$(exposure "$system_unit")" "$system_max"
check "$user_unit" "$(exposure "$user_unit" --user)" "$user_max"
exit $failed
