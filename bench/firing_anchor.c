/* Anchors of bench/firing.sh, measured in the same run as the daemon figures:
 *
 *   firing_anchor rate SECONDS
 *       posix_spawn("/bin/true") + waitpid in a loop for SECONDS; prints "<spawns> <seconds>".
 *       The bare cost of starting processes one after another on this machine.
 *
 *   firing_anchor lag COUNT STAMP
 *       COUNT times: sleep on a CLOCK_REALTIME timerfd armed with an absolute deadline (the next
 *       whole 100 ms at least 50 ms away), then posix_spawn STAMP with its stdout on a pipe, read
 *       the instant it prints, waitpid. Prints one lag per line in ns (stamp - deadline).
 *       What the daemon does for one due job with nothing else in the way: the wake-up, one
 *       spawn, exec and the stamp's first instruction.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int64_t now_ns(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static int rate(double seconds)
{
    char *argv[] = {"/bin/true", NULL};
    int64_t start = now_ns(CLOCK_MONOTONIC), end = start + (int64_t)(seconds * 1e9), t = start;
    long n = 0;
    while (t < end) {
        pid_t pid;
        int st, e = posix_spawn(&pid, argv[0], NULL, NULL, argv, environ);
        if (e != 0) {
            errno = e;
            die("posix_spawn /bin/true");
        }
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            die("waitpid /bin/true");
        n++;
        t = now_ns(CLOCK_MONOTONIC);
    }
    printf("%ld %.6f\n", n, (t - start) / 1e9);
    return 0;
}

static int lag(int count, char *stamp)
{
    int tfd = timerfd_create(CLOCK_REALTIME, TFD_CLOEXEC);
    if (tfd < 0)
        die("timerfd_create");
    for (int i = 0; i < count; i++) {
        const int64_t step = 100000000LL;
        int64_t deadline = (now_ns(CLOCK_REALTIME) + 50000000LL) / step * step + step;
        struct itimerspec its = {{0, 0}, {deadline / 1000000000LL, deadline % 1000000000LL}};
        if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) != 0)
            die("timerfd_settime");
        uint64_t expirations;
        if (read(tfd, &expirations, sizeof expirations) != sizeof expirations)
            die("read timerfd");
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) != 0)
            die("pipe2");
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
        char *argv[] = {stamp, NULL};
        pid_t pid;
        int e = posix_spawn(&pid, stamp, &fa, NULL, argv, environ);
        if (e != 0) {
            errno = e;
            die("posix_spawn stamp");
        }
        posix_spawn_file_actions_destroy(&fa);
        close(fds[1]);
        char buf[64] = {0};
        size_t got = 0;
        ssize_t r;
        while (got < sizeof buf - 1 && (r = read(fds[0], buf + got, sizeof buf - 1 - got)) > 0)
            got += (size_t)r;
        close(fds[0]);
        int st;
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            die("waitpid stamp");
        printf("%lld\n", strtoll(buf, NULL, 10) - (long long)deadline);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "rate") == 0)
        return rate(atof(argv[2]));
    if (argc == 4 && strcmp(argv[1], "lag") == 0)
        return lag(atoi(argv[2]), argv[3]);
    fprintf(stderr, "usage: firing_anchor rate SECONDS | firing_anchor lag COUNT STAMP\n");
    return 2;
}
