/* vmcompute.dll: the v1 compute-system API (pending results completed by
 * notifications) and the graph-driver layer functions.  HNSCall lives with
 * the other networking code in computenetwork.c. */
#include "sim.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>

#define VM(name) SIM_API HRESULT vmcompute_##name

struct process_information { uint32_t pid, reserved; HANDLE in, out, err; };

static void record2(const char *call, const wchar_t *a, const wchar_t *b)
{
    const wchar_t *args[] = {a, b};
    record(call, b ? 2 : a ? 1 : 0, args);
}

static void set_result(wchar_t **result, HRESULT hr, const char *msg)
{
    if (!result)
        return;
    char *doc = result_error(hr, msg);
    *result = out_cotask(doc);
    free(doc);
}

/* Applies an injected fault to a synchronous v1 call; returns 1 with *hr set
 * when the call must fail.  A hang blocks until the object identified by
 * hang_seq ends or SimReset.  Called without g_lock. */
static int v1_fault(const char *call, uint64_t hang_seq, wchar_t **result, HRESULT *hr)
{
    char *msg = NULL;
    int mode = fault_for(call, hr, &msg);
    if (mode == FAULT_HANG + 1) {
        pthread_mutex_lock(&g_lock);
        *hr = hang_here(hang_seq);
        pthread_mutex_unlock(&g_lock);
        free(msg);
        msg = strdup("the call was cut short while hanging");
    }
    if (mode)
        set_result(result, *hr, msg);
    free(msg);
    return mode != 0;
}

static sim_handle *v1_handle(HANDLE h, int kind)
{
    sim_handle *sh = handle_get(h, kind);
    return sh && sh->api == 1 ? sh : NULL;
}

/* ---------- compute systems ---------- */

VM(HcsEnumerateComputeSystems)(const wchar_t *query, wchar_t **systems, wchar_t **result)
{
    record2("vmcompute!HcsEnumerateComputeSystems", query, NULL);
    HRESULT hr;
    if (result)
        *result = NULL;
    if (systems)
        *systems = NULL;
    if (v1_fault("vmcompute!HcsEnumerateComputeSystems", 0, result, &hr))
        return hr;
    char *q = w2u(query);
    pthread_mutex_lock(&g_lock);
    char *doc = systems_enumerate(q);
    pthread_mutex_unlock(&g_lock);
    if (systems)
        *systems = out_cotask(doc);
    free(doc);
    free(q);
    return S_OK;
}

/* A failed completion carries a ResultError document as its notification data. */
static void deliver_v1(uint64_t seq, uint32_t type, HRESULT hr, const char *call)
{
    char *doc = NULL;
    if (hr < 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s failed (simulated fault)", call);
        doc = result_error(hr, msg);
    }
    deliver(seq, 0, 0, type, hr, doc);
    free(doc);
}

static void job_v1_create(sim_job *j)
{
    pthread_mutex_lock(&g_lock);
    sim_system *s = system_by_seq(j->a);
    HRESULT hr = j->hr;
    if (s && hr >= 0 && s->state == ST_CREATING) {
        s->state = ST_CREATED;
        system_publish(s);
    } else if (s && hr < 0) {
        s->state = ST_STOPPED;
        guardian_disarm(s);
        system_publish(s);
    }
    pthread_mutex_unlock(&g_lock);
    deliver_v1(j->a, V1_CREATE_COMPLETED, hr, "HcsCreateComputeSystem");
}

