/* computecore.dll (HCS v2): every call that takes an HCS_OPERATION completes
 * it on the worker thread. */
#include "sim.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CC(name) SIM_API HRESULT computecore_##name

enum { OT_ENUMERATE = 0, OT_CREATE = 1, OT_START = 2, OT_SHUTDOWN = 3, OT_TERMINATE = 7,
       OT_CREATEPROC = 10, OT_SIGNAL = 11, OT_PROCINFO = 12,
       OT_PROCPROPS = 13, OT_MODIFYPROC = 14 };

struct process_information { uint32_t pid, reserved; HANDLE in, out, err; };

static void job_op(sim_job *j)
{
    pthread_mutex_lock(&g_lock);
    sim_handle *op = handle_get((HANDLE)(uintptr_t)j->a, K_OPERATION);
    if (op && op->op_state == OP_PENDING)
        op_complete(op, j->hr, j->text);
    pthread_mutex_unlock(&g_lock);
}

static void complete_later(sim_handle *op, HRESULT hr, const char *doc)
{
    job_post(job_op, op->value, 0, hr, 0, doc);
}

static void fail_now(sim_handle *op, HRESULT hr, const char *msg)
{
    char *doc = result_error(hr, msg);
    op_complete(op, hr, doc);
    free(doc);
}

/* Called with g_lock held: validates the operation, records the string
 * arguments and applies an injected fault.  Returns 1 when the caller must
 * return *ret at once; a hang leaves the operation pending until the object
 * identified by hang_seq ends (or SimReset). */
static int begin(const char *call, HANDLE oph, int type, uint64_t hang_seq, HRESULT *ret,
                 sim_handle **opp)
{
    sim_handle *op = handle_get(oph, K_OPERATION);
    if (!op) {
        *ret = E_INVALIDARG;
        return 1;
    }
    if (op->op_state != OP_NOT_STARTED) {
        *ret = HCS_E_OPERATION_ALREADY_STARTED;
        return 1;
    }
    op->op_state = OP_PENDING;
    op->op_type = type;
    *opp = op;
    HRESULT hr;
    char *msg = NULL;
    int mode = fault_for(call, &hr, &msg);
    *ret = S_OK;
    if (mode == FAULT_SYNC + 1) {
        fail_now(op, hr, msg);
        *ret = hr;
    } else if (mode == FAULT_ASYNC + 1) {
        char *doc = result_error(hr, msg);
        complete_later(op, hr, doc);
        free(doc);
    } else if (mode == FAULT_HANG + 1) {
        op->hung_on = hang_seq;
    } else if (mode == FAULT_ACCEPTED + 1) {
        *ret = hr;  /* and the call goes on */
        mode = 0;
    }
    free(msg);
    return mode != 0;
}

static void record2(const char *call, const wchar_t *a, const wchar_t *b)
{
    const wchar_t *args[] = {a, b};
    record(call, b ? 2 : a ? 1 : 0, args);
}

/* ---------- operations ---------- */

SIM_API HANDLE computecore_HcsCreateOperation(void *context, void *callback)
{
    record("computecore!HcsCreateOperation", 0, NULL);
    HRESULT hr;
    /* Per-operation completion callbacks are not simulated; the bindings
     * never pass one, so passing one looks like an allocation failure. */
    if (callback || fault_for("computecore!HcsCreateOperation", &hr, NULL))
        return NULL;
    pthread_mutex_lock(&g_lock);
    sim_handle *op = handle_new(K_OPERATION, 2);
    op->ctx = context;
    op->op_type = -1;
    pthread_mutex_unlock(&g_lock);
    return handle_value(op);
}

SIM_API void computecore_HcsCloseOperation(HANDLE h)
{
    record("computecore!HcsCloseOperation", 0, NULL);
    pthread_mutex_lock(&g_lock);
    sim_handle *op = handle_get(h, K_OPERATION);
    if (op)
        handle_close(op);
    pthread_mutex_unlock(&g_lock);
}

static HRESULT wait_op(sim_handle *op, uint32_t timeout_ms)
{
    if (op->op_state == OP_NOT_STARTED)
        return HCS_E_OPERATION_NOT_STARTED;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    uint64_t value = op->value;
    while (op->op_state == OP_PENDING) {
        if (timeout_ms == 0xFFFFFFFFu)
            pthread_cond_wait(&g_cond, &g_lock);
        else if (pthread_cond_timedwait(&g_cond, &g_lock, &until))
            return op->op_state == OP_PENDING ? HCS_E_OPERATION_TIMEOUT : op->op_hr;
        if (!handle_get((HANDLE)(uintptr_t)value, K_OPERATION))
            return E_ABORT;  /* closed or reset while waiting */
    }
    return op->op_hr;
}

