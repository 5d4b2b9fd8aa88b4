/* Real Linux processes standing in for container processes. */
#include "sim.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static int g_reapers;

struct buf { char *s; size_t n, cap; };

static void put(struct buf *b, char c)
{
    if (b->n + 2 > b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->s = realloc(b->s, b->cap);
    }
    b->s[b->n++] = c;
    b->s[b->n] = 0;
}

/* CommandLineToArgvW rules (Microsoft's "CommandLineToArgvW" and "Parsing C
 * command-line arguments" pages).  Inside quotes "" is read as a
 * literal quote, as the current CRT does; encoders never produce it. */
char **cmdline_to_argv(const char *p)
{
    size_t n = 0, cap = 8;
    char **argv = calloc(cap, sizeof *argv);
    struct buf b = {0};
    put(&b, 0);
    b.n = 0;
    int q = 0;
    for (; *p && (q || (*p != ' ' && *p != '\t')); p++)
        if (*p == '"')
            q = !q;
        else
            put(&b, *p);
    argv[n++] = b.s;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        struct buf a = {0};
        put(&a, 0);
        a.n = 0;
        q = 0;
        while (*p && (q || (*p != ' ' && *p != '\t'))) {
            if (*p == '\\') {
                size_t k = 0;
                while (p[k] == '\\')
                    k++;
                if (p[k] == '"') {
                    for (size_t i = 0; i < k / 2; i++)
                        put(&a, '\\');
                    p += k;
                    if (k % 2) {
                        put(&a, '"');
                        p++;
                    }
                } else {
                    for (size_t i = 0; i < k; i++)
                        put(&a, '\\');
                    p += k;
                }
            } else if (*p == '"') {
                if (q && p[1] == '"') {
                    put(&a, '"');
                    p += 2;
                } else {
                    q = !q;
                    p++;
                }
            } else {
                put(&a, *p++);
            }
        }
        if (n + 2 > cap)
            argv = realloc(argv, (cap *= 2) * sizeof *argv);
        argv[n++] = a.s;
    }
    argv[n] = NULL;
    return argv;
}

static void free_argv(char **argv)
{
    for (char **a = argv; a && *a; a++)
        free(*a);
    free(argv);
}

/* A container path under a mapped directory becomes the host path; anything
 * else is returned unchanged with *mapped = 0. */
static char *map_path(sim_system *s, const char *path, int *mapped)
{
    char *norm = strdup(path);
    for (char *c = norm; *c; c++)
        if (*c == '/')
            *c = '\\';
    cJSON *m;
    cJSON_ArrayForEach(m, s->mapped)
    {
        const char *cont = cJSON_GetObjectItem(m, "container")->valuestring;
        const char *host = cJSON_GetObjectItem(m, "host")->valuestring;
        size_t len = strlen(cont);
        while (len && (cont[len - 1] == '\\' || cont[len - 1] == '/'))
            len--;
        if (strncasecmp(norm, cont, len) || (norm[len] && norm[len] != '\\'))
            continue;
        char *out = malloc(strlen(host) + strlen(norm + len) + 1);
        strcpy(out, host);
        size_t hl = strlen(out);
        while (hl > 1 && out[hl - 1] == '/')
            out[--hl] = 0;
        strcat(out, norm + len);
        for (char *c = out + hl; *c; c++)
            if (*c == '\\')
                *c = '/';
        free(norm);
        *mapped = 1;
        return out;
    }
    free(norm);
    *mapped = 0;
    return strdup(path);
}

struct reaper_arg { pid_t pid; uint64_t seq; };

/* A fault on "HcsEventProcessExited" puts its HRESULT in the event's LastWaitResult, which
 * voids the ExitCode there (as hcsshim's internal/hcs/v2/process.go reads it);
 * HcsGetProcessProperties still reports it. */
