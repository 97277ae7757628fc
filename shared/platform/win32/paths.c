/* Windows well-known locations (%ProgramData%\Mamori), path joining,
 * directory creation, and the agent's named pipe name. */
#include "shared/platform.h"

#include <shlobj.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform/win32/win32.h"

#define PIPE_PREFIX "\\\\.\\pipe\\mamori-agent"

/* Computed once; they live as long as the process. */
static char *data_dir;
static char *config_path;
static INIT_ONCE dirs_once = INIT_ONCE_STATIC_INIT;

static char *program_data(void)
{
    wchar_t *known = NULL;
    char *dir = NULL;
    if (SHGetKnownFolderPath(&FOLDERID_ProgramData, KF_FLAG_DEFAULT, NULL, &known) == S_OK)
        dir = mmr_utf8_from_w(known);
    CoTaskMemFree(known);
    if (dir)
        return dir;
    /* No shell (a stripped-down system): the variable Windows sets for it. */
    wchar_t env[MAX_PATH];
    DWORD n = GetEnvironmentVariableW(L"ProgramData", env, MAX_PATH);
    if (n > 0 && n < MAX_PATH && (dir = mmr_utf8_from_w(env)) != NULL)
        return dir;
    return mmr_strdup("C:\\ProgramData");
}

static BOOL CALLBACK init_dirs(PINIT_ONCE once, PVOID param, PVOID *ctx)
{
    char *base = program_data();
    data_dir = mmr_path_join(base, "Mamori");
    config_path = mmr_path_join(data_dir, "agent.conf");
    free(base);
    return TRUE;
}

const char *mmr_default_data_dir(void)
{
    InitOnceExecuteOnce(&dirs_once, init_dirs, NULL, NULL);
    return data_dir;
}

/* Named pipes do not live in the file system: the run directory only names
 * the pipe (mmr_ipc_endpoint), so it is the data directory. */
const char *mmr_default_run_dir(void)
{
    return mmr_default_data_dir();
}

const char *mmr_default_config_path(void)
{
    InitOnceExecuteOnce(&dirs_once, init_dirs, NULL, NULL);
    return config_path;
}

/* The directory as one spelling: absolute, '\\' separators, no trailing
 * separator, upper case (Windows file names ignore case). UTF-8, allocated. */
static char *normalised_dir(const char *dir)
{
    wchar_t *w = mmr_w_path(dir);
    if (!w)
        return NULL;
    wchar_t *p = w;
    if (wcsncmp(p, L"\\\\?\\UNC\\", 8) == 0) {
        p += 6;
        p[0] = L'\\';
    } else if (wcsncmp(p, L"\\\\?\\", 4) == 0) {
        p += 4;
    }
    size_t len = wcslen(p);
    while (len > 1 && p[len - 1] == L'\\')
        p[--len] = L'\0';
    int n = LCMapStringEx(LOCALE_NAME_INVARIANT, LCMAP_UPPERCASE, p, (int)len + 1, NULL, 0, NULL,
                          NULL, 0);
    wchar_t *upper = mmr_malloc((size_t)(n > 0 ? n : 1) * sizeof(wchar_t));
    char *out = NULL;
    if (n > 0 && LCMapStringEx(LOCALE_NAME_INVARIANT, LCMAP_UPPERCASE, p, (int)len + 1, upper, n,
                               NULL, NULL, 0) == n)
        out = mmr_utf8_from_w(upper);
    else
        mmr_win_err_set(GetLastError(), "cannot normalise a directory name");
    free(upper);
    free(w);
    return out;
}

/* FNV-1a, 64 bits: names the pipe, it does not protect anything (the first
 * agent to create a pipe name owns it; a second one fails to bind). */
static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h;
}

int mmr_ipc_endpoint(const char *run_dir, char **out)
{
    if (!run_dir || !run_dir[0])
        return mmr_err_set(MMR_EINVAL, "empty run directory");
    char *mine = normalised_dir(run_dir);
    if (!mine)
        return mmr_err_wrap(MMR_EINVAL, "run directory '%s'", run_dir);
    char *def = normalised_dir(mmr_default_run_dir());
    /* The installed agent answers on the well-known name; an agent with its
     * own data directory (tests, --data-dir) on a name derived from it, so
     * that mamorictl --data-dir finds it and two agents never collide. */
    if (def && strcmp(mine, def) == 0)
        *out = mmr_strdup(PIPE_PREFIX);
    else
        *out = mmr_asprintf(PIPE_PREFIX "-%016llx", (unsigned long long)fnv1a64(mine));
    free(def);
    free(mine);
    return 0;
}

static bool is_sep(char c)
{
    return c == '\\' || c == '/';
}

