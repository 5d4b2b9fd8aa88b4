/* computestorage.dll: HcsImportLayer, as Microsoft's storage reference describes it, checked
 * the way Windows would refuse a mistake: the layer data must be LayerData JSON
 * ({"SchemaVersion": {"Major", "Minor"}, "Layers": [{"Id": "<guid>", "Path": "<folder>"}]})
 * whose parent folders exist; the source must be a layer in transport form (a Files folder);
 * its tombstones.txt, when it has one, must be hcsshim's form (a UTF-8 byte order mark and
 * "Version 1.0", then one \\path below Files a line); the target must not be a layer already;
 * the caller must have enabled SeBackupPrivilege and
 * SeRestorePrivilege. The import copies the source's tree into the layer path (created, as
 * HCS creates it), where a real import also writes the layer's registry hives and metadata. */
#include "sim.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ERROR_PATH_NOT_FOUND 3
#define ERROR_ALREADY_EXISTS 183
#define ERROR_PRIVILEGE_NOT_HELD 1314
#define HCS_E_INVALID_LAYER ((HRESULT)0x80370112)

static int is_dir(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_guid(const char *s)
{
    if (strlen(s) != 36)
        return 0;
    for (int i = 0; i < 36; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !strchr("0123456789abcdefABCDEF", s[i]))
            return 0;
    }
    return 1;
}

/* 0 when the layer data is well formed and names existing parents, else the HRESULT. */
static HRESULT check_layer_data(const char *text)
{
    cJSON *doc = text ? cJSON_Parse(text) : NULL;
    if (!doc)
        return HCS_E_INVALID_JSON;
    HRESULT hr = S_OK;
    cJSON *version = cJSON_GetObjectItemCaseSensitive(doc, "SchemaVersion");
    cJSON *layers = cJSON_GetObjectItemCaseSensitive(doc, "Layers");
    if (!cJSON_IsObject(doc) || !cJSON_IsObject(version) ||
        !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(version, "Major")) ||
        !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(version, "Minor")) || !cJSON_IsArray(layers))
        hr = E_INVALIDARG;
    cJSON *layer;
    cJSON_ArrayForEach(layer, hr == S_OK ? layers : NULL) {
        cJSON *id = cJSON_GetObjectItemCaseSensitive(layer, "Id");
        cJSON *path = cJSON_GetObjectItemCaseSensitive(layer, "Path");
        if (!cJSON_IsString(id) || !is_guid(id->valuestring) || !cJSON_IsString(path)) {
            hr = E_INVALIDARG;
            break;
        }
        if (!is_dir(path->valuestring)) {
            hr = HRESULT_FROM_WIN32(ERROR_PATH_NOT_FOUND);
            break;
        }
    }
    cJSON_Delete(doc);
    return hr;
}

/* 1 when the source has no tombstones.txt or a well-formed one. */
static int tombstones_ok(const char *source)
{
    char *path = NULL;
    if (asprintf(&path, "%s/tombstones.txt", source) < 0)
        return 0;
    FILE *f = fopen(path, "r");
    free(path);
    if (!f)
        return errno == ENOENT;
    char line[4096];
    int ok = fgets(line, sizeof line, f) && !strcmp(line, "\xef\xbb\xbfVersion 1.0\n");
    while (ok && fgets(line, sizeof line, f))
        ok = line[0] == '\\' && line[1] && line[1] != '\n' && !strchr(line, '/') && strchr(line, '\n');
    fclose(f);
    return ok;
}

static int copy_file(const char *from, const char *to, mode_t mode)
{
    int in = open(from, O_RDONLY | O_CLOEXEC), out = -1, ok = 0;
    if (in >= 0)
        out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode & 07777);
    if (out >= 0) {
        char buf[65536];
        ssize_t n;
        while ((n = read(in, buf, sizeof buf)) > 0)
            if (write(out, buf, (size_t)n) != n)
                break;
        ok = n == 0;
    }
    if (in >= 0)
        close(in);
    if (out >= 0 && close(out))
        ok = 0;
    return ok;
}

