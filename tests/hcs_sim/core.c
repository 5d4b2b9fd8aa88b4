/* Handles, the worker thread that completes operations and calls callbacks,
 * fault injection, the ledger, and the kernel32/ntdll/ole32 exports. */
#include "sim.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
sim_system *g_systems;
sim_process *g_processes;
sim_handle *g_handles;
uint64_t g_reset_gen;

static uint64_t g_seq;
/* Guards the call records and the fault table; never held while taking g_lock. */
static pthread_mutex_t g_rec_lock = PTHREAD_MUTEX_INITIALIZER;
static cJSON *g_calls, *g_free_errors;
static long g_strings_out;
static unsigned char g_pipe_out[65536];
static int g_overlapped_pipes;
static __thread uint32_t t_last_error;
static int g_delivering;

uint64_t next_seq(void) { return ++g_seq; }
void set_last_error(uint32_t e) { t_last_error = e; }

/* ---------- strings ---------- */

char *w2u(const wchar_t *w)
{
    if (!w)
        return NULL;
    size_t n = wcslen(w);
    char *s = malloc(n * 4 + 1), *p = s;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = (uint32_t)w[i];
        if (c < 0x80) {
            *p++ = (char)c;
        } else if (c < 0x800) {
            *p++ = (char)(0xC0 | c >> 6);
            *p++ = (char)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            *p++ = (char)(0xE0 | c >> 12);
            *p++ = (char)(0x80 | ((c >> 6) & 0x3F));
            *p++ = (char)(0x80 | (c & 0x3F));
        } else {
            *p++ = (char)(0xF0 | c >> 18);
            *p++ = (char)(0x80 | ((c >> 12) & 0x3F));
            *p++ = (char)(0x80 | ((c >> 6) & 0x3F));
            *p++ = (char)(0x80 | (c & 0x3F));
        }
    }
    *p = 0;
    return s;
}

static size_t u2w_into(const char *s, wchar_t *out)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = 0;
    while (*p) {
        uint32_t c = *p++;
        int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
        if (extra)
            c &= 0x3F >> extra;
        while (extra-- && (*p & 0xC0) == 0x80)
            c = c << 6 | (*p++ & 0x3F);
        if (out)
            out[n] = (wchar_t)c;
        n++;
    }
    if (out)
        out[n] = 0;
    return n;
}

wchar_t *u2w(const char *s)
{
    if (!s)
        return NULL;
    wchar_t *w = malloc((u2w_into(s, NULL) + 1) * sizeof(wchar_t));
    u2w_into(s, w);
    return w;
}

/* Returned strings carry a header naming their allocator so the ledger can
 * catch a LocalFree of a CoTaskMem string (and the reverse) and leaks. */
#define STR_MAGIC 0x53494d53u
enum { ALLOC_LOCAL = 1, ALLOC_COTASK = 2 };
struct str_hdr { uint32_t magic, alloc; uint64_t pad; };

static wchar_t *out_string(const char *s, uint32_t alloc)
{
    if (!s)
        return NULL;
    size_t n = u2w_into(s, NULL);
    struct str_hdr *h = malloc(sizeof *h + (n + 1) * sizeof(wchar_t));
    h->magic = STR_MAGIC;
    h->alloc = alloc;
    wchar_t *w = (wchar_t *)(h + 1);
    u2w_into(s, w);
    pthread_mutex_lock(&g_lock);
    g_strings_out++;
    pthread_mutex_unlock(&g_lock);
    return w;
}

wchar_t *out_local(const char *s) { return out_string(s, ALLOC_LOCAL); }
wchar_t *out_cotask(const char *s) { return out_string(s, ALLOC_COTASK); }

/* A call Windows would crash on or refuse (a NULL handle where one is required): listed with
 * the free errors, so a ledger that shows it is not clean. Called with g_lock held. */
void misuse(const char *what)
{
    cJSON_AddItemToArray(g_free_errors, cJSON_CreateString(what));
}

static void free_out(void *p, uint32_t alloc, const char *fn)
{
    if (!p)
        return;
    struct str_hdr *h = (struct str_hdr *)p - 1;
    pthread_mutex_lock(&g_lock);
    if (h->magic != STR_MAGIC) {
        cJSON_AddItemToArray(g_free_errors, cJSON_CreateString(fn));
        pthread_mutex_unlock(&g_lock);
        return;
    }
    if (h->alloc != alloc) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s on a string from the other allocator", fn);
        cJSON_AddItemToArray(g_free_errors, cJSON_CreateString(msg));
    }
    h->magic = 0;
    g_strings_out--;
    pthread_mutex_unlock(&g_lock);
    free(h);
}

char *result_error(HRESULT hr, const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "Error", hr);
    cJSON_AddStringToObject(o, "ErrorMessage", msg);
    cJSON *evs = cJSON_AddArrayToObject(o, "ErrorEvents");
    cJSON *ev = cJSON_CreateObject();
    cJSON_AddStringToObject(ev, "Message", msg);
    cJSON_AddStringToObject(ev, "Source", "hcs_sim");
    cJSON_AddItemToArray(evs, ev);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* ---------- call records ---------- */

void record_json(const char *call, cJSON *args)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "call", call);
    cJSON_AddItemToObject(o, "args", args);
    pthread_mutex_lock(&g_rec_lock);
    cJSON_AddItemToArray(g_calls, o);
    pthread_mutex_unlock(&g_rec_lock);
}

void record(const char *call, int n, const wchar_t *const *args)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        char *s = w2u(args[i]);
        cJSON_AddItemToArray(a, s ? cJSON_CreateString(s) : cJSON_CreateNull());
        free(s);
    }
    record_json(call, a);
}

