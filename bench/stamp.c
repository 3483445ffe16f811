/* The runner of bench/firing.sh: the first thing main() does is read CLOCK_REALTIME, then it
 * prints that instant in ns since the epoch and exits. The daemon stores stdout in
 * job_executions.output, so (output - scheduled_for) is the firing lag up to the first
 * instruction of the run's main(). firing.sh links it statically when it can, so that the
 * dynamic loader's work is not counted as lag.
 *
 * With an argument, the same line is also appended to that file (one O_APPEND write, atomic for
 * a line this short), so that starts are counted even if the daemon never records the run. */
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    char line[32];
    int n = snprintf(line, sizeof line, "%lld\n", (long long)t.tv_sec * 1000000000LL + t.tv_nsec);
    if (argc > 1) {
        int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) {
            (void)!write(fd, line, (size_t)n);
            close(fd);
        }
    }
    return write(1, line, (size_t)n) == n ? 0 : 1;
}
