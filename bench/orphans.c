/* orphans: make N orphans for PID 1 to reap, then wait until it reaped them.
 *
 *   orphans N [TIMEOUT_S]
 *
 * For each i: fork an intermediate; the intermediate forks a grandchild,
 * sends its pid up a pipe and exits at once; the grandchild spins until it has
 * been re-parented (getppid() changes) and exits, so its zombie belongs to
 * PID 1 (run this under `unshare -pf --mount-proc INIT -- orphans N`).
 * We reap the intermediates ourselves. Then we poll kill(pid, 0) on every
 * grandchild until all are gone (a zombie still answers kill(pid, 0), a
 * reaped pid gives ESRCH), scan /proc for any process left in state Z, and
 * print one line:
 *
 *   orphans=N reaped=R seconds=S zombies=Z
 *
 * S is the time from the first fork until the last orphan was reaped. Exit 0
 * when all were reaped within TIMEOUT_S (default 60) and no zombie is left.
 */
#include <dirent.h>
#include <sched.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int zombies(void) {
    int z = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    if (!d) return -1;
    while ((e = readdir(d))) {
        char path[300], buf[512];
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = 0;
        char *p = strrchr(buf, ')');
        if (p && p[1] == ' ' && p[2] == 'Z') z++;
    }
    closedir(d);
    return z;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 5000;
    double timeout = argc > 2 ? atof(argv[2]) : 60;
    pid_t *pids = calloc((size_t)n, sizeof *pids);
    int fds[2];
    if (!pids || pipe(fds)) { perror("orphans"); return 2; }
    double t0 = now();
    for (int i = 0; i < n; i++) {
        pid_t mid = fork();
        if (mid < 0) { perror("fork"); return 2; }
        if (mid == 0) {
            pid_t me = getpid();
            pid_t g = fork();
            if (g == 0) {
                while (getppid() == me) sched_yield();
                _exit(0);
            }
            if (write(fds[1], &g, sizeof g) != sizeof g) _exit(3);
            _exit(g < 0 ? 4 : 0);
        }
        if (read(fds[0], &pids[i], sizeof pids[i]) != sizeof pids[i]) { perror("read"); return 2; }
        int st;
        while (waitpid(mid, &st, 0) < 0 && errno == EINTR) {}
    }
    int left = n;
    while (left > 0 && now() - t0 < timeout) {
        int k = 0;
        for (int i = 0; i < left; i++)
            if (!(kill(pids[i], 0) < 0 && errno == ESRCH)) pids[k++] = pids[i];
        left = k;
        if (left) { struct timespec ts = {0, 100000}; nanosleep(&ts, NULL); }
    }
    double t = now() - t0;
    int z = zombies();
    printf("orphans=%d reaped=%d seconds=%.4f zombies=%d\n", n, n - left, t, z);
    fflush(stdout);
    return (left == 0 && z == 0) ? 0 : 1;
}