/* ---------- faults ---------- */

struct fault { char *name, *msg; HRESULT hr; int mode, signum; struct fault *next; };
static struct fault *g_faults;

static void fault_add(const char *name, HRESULT hr, int mode, const char *msg)
{
    struct fault *f = calloc(1, sizeof *f);
    f->name = strdup(name);
    f->msg = msg ? strdup(msg) : NULL;
    f->hr = hr;
    f->mode = mode;
    f->next = g_faults;
    g_faults = f;
}

/* "dll!Name" matches a fault registered as either "dll!Name" or "Name". */
int fault_for(const char *call, HRESULT *hr, char **msg)
{
    const char *bare = strchr(call, '!');
    bare = bare ? bare + 1 : call;
    int mode = 0;
    pthread_mutex_lock(&g_rec_lock);
    int signum = 0, delay_ms = 0;
    for (struct fault *f = g_faults; f; f = f->next) {
        if (strcmp(f->name, call) && strcmp(f->name, bare))
            continue;
        if (f->mode == FAULT_DELAY) {
            delay_ms = f->hr;
            continue;
        }
        if (f->signum) {
            /* One shot, and the call itself goes on: the launcher hears the signal as
             * soon as this call returns, so it lands in a known phase. */
            signum = f->signum;
            f->signum = 0;
            continue;
        }
        if (f->mode == FAULT_SIGNAL)
            continue;
        *hr = f->hr;
        if (msg) {
            char def[160];
            snprintf(def, sizeof def, "%s failed (simulated fault)", bare);
            *msg = strdup(f->msg ? f->msg : def);
        }
        mode = f->mode + 1;
        break;
    }
    pthread_mutex_unlock(&g_rec_lock);
    if (signum)
        kill(getpid(), signum);
    if (delay_ms) {
        struct timespec ts = {delay_ms / 1000, (long)(delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return mode;
}

/* NSPAWN_HCS_SIM_FAULTS="HcsStartComputeSystem=0x80370105;HcsCreateProcess=hang;X=0x80004005:async;
 * ActivateLayer=signal:2;HcsShutDownComputeSystem=0xC0370103:accepted;HcsSetProcessCallback=delay:300"
 * (delay: waits 300 ms on entering the call; signal: sends SIGINT to this process once, when ActivateLayer is entered) */
static void faults_from_env(void)
{
    const char *env = getenv("NSPAWN_HCS_SIM_FAULTS");
    if (!env)
        return;
    char *copy = strdup(env), *save = NULL;
    for (char *tok = strtok_r(copy, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            continue;
        *eq++ = 0;
        if (!strcmp(eq, "hang")) {
            fault_add(tok, 0, FAULT_HANG, NULL);
            continue;
        }
        if (!strncmp(eq, "delay:", 6)) {
            fault_add(tok, (HRESULT)atoi(eq + 6), FAULT_DELAY, NULL);
            continue;
        }
        if (!strncmp(eq, "signal:", 7)) {
            fault_add(tok, 0, FAULT_SIGNAL, NULL);
            g_faults->signum = atoi(eq + 7);
            continue;
        }
        char *colon = strchr(eq, ':');
        int mode = !colon ? FAULT_SYNC : !strcmp(colon + 1, "async") ? FAULT_ASYNC
                 : !strcmp(colon + 1, "accepted") ? FAULT_ACCEPTED
                 : !strcmp(colon + 1, "unstarted") ? FAULT_UNSTARTED : FAULT_SYNC;
        fault_add(tok, (HRESULT)strtoul(eq, NULL, 0), mode, NULL);
    }
    free(copy);
}

/* ---------- handles ---------- */

static uint64_t g_handle_counter;

sim_handle *handle_new(int kind, int api)
{
    sim_handle *h = calloc(1, sizeof *h);
    h->value = SIM_HANDLE_BASE + (++g_handle_counter) * 4;
    h->kind = kind;
    h->api = api;
    h->next = g_handles;
    g_handles = h;
    return h;
}

HANDLE handle_value(sim_handle *h) { return h ? (HANDLE)(uintptr_t)h->value : NULL; }

sim_handle *handle_get(HANDLE v, int kind)
{
    for (sim_handle *h = g_handles; h; h = h->next)
        if (h->value == (uint64_t)(uintptr_t)v && (!kind || h->kind == kind))
            return h;
    return NULL;
}

static void handle_free(sim_handle *h)
{
    free(h->op_doc);
    free(h->obj_id);
    free(h);
}

/* Like HcsClose*: no callback runs after this returns, except when called from
 * a callback (the worker), where waiting would deadlock. */
void handle_close(sim_handle *h)
{
    for (sim_handle **pp = &g_handles; *pp; pp = &(*pp)->next)
        if (*pp == h) {
            *pp = h->next;
            break;
        }
    if (!on_worker())
        while (h->in_flight)
            pthread_cond_wait(&g_cond, &g_lock);
    h->closed = h->in_flight ? CLOSED_BY_DELIVERY : CLOSED_BY_CLOSER;
    sim_system *s = h->kind == K_SYSTEM ? h->sys : NULL;
    if (h->closed == CLOSED_BY_CLOSER)
        handle_free(h);
    if (s && s->state != ST_STOPPED && !s->stopping) {
        for (sim_handle *o = g_handles; o; o = o->next)
            if (o->kind == K_SYSTEM && o->sys == s)
                goto done;
        if (s->terminate_on_close)
            system_stop(s, 0);
    }
done:
    gc_objects();
}

void pipe_handed_out(int fd)
{
    if (fd >= 0 && fd < (int)sizeof g_pipe_out)
        g_pipe_out[fd] = 1;
}

sim_system *system_by_seq(uint64_t seq)
{
    for (sim_system *s = g_systems; s; s = s->next)
        if (s->seq == seq)
            return s;
    return NULL;
}

sim_process *process_by_seq(uint64_t seq)
{
    for (sim_process *p = g_processes; p; p = p->next)
        if (p->seq == seq)
            return p;
    return NULL;
}

static int referenced(sim_system *s, sim_process *p)
{
    for (sim_handle *h = g_handles; h; h = h->next)
        if ((p && h->proc == p) || (s && h->sys == s))
            return 1;
    if (s)
        for (sim_process *q = g_processes; q; q = q->next)
            if (q->sys == s)
                return 1;
    return 0;
}

static void process_free(sim_process *p)
{
    for (int i = 0; i < 3; i++)
        if (p->fds[i] >= 0)
            close(p->fds[i]);
    if (p->console >= 0)
        close(p->console);
    cJSON_Delete(p->backlog);
    free(p->image);
    free(p);
}

static void system_free(sim_system *s)
{
    guardian_disarm(s);
    free(s->id);
    free(s->owner);
    cJSON_Delete(s->mapped);
    cJSON_Delete(s->groups);
    cJSON_Delete(s->backlog);
    free(s);
}

/* Objects leave the ledger once they have ended and nothing refers to them. */
void gc_objects(void)
{
    for (sim_process **pp = &g_processes; *pp;) {
        sim_process *p = *pp;
        if (p->exited && !referenced(NULL, p)) {
            *pp = p->next;
            process_free(p);
        } else {
            pp = &p->next;
        }
    }
    for (sim_system **sp = &g_systems; *sp;) {
        sim_system *s = *sp;
        if ((s->state == ST_STOPPED || s->foreign) && !referenced(s, NULL)) {
            *sp = s->next;
            system_free(s);
        } else {
            sp = &s->next;
        }
    }
}

/* ---------- operations and hangs ---------- */

void op_complete(sim_handle *op, HRESULT hr, const char *doc)
{
    op->op_state = OP_DONE;
    op->op_hr = hr;
    free(op->op_doc);
    op->op_doc = doc ? strdup(doc) : NULL;
    pthread_cond_broadcast(&g_cond);
}

#define MAX_HANGS 64
static struct { uint64_t seq; int used, released; HRESULT hr; } g_hangs[MAX_HANGS];

void release_hangs(uint64_t seq, HRESULT hr)
{
    for (int i = 0; i < MAX_HANGS; i++)
        if (g_hangs[i].used && g_hangs[i].seq == seq) {
            g_hangs[i].released = 1;
            g_hangs[i].hr = hr;
        }
    for (sim_handle *h = g_handles; h; h = h->next)
        if (h->kind == K_OPERATION && h->op_state == OP_PENDING && h->hung_on == seq) {
            char *doc = result_error(hr, "the operation was cut short by termination");
            op_complete(h, hr, doc);
            free(doc);
        }
    pthread_cond_broadcast(&g_cond);
}

HRESULT hang_here(uint64_t seq)
{
    int slot = -1;
    for (int i = 0; i < MAX_HANGS && slot < 0; i++)
        if (!g_hangs[i].used)
            slot = i;
    if (slot < 0)
        return E_FAIL;
    g_hangs[slot].used = 1;
    g_hangs[slot].released = 0;
    g_hangs[slot].seq = seq;
    uint64_t gen = g_reset_gen;
    while (!g_hangs[slot].released && gen == g_reset_gen)
        pthread_cond_wait(&g_cond, &g_lock);
    HRESULT hr = gen == g_reset_gen ? g_hangs[slot].hr : E_ABORT;
    g_hangs[slot].used = 0;
    return hr;
}

/* ---------- worker thread ---------- */

static sim_job *g_jobs, **g_jobs_tail = &g_jobs;
static pthread_t g_worker;

int on_worker(void) { return pthread_equal(pthread_self(), g_worker); }

void job_post(void (*fn)(sim_job *), uint64_t a, uint64_t b, HRESULT hr, uint32_t type, const char *text)
{
    sim_job *j = calloc(1, sizeof *j);
    j->fn = fn;
    j->a = a;
    j->b = b;
    j->hr = hr;
    j->type = type;
    j->text = text ? strdup(text) : NULL;
    *g_jobs_tail = j;
    g_jobs_tail = &j->next;
    pthread_cond_broadcast(&g_cond);
}

static void *worker_main(void *arg)
{
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_mutex_lock(&g_lock);
    for (;;) {
        while (!g_jobs)
            pthread_cond_wait(&g_cond, &g_lock);
        sim_job *j = g_jobs;
        g_jobs = j->next;
        if (!g_jobs)
            g_jobs_tail = &g_jobs;
        pthread_mutex_unlock(&g_lock);
        j->fn(j);
        free(j->text);
        free(j);
        pthread_mutex_lock(&g_lock);
    }
    return NULL;
}

struct hcs_event { uint32_t type; const wchar_t *data; void *operation; };
typedef void (*event_cb)(struct hcs_event *, void *);
typedef void (*notify_cb)(uint32_t, void *, HRESULT, const wchar_t *);

static void backlog_add(cJSON **bl, uint32_t v2type, uint32_t v1type, HRESULT status, const char *data)
{
    if (!*bl)
        *bl = cJSON_CreateArray();
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "v2", v2type);
    cJSON_AddNumberToObject(o, "v1", v1type);
    cJSON_AddNumberToObject(o, "status", status);
    if (data)
        cJSON_AddStringToObject(o, "data", data);
    cJSON_AddItemToArray(*bl, o);
}

/* Runs on the worker without g_lock, like HCS calling back from its own
 * threads.  A system's events nobody is registered for yet are kept and handed to the
 * first callback registered later (v1 callers register after create); a process's are lost. */
void deliver(uint64_t sys_seq, uint64_t proc_seq, uint32_t v2type, uint32_t v1type, HRESULT status, const char *data)
{
    enum { MAXT = 32 };
    sim_handle *t[MAXT];
    int n = 0;
    pthread_mutex_lock(&g_lock);
    sim_system *sys = system_by_seq(sys_seq);
    sim_process *proc = proc_seq ? process_by_seq(proc_seq) : NULL;
    if (!sys || (proc_seq && !proc)) {  /* gone: nobody can be told any more */
        pthread_mutex_unlock(&g_lock);
        return;
    }
    for (sim_handle *h = g_handles; h && n < MAXT; h = h->next) {
        if (!h->cb || h->closed)
            continue;
        if (proc ? h->proc != proc : (h->sys != sys || h->proc))
            continue;
        if ((h->api == 2 && !v2type) || (h->api == 1 && !v1type))
            continue;
        h->in_flight++;
        t[n++] = h;
    }
    if (!n && proc) {
        /* As on Windows, an exit before the process's callback is registered reaches nobody:
         * the caller has to ask once it has registered. */
        pthread_mutex_unlock(&g_lock);
        return;
    }
    if (!n) {
        backlog_add(&sys->backlog, v2type, v1type, status, data);
        pthread_mutex_unlock(&g_lock);
        return;
    }
    g_delivering++;
    pthread_mutex_unlock(&g_lock);
    wchar_t *w = u2w(data);
    for (int i = 0; i < n; i++) {
        if (t[i]->api == 2) {
            struct hcs_event ev = {v2type, w, NULL};
            ((event_cb)t[i]->cb)(&ev, t[i]->ctx);
        } else {
            ((notify_cb)t[i]->cb)(v1type, t[i]->ctx, status, w);
        }
    }
    free(w);
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < n; i++)
        if (!--t[i]->in_flight && t[i]->closed == CLOSED_BY_DELIVERY)
            handle_free(t[i]);
    g_delivering--;
    pthread_cond_broadcast(&g_cond);
    pthread_mutex_unlock(&g_lock);
}

void flush_backlog(uint64_t sys_seq, uint64_t proc_seq)
{
    pthread_mutex_lock(&g_lock);
    sim_system *sys = system_by_seq(sys_seq);
    sim_process *proc = proc_seq ? process_by_seq(proc_seq) : NULL;
    cJSON *items = NULL;
    if (sys && (!proc_seq || proc)) {
        cJSON **bl = proc ? &proc->backlog : &sys->backlog;
        items = *bl;
        *bl = NULL;
    }
    pthread_mutex_unlock(&g_lock);
    cJSON *it;
    cJSON_ArrayForEach(it, items)
    {
        cJSON *d = cJSON_GetObjectItem(it, "data");
        deliver(sys_seq, proc_seq, (uint32_t)cJSON_GetObjectItem(it, "v2")->valuedouble,
                (uint32_t)cJSON_GetObjectItem(it, "v1")->valuedouble,
                (HRESULT)cJSON_GetObjectItem(it, "status")->valuedouble, d ? d->valuestring : NULL);
    }
    cJSON_Delete(items);
}

/* ---------- ledger and test control ---------- */

static const char *const kind_names[] = {"", "system", "process", "operation", "callback",
                                         "network", "endpoint", "namespace", "job", "event"};
static const char *const state_names[] = {"creating", "created", "running", "stopped"};

static int count_refs(sim_system *s, sim_process *p)
{
    int n = 0;
    for (sim_handle *h = g_handles; h; h = h->next)
        if ((p && h->proc == p) || (s && h->sys == s && !h->proc))
            n++;
    return n;
}

SIM_API char *SimLedgerJson(void)
{
    pthread_mutex_lock(&g_lock);
    cJSON *o = cJSON_CreateObject();
    cJSON *systems = cJSON_AddArrayToObject(o, "systems");
    for (sim_system *s = g_systems; s; s = s->next) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "id", s->id);
        cJSON_AddNumberToObject(j, "api", s->api);
        cJSON_AddStringToObject(j, "state", state_names[s->state]);
        cJSON_AddNumberToObject(j, "handles", count_refs(s, NULL));
        if (s->affinity)
            cJSON_AddNumberToObject(j, "affinity", (double)s->affinity);
        cJSON_AddItemToArray(systems, j);
    }
    cJSON *procs = cJSON_AddArrayToObject(o, "processes");
    for (sim_process *p = g_processes; p; p = p->next) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "system", p->sys->id);
        cJSON_AddNumberToObject(j, "pid", p->pid);
        cJSON_AddBoolToObject(j, "exited", p->exited);
        cJSON_AddNumberToObject(j, "exit_code", p->exit_code);
        cJSON_AddNumberToObject(j, "handles", count_refs(NULL, p));
        cJSON_AddItemToArray(procs, j);
    }
    cJSON *handles = cJSON_AddObjectToObject(o, "handles");
    for (sim_handle *h = g_handles; h; h = h->next) {
        cJSON *c = cJSON_GetObjectItem(handles, kind_names[h->kind]);
        if (c)
            cJSON_SetNumberValue(c, c->valuedouble + 1);
        else
            cJSON_AddNumberToObject(handles, kind_names[h->kind], 1);
    }
    cJSON *pipes = cJSON_AddArrayToObject(o, "pipes");
    for (int fd = 0; fd < (int)sizeof g_pipe_out; fd++)
        if (g_pipe_out[fd])
            cJSON_AddItemToArray(pipes, cJSON_CreateNumber(fd));
    cJSON_AddNumberToObject(o, "strings", (double)g_strings_out);
    cJSON_AddItemToObject(o, "free_errors", cJSON_Duplicate(g_free_errors, 1));
    cJSON_AddItemToObject(o, "layers", layers_ledger());
    cJSON *net = net_ledger();
    cJSON_AddItemToObject(o, "endpoints", cJSON_DetachItemFromObject(net, "endpoints"));
    cJSON_AddItemToObject(o, "namespaces", cJSON_DetachItemFromObject(net, "namespaces"));
    cJSON_Delete(net);
    pthread_mutex_lock(&g_rec_lock);
    cJSON_AddItemToObject(o, "calls", cJSON_Duplicate(g_calls, 1));
    pthread_mutex_unlock(&g_rec_lock);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    pthread_mutex_unlock(&g_lock);
    return s;
}