VM(HcsCreateComputeSystem)(const wchar_t *id, const wchar_t *config, HANDLE identity, HANDLE *out,
                           wchar_t **result)
{
    (void)identity;
    record2("vmcompute!HcsCreateComputeSystem", id, config);
    if (result)
        *result = NULL;
    if (!id || !out)
        return E_INVALIDARG;
    *out = NULL;
    HRESULT hr, fhr;
    char *fmsg = NULL, *err = NULL, *uid = w2u(id), *doc = w2u(config);
    int mode = fault_for("vmcompute!HcsCreateComputeSystem", &fhr, &fmsg);
    if (mode == FAULT_SYNC + 1) {
        set_result(result, fhr, fmsg);
        hr = fhr;
        goto out;
    }
    pthread_mutex_lock(&g_lock);
    sim_system *s;
    hr = system_new(uid, doc, 1, &s, &err);
    if (hr >= 0) {
        sim_handle *h = handle_new(K_SYSTEM, 1);
        h->sys = s;
        *out = handle_value(h);
        hr = VMCOMPUTE_PENDING;
        /* A hang posts nothing: only SystemExited (terminate) or SimReset ends the wait. */
        if (mode != FAULT_HANG + 1)
            job_post(job_v1_create, s->seq, 0, mode == FAULT_ASYNC + 1 ? fhr : S_OK, 0, NULL);
    }
    pthread_mutex_unlock(&g_lock);
    if (hr < 0 && hr != VMCOMPUTE_PENDING)
        set_result(result, hr, err);
out:
    free(fmsg);
    free(err);
    free(uid);
    free(doc);
    return hr;
}

VM(HcsOpenComputeSystem)(const wchar_t *id, HANDLE *out, wchar_t **result)
{
    record2("vmcompute!HcsOpenComputeSystem", id, NULL);
    if (result)
        *result = NULL;
    if (!id || !out)
        return E_INVALIDARG;
    *out = NULL;
    HRESULT hr;
    if (v1_fault("vmcompute!HcsOpenComputeSystem", 0, result, &hr))
        return hr;
    char *uid = w2u(id);
    pthread_mutex_lock(&g_lock);
    sim_system *s = system_find(uid);
    hr = VMCOMPUTE_SYSTEM_NOT_FOUND;
    if (s) {
        sim_handle *h = handle_new(K_SYSTEM, 1);
        h->sys = s;
        *out = handle_value(h);
        hr = S_OK;
    }
    pthread_mutex_unlock(&g_lock);
    if (hr < 0)
        set_result(result, hr, "No compute system with this id exists");
    free(uid);
    return hr;
}

static HRESULT close_v1(const char *call, HANDLE h, int kind)
{
    record(call, 0, NULL);
    pthread_mutex_lock(&g_lock);
    sim_handle *sh = v1_handle(h, kind);
    if (sh)
        handle_close(sh);
    pthread_mutex_unlock(&g_lock);
    return sh ? S_OK : HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
}

VM(HcsCloseComputeSystem)(HANDLE h) { return close_v1("vmcompute!HcsCloseComputeSystem", h, K_SYSTEM); }

static void job_v1_start(sim_job *j)
{
    pthread_mutex_lock(&g_lock);
    sim_system *s = system_by_seq(j->a);
    HRESULT hr = VMCOMPUTE_INVALID_STATE;
    if (s && s->state == ST_CREATED && !s->stopping) {
        s->state = ST_RUNNING;
        system_publish(s);
        hr = S_OK;
    }
    pthread_mutex_unlock(&g_lock);
    deliver_v1(j->a, V1_START_COMPLETED, j->hr < 0 ? j->hr : hr, "HcsStartComputeSystem");
}

VM(HcsStartComputeSystem)(HANDLE h, const wchar_t *options, wchar_t **result)
{
    record2("vmcompute!HcsStartComputeSystem", options, NULL);
    if (result)
        *result = NULL;
    HRESULT fhr;
    char *fmsg = NULL;
    int mode = fault_for("vmcompute!HcsStartComputeSystem", &fhr, &fmsg);
    HRESULT hr = VMCOMPUTE_PENDING;
    pthread_mutex_lock(&g_lock);
    sim_handle *sh = v1_handle(h, K_SYSTEM);
    if (!sh)
        hr = HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
    else if (mode == FAULT_SYNC + 1)
        hr = fhr;
    else if (mode != FAULT_HANG + 1)
        job_post(job_v1_start, sh->sys->seq, 0, mode ? fhr : S_OK, 0, NULL);
    pthread_mutex_unlock(&g_lock);
    if (hr < 0 && hr != VMCOMPUTE_PENDING)
        set_result(result, hr, fmsg ? fmsg : "invalid handle");
    free(fmsg);
    return hr;
}