static void job_process_exited(sim_job *j)
{
    HRESULT wait_hr;
    char *text = NULL;
    if (fault_for("computecore!HcsEventProcessExited", &wait_hr, NULL)) {
        cJSON *status = cJSON_Parse(j->text);
        cJSON_ReplaceItemInObject(status, "LastWaitResult", cJSON_CreateNumber(wait_hr));
        text = cJSON_PrintUnformatted(status);
        cJSON_Delete(status);
    }
    deliver(j->b, j->a, EV_PROCESS_EXITED, EV_PROCESS_EXITED, S_OK, text ? text : j->text);
    free(text);
}

static void *reaper_main(void *arg)
{
    struct reaper_arg r = *(struct reaper_arg *)arg;
    free(arg);
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    int st = 0;
    while (waitpid(r.pid, &st, 0) < 0 && errno == EINTR)
        ;
    pthread_mutex_lock(&g_lock);
    sim_process *p = process_by_seq(r.seq);
    if (p) {
        p->exited = 1;
        /* A signal death has no Windows equivalent; 128+signal is the sim's convention. */
        p->exit_code = WIFEXITED(st) ? (uint32_t)WEXITSTATUS(st) : 128u + (uint32_t)WTERMSIG(st);
        release_hangs(p->seq, HCS_E_PROCESS_ALREADY_STOPPED);
        char *status = process_status(p);
        job_post(job_process_exited, p->seq, p->sys->seq, S_OK, 0, status);
        free(status);
        gc_objects();
    }
    g_reapers--;
    pthread_cond_broadcast(&g_cond);
    pthread_mutex_unlock(&g_lock);
    return NULL;
}

static int flag(cJSON *o, const char *name) { return cJSON_IsTrue(cJSON_GetObjectItem(o, name)); }

static char *fail(HRESULT *hr, HRESULT code, const char *fmt, const char *arg)
{
    size_t n = strlen(fmt) + (arg ? strlen(arg) : 0) + 1;
    char *m = malloc(n);
    snprintf(m, n, fmt, arg ? arg : "");
    *hr = code;
    return m;
}

static char **build_env(cJSON *env)
{
    int n = cJSON_GetArraySize(env), k = 0;
    char **envp = calloc((size_t)n + 2, sizeof *envp);
    if (!cJSON_GetObjectItem(env, "PATH"))
        envp[k++] = strdup("PATH=/usr/local/bin:/usr/bin:/bin");
    cJSON *e;
    cJSON_ArrayForEach(e, env)
    {
        if (!cJSON_IsString(e))
            continue;
        envp[k] = malloc(strlen(e->string) + strlen(e->valuestring) + 2);
        sprintf(envp[k++], "%s=%s", e->string, e->valuestring);
    }
    return envp;
}