SIM_API void SimFree(void *p) { free(p); }

SIM_API void SimFailCall(const char *name, int32_t hr, int32_t mode, const char *message)
{
    pthread_mutex_lock(&g_rec_lock);
    fault_add(name, hr, mode, message);
    pthread_mutex_unlock(&g_rec_lock);
}

SIM_API void SimHangCall(const char *name) { SimFailCall(name, 0, FAULT_HANG, NULL); }

SIM_API void SimSetOverlappedPipes(int32_t on) { g_overlapped_pipes = on; }

/* Kills every process, forgets every object and releases hung calls; handles
 * the tests still hold become invalid. */
SIM_API void SimReset(void)
{
    pthread_mutex_lock(&g_lock);
    g_reset_gen++;
    pthread_cond_broadcast(&g_cond);
    if (!on_worker())
        while (g_delivering)
            pthread_cond_wait(&g_cond, &g_lock);
    processes_kill_all();
    for (sim_job *j = g_jobs, *n; j; j = n) {
        n = j->next;
        free(j->text);
        free(j);
    }
    g_jobs = NULL;
    g_jobs_tail = &g_jobs;
    for (sim_handle *h = g_handles, *n; h; h = n) {
        n = h->next;
        if (h->in_flight)
            h->closed = CLOSED_BY_DELIVERY;
        else
            handle_free(h);
    }
    g_handles = NULL;
    for (sim_process *p = g_processes, *n; p; p = n) {
        n = p->next;
        process_free(p);
    }
    g_processes = NULL;
    for (sim_system *s = g_systems, *n; s; s = n) {
        n = s->next;
        system_free(s);
    }
    g_systems = NULL;
    for (int fd = 0; fd < (int)sizeof g_pipe_out; fd++)
        if (g_pipe_out[fd]) {
            close(fd);
            g_pipe_out[fd] = 0;
        }
    pthread_mutex_lock(&g_rec_lock);
    for (struct fault *f = g_faults, *n; f; f = n) {
        n = f->next;
        free(f->name);
        free(f->msg);
        free(f);
    }
    g_faults = NULL;
    cJSON_Delete(g_calls);
    cJSON_Delete(g_free_errors);
    g_calls = cJSON_CreateArray();
    faults_from_env();
    pthread_mutex_unlock(&g_rec_lock);
    g_free_errors = cJSON_CreateArray();
    g_strings_out = 0;
    g_overlapped_pipes = 0;
    layers_reset();
    privileges_reset();
    net_reset();
    pthread_mutex_unlock(&g_lock);
}