static HRESULT result_of(const char *call, HANDLE h, uint32_t timeout_ms, int wait, struct process_information *pi,
                         wchar_t **doc)
{
    record(call, 0, NULL);
    if (doc)
        *doc = NULL;
    pthread_mutex_lock(&g_lock);
    sim_handle *op = handle_get(h, K_OPERATION);
    HRESULT hr;
    if (!op)
        hr = E_INVALIDARG;
    else if (pi && op->op_type != OT_CREATEPROC && op->op_type != OT_PROCINFO)
        hr = E_INVALIDARG;
    else if (wait)
        hr = wait_op(op, timeout_ms);
    else
        hr = op->op_state == OP_NOT_STARTED ? HCS_E_OPERATION_NOT_STARTED
             : op->op_state == OP_PENDING   ? HCS_E_OPERATION_PENDING
                                            : op->op_hr;
    char *text = NULL;
    if (op && op->op_state == OP_DONE && hr == op->op_hr) {
        text = op->op_doc ? strdup(op->op_doc) : NULL;
        if (pi && hr >= 0) {
            sim_process *p = process_by_seq(op->op_proc);
            memset(pi, 0, sizeof *pi);
            HANDLE *slots[] = {&pi->in, &pi->out, &pi->err};
            for (int i = 0; i < 3; i++) {
                /* Streams that were not requested come back as INVALID_HANDLE_VALUE;
                 * each pipe is handed out once, the caller owns it afterwards. */
                *slots[i] = SIM_INVALID_HANDLE;
                if (p && p->fds[i] >= 0) {
                    *slots[i] = (HANDLE)(intptr_t)p->fds[i];
                    pipe_handed_out(p->fds[i]);
                    p->fds[i] = -1;
                }
            }
            if (p)
                pi->pid = (uint32_t)p->pid;
        }
    }
    pthread_mutex_unlock(&g_lock);
    if (doc)
        *doc = out_local(text);
    free(text);
    return hr;
}

CC(HcsWaitForOperationResult)(HANDLE op, uint32_t timeout_ms, wchar_t **doc)
{
    return result_of("computecore!HcsWaitForOperationResult", op, timeout_ms, 1, NULL, doc);
}

CC(HcsWaitForOperationResultAndProcessInfo)(HANDLE op, uint32_t timeout_ms,
                                            struct process_information *pi, wchar_t **doc)
{
    struct process_information scratch;
    return result_of("computecore!HcsWaitForOperationResultAndProcessInfo", op, timeout_ms, 1, pi ? pi : &scratch, doc);
}

CC(HcsGetOperationResult)(HANDLE op, wchar_t **doc)
{
    return result_of("computecore!HcsGetOperationResult", op, 0, 0, NULL, doc);
}

CC(HcsCancelOperation)(HANDLE op)
{
    (void)op;
    record("computecore!HcsCancelOperation", 0, NULL);
    return E_NOTIMPL; /* as documented */
}

/* ---------- compute systems ---------- */

static void job_create(sim_job *j)
{
    pthread_mutex_lock(&g_lock);
    sim_system *s = system_by_seq(j->b);
    sim_handle *op = handle_get((HANDLE)(uintptr_t)j->a, K_OPERATION);
    HRESULT hr = S_OK;
    if (s && s->state == ST_CREATING) {
        s->state = ST_CREATED;
        system_publish(s);
    }
    else
        hr = HCS_E_TERMINATED;
    if (op && op->op_state == OP_PENDING) {
        if (hr < 0)
            fail_now(op, hr, "The compute system ended during creation");
        else
            op_complete(op, S_OK, NULL);
    }
    pthread_mutex_unlock(&g_lock);
}