static void job_v1_stop(sim_job *j)
{
    pthread_mutex_lock(&g_lock);
    sim_system *s = system_by_seq(j->a);
    if (s)
        system_stop(s, (int)j->type);
    pthread_mutex_unlock(&g_lock);
}

/* Pending means "accepted"; SystemExited tells the end.  A stopped (or
 * stopping) system answers ERROR_VMCOMPUTE_SYSTEM_ALREADY_STOPPED. */
static HRESULT v1_stop(const char *call, HANDLE h, const wchar_t *options, wchar_t **result, int graceful)
{
    record2(call, options, NULL);
    if (result)
        *result = NULL;
    HRESULT hr;
    pthread_mutex_lock(&g_lock);
    sim_handle *sh = v1_handle(h, K_SYSTEM);
    uint64_t seq = sh ? sh->sys->seq : 0;
    int stopped = sh && (sh->sys->stopping || sh->sys->state == ST_STOPPED);
    pthread_mutex_unlock(&g_lock);
    if (!sh)
        return HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
    if (stopped) {
        set_result(result, VMCOMPUTE_ALREADY_STOPPED, "The compute system is not running");
        return VMCOMPUTE_ALREADY_STOPPED;
    }
    if (v1_fault(call, seq, result, &hr))
        return hr;
    pthread_mutex_lock(&g_lock);
    sim_system *s = system_by_seq(seq);
    if (s && !s->stopping) {
        s->stopping = 1;
        job_post(job_v1_stop, seq, 0, S_OK, (uint32_t)graceful, NULL);
    }
    pthread_mutex_unlock(&g_lock);
    return VMCOMPUTE_PENDING;
}

VM(HcsShutdownComputeSystem)(HANDLE h, const wchar_t *options, wchar_t **result)
{
    return v1_stop("vmcompute!HcsShutdownComputeSystem", h, options, result, 1);
}

VM(HcsTerminateComputeSystem)(HANDLE h, const wchar_t *options, wchar_t **result)
{
    return v1_stop("vmcompute!HcsTerminateComputeSystem", h, options, result, 0);
}

static void job_flush(sim_job *j) { flush_backlog(j->a, j->b); }

static HRESULT v1_register(const char *call, HANDLE h, int kind, void *cb, void *ctx, HANDLE *out)
{
    record(call, 0, NULL);
    HRESULT hr;
    if (fault_for(call, &hr, NULL))
        return hr;
    if (!cb || !out)
        return E_INVALIDARG;
    pthread_mutex_lock(&g_lock);
    sim_handle *target = v1_handle(h, kind);
    if (target) {
        sim_handle *c = handle_new(K_CALLBACK, 1);
        c->proc = target->proc;
        c->sys = target->proc ? NULL : target->sys;
        c->cb = cb;
        c->ctx = ctx;
        *out = handle_value(c);
        job_post(job_flush, target->sys->seq, target->proc ? target->proc->seq : 0, S_OK, 0, NULL);
    }
    pthread_mutex_unlock(&g_lock);
    return target ? S_OK : HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
}

VM(HcsRegisterComputeSystemCallback)(HANDLE h, void *cb, void *ctx, HANDLE *out)
{
    return v1_register("vmcompute!HcsRegisterComputeSystemCallback", h, K_SYSTEM, cb, ctx, out);
}

/* Like the real one, returns only after callbacks already running have finished. */
VM(HcsUnregisterComputeSystemCallback)(HANDLE cbh)
{
    return close_v1("vmcompute!HcsUnregisterComputeSystemCallback", cbh, K_CALLBACK);
}

/* ---------- processes ---------- */

