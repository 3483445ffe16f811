# Sourced by the bench scripts (run.sh, rebuild.sh, firing.sh): what each of them needs before
# its own work starts. Sets `repo` and changes into it; the caller sets `bench_name` first.

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

die() { echo "${bench_name:-bench}: error: $*" >&2; exit 1; }
step() { printf '\n== %s\n' "$*"; }

# The line that reproduces this run: the script and those of the named variables that are set.
command_line() {
    local script="$1" v line=""
    shift
    for v in "$@"; do
        [ -n "${!v:-}" ] && line+="$v=${!v} "
    done
    echo "${line}$script"
}

# positive NAME VALUE: dies unless VALUE is a positive integer.
positive() {
    [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1=$2: expected a positive integer"
}

need_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is needed"
    done
}

# Variables the binaries read: the developer's own must not leak into the measured runs.
for v in DATABASE_URL CRON_DATABASE_URL SILICA_CRON_SOCKET SILICA_CRON_CONFIG \
    SILICA_CRON_MIGRATIONS SILICA_ENVIRONMENT LOG_LEVEL JOURNAL_STREAM \
    ALEMBIC_PRIORITY_SERVER_DEFAULT SILICA_CRON_BENCH_SOCKET; do
    unset "$v"
done
unset v

# Taken before the build, so the summary shows how busy the machine was when the run began.
load_before="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

# Builds the release binaries; sets `bin`, `cli` and `crond`.
build_release() {
    step "build (release)"
    cargo build --release --workspace --bins
    bin="${CARGO_TARGET_DIR:-$repo/target}/release"
    cli="$bin/silica-cron"
    crond="$bin/silica-crond"
    [ -x "$cli" ] && [ -x "$crond" ] || die "release binaries missing in $bin"
}

# make_work PREFIX [PATH...]: sets `work` to a new temp directory. Short (Unix socket paths must
# fit in 107 bytes) and, with the other PATHs, free of characters the scripts cannot quote.
make_work() {
    work="$(mktemp -d "/tmp/$1.XXXXXX")"
    shift
    case "$repo$work$*" in
        *[\"\'\\\ ]*) die "paths with quotes, backslashes or spaces are not supported: $repo $work $*" ;;
    esac
}

# For the caller's EXIT trap, after its processes are stopped.
remove_work() {
    if [ -n "${BENCH_KEEP:-}" ]; then
        echo "${bench_name:-bench}: kept $work" >&2
    else
        rm -rf "$work"
    fi
}