char *mmr_path_join(const char *dir, const char *name)
{
    size_t dlen = strlen(dir);
    while (dlen > 1 && is_sep(dir[dlen - 1]))
        dlen--;
    if (dlen > 0 && is_sep(dir[dlen - 1]))
        return mmr_asprintf("%.*s%s", (int)dlen, dir, name);
    return mmr_asprintf("%.*s\\%s", (int)dlen, dir, name);
}

bool mmr_path_exists(const char *path)
{
    wchar_t *w = mmr_w_path(path);
    if (!w)
        return false;
    bool ok = GetFileAttributesW(w) != INVALID_FILE_ATTRIBUTES;
    free(w);
    return ok;
}

/* Length of the part of a full path that cannot be created: "C:\",
 * "\\server\share\", "\\?\C:\", "\\?\UNC\server\share\". */
static size_t root_length(const wchar_t *p)
{
    size_t i;
    int parts;
    if (wcsncmp(p, L"\\\\?\\UNC\\", 8) == 0) {
        i = 8;
        parts = 2;
    } else if (wcsncmp(p, L"\\\\?\\", 4) == 0 || wcsncmp(p, L"\\\\.\\", 4) == 0) {
        i = 4;
        parts = 1;
    } else if (wcsncmp(p, L"\\\\", 2) == 0) {
        i = 2;
        parts = 2;
    } else if (p[0] && p[1] == L':') {
        return p[2] == L'\\' ? 3 : 2;
    } else {
        return p[0] == L'\\' ? 1 : 0;
    }
    for (; parts > 0 && p[i]; parts--) {
        while (p[i] && p[i] != L'\\')
            i++;
        if (p[i])
            i++;
    }
    return i;
}

static int dir_error(DWORD err, const wchar_t *w)
{
    char *path = mmr_utf8_from_w(w);
    int rc = mmr_win_err_path(err, "cannot create directory", path ? path : "?");
    free(path);
    return rc;
}

static int not_a_dir(const wchar_t *w)
{
    char *path = mmr_utf8_from_w(w);
    int rc = mmr_err_set(MMR_EEXIST, "'%s' exists and is not a directory", path ? path : "?");
    free(path);
    return rc;
}

/* Creates one directory (with sd when given); *created tells whether it was
 * new, so that a private one is not secured twice. */
static int make_one_dir(const wchar_t *w, PSECURITY_DESCRIPTOR sd, bool *created)
{
    *created = false;
    DWORD attr = GetFileAttributesW(w);
    if (attr != INVALID_FILE_ATTRIBUTES)
        return (attr & FILE_ATTRIBUTE_DIRECTORY) ? 0 : not_a_dir(w);
    SECURITY_ATTRIBUTES sa = {.nLength = sizeof(sa), .lpSecurityDescriptor = sd};
    if (CreateDirectoryW(w, sd ? &sa : NULL)) {
        *created = true;
        return 0;
    }
    DWORD err = GetLastError();
    if (err == ERROR_ALREADY_EXISTS) {
        /* Created by someone else in the meantime. */
        attr = GetFileAttributesW(w);
        if (attr != INVALID_FILE_ATTRIBUTES)
            return (attr & FILE_ATTRIBUTE_DIRECTORY) ? 0 : not_a_dir(w);
    }
    return dir_error(err, w);
}

int mmr_mkdir_p(const char *path, bool private_dir)
{
    if (path[0] == '\0')
        return mmr_err_set(MMR_EINVAL, "empty directory path");
    wchar_t *w = mmr_w_path(path);
    if (!w)
        return mmr_err_wrap(MMR_EINVAL, "directory '%s'", path);
    size_t root = root_length(w);
    size_t len = wcslen(w);
    while (len > root && w[len - 1] == L'\\')
        w[--len] = L'\0';
    PSECURITY_DESCRIPTOR sd = NULL;
    int rc = 0;
    bool created = false;
    if (len <= root) {
        rc =
            mmr_err_set(MMR_EINVAL, "'%s' is the root of a drive, not a directory to create", path);
        goto out;
    }
    /* Parents are created as ordinary directories; only the leaf is private. */
    for (size_t i = root; i < len; i++) {
        if (w[i] != L'\\' || (i > 0 && w[i - 1] == L'\\'))
            continue;
        w[i] = L'\0';
        rc = make_one_dir(w, NULL, &created);
        w[i] = L'\\';
        if (rc < 0)
            goto out;
    }
    if (private_dir) {
        sd = mmr_win_private_sd(true);
        if (!sd) {
            rc = mmr_err_wrap(MMR_EIO, "directory '%s'", path);
            goto out;
        }
    }
    rc = make_one_dir(w, sd, &created);
    /* An existing private directory is tightened. */
    if (rc == 0 && private_dir && !created)
        rc = mmr_win_make_private(w, path, true);
out:
    free(sd);
    free(w);
    return rc;
}