CC(HcsCreateComputeSystem)(const wchar_t *id, const wchar_t *config, HANDLE oph, void *sd,
                           HANDLE *out)
{
    (void)sd;
    record2("computecore!HcsCreateComputeSystem", id, config);
    if (!id || !out)
        return E_INVALIDARG;
    *out = NULL;
    char *uid = w2u(id), *doc = w2u(config), *err = NULL;
    HRESULT hr, fhr;
    char *fmsg = NULL;
    int mode = fault_for("computecore!HcsCreateComputeSystem", &fhr, &fmsg);
    pthread_mutex_lock(&g_lock);
    sim_handle *op = handle_get(oph, K_OPERATION);
    sim_system *s = NULL;
    if (!op || op->op_state != OP_NOT_STARTED) {
        hr = op ? HCS_E_OPERATION_ALREADY_STARTED : E_INVALIDARG;
        goto out;
    }
    op->op_state = OP_PENDING;
    op->op_type = OT_CREATE;
    if (mode == FAULT_SYNC + 1) {
        hr = fhr;
        fail_now(op, hr, fmsg);
        goto out;
    }
    hr = system_new(uid, doc, 2, &s, &err);
    if (hr < 0) {
        fail_now(op, hr, err);
        goto out;
    }
    sim_handle *h = handle_new(K_SYSTEM, 2);
    h->sys = s;
    *out = handle_value(h);
    if (mode == FAULT_ASYNC + 1) {
        s->state = ST_STOPPED;
        guardian_disarm(s);
        system_publish(s);
        char *rd = result_error(fhr, fmsg);
        complete_later(op, fhr, rd);
        free(rd);
    } else if (mode == FAULT_HANG + 1) {
        op->hung_on = s->seq;
    } else {
        job_post(job_create, op->value, s->seq, S_OK, 0, NULL);
    }
out:
    pthread_mutex_unlock(&g_lock);
    free(uid);
    free(doc);
    free(err);
    free(fmsg);
    return hr;
}

CC(HcsOpenComputeSystem)(const wchar_t *id, uint32_t access, HANDLE *out)
{
    (void)access;
    record2("computecore!HcsOpenComputeSystem", id, NULL);
    if (!id || !out)
        return E_INVALIDARG;
    *out = NULL;
    HRESULT hr;
    if (fault_for("computecore!HcsOpenComputeSystem", &hr, NULL))
        return hr;
    char *uid = w2u(id);
    pthread_mutex_lock(&g_lock);
    sim_system *s = system_find(uid);
    hr = HCS_E_SYSTEM_NOT_FOUND;
    if (s) {
        sim_handle *h = handle_new(K_SYSTEM, 2);
        h->sys = s;
        *out = handle_value(h);
        hr = S_OK;
    }
    pthread_mutex_unlock(&g_lock);
    free(uid);
    return hr;
}

SIM_API void computecore_HcsCloseComputeSystem(HANDLE h)
{
    record("computecore!HcsCloseComputeSystem", 0, NULL);
    pthread_mutex_lock(&g_lock);
    sim_handle *sh = handle_get(h, K_SYSTEM);
    if (sh)
        handle_close(sh);
    pthread_mutex_unlock(&g_lock);
}

static void job_start(sim_job *j)
{
    pthread_mutex_lock(&g_lock);
    sim_system *s = system_by_seq(j->b);
    sim_handle *op = handle_get((HANDLE)(uintptr_t)j->a, K_OPERATION);
    HRESULT hr = HCS_E_INVALID_STATE;
    if (s && s->state == ST_CREATED && !s->stopping) {
        s->state = ST_RUNNING;
        system_publish(s);
        hr = S_OK;
    }
    if (op && op->op_state == OP_PENDING) {
        if (hr < 0)
            fail_now(op, hr, "The compute system is not in a state that can be started");
        else
            op_complete(op, S_OK, NULL);
    }
    pthread_mutex_unlock(&g_lock);
}

CC(HcsStartComputeSystem)(HANDLE h, HANDLE oph, const wchar_t *options)
{
    record2("computecore!HcsStartComputeSystem", options, NULL);
    HRESULT hr;
    sim_handle *op;
    pthread_mutex_lock(&g_lock);
    sim_handle *sh = handle_get(h, K_SYSTEM);
    if (!sh)
        hr = HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
    else if (!begin("computecore!HcsStartComputeSystem", oph, OT_START, sh->sys->seq, &hr, &op))
        job_post(job_start, op->value, sh->sys->seq, S_OK, 0, NULL);
    pthread_mutex_unlock(&g_lock);
    return hr;
}

static void job_stop(sim_job *j)
{
    pthread_mutex_lock(&g_lock);
    sim_system *s = system_by_seq(j->b);
    if (s)
        system_stop(s, (int)j->type);
    sim_handle *op = handle_get((HANDLE)(uintptr_t)j->a, K_OPERATION);
    if (op && op->op_state == OP_PENDING)
        op_complete(op, S_OK, NULL);
    pthread_mutex_unlock(&g_lock);
}

