/* What outlives the process that loaded the simulator, as HCS is a service that outlives
 * its clients.  With NSPAWN_HCS_SIM_STATE naming a directory, compute systems (one file
 * each under systems/), layer states (layers.json) and HCN/HNS endpoints and namespaces
 * (net.json) live there, so a second process (`nspawn ps`, `nspawn cleanup`) sees and can
 * act on what a killed launcher made.  Without it everything stays in memory.
 *
 * TerminateOnLastHandleClosed: a guardian process per system holds the read end of a pipe
 * whose write end only the creating process has; when that process dies the guardian reads
 * EOF and kills the system's process groups, as HCS ends such a system when its client's
 * handles close.  A system stopped normally disarms it first. */
#include "sim.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define STATE_ENV "NSPAWN_HCS_SIM_STATE"
#define MAX_GUARDED 256

const char *state_dir(void)
{
    const char *d = getenv(STATE_ENV);
    return d && *d ? d : NULL;
}

static char *state_path(const char *name)
{
    const char *d = state_dir();
    char *p = malloc(strlen(d) + strlen(name) + 2);
    sprintf(p, "%s/%s", d, name);
    return p;
}

static cJSON *read_json(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    struct buf { char *s; size_t n; } b = {NULL, 0};
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        b.s = realloc(b.s, b.n + got + 1);
        memcpy(b.s + b.n, chunk, got);
        b.n += got;
    }
    fclose(f);
    cJSON *v = b.s ? (b.s[b.n] = 0, cJSON_Parse(b.s)) : NULL;
    free(b.s);
    return v;
}

/* Written beside and renamed, so a reader never sees half a file. */
static void write_json(const char *path, cJSON *v)
{
    char *tmp = malloc(strlen(path) + 16);
    sprintf(tmp, "%s.%d.tmp", path, (int)getpid());
    char *text = cJSON_PrintUnformatted(v);
    FILE *f = fopen(tmp, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
        rename(tmp, path);
    }
    free(text);
    free(tmp);
}

cJSON *state_load(const char *name)
{
    char *p = state_path(name);
    cJSON *v = read_json(p);
    free(p);
    return v;
}

void state_save(const char *name, cJSON *v)
{
    char *p = state_path(name);
    write_json(p, v);
    free(p);
}

/* Serializes read-modify-write of a shared file across processes; taken after g_lock. */
int state_lock(void)
{
    if (!state_dir())
        return -1;
    char *p = state_path("lock");
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    free(p);
    while (fd >= 0 && flock(fd, LOCK_EX) < 0 && errno == EINTR)
        ;
    return fd;
}

void state_unlock(int fd)
{
    if (fd >= 0)
        close(fd);
}

/* ---------- compute systems ---------- */

static char *system_file(const char *id)
{
    char *name = malloc(strlen(id) + 16);
    sprintf(name, "systems/%s.json", id);
    for (char *c = name + 8; *c; c++)
        *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
    char *p = state_path(name);
    free(name);
    return p;
}

