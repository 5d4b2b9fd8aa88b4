/* advapi32.dll: the process token's SeBackupPrivilege and SeRestorePrivilege, as an
 * administrator's token holds them: present and disabled until AdjustTokenPrivileges enables
 * them. NSPAWN_HCS_SIM_NO_PRIVILEGE=SeRestorePrivilege (a comma-separated list, read at each
 * call) is a token that does not hold those: AdjustTokenPrivileges then succeeds and leaves
 * ERROR_NOT_ALL_ASSIGNED as the last error, as Windows does. HcsImportLayer refuses to run
 * while either is disabled. */
#include "sim.h"

#include <stdlib.h>
#include <string.h>

#define ERROR_NOT_ALL_ASSIGNED 1300
#define ERROR_NO_SUCH_PRIVILEGE 1313
#define SE_PRIVILEGE_ENABLED 0x2u
#define TOKEN_ADJUST_PRIVILEGES 0x20u
/* winnt.h's well-known LUIDs (SE_BACKUP_PRIVILEGE, SE_RESTORE_PRIVILEGE) */
static const struct { const char *name; uint32_t luid; } PRIVILEGES[] = {
    {"SeBackupPrivilege", 17}, {"SeRestorePrivilege", 18}};
#define N_PRIVILEGES 2

struct luid { uint32_t low; int32_t high; };
struct luid_and_attributes { struct luid luid; uint32_t attributes; };
struct token_privileges { uint32_t count; struct luid_and_attributes privileges[1]; };

static int g_enabled[N_PRIVILEGES];

int privileges_enabled(void)
{
    return g_enabled[0] && g_enabled[1];
}

void privileges_reset(void)
{
    memset(g_enabled, 0, sizeof g_enabled);
}

static int held(const char *name)
{
    const char *env = getenv("NSPAWN_HCS_SIM_NO_PRIVILEGE");
    if (!env || !*env)
        return 1;
    size_t n = strlen(name);
    for (const char *p = env; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (!strncmp(p, name, n) && (p[n] == ',' || !p[n]))
            return 0;
    return 1;
}

SIM_API int32_t advapi32_OpenProcessToken(HANDLE process, uint32_t access, HANDLE *token)
{
    record("advapi32!OpenProcessToken", 0, NULL);
    /* only this process's pseudo handle (GetCurrentProcess) */
    if (process != SIM_INVALID_HANDLE || !token) {
        set_last_error(ERROR_INVALID_PARAMETER);
        return 0;
    }
    pthread_mutex_lock(&g_lock);
    sim_handle *h = handle_new(K_TOKEN, 0);
    h->op_type = (int)access;  /* the access it was opened with, checked by AdjustTokenPrivileges */
    *token = handle_value(h);
    pthread_mutex_unlock(&g_lock);
    set_last_error(0);
    return 1;
}

SIM_API int32_t advapi32_LookupPrivilegeValueW(const wchar_t *system, const wchar_t *name, struct luid *out)
{
    const wchar_t *args[] = {name};
    record("advapi32!LookupPrivilegeValueW", 1, args);
    char *u = w2u(name);
    int32_t ok = 0;
    for (int i = 0; u && !system && out && i < N_PRIVILEGES; i++)
        if (!strcmp(u, PRIVILEGES[i].name)) {
            out->low = PRIVILEGES[i].luid;
            out->high = 0;
            ok = 1;
        }
    free(u);
    set_last_error(ok ? 0 : !out ? ERROR_INVALID_PARAMETER : ERROR_NO_SUCH_PRIVILEGE);
    return ok;
}

SIM_API int32_t advapi32_AdjustTokenPrivileges(HANDLE token, int32_t disable_all, struct token_privileges *new_state,
                                               uint32_t length, void *previous, uint32_t *return_length)
{
    record("advapi32!AdjustTokenPrivileges", 0, NULL);
    pthread_mutex_lock(&g_lock);
    sim_handle *h = handle_get(token, K_TOKEN);
    uint32_t access = h ? (uint32_t)h->op_type : 0;
    if (h && (previous || return_length))
        misuse("AdjustTokenPrivileges: nspawn asks for no previous state");
    pthread_mutex_unlock(&g_lock);
    if (!h) {
        set_last_error(ERROR_INVALID_HANDLE);
        return 0;
    }
    if (!(access & TOKEN_ADJUST_PRIVILEGES)) {
        set_last_error(ERROR_ACCESS_DENIED);
        return 0;
    }
    if (disable_all || !new_state || !new_state->count ||
        length < sizeof(uint32_t) + new_state->count * sizeof(struct luid_and_attributes)) {
        set_last_error(ERROR_INVALID_PARAMETER);
        return 0;
    }
    int not_all = 0;
    for (uint32_t i = 0; i < new_state->count; i++) {
        struct luid_and_attributes *p = &new_state->privileges[i];
        int known = -1;
        for (int k = 0; k < N_PRIVILEGES; k++)
            if (p->luid.high == 0 && p->luid.low == PRIVILEGES[k].luid)
                known = k;
        if (known < 0 || !held(PRIVILEGES[known].name)) {
            not_all = 1;
            continue;
        }
        g_enabled[known] = (p->attributes & SE_PRIVILEGE_ENABLED) != 0;
    }
    set_last_error(not_all ? ERROR_NOT_ALL_ASSIGNED : 0);
    return 1;
}