/* The simulated HCS lives inside the launcher's process, so a test that runs the CLI reads
 * what was left alive from NSPAWN_HCS_SIM_LEDGER, written when that process exits.  The
 * lock is only tried for a while: a thread that died holding it must not hang the exit. */
__attribute__((destructor)) static void sim_dump_ledger(void)
{
    const char *path = getenv("NSPAWN_HCS_SIM_LEDGER");
    if (!path)
        return;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 2;
    if (pthread_mutex_timedlock(&g_lock, &until))
        return;
    pthread_mutex_unlock(&g_lock);
    char *json = SimLedgerJson();
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(json, f);
        fclose(f);
    }
    free(json);
}

__attribute__((constructor)) static void sim_init(void)
{
    g_calls = cJSON_CreateArray();
    g_free_errors = cJSON_CreateArray();
    net_reset();
    faults_from_env();
    pthread_create(&g_worker, NULL, worker_main, NULL);
}

/* ---------- kernel32 / ole32 / ntdll ---------- */

static int pipe_fd(HANDLE h)
{
    intptr_t fd = (intptr_t)h;
    if (fd <= 0 || fd >= (intptr_t)sizeof g_pipe_out || !g_pipe_out[fd])
        return -1;
    return (int)fd;
}

SIM_API uint32_t kernel32_GetLastError(void) { return t_last_error; }