/* Shutdown and terminate: the second request for a system completes with
 * HCS_E_SYSTEM_ALREADY_STOPPED, as documented for HcsShutDownComputeSystem. */
static HRESULT stop_call(const char *call, HANDLE h, HANDLE oph, const wchar_t *options, int graceful)
{
    record2(call, options, NULL);
    HRESULT hr;
    sim_handle *op;
    pthread_mutex_lock(&g_lock);
    sim_handle *sh = handle_get(h, K_SYSTEM);
    if (!sh) {
        hr = HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
    } else if (sh->sys->stopping || sh->sys->state == ST_STOPPED) {
        op = handle_get(oph, K_OPERATION);
        hr = op ? S_OK : E_INVALIDARG;
        if (op) {
            op->op_state = OP_PENDING;
            op->op_type = graceful ? OT_SHUTDOWN : OT_TERMINATE;
            char *doc = result_error(HCS_E_SYSTEM_ALREADY_STOPPED, "The compute system is not running");
            complete_later(op, HCS_E_SYSTEM_ALREADY_STOPPED, doc);
            free(doc);
        }
    } else if (!begin(call, oph, graceful ? OT_SHUTDOWN : OT_TERMINATE, sh->sys->seq, &hr, &op)) {
        sh->sys->stopping = 1;
        job_post(job_stop, op->value, sh->sys->seq, S_OK, (uint32_t)graceful, NULL);
    }
    pthread_mutex_unlock(&g_lock);
    return hr;
}

CC(HcsShutDownComputeSystem)(HANDLE h, HANDLE op, const wchar_t *options)
{
    return stop_call("computecore!HcsShutDownComputeSystem", h, op, options, 1);
}

CC(HcsTerminateComputeSystem)(HANDLE h, HANDLE op, const wchar_t *options)
{
    return stop_call("computecore!HcsTerminateComputeSystem", h, op, options, 0);
}

static void job_document(sim_job *j)
{
    pthread_mutex_lock(&g_lock);
    sim_handle *op = handle_get((HANDLE)(uintptr_t)j->a, K_OPERATION);
    char *doc = NULL;
    if (j->type == OT_ENUMERATE) {
        doc = systems_enumerate(j->text);
    } else {
        sim_process *p = process_by_seq(j->b);
        doc = p ? process_status(p) : NULL;
    }
    if (op && op->op_state == OP_PENDING) {
        if (doc)
            op_complete(op, S_OK, doc);
        else
            fail_now(op, HCS_E_SYSTEM_NOT_FOUND, "The object no longer exists");
    }
    free(doc);
    pthread_mutex_unlock(&g_lock);
}

CC(HcsEnumerateComputeSystems)(const wchar_t *query, HANDLE oph)
{
    record2("computecore!HcsEnumerateComputeSystems", query, NULL);
    HRESULT hr;
    sim_handle *op;
    char *q = w2u(query);
    pthread_mutex_lock(&g_lock);
    if (!begin("computecore!HcsEnumerateComputeSystems", oph, OT_ENUMERATE, 0, &hr, &op))
        job_post(job_document, op->value, 0, S_OK, OT_ENUMERATE, q);
    pthread_mutex_unlock(&g_lock);
    free(q);
    return hr;
}

static void job_flush(sim_job *j) { flush_backlog(j->a, j->b); }

static HRESULT set_callback(HANDLE h, int kind, void *ctx, void *cb)
{
    pthread_mutex_lock(&g_lock);
    sim_handle *sh = handle_get(h, kind);
    HRESULT hr = S_OK;
    if (!sh || !cb)
        hr = !sh ? HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE) : E_INVALIDARG;
    else if (sh->cb)
        hr = HCS_E_CALLBACK_ALREADY_SET;
    else {
        sh->cb = cb;
        sh->ctx = ctx;
        job_post(job_flush, sh->sys->seq, sh->proc ? sh->proc->seq : 0, S_OK, 0, NULL);
    }
    pthread_mutex_unlock(&g_lock);
    return hr;
}