VM(HcsCreateProcess)(HANDLE h, const wchar_t *params, struct process_information *pi, HANDLE *out,
                     wchar_t **result)
{
    record2("vmcompute!HcsCreateProcess", params, NULL);
    if (result)
        *result = NULL;
    if (!out || !pi)
        return E_INVALIDARG;
    *out = NULL;
    HRESULT hr;
    pthread_mutex_lock(&g_lock);
    sim_handle *sh = v1_handle(h, K_SYSTEM);
    uint64_t seq = sh ? sh->sys->seq : 0;
    pthread_mutex_unlock(&g_lock);
    if (!sh)
        return HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
    if (v1_fault("vmcompute!HcsCreateProcess", seq, result, &hr))
        return hr;
    char *p_json = w2u(params), *err = NULL;
    pthread_mutex_lock(&g_lock);
    sim_system *s = system_by_seq(seq);
    sim_process *p = NULL;
    if (!s || s->state != ST_RUNNING || s->stopping) {
        hr = VMCOMPUTE_INVALID_STATE;
        err = strdup("The compute system is not running");
    } else {
        hr = process_spawn(s, p_json, 1, &p, &err);
    }
    if (hr >= 0) {
        sim_handle *ph = handle_new(K_PROCESS, 1);
        ph->sys = s;
        ph->proc = p;
        *out = handle_value(ph);
        memset(pi, 0, sizeof *pi);
        pi->pid = (uint32_t)p->pid;
        HANDLE *slots[] = {&pi->in, &pi->out, &pi->err};
        for (int i = 0; i < 3; i++) {
            *slots[i] = p->fds[i] >= 0 ? (HANDLE)(intptr_t)p->fds[i] : NULL;
            pipe_handed_out(p->fds[i]);
            p->fds[i] = -1;
        }
    }
    pthread_mutex_unlock(&g_lock);
    if (hr < 0)
        set_result(result, hr, err);
    free(err);
    free(p_json);
    return hr;
}

VM(HcsOpenProcess)(HANDLE h, uint32_t pid, HANDLE *out, wchar_t **result)
{
    record2("vmcompute!HcsOpenProcess", NULL, NULL);
    if (result)
        *result = NULL;
    if (!out)
        return E_INVALIDARG;
    *out = NULL;
    HRESULT hr;
    if (v1_fault("vmcompute!HcsOpenProcess", 0, result, &hr))
        return hr;
    pthread_mutex_lock(&g_lock);
    sim_handle *sh = v1_handle(h, K_SYSTEM);
    hr = sh ? HRESULT_FROM_WIN32(ERROR_NOT_FOUND) : HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
    for (sim_process *p = g_processes; sh && p; p = p->next)
        if (p->sys == sh->sys && (uint32_t)p->pid == pid && !p->exited) {
            sim_handle *ph = handle_new(K_PROCESS, 1);
            ph->sys = p->sys;
            ph->proc = p;
            *out = handle_value(ph);
            hr = S_OK;
            break;
        }
    pthread_mutex_unlock(&g_lock);
    if (hr < 0)
        set_result(result, hr, "Element not found.");
    return hr;
}

VM(HcsCloseProcess)(HANDLE h) { return close_v1("vmcompute!HcsCloseProcess", h, K_PROCESS); }

/* Looks up a live v1 process for terminate/signal/modify; an exited one gives
 * the code hcsshim reports for that call. */
static HRESULT live_process(HANDLE h, HRESULT gone, uint64_t *seq, wchar_t **result)
{
    pthread_mutex_lock(&g_lock);
    sim_handle *ph = v1_handle(h, K_PROCESS);
    HRESULT hr = !ph ? HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE) : ph->proc->exited ? gone : S_OK;
    *seq = ph ? ph->proc->seq : 0;
    pthread_mutex_unlock(&g_lock);
    if (hr < 0)
        set_result(result, hr, "The process is not running");
    return hr;
}

static void kill_seq(uint64_t seq, int sig)
{
    pthread_mutex_lock(&g_lock);
    sim_process *p = process_by_seq(seq);
    if (p)
        process_signal(p, sig);
    pthread_mutex_unlock(&g_lock);
}

VM(HcsTerminateProcess)(HANDLE h, wchar_t **result)
{
    record2("vmcompute!HcsTerminateProcess", NULL, NULL);
    if (result)
        *result = NULL;
    uint64_t seq;
    HRESULT hr = live_process(h, HRESULT_FROM_WIN32(ERROR_ACCESS_DENIED), &seq, result);
    if (hr < 0 || v1_fault("vmcompute!HcsTerminateProcess", seq, result, &hr))
        return hr;
    kill_seq(seq, SIGKILL);
    return S_OK;
}

