/* Compute-system objects shared by the v1 and v2 entry points. */
#include "sim.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const state_title[] = {"Created", "Created", "Running", "Stopped"};

sim_system *system_find(const char *id)
{
    for (sim_system *s = g_systems; s; s = s->next)
        if (s->state != ST_STOPPED && !strcasecmp(s->id, id))
            return s;
    return system_adopt(id);
}

static cJSON *path_of(cJSON *o, const char *a, const char *b)
{
    o = cJSON_GetObjectItem(o, a);
    return b ? cJSON_GetObjectItem(o, b) : o;
}

/* Called with g_lock held. */
HRESULT system_new(const char *id, const char *doc, int api, sim_system **out, char **err)
{
    cJSON *d = cJSON_Parse(doc ? doc : "");
    HRESULT bad_json = api == 1 ? VMCOMPUTE_INVALID_JSON : HCS_E_INVALID_JSON;
    if (!cJSON_IsObject(d)) {
        cJSON_Delete(d);
        *err = strdup("The compute system document is not a JSON object");
        return bad_json;
    }
    if (api == 1 && !cJSON_IsString(cJSON_GetObjectItem(d, "SystemType"))) {
        cJSON_Delete(d);
        *err = strdup("SystemType is required in a schema 1.0 document");
        return bad_json;
    }
    if (system_find(id)) {
        cJSON_Delete(d);
        *err = strdup("A compute system with this id already exists");
        return api == 1 ? VMCOMPUTE_ALREADY_EXISTS : HCS_E_SYSTEM_ALREADY_EXISTS;
    }
    sim_system *s = calloc(1, sizeof *s);
    s->seq = next_seq();
    s->id = strdup(id);
    s->api = api;
    cJSON *owner = cJSON_GetObjectItem(d, "Owner");
    s->owner = strdup(cJSON_IsString(owner) ? owner->valuestring : "");
    s->terminate_on_close = cJSON_IsTrue(
        cJSON_GetObjectItem(d, api == 1 ? "TerminateOnLastHandleClosed" : "ShouldTerminateOnLastHandleClosed"));
    cJSON *maps = api == 1 ? path_of(d, "MappedDirectories", NULL) : path_of(d, "Container", "MappedDirectories");
    s->mapped = cJSON_CreateArray();
    s->groups = cJSON_CreateArray();
    cJSON *m;
    cJSON_ArrayForEach(m, maps)
    {
        cJSON *host = cJSON_GetObjectItem(m, "HostPath"), *cont = cJSON_GetObjectItem(m, "ContainerPath");
        if (!cJSON_IsString(host) || !cJSON_IsString(cont))
            continue;
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "host", host->valuestring);
        cJSON_AddStringToObject(e, "container", cont->valuestring);
        cJSON_AddItemToArray(s->mapped, e);
    }
    cJSON_Delete(d);
    s->next = g_systems;
    g_systems = s;
    guardian_start(s);
    system_publish(s);
    *out = s;
    return S_OK;
}

static void job_system_exited(sim_job *j)
{
    deliver(j->a, 0, EV_SYSTEM_EXITED, EV_SYSTEM_EXITED, j->hr, j->text);
}

/* Called with g_lock held.  Processes are killed and reaped first so their
 * exit events precede the system's, as they do on Windows. */
void system_stop(sim_system *s, int graceful)
{
    if (s->state == ST_STOPPED)
        return;
    s->stopping = 1;
    system_kill_groups(s);
    guardian_disarm(s);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    for (;;) {
        int alive = 0;
        for (sim_process *p = g_processes; p; p = p->next)
            alive |= p->sys == s && !p->exited;
        if (!alive || pthread_cond_timedwait(&g_cond, &g_lock, &until))
            break;
    }
    s->state = ST_STOPPED;
    system_publish(s);
    release_hangs(s->seq, HCS_E_TERMINATED);
    for (sim_process *p = g_processes; p; p = p->next)
        if (p->sys == s)
            release_hangs(p->seq, HCS_E_TERMINATED);
    /* A fault on "HcsEventSystemExited" is the exit's status: v1 notifications carry it (as
     * 0xC0370106, an unexpected exit, which hcsshim takes for a normal one). */
    HRESULT status = S_OK;
    if (!fault_for("HcsEventSystemExited", &status, NULL))
        status = S_OK;
    cJSON *st = cJSON_CreateObject();
    cJSON_AddNumberToObject(st, "Status", status);
    cJSON_AddStringToObject(st, "ExitType", graceful ? "GracefulExit" : "ForcedExit");
    char *text = cJSON_PrintUnformatted(st);
    cJSON_Delete(st);
    job_post(job_system_exited, s->seq, 0, status, 0, text);
    free(text);
    gc_objects();
}

char *process_status(sim_process *p)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "ProcessId", p->pid);
    cJSON_AddBoolToObject(o, "Exited", p->exited);
    cJSON_AddNumberToObject(o, "ExitCode", p->exit_code);
    cJSON_AddNumberToObject(o, "LastWaitResult", 0);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static cJSON *summary(sim_system *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "Id", s->id);
    cJSON_AddStringToObject(o, "SystemType", "Container");
    cJSON_AddStringToObject(o, "Owner", s->owner);
    cJSON_AddStringToObject(o, "State", state_title[s->state]);
    return o;
}

static int listed(cJSON *filter, const char *value)
{
    if (!cJSON_IsArray(filter))
        return 1;
    cJSON *e;
    cJSON_ArrayForEach(e, filter) if (cJSON_IsString(e) && !strcasecmp(e->valuestring, value)) return 1;
    return 0;
}

static int query_lists(sim_system *s, void *query)
{
    return listed(cJSON_GetObjectItem(query, "Ids"), s->id) && listed(cJSON_GetObjectItem(query, "Owners"), s->owner);
}

/* Called with g_lock held.  Honours the SystemQuery "Ids" and "Owners" filters, over this
 * process's systems and those other processes left with the service (state.c). */
char *systems_enumerate(const char *query)
{
    cJSON *q = cJSON_Parse(query ? query : "{}");
    cJSON *arr = cJSON_CreateArray();
    for (sim_system *s = g_systems; s; s = s->next)
        if (query_lists(s, q))
            cJSON_AddItemToArray(arr, summary(s));
    systems_foreign(arr, summary, query_lists, q);
    char *r = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    cJSON_Delete(q);
    return r;
}