SIM_API void *kernel32_LocalFree(void *p)
{
    record("kernel32!LocalFree", 0, NULL);
    free_out(p, ALLOC_LOCAL, "LocalFree");
    return NULL;
}

SIM_API void ole32_CoTaskMemFree(void *p)
{
    record("ole32!CoTaskMemFree", 0, NULL);
    free_out(p, ALLOC_COTASK, "CoTaskMemFree");
}

SIM_API int32_t kernel32_CloseHandle(HANDLE h)
{
    record("kernel32!CloseHandle", 0, NULL);
    int fd = pipe_fd(h);
    pthread_mutex_lock(&g_lock);
    if (fd >= 0) {
        g_pipe_out[fd] = 0;
        close(fd);
        pthread_mutex_unlock(&g_lock);
        return 1;
    }
    sim_handle *sh = handle_get(h, 0);
    if (sh && (sh->kind == K_JOB || sh->kind == K_EVENT || sh->kind == K_TOKEN || sh->kind == K_HOST_PROCESS)) {
        handle_close(sh);
        pthread_mutex_unlock(&g_lock);
        return 1;
    }
    pthread_mutex_unlock(&g_lock);
    set_last_error(ERROR_INVALID_HANDLE);
    return 0;
}

/* The image store's locks on Windows: a launcher's file handles are its descriptors here, and
 * LockFileEx on the first byte is flock, shared or exclusive (ERROR_LOCK_VIOLATION when it
 * may not wait). */
