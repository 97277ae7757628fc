/* Windows directory listing for the scan walker (FindFirstFileExW, basic
 * information in large batches), the kind of volume holding a path
 * (GetDriveTypeW), and the path spelling rules. */
#include "shared/platform.h"

#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "win32.h"

struct mmr_dir {
    HANDLE find;
    WIN32_FIND_DATAW data;
    bool pending; /* data holds an entry not yet returned */
    bool done;
    char *name;
    char *path;
};

int mmr_dir_open(const char *path, bool follow_link, struct mmr_dir **out)
{
    (void)follow_link; /* FindFirstFileExW always resolves the directory's name */
    wchar_t *w = mmr_w_path(path);
    if (!w)
        return mmr_err_wrap(MMR_EINVAL, "cannot open directory '%s'", path);
    size_t len = wcslen(w);
    bool sep = len > 0 && w[len - 1] == L'\\';
    wchar_t *pattern = mmr_malloc((len + 3) * sizeof(wchar_t));
    wcscpy(pattern, w);
    wcscat(pattern, sep ? L"*" : L"\\*");
    free(w);

    struct mmr_dir *d = mmr_calloc(1, sizeof(*d));
    d->find = FindFirstFileExW(pattern, FindExInfoBasic, &d->data, FindExSearchNameMatch, NULL,
                               FIND_FIRST_EX_LARGE_FETCH);
    free(pattern);
    if (d->find == INVALID_HANDLE_VALUE) {
        DWORD err = GetLastError();
        free(d);
        /* No match at all: a drive root, which has no "." entry, left empty. */
        if (err == ERROR_FILE_NOT_FOUND) {
            d = mmr_calloc(1, sizeof(*d));
            d->find = INVALID_HANDLE_VALUE;
            d->done = true;
            d->path = mmr_strdup(path);
            *out = d;
            return 0;
        }
        if (err == ERROR_DIRECTORY || err == ERROR_INVALID_NAME)
            return mmr_err_set(MMR_EINVAL, "cannot open directory '%s': not a directory", path);
        return mmr_win_err_path(err, "cannot open directory", path);
    }
    d->pending = true;
    d->path = mmr_strdup(path);
    *out = d;
    return 0;
}

static bool dot_or_dotdot(const wchar_t *n)
{
    return (n[0] == L'.' && n[1] == 0) || (n[0] == L'.' && n[1] == L'.' && n[2] == 0);
}

int mmr_dir_next(struct mmr_dir *d, const char **name, enum mmr_dirent_type *type)
{
    for (;;) {
        if (d->done)
            return 0;
        if (!d->pending) {
            if (!FindNextFileW(d->find, &d->data)) {
                DWORD err = GetLastError();
                d->done = true;
                if (err == ERROR_NO_MORE_FILES)
                    return 0;
                return mmr_win_err_path(err, "cannot list directory", d->path);
            }
        }
        d->pending = false;
        if (dot_or_dotdot(d->data.cFileName))
            continue;
        free(d->name);
        d->name = mmr_utf8_from_w(d->data.cFileName);
        if (!d->name)
            return mmr_err_set(MMR_EINVAL, "a name in '%s' is not valid UTF-16", d->path);
        DWORD a = d->data.dwFileAttributes;
        /* Any reparse point: symbolic links and junctions may lead anywhere;
         * cloud placeholders would download on read. */
        if (a & FILE_ATTRIBUTE_REPARSE_POINT)
            *type = MMR_DIRENT_LINK;
        else if (a & FILE_ATTRIBUTE_DIRECTORY)
            *type = MMR_DIRENT_DIR;
        else if (a & FILE_ATTRIBUTE_DEVICE)
            *type = MMR_DIRENT_OTHER;
        else
            *type = MMR_DIRENT_FILE;
        *name = d->name;
        return 1;
    }
}

void mmr_dir_close(struct mmr_dir *d)
{
    if (!d)
        return;
    if (d->find != INVALID_HANDLE_VALUE)
        FindClose(d->find);
    free(d->name);
    free(d->path);
    free(d);
}

static bool unc_path(const char *p)
{
    bool two_seps = (p[0] == '\\' || p[0] == '/') && (p[1] == '\\' || p[1] == '/');
    if (!two_seps)
        return false;
    /* \\?\UNC\server\share is UNC; other \\?\ and \\.\ names are local. */
    if ((p[2] == '?' || p[2] == '.') && (p[3] == '\\' || p[3] == '/'))
        return _strnicmp(p + 4, "UNC", 3) == 0 && (p[7] == '\\' || p[7] == '/');
    return true;
}

int mmr_fs_kind(const char *path, enum mmr_fs_kind *out)
{
    if (unc_path(path)) {
        *out = MMR_FS_NETWORK;
        return 0;
    }
    wchar_t *w = mmr_w_path(path);
    if (!w)
        return mmr_err_wrap(MMR_EINVAL, "cannot read the filesystem of '%s'", path);
    /* GetVolumePathNameW answers for names that do not exist; POSIX fails. */
    if (GetFileAttributesW(w) == INVALID_FILE_ATTRIBUTES) {
        int rc = mmr_win_err_path(GetLastError(), "cannot read the filesystem of", path);
        free(w);
        return rc;
    }
    size_t cap = wcslen(w) + 2;
    wchar_t *vol = mmr_malloc(cap * sizeof(wchar_t));
    int rc = 0;
    if (!GetVolumePathNameW(w, vol, (DWORD)cap)) {
        rc = mmr_win_err_path(GetLastError(), "cannot read the filesystem of", path);
        goto out;
    }
    switch (GetDriveTypeW(vol)) {
    case DRIVE_REMOTE:
        *out = MMR_FS_NETWORK;
        break;
    case DRIVE_NO_ROOT_DIR:
        rc = mmr_err_set(MMR_ENOENT, "cannot read the filesystem of '%s': no such volume", path);
        break;
    default: /* fixed, removable, CD-ROM, RAM disk, unknown */
        *out = MMR_FS_LOCAL;
        break;
    }
out:
    free(vol);
    free(w);
    return rc;
}

bool mmr_path_fold_case(void)
{
    return true;
}

bool mmr_path_is_sep(char c)
{
    return c == '/' || c == '\\';
}
