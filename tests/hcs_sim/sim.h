/* Shared state of the simulated HCS library.
 *
 * Every export is named <dll stem>_<Windows export name> (for example
 * computecore_HcsCreateComputeSystem) because vmcompute.dll and computecore.dll
 * export different functions under the same names; the Python loader adds the
 * prefix when NSPAWN_HCS_LIBRARY points here.  PCWSTR is wchar_t* (UTF-32 on
 * Linux) and every "HANDLE" is an opaque integer: pipe handles are file
 * descriptors, everything else counts up from SIM_HANDLE_BASE so a stale handle
 * can never alias a new object.
 */
#ifndef HCS_SIM_H
#define HCS_SIM_H

#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <wchar.h>

#define SIM_API __attribute__((visibility("default")))

typedef int32_t HRESULT;
typedef void *HANDLE;

#define S_OK ((HRESULT)0)
#define E_NOTIMPL ((HRESULT)0x80004001)
#define E_POINTER ((HRESULT)0x80004003)
#define E_FAIL ((HRESULT)0x80004005)
#define E_ABORT ((HRESULT)0x80004004)
#define E_INVALIDARG ((HRESULT)0x80070057)
#define HRESULT_FROM_WIN32(x) ((HRESULT)(((uint32_t)(x)&0xFFFF) | 0x80070000u))

#define ERROR_FILE_NOT_FOUND 2
#define ERROR_ACCESS_DENIED 5
#define ERROR_INVALID_HANDLE 6
#define ERROR_NOT_ENOUGH_MEMORY 8
#define ERROR_HANDLE_EOF 38
#define ERROR_INVALID_PARAMETER 87
#define ERROR_INSUFFICIENT_BUFFER 122
#define ERROR_BROKEN_PIPE 109
#define ERROR_NO_DATA 232
#define ERROR_IO_PENDING 997
#define ERROR_NOT_FOUND 1168

#define HCS_E_TERMINATED ((HRESULT)0x80370107)
#define HCS_E_INVALID_STATE ((HRESULT)0x80370105)
#define HCS_E_INVALID_JSON ((HRESULT)0x8037010D)
#define HCS_E_SYSTEM_NOT_FOUND ((HRESULT)0x8037010E)
#define HCS_E_SYSTEM_ALREADY_EXISTS ((HRESULT)0x8037010F)
#define HCS_E_SYSTEM_ALREADY_STOPPED ((HRESULT)0x80370110)
#define HCS_E_OPERATION_NOT_STARTED ((HRESULT)0x80370115)
#define HCS_E_OPERATION_ALREADY_STARTED ((HRESULT)0x80370116)
#define HCS_E_OPERATION_PENDING ((HRESULT)0x80370117)
#define HCS_E_OPERATION_TIMEOUT ((HRESULT)0x80370118)
#define HCS_E_CALLBACK_ALREADY_SET ((HRESULT)0x80370119)
#define HCS_E_PROCESS_ALREADY_STOPPED ((HRESULT)0x8037011F)
#define VMCOMPUTE_PENDING ((HRESULT)0xC0370103)
#define VMCOMPUTE_INVALID_STATE ((HRESULT)0xC0370105)
#define VMCOMPUTE_TERMINATED ((HRESULT)0xC0370107)
#define VMCOMPUTE_INVALID_JSON ((HRESULT)0xC037010D)
#define VMCOMPUTE_SYSTEM_NOT_FOUND ((HRESULT)0xC037010E)
#define VMCOMPUTE_ALREADY_EXISTS ((HRESULT)0xC037010F)
#define VMCOMPUTE_ALREADY_STOPPED ((HRESULT)0xC0370110)

#define SIM_HANDLE_BASE 0x100000u
#define SIM_INVALID_HANDLE ((HANDLE)(intptr_t)-1)

enum sim_kind { K_SYSTEM = 1, K_PROCESS, K_OPERATION, K_CALLBACK, K_NETWORK,
                K_ENDPOINT, K_NAMESPACE, K_JOB, K_EVENT, K_TOKEN, K_HOST_PROCESS };
enum sys_state { ST_CREATING, ST_CREATED, ST_RUNNING, ST_STOPPED };
/* Exactly one party frees a closed handle: the closer once no delivery uses it, or, when
 * nobody can wait (closed inside a callback, or by SimReset), the last delivery. */
enum { CLOSED_BY_CLOSER = 1, CLOSED_BY_DELIVERY = 2 };
enum op_state { OP_NOT_STARTED, OP_PENDING, OP_DONE };
/* FAULT_ACCEPTED: the call does its work and still answers the fault's code (a v2 stop
 * answering ERROR_VMCOMPUTE_OPERATION_PENDING, which hcsshim takes for accepted). */
enum fault_mode { FAULT_SYNC = 0, FAULT_ASYNC = 1, FAULT_HANG = 2, FAULT_SIGNAL = 3, FAULT_ACCEPTED = 4,
                  FAULT_DELAY = 5, /* the call waits hr milliseconds first, then goes on */
                  FAULT_UNSTARTED = 6 /* HcsCreateProcess: S_OK, no handle, its operation fails */ };

/* v1 notifications and v2 events that share a value (exit) use both fields. */
#define EV_SYSTEM_EXITED 0x1u
#define V1_CREATE_COMPLETED 0x2u
#define V1_START_COMPLETED 0x3u
#define EV_PROCESS_EXITED 0x10000u

typedef struct sim_system sim_system;
typedef struct sim_process sim_process;