#define ERROR_LOCK_VIOLATION 33
SIM_API int32_t kernel32_LockFileEx(HANDLE h, uint32_t flags, uint32_t reserved, uint32_t low, uint32_t high, void *ov)
{
    record("kernel32!LockFileEx", 0, NULL);
    if (reserved || low != 1 || high || !ov) {
        set_last_error(ERROR_INVALID_PARAMETER);
        return 0;
    }
    int op = (flags & 2 ? LOCK_EX : LOCK_SH) | (flags & 1 ? LOCK_NB : 0);
    if (flock((int)(intptr_t)h, op)) {
        set_last_error(errno == EWOULDBLOCK ? ERROR_LOCK_VIOLATION : ERROR_INVALID_HANDLE);
        return 0;
    }
    set_last_error(0);
    return 1;
}

/* Processes of this host by pid, for the store's sweep of dead pulls: OpenProcess fails with
 * ERROR_INVALID_PARAMETER for a pid no process has, as Windows does. */
static int host_pid_alive(pid_t pid)
{
    return kill(pid, 0) == 0 || errno == EPERM;
}

SIM_API HANDLE kernel32_OpenProcess(uint32_t access, int32_t inherit, uint32_t pid)
{
    record("kernel32!OpenProcess", 0, NULL);
    if (!pid || !host_pid_alive((pid_t)pid)) {
        set_last_error(ERROR_INVALID_PARAMETER);
        return NULL;
    }
    pthread_mutex_lock(&g_lock);
    sim_handle *h = handle_new(K_HOST_PROCESS, 0);
    h->op_proc = pid;
    HANDLE v = handle_value(h);
    pthread_mutex_unlock(&g_lock);
    (void)access;
    (void)inherit;
    set_last_error(0);
    return v;
}

SIM_API int32_t kernel32_GetExitCodeProcess(HANDLE h, uint32_t *code)
{
    record("kernel32!GetExitCodeProcess", 0, NULL);
    pthread_mutex_lock(&g_lock);
    sim_handle *sh = handle_get(h, K_HOST_PROCESS);
    pid_t pid = sh ? (pid_t)sh->op_proc : 0;
    pthread_mutex_unlock(&g_lock);
    if (!sh || !code) {
        set_last_error(!sh ? ERROR_INVALID_HANDLE : ERROR_INVALID_PARAMETER);
        return 0;
    }
    *code = host_pid_alive(pid) ? 259 : 0;
    return 1;
}

/* The launcher's own stdio handles are its file descriptors here: the type of what is behind
 * one, as GetFileType reports it (FILE_TYPE_DISK 1, CHAR 2 for consoles and the null device,
 * PIPE 3 for pipes and sockets). */
SIM_API uint32_t kernel32_GetFileType(HANDLE h)
{
    record("kernel32!GetFileType", 0, NULL);
    struct stat st;
    if ((intptr_t)h < 0 || (intptr_t)h > INT32_MAX || fstat((int)(intptr_t)h, &st)) {
        set_last_error(ERROR_INVALID_HANDLE);
        return 0;
    }
    set_last_error(0);
    if (S_ISREG(st.st_mode))
        return 1;
    if (S_ISCHR(st.st_mode))
        return 2;
    if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))
        return 3;
    return 0;
}

/* Overlapped mode models pipe handles opened FILE_FLAG_OVERLAPPED: the call
 * returns ERROR_IO_PENDING and GetOverlappedResult does the transfer. */
#define MAX_PENDING_IO 64
static struct { void *ov; int fd, write; void *buf; uint32_t len; } g_io[MAX_PENDING_IO];

/* NSPAWN_HCS_SIM_BLOCKED_WRITES=FILE: a write held up (its pipe is full, as when the container
 * never reads its stdin) appends a line to FILE as it starts waiting, so a test's payload can
 * wait until the launcher is held in a write before it exits. The write is the same as a
 * blocking one (every byte, waiting for room as long as it takes), done without blocking in
 * write() so that the simulator knows when it waits. */
static void mark_blocked_write(int fd)
{
    const char *path = getenv("NSPAWN_HCS_SIM_BLOCKED_WRITES");
    if (!path || !*path)
        return;
    int mark = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (mark >= 0) {
        dprintf(mark, "blocked write on %d\n", fd);
        close(mark);
    }
}

static ssize_t write_waiting(int fd, const char *buf, uint32_t len)
{
    int flags = fcntl(fd, F_GETFL), marked = 0;
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, buf + off, len - off);
        if (n >= 0) {
            off += (size_t)n;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            break;
        if (!marked++)
            mark_blocked_write(fd);
        struct pollfd p = {fd, POLLOUT, 0};
        poll(&p, 1, -1);
    }
    int saved = errno;
    fcntl(fd, F_SETFL, flags);
    errno = saved;
    return off == len || off ? (ssize_t)off : -1; /* a part written counts, as WriteFile's count says */
}