static int copy_tree(const char *from, const char *to)
{
    DIR *d = opendir(from);
    if (!d)
        return 0;
    int ok = 1;
    struct dirent *e;
    while (ok && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *src = NULL, *dst = NULL;
        struct stat st;
        if (asprintf(&src, "%s/%s", from, e->d_name) < 0 || asprintf(&dst, "%s/%s", to, e->d_name) < 0 ||
            lstat(src, &st)) {
            ok = 0;
        } else if (S_ISDIR(st.st_mode)) {
            ok = mkdir(dst, st.st_mode & 07777) == 0 && copy_tree(src, dst);
        } else if (S_ISREG(st.st_mode)) {
            ok = copy_file(src, dst, st.st_mode);
        } else if (S_ISLNK(st.st_mode)) {
            char target[4096];
            ssize_t n = readlink(src, target, sizeof target - 1);
            ok = n >= 0 && (target[n] = 0, symlink(target, dst) == 0);
        }
        free(src);
        free(dst);
    }
    closedir(d);
    return ok;
}

static int empty_or_absent(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return errno == ENOENT;
    struct dirent *e;
    int empty = 1;
    while (empty && (e = readdir(d)))
        empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
    closedir(d);
    return empty;
}

/* The import both DLLs do, once the parents are checked: `invalid` is the DLL's code for a
 * source that is no layer in transport form. */
HRESULT layer_import(const char *to, const char *from, HRESULT invalid)
{
    if (!privileges_enabled())
        return HRESULT_FROM_WIN32(ERROR_PRIVILEGE_NOT_HELD);
    char *files = NULL;
    HRESULT hr = S_OK;
    if (!is_dir(from))
        hr = HRESULT_FROM_WIN32(ERROR_PATH_NOT_FOUND);
    if (hr == S_OK && (asprintf(&files, "%s/Files", from) < 0 || !is_dir(files)))
        hr = invalid;
    if (hr == S_OK && !tombstones_ok(from))
        hr = invalid;
    if (hr == S_OK && !empty_or_absent(to))
        hr = HRESULT_FROM_WIN32(ERROR_ALREADY_EXISTS);
    if (hr == S_OK && mkdir(to, 0755) && errno != EEXIST)
        hr = HRESULT_FROM_WIN32(ERROR_PATH_NOT_FOUND);
    if (hr == S_OK && !copy_tree(from, to))
        hr = E_FAIL;
    free(files);
    return hr;
}

int layer_folder_exists(const char *path)
{
    return is_dir(path);
}

SIM_API HRESULT computestorage_HcsImportLayer(const wchar_t *layer_path, const wchar_t *source, const wchar_t *layer_data)
{
    const wchar_t *args[] = {layer_path, source, layer_data};
    record("computestorage!HcsImportLayer", 3, args);
    HRESULT hr = S_OK;
    if (fault_for("computestorage!HcsImportLayer", &hr, NULL))
        return hr;
    if (!layer_path || !source || !layer_data)
        return E_INVALIDARG;
    char *data = w2u(layer_data);
    hr = check_layer_data(data);
    free(data);
    if (hr != S_OK)
        return privileges_enabled() ? hr : HRESULT_FROM_WIN32(ERROR_PRIVILEGE_NOT_HELD);
    char *to = w2u(layer_path), *from = w2u(source);
    hr = layer_import(to, from, HCS_E_INVALID_LAYER);
    free(to);
    free(from);
    return hr;
}

static int remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st))
        return 0;
    if (!S_ISDIR(st.st_mode))
        return unlink(path) == 0;
    DIR *d = opendir(path);
    if (!d)
        return 0;
    int ok = 1;
    struct dirent *e;
    while (ok && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char *child = NULL;
        ok = asprintf(&child, "%s/%s", path, e->d_name) >= 0 && remove_tree(child);
        free(child);
    }
    closedir(d);
    return ok && rmdir(path) == 0;
}

/* A layer folder deleted whole; one that does not exist fails with ERROR_PATH_NOT_FOUND. */
SIM_API HRESULT computestorage_HcsDestroyLayer(const wchar_t *layer_path)
{
    const wchar_t *args[] = {layer_path};
    record("computestorage!HcsDestroyLayer", 1, args);
    HRESULT hr = S_OK;
    if (fault_for("computestorage!HcsDestroyLayer", &hr, NULL))
        return hr;
    if (!layer_path)
        return E_INVALIDARG;
    char *path = w2u(layer_path);
    hr = !is_dir(path) ? HRESULT_FROM_WIN32(ERROR_PATH_NOT_FOUND) : remove_tree(path) ? S_OK : E_FAIL;
    free(path);
    return hr;
}