static void child(char **argv, char **envp, const char *exe, int search, const char *cwd,
                  int in, int out, int err, int console, uint64_t affinity, int report)
{
    /* Its own process group stands for the container's silo: a system stop kills the
     * whole group, children included, as ending a silo ends all its processes. An
     * emulated console is a pseudo-terminal the process controls, in a session (and so
     * a group) of its own. */
    if (console >= 0) {
        setsid();
        ioctl(console, TIOCSCTTY, 0);
        in = out = err = console;
    } else {
        setpgid(0, 0);
    }
    int null = open("/dev/null", O_RDWR);
    dup2(in >= 0 ? in : null, 0);
    dup2(out >= 0 ? out : null, 1);
    dup2(err >= 0 ? err : null, 2);
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigaction(SIGPIPE, &dfl, NULL);
    sigaction(SIGXFSZ, &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (affinity) {
        cpu_set_t set;
        CPU_ZERO(&set);
        for (int c = 0; c < 64; c++)
            if (affinity >> c & 1)
                CPU_SET(c, &set);
        sched_setaffinity(0, sizeof set, &set);
    }
    if (chdir(cwd) == 0) {
        if (search)
            execvpe(exe, argv, envp);
        else
            execve(exe, argv, envp);
    }
    int e = errno;
    while (write(report, &e, sizeof e) < 0 && errno == EINTR)
        ;
    _exit(127);
}

/* Called with g_lock held; returns the new process or an HRESULT and message. */
HRESULT process_spawn(sim_system *s, const char *params, int api, sim_process **out, char **err)
{
    HRESULT hr = S_OK;
    cJSON *d = cJSON_Parse(params ? params : "");
    cJSON *cl = cJSON_GetObjectItem(d, "CommandLine");
    if (!cJSON_IsString(cl) || !*cl->valuestring) {
        cJSON_Delete(d);
        *err = fail(&hr, api == 1 ? VMCOMPUTE_INVALID_JSON : HCS_E_INVALID_JSON,
                    "The process parameters have no CommandLine", NULL);
        return hr;
    }
    char **argv = cmdline_to_argv(cl->valuestring);
    int mapped = 0;
    for (char **a = argv + 1; *a; a++) {
        char *m = map_path(s, *a, &mapped);
        free(*a);
        *a = m;
    }
    char *exe = map_path(s, argv[0], &mapped);
    int search = !mapped && !strchr(exe, '\\') && !strchr(exe, ':') && !strchr(exe, '/');
    if (!mapped && !search) {
        *err = fail(&hr, HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND),
                    "The system cannot find the file specified: %s (the simulator runs only "
                    "executables inside mapped directories or found on the host PATH)", argv[0]);
        free(exe);
        free_argv(argv);
        cJSON_Delete(d);
        return hr;
    }
    cJSON *wd = cJSON_GetObjectItem(d, "WorkingDirectory");
    int wd_mapped = 0;
    char *cwd = cJSON_IsString(wd) ? map_path(s, wd->valuestring, &wd_mapped) : NULL;
    if (!wd_mapped) {
        free(cwd);
        cwd = strdup("/");
    }
    char **envp = build_env(cJSON_GetObjectItem(d, "Environment"));
    int console = flag(d, "EmulateConsole");
    int want[3] = {flag(d, "CreateStdInPipe"), flag(d, "CreateStdOutPipe"),
                   flag(d, "CreateStdErrPipe") && !console};
    int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1}, rep[2];
    int master = -1, slave = -1;
    if (console) {
        /* A pseudo-terminal stands for the pseudo console: its master is both the input
         * and the output handle, and ConsoleSize ([height, width]) is its window size. */
        master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        char name[64];
        if (master < 0 || grantpt(master) || unlockpt(master) || ptsname_r(master, name, sizeof name) ||
            (slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
            *err = fail(&hr, HRESULT_FROM_WIN32(ERROR_NOT_ENOUGH_MEMORY), "No console for %s", argv[0]);
            if (master >= 0)
                close(master);
            goto done;
        }
        cJSON *size = cJSON_GetObjectItem(d, "ConsoleSize");
        if (cJSON_GetArraySize(size) == 2) {
            struct winsize ws = {.ws_row = (unsigned short)cJSON_GetArrayItem(size, 0)->valuedouble,
                                 .ws_col = (unsigned short)cJSON_GetArrayItem(size, 1)->valuedouble};
            ioctl(master, TIOCSWINSZ, &ws);
        }
        if (want[0])
            pin[1] = fcntl(master, F_DUPFD_CLOEXEC, 0);
        if (want[1])
            pout[0] = fcntl(master, F_DUPFD_CLOEXEC, 0);
    } else {
        if (want[0])
            pipe2(pin, O_CLOEXEC);
        if (want[1])
            pipe2(pout, O_CLOEXEC);
        if (want[2])
            pipe2(perr, O_CLOEXEC);
    }
    pipe2(rep, O_CLOEXEC);
    pid_t pid = fork();
    if (pid == 0)
        child(argv, envp, exe, search, cwd, pin[0], pout[1], perr[1], slave, s->affinity, rep[1]);
    if (!console)
        setpgid(pid, pid);  /* as the child does: whichever runs first (a console's makes a session) */
    if (slave >= 0)
        close(slave);
    close(rep[1]);
    int e = 0;
    ssize_t got;
    while ((got = read(rep[0], &e, sizeof e)) < 0 && errno == EINTR)
        ;
    close(rep[0]);
    int ends[] = {pin[0], pout[1], perr[1]};
    for (int i = 0; i < 3; i++)
        if (ends[i] >= 0)
            close(ends[i]);
    if (got > 0) {
        waitpid(pid, NULL, 0);
        int code = e == ENOENT ? ERROR_FILE_NOT_FOUND : e == EACCES ? ERROR_ACCESS_DENIED : e;
        *err = fail(&hr, HRESULT_FROM_WIN32(code), "Could not start %s", argv[0]);
        int parent[] = {pin[1], pout[0], perr[0], master};
        for (int i = 0; i < 4; i++)
            if (parent[i] >= 0)
                close(parent[i]);
    } else {
        sim_process *p = calloc(1, sizeof *p);
        p->seq = next_seq();
        p->sys = s;
        p->pid = pid;
        p->api = api;
        p->image = strdup(argv[0]);
        p->fds[0] = pin[1];
        p->fds[1] = pout[0];
        p->fds[2] = perr[0];
        p->console = master;
        p->next = g_processes;
        g_processes = p;
        cJSON_AddItemToArray(s->groups, cJSON_CreateNumber(pid));
        guardian_guard(s, pid);
        system_publish(s);
        struct reaper_arg *r = malloc(sizeof *r);
        r->pid = pid;
        r->seq = p->seq;
        pthread_t t;
        g_reapers++;
        pthread_create(&t, NULL, reaper_main, r);
        pthread_detach(t);
        *out = p;
    }
done:
    for (char **v = envp; *v; v++)
        free(*v);
    free(envp);
    free(cwd);
    free(exe);
    free_argv(argv);
    cJSON_Delete(d);
    return hr;
}