static int32_t do_io(int fd, int write_, void *buf, uint32_t len, uint32_t *done)
{
    ssize_t n;
    if (write_)
        n = write_waiting(fd, buf, len);
    else
        do
            n = read(fd, buf, len);
        while (n < 0 && errno == EINTR);
    if (done)
        *done = n > 0 ? (uint32_t)n : 0;
    if (n < 0) {
        set_last_error(errno == EPIPE ? ERROR_NO_DATA : ERROR_INVALID_HANDLE);
        return 0;
    }
    if (n == 0 && !write_ && len) {
        set_last_error(ERROR_BROKEN_PIPE);
        return 0;
    }
    return 1;
}

static int32_t start_io(HANDLE h, int write_, void *buf, uint32_t len, uint32_t *done, void *ov)
{
    int fd = pipe_fd(h);
    if (fd < 0) {
        set_last_error(ERROR_INVALID_HANDLE);
        return 0;
    }
    if (!g_overlapped_pipes || !ov)
        return do_io(fd, write_, buf, len, done);
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < MAX_PENDING_IO; i++)
        if (!g_io[i].ov) {
            g_io[i].ov = ov;
            g_io[i].fd = fd;
            g_io[i].write = write_;
            g_io[i].buf = buf;
            g_io[i].len = len;
            break;
        }
    pthread_mutex_unlock(&g_lock);
    if (done)
        *done = 0;
    set_last_error(ERROR_IO_PENDING);
    return 0;
}

SIM_API int32_t kernel32_ReadFile(HANDLE h, void *buf, uint32_t len, uint32_t *done, void *ov)
{
    record("kernel32!ReadFile", 0, NULL);
    return start_io(h, 0, buf, len, done, ov);
}

SIM_API int32_t kernel32_WriteFile(HANDLE h, const void *buf, uint32_t len, uint32_t *done, void *ov)
{
    record("kernel32!WriteFile", 0, NULL);
    return start_io(h, 1, (void *)buf, len, done, ov);
}

SIM_API int32_t kernel32_GetOverlappedResult(HANDLE h, void *ov, uint32_t *done, int32_t wait)
{
    (void)h;
    (void)wait;
    record("kernel32!GetOverlappedResult", 0, NULL);
    int fd = -1, write_ = 0;
    void *buf = NULL;
    uint32_t len = 0;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < MAX_PENDING_IO; i++)
        if (g_io[i].ov == ov) {
            fd = g_io[i].fd;
            write_ = g_io[i].write;
            buf = g_io[i].buf;
            len = g_io[i].len;
            g_io[i].ov = NULL;
            break;
        }
    pthread_mutex_unlock(&g_lock);
    if (fd < 0) {
        set_last_error(ERROR_INVALID_PARAMETER);
        return 0;
    }
    return do_io(fd, write_, buf, len, done);
}

SIM_API HANDLE kernel32_CreateEventW(void *sa, int32_t manual, int32_t initial, const wchar_t *name)
{
    (void)sa;
    (void)manual;
    (void)initial;
    (void)name;
    record("kernel32!CreateEventW", 0, NULL);
    pthread_mutex_lock(&g_lock);
    HANDLE v = handle_value(handle_new(K_EVENT, 0));
    pthread_mutex_unlock(&g_lock);
    return v;
}

struct unicode_string { uint16_t length, maximum; wchar_t *buffer; };
struct object_attributes {
    uint32_t length;
    HANDLE root;
    struct unicode_string *name;
    uint32_t attributes;
    void *sd, *qos;
};

#define STATUS_OBJECT_NAME_NOT_FOUND ((int32_t)0xC0000034)
#define STATUS_INVALID_PARAMETER ((int32_t)0xC000000D)

SIM_API int32_t ntdll_NtOpenJobObject(HANDLE *job, uint32_t access, struct object_attributes *oa)
{
    (void)access;
    if (!job || !oa || oa->length != sizeof *oa || !oa->name)
        return STATUS_INVALID_PARAMETER;
    size_t n = oa->name->length / sizeof(wchar_t);
    wchar_t *w = calloc(n + 1, sizeof(wchar_t));
    memcpy(w, oa->name->buffer, n * sizeof(wchar_t));
    char *name = w2u(w);
    free(w);
    cJSON *rec = cJSON_CreateArray();
    cJSON_AddItemToArray(rec, cJSON_CreateString(name));
    record_json("ntdll!NtOpenJobObject", rec);
    int32_t status = STATUS_OBJECT_NAME_NOT_FOUND;
    pthread_mutex_lock(&g_lock);
    sim_system *s = strncmp(name, "\\Container_", 11) ? NULL : system_find(name + 11);
    if (s && s->state != ST_STOPPED) {
        sim_handle *h = handle_new(K_JOB, 0);
        h->sys = s;
        *job = handle_value(h);
        status = 0;
    }
    pthread_mutex_unlock(&g_lock);
    free(name);
    return status;
}

SIM_API uint32_t ntdll_RtlNtStatusToDosError(int32_t status)
{
    record("ntdll!RtlNtStatusToDosError", 0, NULL);
    switch ((uint32_t)status) {
    case 0: return 0;
    case 0xC0000034: return ERROR_FILE_NOT_FOUND;
    case 0xC0000022: return ERROR_ACCESS_DENIED;
    case 0xC000000D: return ERROR_INVALID_PARAMETER;
    default: return 317; /* ERROR_MR_MID_NOT_FOUND, as Windows does for unknown codes */
    }
}