VM(HcsSignalProcess)(HANDLE h, const wchar_t *options, wchar_t **result)
{
    record2("vmcompute!HcsSignalProcess", options, NULL);
    if (result)
        *result = NULL;
    char *o = w2u(options);
    int sig = !o ? 0 : strstr(o, "\"CtrlC\"") ? SIGINT : strstr(o, "\"CtrlBreak\"") ? SIGQUIT : SIGTERM;
    free(o);
    uint64_t seq;
    HRESULT hr = live_process(h, HCS_E_PROCESS_ALREADY_STOPPED, &seq, result);
    if (hr < 0 || v1_fault("vmcompute!HcsSignalProcess", seq, result, &hr))
        return hr;
    kill_seq(seq, sig);
    return S_OK;
}

VM(HcsGetProcessProperties)(HANDLE h, wchar_t **props, wchar_t **result)
{
    record2("vmcompute!HcsGetProcessProperties", NULL, NULL);
    if (result)
        *result = NULL;
    if (props)
        *props = NULL;
    HRESULT hr;
    if (v1_fault("vmcompute!HcsGetProcessProperties", 0, result, &hr))
        return hr;
    char *doc = NULL;
    pthread_mutex_lock(&g_lock);
    sim_handle *ph = v1_handle(h, K_PROCESS);
    if (ph)
        doc = process_status(ph->proc);
    pthread_mutex_unlock(&g_lock);
    if (!ph)
        return HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
    if (props)
        *props = out_cotask(doc);
    free(doc);
    return S_OK;
}

VM(HcsModifyProcess)(HANDLE h, const wchar_t *settings, wchar_t **result)
{
    record2("vmcompute!HcsModifyProcess", settings, NULL);
    if (result)
        *result = NULL;
    uint64_t seq;
    HRESULT hr = live_process(h, HCS_E_PROCESS_ALREADY_STOPPED, &seq, result);
    if (hr < 0 || v1_fault("vmcompute!HcsModifyProcess", seq, result, &hr))
        return hr;
    char *text = w2u(settings), *why = NULL;
    pthread_mutex_lock(&g_lock);
    sim_process *p = process_by_seq(seq);
    hr = p ? process_modify(p, text, &why) : HCS_E_PROCESS_ALREADY_STOPPED;
    pthread_mutex_unlock(&g_lock);
    if (why)
        set_result(result, hr, why);
    free(why);
    free(text);
    return hr;
}

VM(HcsRegisterProcessCallback)(HANDLE h, void *cb, void *ctx, HANDLE *out)
{
    return v1_register("vmcompute!HcsRegisterProcessCallback", h, K_PROCESS, cb, ctx, out);
}

VM(HcsUnregisterProcessCallback)(HANDLE cbh)
{
    return close_v1("vmcompute!HcsUnregisterProcessCallback", cbh, K_CALLBACK);
}

/* ---------- layers ---------- */

struct driver_info { int32_t flavour; const wchar_t *home; };
struct layer_desc { uint8_t id[16]; uint32_t flags; const wchar_t *path; };

typedef struct layer { char *key; int created, activated, prepared; struct layer *next; } layer;
static layer *g_layers;
static int layers_load(void);
static void layers_save(int lock);

#define ERROR_ALREADY_EXISTS 183
#define ERROR_INVALID_STATE 5023

static void guid_string(const uint8_t *g, char out[37])
{
    uint32_t d1;
    uint16_t d2, d3;
    memcpy(&d1, g, 4);
    memcpy(&d2, g + 4, 2);
    memcpy(&d3, g + 6, 2);
    snprintf(out, 37, "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x", d1, d2, d3, g[8], g[9], g[10],
             g[11], g[12], g[13], g[14], g[15]);
}

/* Deterministic like the real NameToGuid, though not the same algorithm. */
static void name_to_guid(const char *name, uint8_t g[16])
{
    uint64_t h1 = 0xcbf29ce484222325ull, h2 = 0x84222325cbf29ce4ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h1 = (h1 ^ *p) * 0x100000001b3ull;
        h2 = (h2 ^ *p) * 0x100000001b3ull + 7;
    }
    memcpy(g, &h1, 8);
    memcpy(g + 8, &h2, 8);
    g[7] = (uint8_t)((g[7] & 0x0F) | 0x50);
    g[8] = (uint8_t)((g[8] & 0x3F) | 0x80);
}