CC(HcsSetComputeSystemCallback)(HANDLE h, uint32_t options, void *ctx, void *cb)
{
    (void)options;
    record("computecore!HcsSetComputeSystemCallback", 0, NULL);
    HRESULT hr;
    if (fault_for("computecore!HcsSetComputeSystemCallback", &hr, NULL))
        return hr;
    return set_callback(h, K_SYSTEM, ctx, cb);
}

/* ---------- processes ---------- */

CC(HcsCreateProcess)(HANDLE h, const wchar_t *params, HANDLE oph, void *sd, HANDLE *out)
{
    (void)sd;
    record2("computecore!HcsCreateProcess", params, NULL);
    if (!out)
        return E_INVALIDARG;
    *out = NULL;
    HRESULT hr, fhr;
    char *fmsg = NULL, *err = NULL, *p_json = w2u(params);
    int mode = fault_for("computecore!HcsCreateProcess", &fhr, &fmsg);
    pthread_mutex_lock(&g_lock);
    sim_handle *sh = handle_get(h, K_SYSTEM), *op = handle_get(oph, K_OPERATION);
    if (!sh || !op || op->op_state != OP_NOT_STARTED) {
        hr = !sh ? HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE)
             : op ? HCS_E_OPERATION_ALREADY_STARTED : E_INVALIDARG;
        goto out;
    }
    op->op_state = OP_PENDING;
    op->op_type = OT_CREATEPROC;
    if (mode == FAULT_SYNC + 1) {
        hr = fhr;
        fail_now(op, hr, fmsg);
        goto out;
    }
    if (sh->sys->state != ST_RUNNING || sh->sys->stopping) {
        hr = HCS_E_INVALID_STATE;
        fail_now(op, hr, "The compute system is not running");
        goto out;
    }
    if (mode == FAULT_UNSTARTED + 1) {  /* the process never started: the operation says why */
        hr = S_OK;
        char *rd = result_error(fhr, fmsg);
        complete_later(op, fhr, rd);
        free(rd);
        goto out;
    }
    sim_process *p;
    hr = process_spawn(sh->sys, p_json, 2, &p, &err);
    if (hr < 0) {
        fail_now(op, hr, err);
        goto out;
    }
    sim_handle *ph = handle_new(K_PROCESS, 2);
    ph->sys = sh->sys;
    ph->proc = p;
    op->op_proc = p->seq;
    *out = handle_value(ph);
    if (mode == FAULT_ASYNC + 1) {  /* the WS2022 case: a handle, yet the wait fails */
        char *rd = result_error(fhr, fmsg);
        complete_later(op, fhr, rd);
        free(rd);
    } else if (mode == FAULT_HANG + 1) {
        op->hung_on = sh->sys->seq;
    } else {
        complete_later(op, S_OK, NULL);
    }
out:
    pthread_mutex_unlock(&g_lock);
    free(fmsg);
    free(err);
    free(p_json);
    return hr;
}

CC(HcsOpenProcess)(HANDLE h, uint32_t pid, uint32_t access, HANDLE *out)
{
    (void)access;
    record2("computecore!HcsOpenProcess", NULL, NULL);
    if (!out)
        return E_INVALIDARG;
    *out = NULL;
    HRESULT hr;
    if (fault_for("computecore!HcsOpenProcess", &hr, NULL))
        return hr;
    pthread_mutex_lock(&g_lock);
    sim_handle *sh = handle_get(h, K_SYSTEM);
    hr = sh ? HRESULT_FROM_WIN32(ERROR_NOT_FOUND) : HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
    for (sim_process *p = g_processes; sh && p; p = p->next)
        if (p->sys == sh->sys && (uint32_t)p->pid == pid && !p->exited) {
            sim_handle *ph = handle_new(K_PROCESS, 2);
            ph->sys = p->sys;
            ph->proc = p;
            *out = handle_value(ph);
            hr = S_OK;
            break;
        }
    pthread_mutex_unlock(&g_lock);
    return hr;
}

SIM_API void computecore_HcsCloseProcess(HANDLE h)
{
    record("computecore!HcsCloseProcess", 0, NULL);
    pthread_mutex_lock(&g_lock);
    sim_handle *ph = handle_get(h, K_PROCESS);
    if (ph)
        handle_close(ph);
    pthread_mutex_unlock(&g_lock);
}

static void job_signal(sim_job *j)
{
    pthread_mutex_lock(&g_lock);
    sim_process *p = process_by_seq(j->b);
    if (p)
        process_signal(p, (int)j->type);
    sim_handle *op = handle_get((HANDLE)(uintptr_t)j->a, K_OPERATION);
    if (op && op->op_state == OP_PENDING)
        op_complete(op, S_OK, NULL);
    pthread_mutex_unlock(&g_lock);
}