struct sim_system {
    uint64_t seq;
    char *id, *owner;
    int api;                /* 1 = vmcompute.dll, 2 = computecore.dll */
    int state, stopping, terminate_on_close;
    int foreign;            /* created by another process (state.c) */
    int guard_fd;           /* write end of the TerminateOnLastHandleClosed guardian, or -1 */
    cJSON *mapped;          /* [{"host":..., "container":...}] */
    cJSON *groups;          /* process group of every process it started */
    uint64_t affinity;      /* Linux CPUs 0-63 of the silo job; 0 = not set */
    cJSON *backlog;         /* events that arrived before any callback */
    sim_system *next;
};

struct sim_process {
    uint64_t seq;
    sim_system *sys;
    pid_t pid;
    int api, exited;
    uint32_t exit_code;
    int fds[3];             /* host ends not yet handed to the caller, or -1 */
    int console;            /* the emulated console's master (EmulateConsole), for ConsoleSize; or -1 */
    char *image;
    cJSON *backlog;
    sim_process *next;
};

typedef struct sim_handle sim_handle;
struct sim_handle {
    uint64_t value;
    int kind, api;
    sim_system *sys;
    sim_process *proc;
    void *cb, *ctx;         /* v2 event callback or v1 notification callback */
    int in_flight;
    int closed;             /* 0 open; CLOSED_BY_CLOSER or CLOSED_BY_DELIVERY: who frees it */
    char *obj_id;           /* network/endpoint/namespace id */
    /* K_OPERATION */
    int op_state, op_type;
    HRESULT op_hr;
    char *op_doc;
    uint64_t op_proc;       /* process whose stdio the operation reports */
    uint64_t hung_on;       /* seq of the system/process whose end releases a hang */
    sim_handle *next;
};

typedef struct sim_job sim_job;
struct sim_job {
    void (*fn)(sim_job *);
    uint64_t a, b;
    HRESULT hr;
    uint32_t type;
    char *text;
    sim_job *next;
};

extern pthread_mutex_t g_lock;
extern pthread_cond_t g_cond;
extern sim_system *g_systems;
extern sim_process *g_processes;
extern sim_handle *g_handles;
extern uint64_t g_reset_gen;

/* core.c */
char *w2u(const wchar_t *w);                 /* NULL-safe, malloc'd UTF-8 */
wchar_t *u2w(const char *s);                 /* malloc'd wchar_t copy */
wchar_t *out_local(const char *s);           /* freed by kernel32 LocalFree */
wchar_t *out_cotask(const char *s);          /* freed by ole32 CoTaskMemFree */
void record(const char *call, int n, const wchar_t *const *args);
void record_json(const char *call, cJSON *args);
int fault_for(const char *call, HRESULT *hr, char **msg);  /* returns mode+1 or 0 */
char *result_error(HRESULT hr, const char *msg);
sim_handle *handle_new(int kind, int api);
sim_handle *handle_get(HANDLE h, int kind);
void handle_close(sim_handle *h);
HANDLE handle_value(sim_handle *h);
void job_post(void (*fn)(sim_job *), uint64_t a, uint64_t b, HRESULT hr, uint32_t type, const char *text);
int on_worker(void);
void deliver(uint64_t sys_seq, uint64_t proc_seq, uint32_t v2type, uint32_t v1type, HRESULT status, const char *data);
void flush_backlog(uint64_t sys_seq, uint64_t proc_seq);
void op_complete(sim_handle *op, HRESULT hr, const char *doc);
void release_hangs(uint64_t seq, HRESULT hr);
HRESULT hang_here(uint64_t seq);             /* blocks a synchronous call; g_lock held */
void gc_objects(void);
void pipe_handed_out(int fd);
void set_last_error(uint32_t e);
void misuse(const char *what);             /* g_lock held */
sim_system *system_by_seq(uint64_t seq);
sim_process *process_by_seq(uint64_t seq);
uint64_t next_seq(void);

/* systems.c */
sim_system *system_find(const char *id);
HRESULT system_new(const char *id, const char *doc, int api, sim_system **out, char **err);
void system_stop(sim_system *s, int graceful);
char *systems_enumerate(const char *query);
char *process_status(sim_process *p);

/* process.c */
HRESULT process_spawn(sim_system *s, const char *params, int api, sim_process **out, char **err);
char **cmdline_to_argv(const char *line);
void process_signal(sim_process *p, int sig);
HRESULT process_modify(sim_process *p, const char *settings, char **err);
void system_kill_groups(sim_system *s);
void processes_kill_all(void);

/* state.c */
const char *state_dir(void);
cJSON *state_load(const char *name);
void state_save(const char *name, cJSON *v);
int state_lock(void);
void state_unlock(int fd);
void system_publish(sim_system *s);
sim_system *system_adopt(const char *id);
void systems_foreign(cJSON *out, cJSON *(*summary)(sim_system *), int (*keep)(sim_system *, void *), void *arg);
void guardian_start(sim_system *s);
void guardian_guard(sim_system *s, pid_t group);
void guardian_disarm(sim_system *s);

/* vmcompute.c, computenetwork.c */
void layers_reset(void);
/* computestorage.c: a layer in transport form copied into `to` (created), for both DLLs' imports */
HRESULT layer_import(const char *to, const char *from, HRESULT invalid);
int layer_folder_exists(const char *path);
/* advapi32.c */
int privileges_enabled(void);               /* SeBackupPrivilege and SeRestorePrivilege both */
void privileges_reset(void);
void net_reset(void);
cJSON *layers_ledger(void);
cJSON *net_ledger(void);

#endif