VM(NameToGuid)(const wchar_t *name, uint8_t *guid)
{
    record2("vmcompute!NameToGuid", name, NULL);
    HRESULT hr;
    if (v1_fault("vmcompute!NameToGuid", 0, NULL, &hr))
        return hr;
    if (!name || !guid)
        return E_INVALIDARG;
    char *n = w2u(name);
    name_to_guid(n, guid);
    free(n);
    return S_OK;
}

/* hcsshim passes HomeDir "" and a full path as id; Docker passes the root and a name.  A
 * HomeDir of this host's own (POSIX) flavour is joined with '/': the layer is then a real
 * folder the tests can look at. */
static char *layer_key(const struct driver_info *info, const wchar_t *id)
{
    char *home = info ? w2u(info->home) : NULL, *name = w2u(id);
    char *key = malloc((home ? strlen(home) : 0) + (name ? strlen(name) : 0) + 2);
    const char *sep = home && *home == '/' ? "/" : "\\";
    if (home && *home)
        sprintf(key, "%s%s%s", home, home[strlen(home) - 1] == *sep ? "" : sep, name ? name : "");
    else
        strcpy(key, name ? name : "");
    free(home);
    free(name);
    return key;
}

static void record_layer(const char *call, const struct driver_info *info, const wchar_t *id,
                         const wchar_t *parent, const struct layer_desc *d, size_t n)
{
    cJSON *o = cJSON_CreateObject();
    char *s;
    cJSON_AddNumberToObject(o, "flavour", info ? info->flavour : -1);
    cJSON_AddStringToObject(o, "home", (s = info ? w2u(info->home) : NULL) ? s : "");
    free(s);
    cJSON_AddStringToObject(o, "id", (s = w2u(id)) ? s : "");
    free(s);
    if (parent) {
        cJSON_AddStringToObject(o, "parent", s = w2u(parent));
        free(s);
    }
    if (d) {
        cJSON *arr = cJSON_AddArrayToObject(o, "layers");
        for (size_t i = 0; i < n; i++) {
            char g[37];
            guid_string(d[i].id, g);
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "id", g);
            cJSON_AddNumberToObject(e, "flags", d[i].flags);
            cJSON_AddStringToObject(e, "path", (s = w2u(d[i].path)) ? s : "");
            free(s);
            cJSON_AddItemToArray(arr, e);
        }
    }
    record_json(call, o);
}

static layer *layer_find(const char *key, int create)
{
    for (layer *l = g_layers; l; l = l->next)
        if (!strcasecmp(l->key, key))
            return l;
    if (!create)
        return NULL;
    layer *l = calloc(1, sizeof *l);
    l->key = strdup(key);
    l->next = g_layers;
    g_layers = l;
    return l;
}

static void layers_gc(void)
{
    for (layer **pp = &g_layers; *pp;) {
        layer *l = *pp;
        if (!l->created && !l->activated && !l->prepared) {
            *pp = l->next;
            free(l->key);
            free(l);
        } else {
            pp = &l->next;
        }
    }
}

enum { L_CREATE, L_ACTIVATE, L_PREPARE, L_UNPREPARE, L_DEACTIVATE, L_DESTROY };