static int signal_number(const char *options)
{
    static const struct { const char *name; int sig; } map[] = {
        {"CtrlC", SIGINT}, {"CtrlBreak", SIGQUIT}, {"CtrlClose", SIGHUP},
        {"CtrlLogOff", SIGTERM}, {"CtrlShutdown", SIGTERM}};
    cJSON *o = cJSON_Parse(options ? options : "");
    cJSON *s = cJSON_GetObjectItem(o, "Signal");
    int sig = 0;
    for (size_t i = 0; cJSON_IsString(s) && i < sizeof map / sizeof *map; i++)
        if (!strcmp(map[i].name, s->valuestring))
            sig = map[i].sig;
    cJSON_Delete(o);
    return sig;
}

/* Terminate, signal, modify, info and properties share the shape: a live
 * process (or, for the queries, any process) and a job that finishes it. */
static HRESULT process_call(const char *call, HANDLE h, HANDLE oph, const wchar_t *arg, int type)
{
    record2(call, arg, NULL);
    HRESULT hr;
    sim_handle *op;
    char *text = w2u(arg);
    int sig = type == OT_TERMINATE ? SIGKILL : type == OT_SIGNAL ? signal_number(text) : 0;
    pthread_mutex_lock(&g_lock);
    sim_handle *ph = handle_get(h, K_PROCESS);
    if (!h) {
        char what[160];
        snprintf(what, sizeof what, "%s with a NULL process handle", call);
        misuse(what);
    }
    if (!ph) {
        hr = HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
    } else if (type == OT_SIGNAL && !sig) {
        hr = E_INVALIDARG;
    } else if (!begin(call, oph, type, ph->proc->seq, &hr, &op)) {
        int needs_live = type == OT_TERMINATE || type == OT_SIGNAL || type == OT_MODIFYPROC;
        op->op_proc = ph->proc->seq;
        if (needs_live && ph->proc->exited) {
            char *doc = result_error(HCS_E_PROCESS_ALREADY_STOPPED, "The process has already exited");
            complete_later(op, HCS_E_PROCESS_ALREADY_STOPPED, doc);
            free(doc);
        } else if (sig) {
            job_post(job_signal, op->value, ph->proc->seq, S_OK, (uint32_t)sig, NULL);
        } else if (type == OT_PROCPROPS) {
            job_post(job_document, op->value, ph->proc->seq, S_OK, OT_PROCPROPS, NULL);
        } else if (type == OT_MODIFYPROC) {
            char *why = NULL;
            HRESULT done = process_modify(ph->proc, text, &why);
            char *doc = why ? result_error(done, why) : NULL;
            complete_later(op, done, doc);
            free(doc);
            free(why);
        } else {
            complete_later(op, S_OK, NULL);
        }
    }
    pthread_mutex_unlock(&g_lock);
    free(text);
    return hr;
}

CC(HcsTerminateProcess)(HANDLE h, HANDLE op, const wchar_t *options)
{
    return process_call("computecore!HcsTerminateProcess", h, op, options, OT_TERMINATE);
}

CC(HcsSignalProcess)(HANDLE h, HANDLE op, const wchar_t *options)
{
    return process_call("computecore!HcsSignalProcess", h, op, options, OT_SIGNAL);
}

CC(HcsGetProcessInfo)(HANDLE h, HANDLE op)
{
    return process_call("computecore!HcsGetProcessInfo", h, op, NULL, OT_PROCINFO);
}

CC(HcsGetProcessProperties)(HANDLE h, HANDLE op, const wchar_t *query)
{
    return process_call("computecore!HcsGetProcessProperties", h, op, query, OT_PROCPROPS);
}

CC(HcsModifyProcess)(HANDLE h, HANDLE op, const wchar_t *settings)
{
    return process_call("computecore!HcsModifyProcess", h, op, settings, OT_MODIFYPROC);
}

CC(HcsSetProcessCallback)(HANDLE h, uint32_t options, void *ctx, void *cb)
{
    (void)options;
    record("computecore!HcsSetProcessCallback", 0, NULL);
    HRESULT hr;
    if (fault_for("computecore!HcsSetProcessCallback", &hr, NULL))
        return hr;
    return set_callback(h, K_PROCESS, ctx, cb);
}