static int alive(pid_t pid)
{
    char path[64], stat[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[n] = 0;
    char *close_paren = strrchr(stat, ')');
    return close_paren && close_paren[1] == ' ' && close_paren[2] != 'Z';
}

/* Called with g_lock held: the file says what other processes may know of it. */
void system_publish(sim_system *s)
{
    if (!state_dir())
        return;
    char *path = system_file(s->id);
    if (s->state == ST_STOPPED) {
        unlink(path);
    } else if (!s->foreign) {
        char *dir = state_path("systems");
        mkdir(dir, 0700);
        free(dir);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", s->id);
        cJSON_AddStringToObject(o, "owner", s->owner);
        cJSON_AddNumberToObject(o, "api", s->api);
        cJSON_AddNumberToObject(o, "state", s->state);
        cJSON_AddBoolToObject(o, "terminate_on_close", s->terminate_on_close);
        cJSON_AddNumberToObject(o, "launcher", (double)getpid());
        cJSON_AddItemToObject(o, "groups", cJSON_Duplicate(s->groups, 1));
        write_json(path, o);
        cJSON_Delete(o);
    }
    free(path);
}

/* A system another process created, as HCS knows it now: NULL when it has ended, which is
 * also the case when its creator died and the document asked for that. */
static cJSON *registered(const char *path)
{
    cJSON *o = read_json(path);
    if (!o)
        return NULL;
    pid_t launcher = (pid_t)cJSON_GetNumberValue(cJSON_GetObjectItem(o, "launcher"));
    if (launcher == getpid() || (!alive(launcher) && cJSON_IsTrue(cJSON_GetObjectItem(o, "terminate_on_close")))) {
        cJSON *g;
        if (launcher != getpid()) {
            cJSON_ArrayForEach(g, cJSON_GetObjectItem(o, "groups")) kill(-(pid_t)g->valuedouble, SIGKILL);
            unlink(path);
        }
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* Called with g_lock held: a handle on another process's system makes it an object here,
 * dropped again when its last handle closes (gc_objects). */
sim_system *system_adopt(const char *id)
{
    if (!state_dir())
        return NULL;
    char *path = system_file(id);
    cJSON *o = registered(path);
    free(path);
    if (!o)
        return NULL;
    sim_system *s = calloc(1, sizeof *s);
    s->seq = next_seq();
    s->id = strdup(cJSON_GetStringValue(cJSON_GetObjectItem(o, "id")));
    s->owner = strdup(cJSON_GetStringValue(cJSON_GetObjectItem(o, "owner")));
    s->api = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(o, "api"));
    s->state = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(o, "state"));
    s->foreign = 1;
    s->guard_fd = -1;
    s->mapped = cJSON_CreateArray();
    s->groups = cJSON_Duplicate(cJSON_GetObjectItem(o, "groups"), 1);
    cJSON_Delete(o);
    s->next = g_systems;
    g_systems = s;
    return s;
}

/* Called with g_lock held: adds the systems only other processes hold to `out`, each as
 * summary() makes it, filtered by `keep`. */
void systems_foreign(cJSON *out, cJSON *(*summary)(sim_system *), int (*keep)(sim_system *, void *), void *arg)
{
    if (!state_dir())
        return;
    char *dir = state_path("systems");
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 6 || strcmp(e->d_name + n - 5, ".json"))
            continue;
        char *path = malloc(strlen(dir) + n + 2);
        sprintf(path, "%s/%s", dir, e->d_name);
        cJSON *o = registered(path);
        free(path);
        if (!o)
            continue;
        sim_system view = {.id = cJSON_GetStringValue(cJSON_GetObjectItem(o, "id")),
                           .owner = cJSON_GetStringValue(cJSON_GetObjectItem(o, "owner")),
                           .state = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(o, "state"))};
        int known = 0;
        for (sim_system *s = g_systems; s; s = s->next)
            known |= !strcasecmp(s->id, view.id);
        if (!known && keep(&view, arg))
            cJSON_AddItemToArray(out, summary(&view));
        cJSON_Delete(o);
    }
    if (d)
        closedir(d);
    free(dir);
}

/* ---------- the guardian of TerminateOnLastHandleClosed ---------- */

/* Only async-signal-safe calls: it runs in a fork of a multi-threaded process. */
static void guardian_main(int rd, const char *path)
{
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
    setsid();
    for (int fd = 0; fd < 4096; fd++)
        if (fd != rd)
            close(fd);
    pid_t groups[MAX_GUARDED];
    int n = 0;
    int32_t v;
    for (;;) {
        ssize_t r = read(rd, &v, sizeof v);
        if (r < 0 && errno == EINTR)
            continue;
        if (r != (ssize_t)sizeof v)
            break;
        if (v == 0)
            _exit(0);
        if (n < MAX_GUARDED)
            groups[n++] = v;
    }
    unlink(path);  /* first: once the payload is seen gone, so is the system */
    for (int i = 0; i < n; i++)
        kill(-groups[i], SIGKILL);
    _exit(0);
}

/* Called with g_lock held, for a new system of this process that asked for it. */
void guardian_start(sim_system *s)
{
    s->guard_fd = -1;
    if (!state_dir() || !s->terminate_on_close)
        return;
    int p[2];
    if (pipe2(p, O_CLOEXEC))
        return;
    char *path = system_file(s->id);
    pid_t middle = fork();
    if (middle == 0) {
        /* Twice, so the guardian belongs to init and never waits as this process's zombie. */
        if (fork() == 0)
            guardian_main(p[0], path);
        _exit(0);
    }
    free(path);
    close(p[0]);
    if (middle > 0)
        while (waitpid(middle, NULL, 0) < 0 && errno == EINTR)
            ;
    s->guard_fd = p[1];
}

static void guardian_send(sim_system *s, int32_t v)
{
    if (s->guard_fd >= 0)
        while (write(s->guard_fd, &v, sizeof v) < 0 && errno == EINTR)
            ;
}

void guardian_guard(sim_system *s, pid_t group) { guardian_send(s, (int32_t)group); }

void guardian_disarm(sim_system *s)
{
    guardian_send(s, 0);
    if (s->guard_fd >= 0)
        close(s->guard_fd);
    s->guard_fd = -1;
}