/* A POSIX layer path is a real folder: created with its sandbox.vhdx, removed by DestroyLayer. */
static HRESULT folder_create(const char *key)
{
    if (*key != '/')
        return S_OK;
    if (mkdir(key, 0700) && errno != EEXIST)
        return HRESULT_FROM_WIN32(errno == ENOENT ? 3 /* ERROR_PATH_NOT_FOUND */ : ERROR_ACCESS_DENIED);
    char *vhd = malloc(strlen(key) + 16);
    sprintf(vhd, "%s/sandbox.vhdx", key);
    FILE *f = fopen(vhd, "w");
    free(vhd);
    if (!f)
        return HRESULT_FROM_WIN32(ERROR_ACCESS_DENIED);
    fputs("simulated scratch\n", f);
    fclose(f);
    return S_OK;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void folder_destroy(const char *key)
{
    if (*key == '/')
        nftw(key, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The state machine is strict on purpose (Unprepare before Deactivate before
 * Destroy) so an orchestration that tears down out of order is caught. */
static HRESULT layer_call(const char *call, int op, const struct driver_info *info, const wchar_t *id,
                          const wchar_t *parent, const struct layer_desc *d, size_t n)
{
    record_layer(call, info, id, parent, d, n);
    HRESULT hr;
    if (!info || !id)
        return E_INVALIDARG;
    if (v1_fault(call, 0, NULL, &hr))
        return hr;
    char *key = layer_key(info, id);
    pthread_mutex_lock(&g_lock);
    int shared = layers_load();
    layer *l = layer_find(key, op == L_CREATE || op == L_ACTIVATE);
    hr = S_OK;
    switch (op) {
    case L_CREATE:
        if (l->created)
            hr = HRESULT_FROM_WIN32(ERROR_ALREADY_EXISTS);
        else if ((hr = folder_create(key)) >= 0)
            l->created = 1;
        break;
    case L_ACTIVATE:
        l->activated = 1;
        break;
    case L_PREPARE:
        if (!l || !l->activated)
            hr = HRESULT_FROM_WIN32(ERROR_INVALID_STATE);
        else
            l->prepared = 1;
        break;
    case L_UNPREPARE:
        if (!l || !l->prepared)
            hr = HRESULT_FROM_WIN32(ERROR_INVALID_STATE);
        else
            l->prepared = 0;
        break;
    case L_DEACTIVATE:
        if (!l || !l->activated || l->prepared)
            hr = HRESULT_FROM_WIN32(ERROR_INVALID_STATE);
        else
            l->activated = 0;
        break;
    case L_DESTROY:
        if (l && l->activated)
            hr = HRESULT_FROM_WIN32(ERROR_INVALID_STATE);
        else {
            if (l)
                l->created = 0;
            folder_destroy(key);
        }
        break;
    }
    layers_gc();
    layers_save(shared);
    pthread_mutex_unlock(&g_lock);
    free(key);
    return hr;
}

/* The layer import of builds before computestorage.dll (Windows Server 2016): the layer
 * HomeDir+id made from the transport folder `path` over the parents `d`, as HcsImportLayer
 * does (computestorage.c), its refusals in vmcompute's codes. */
VM(ImportLayer)(const struct driver_info *info, const wchar_t *id, const wchar_t *path, const struct layer_desc *d,
                size_t n)
{
    record_layer("vmcompute!ImportLayer", info, id, NULL, d, n);
    HRESULT hr;
    if (!info || !id || !path || (n && !d))
        return E_INVALIDARG;
    if (v1_fault("vmcompute!ImportLayer", 0, NULL, &hr))
        return hr;
    for (size_t i = 0; i < n; i++) {
        char *parent = w2u(d[i].path);
        int there = parent && layer_folder_exists(parent);
        free(parent);
        if (!there)
            return HRESULT_FROM_WIN32(3 /* ERROR_PATH_NOT_FOUND */);
    }
    char *key = layer_key(info, id), *from = w2u(path);
    hr = layer_import(key, from, (HRESULT)0xC0370112 /* ERROR_VMCOMPUTE_INVALID_LAYER */);
    free(key);
    free(from);
    return hr;
}

VM(CreateSandboxLayer)(const struct driver_info *info, const wchar_t *id, const wchar_t *parent,
                       const struct layer_desc *d, size_t n)
{
    return layer_call("vmcompute!CreateSandboxLayer", L_CREATE, info, id, parent, d, n);
}

VM(ActivateLayer)(const struct driver_info *info, const wchar_t *id)
{
    return layer_call("vmcompute!ActivateLayer", L_ACTIVATE, info, id, NULL, NULL, 0);
}

VM(PrepareLayer)(const struct driver_info *info, const wchar_t *id, const struct layer_desc *d, size_t n)
{
    return layer_call("vmcompute!PrepareLayer", L_PREPARE, info, id, NULL, d, n);
}

VM(UnprepareLayer)(const struct driver_info *info, const wchar_t *id)
{
    return layer_call("vmcompute!UnprepareLayer", L_UNPREPARE, info, id, NULL, NULL, 0);
}

VM(DeactivateLayer)(const struct driver_info *info, const wchar_t *id)
{
    return layer_call("vmcompute!DeactivateLayer", L_DEACTIVATE, info, id, NULL, NULL, 0);
}

VM(DestroyLayer)(const struct driver_info *info, const wchar_t *id)
{
    return layer_call("vmcompute!DestroyLayer", L_DESTROY, info, id, NULL, NULL, 0);
}

/* An activated layer mounts as \\?\Volume{NameToGuid(folder name)}\ ; otherwise
 * the folder path.  *length counts wide characters including the NUL. */
VM(GetLayerMountPath)(const struct driver_info *info, const wchar_t *id, size_t *length, wchar_t *buffer)
{
    record_layer("vmcompute!GetLayerMountPath", info, id, NULL, NULL, 0);
    HRESULT hr;
    if (!info || !id || !length)
        return E_INVALIDARG;
    if (v1_fault("vmcompute!GetLayerMountPath", 0, NULL, &hr))
        return hr;
    char *key = layer_key(info, id), path[600];
    pthread_mutex_lock(&g_lock);
    int shared = layers_load();
    layer *l = layer_find(key, 0);
    int active = l && l->activated;
    state_unlock(shared);
    pthread_mutex_unlock(&g_lock);
    if (active) {
        const char *base = strrchr(key, *key == '/' ? '/' : '\\');
        uint8_t g[16];
        char gs[37];
        name_to_guid(base ? base + 1 : key, g);
        guid_string(g, gs);
        snprintf(path, sizeof path, "\\\\?\\Volume{%s}\\", gs);
    } else {
        snprintf(path, sizeof path, "%s", key);
    }
    free(key);
    wchar_t *w = u2w(path);
    size_t need = wcslen(w) + 1;
    hr = S_OK;
    if (buffer && *length < need)
        hr = HRESULT_FROM_WIN32(ERROR_INSUFFICIENT_BUFFER);
    else if (buffer)
        wmemcpy(buffer, w, need);
    *length = need;
    free(w);
    return hr;
}

void layers_reset(void)
{
    for (layer *l = g_layers, *n; l; l = n) {
        n = l->next;
        free(l->key);
        free(l);
    }
    g_layers = NULL;
}

static cJSON *layers_json(void)
{
    cJSON *arr = cJSON_CreateArray();
    for (layer *l = g_layers; l; l = l->next) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", l->key);
        cJSON_AddBoolToObject(o, "created", l->created);
        cJSON_AddBoolToObject(o, "activated", l->activated);
        cJSON_AddBoolToObject(o, "prepared", l->prepared);
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

/* With a state directory (state.c) the layer states are the service's, shared by every
 * process: read before a call under the returned lock, written back by layers_save. */
static int layers_load(void)
{
    int lock = state_lock();
    cJSON *saved = lock >= 0 ? state_load("layers.json") : NULL, *o;
    if (lock < 0)
        return lock;
    layers_reset();
    cJSON_ArrayForEach(o, saved)
    {
        layer *l = layer_find(cJSON_GetStringValue(cJSON_GetObjectItem(o, "id")), 1);
        l->created = cJSON_IsTrue(cJSON_GetObjectItem(o, "created"));
        l->activated = cJSON_IsTrue(cJSON_GetObjectItem(o, "activated"));
        l->prepared = cJSON_IsTrue(cJSON_GetObjectItem(o, "prepared"));
    }
    cJSON_Delete(saved);
    return lock;
}

static void layers_save(int lock)
{
    if (lock < 0)
        return;
    cJSON *arr = layers_json();
    state_save("layers.json", arr);
    cJSON_Delete(arr);
    state_unlock(lock);
}

cJSON *layers_ledger(void)
{
    int lock = layers_load();
    cJSON *arr = layers_json();
    state_unlock(lock);
    return arr;
}