void process_signal(sim_process *p, int sig)
{
    if (!p->exited)
        kill(p->pid, sig);
}

/* Called with g_lock held: HcsModifyProcess's ProcessModifyRequest. CloseHandle is taken
 * as is (the caller closes its own end); ConsoleSize resizes the emulated console, which a
 * process created without EmulateConsole lacks. */
HRESULT process_modify(sim_process *p, const char *settings, char **err)
{
    HRESULT hr = S_OK;
    cJSON *d = cJSON_Parse(settings ? settings : "");
    cJSON *op = cJSON_GetObjectItem(d, "Operation");
    if (cJSON_IsString(op) && !strcmp(op->valuestring, "ConsoleSize")) {
        cJSON *size = cJSON_GetObjectItem(d, "ConsoleSize");
        cJSON *h = cJSON_GetObjectItem(size, "Height"), *w = cJSON_GetObjectItem(size, "Width");
        if (p->console < 0) {
            *err = fail(&hr, E_INVALIDARG, "The process has no console to resize%s", NULL);
        } else if (!cJSON_IsNumber(h) || !cJSON_IsNumber(w)) {
            *err = fail(&hr, HCS_E_INVALID_JSON, "ConsoleSize needs a Height and a Width%s", NULL);
        } else {
            struct winsize ws = {.ws_row = (unsigned short)h->valuedouble, .ws_col = (unsigned short)w->valuedouble};
            ioctl(p->console, TIOCSWINSZ, &ws);  /* the kernel tells the process: SIGWINCH */
        }
    } else if (!cJSON_IsString(op) || strcmp(op->valuestring, "CloseHandle")) {
        *err = fail(&hr, HCS_E_INVALID_JSON, "Unknown ProcessModifyRequest operation%s", NULL);
    }
    cJSON_Delete(d);
    return hr;
}

/* Called with g_lock held: every process the system ever ran, and what they forked. */
void system_kill_groups(sim_system *s)
{
    cJSON *g;
    cJSON_ArrayForEach(g, s->groups) kill(-(pid_t)g->valuedouble, SIGKILL);
}

/* Called with g_lock held by SimReset. */
void processes_kill_all(void)
{
    for (sim_system *s = g_systems; s; s = s->next)
        system_kill_groups(s);
    for (sim_process *p = g_processes; p; p = p->next)
        process_signal(p, SIGKILL);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    while (g_reapers && !pthread_cond_timedwait(&g_cond, &g_lock, &until))
        ;
}