/* The host's processor topology and Windows build, as the tests set them:
 * NSPAWN_HCS_SIM_GROUPS="36,36" is two processor groups of 36 active CPUs (Windows sizes groups
 * by NUMA node, so they need not hold 64; GetActiveProcessorGroupCount's page), by default one
 * group of this host's CPUs; NSPAWN_HCS_SIM_BUILD is the build RtlGetVersion reports (20348,
 * Windows Server 2022, by default). Read at each call, so a test may change them. */
#define MAX_GROUPS 32
static int sim_groups(uint32_t sizes[MAX_GROUPS])
{
    const char *env = getenv("NSPAWN_HCS_SIM_GROUPS");
    int n = 0;
    if (env && *env) {
        char *end;
        for (const char *p = env; *p && n < MAX_GROUPS; p = *end ? end + 1 : end) {
            unsigned long v = strtoul(p, &end, 10);
            if (end == p || v == 0 || v > 64)
                break;
            sizes[n++] = (uint32_t)v;
        }
    }
    if (!n) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        sizes[n++] = cpus < 1 ? 1 : cpus > 64 ? 64 : (uint32_t)cpus;
    }
    return n;
}

SIM_API uint16_t kernel32_GetActiveProcessorGroupCount(void)
{
    record("kernel32!GetActiveProcessorGroupCount", 0, NULL);
    uint32_t sizes[MAX_GROUPS];
    return (uint16_t)sim_groups(sizes);
}

#define ALL_PROCESSOR_GROUPS 0xFFFF

SIM_API uint32_t kernel32_GetActiveProcessorCount(uint16_t group)
{
    record("kernel32!GetActiveProcessorCount", 0, NULL);
    uint32_t sizes[MAX_GROUPS], total = 0;
    int n = sim_groups(sizes);
    if (group == ALL_PROCESSOR_GROUPS) {
        for (int i = 0; i < n; i++)
            total += sizes[i];
        return total;
    }
    if (group >= n) {
        set_last_error(ERROR_INVALID_PARAMETER);
        return 0;
    }
    return sizes[group];
}

struct os_version_info_w {
    uint32_t size, major, minor, build, platform;
    wchar_t csd[128]; /* WCHAR: as c_wchar, the Python side's width */
};

SIM_API int32_t ntdll_RtlGetVersion(struct os_version_info_w *info)
{
    record("ntdll!RtlGetVersion", 0, NULL);
    if (!info || info->size != sizeof *info)
        return STATUS_INVALID_PARAMETER;
    const char *env = getenv("NSPAWN_HCS_SIM_BUILD");
    info->major = 10;
    info->minor = 0;
    info->build = env && *env ? (uint32_t)strtoul(env, NULL, 10) : 20348;
    info->platform = 2; /* VER_PLATFORM_WIN32_NT */
    memset(info->csd, 0, sizeof info->csd);
    return 0;
}

#define JobObjectGroupInformationEx 14
struct group_affinity { uint64_t mask; uint16_t group, reserved[3]; };

/* The affinity reaches the real Linux processes of the silo, current and future: CPU `bit` of
 * group g is Linux CPU (sizes of the groups before g) + bit. A group the host lacks, or a bit
 * beyond its active CPUs, is refused as Windows refuses them (ERROR_INVALID_PARAMETER). */
SIM_API int32_t kernel32_SetInformationJobObject(HANDLE job, int32_t cls, void *info, uint32_t len)
{
    uint32_t sizes[MAX_GROUPS], first[MAX_GROUPS];
    int groups = sim_groups(sizes);
    for (int g = 0; g < groups; g++)
        first[g] = g ? first[g - 1] + sizes[g - 1] : 0;
    pthread_mutex_lock(&g_lock);
    sim_handle *h = handle_get(job, K_JOB);
    uint32_t err = 0;
    struct group_affinity *ga = info;
    uint32_t n = info ? len / sizeof *ga : 0;
    if (!h)
        err = ERROR_INVALID_HANDLE;
    else if (cls != JobObjectGroupInformationEx || !len || len % sizeof *ga)
        err = ERROR_INVALID_PARAMETER;
    else
        for (uint32_t i = 0; i < n; i++)
            if (!ga[i].mask || ga[i].group >= groups || (sizes[ga[i].group] < 64 && ga[i].mask >> sizes[ga[i].group]))
                err = ERROR_INVALID_PARAMETER;
    if (!err) {
        /* The silo's Linux CPUs (0-63), which processes started later take too. */
        uint64_t cpus = 0;
        cpu_set_t set;
        CPU_ZERO(&set);
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t c = 0; c < 64; c++)
                if (ga[i].mask >> c & 1) {
                    CPU_SET(first[ga[i].group] + c, &set);
                    if (first[ga[i].group] + c < 64)
                        cpus |= 1ULL << (first[ga[i].group] + c);
                }
        h->sys->affinity = cpus;
        for (sim_process *p = g_processes; p; p = p->next)
            if (p->sys == h->sys && !p->exited)
                sched_setaffinity(p->pid, sizeof set, &set);
    }
    pthread_mutex_unlock(&g_lock);
    cJSON *rec = cJSON_CreateArray();
    cJSON_AddItemToArray(rec, cJSON_CreateNumber(cls));
    cJSON *entries = cJSON_CreateArray();
    for (uint32_t i = 0; i < n; i++) {
        cJSON *entry = cJSON_CreateArray();
        cJSON_AddItemToArray(entry, cJSON_CreateNumber(ga[i].group));
        cJSON_AddItemToArray(entry, cJSON_CreateNumber((double)ga[i].mask));
        cJSON_AddItemToArray(entries, entry);
    }
    cJSON_AddItemToArray(rec, entries);
    record_json("kernel32!SetInformationJobObject", rec);
    if (err) {
        set_last_error(err);
        return 0;
    }
    return 1;
}
