/* Windows file helpers: bounded reads, atomic private writes, append-only
 * files for logs, private ACLs (SYSTEM, Administrators and the owner only),
 * disk space and file identity. Wide paths throughout. */
#include "shared/platform.h"

#include <aclapi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform/win32/win32.h"

/* ReadFile and WriteFile take a DWORD count: large buffers go in chunks. */
#define IO_CHUNK (1u << 30)

/* Readers never stand in the way of writers, renames or deletions. */
#define SHARE_ALL (FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE)

/* Replace the DACL, and take nothing from the parent directory. */
#define PRIVATE_DACL_INFO (DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION)

struct mmr_file {
    HANDLE h;
};

/* ---- private security descriptors ---------------------------------------- */

static bool well_known_sid(WELL_KNOWN_SID_TYPE type, BYTE buf[SECURITY_MAX_SID_SIZE])
{
    DWORD n = SECURITY_MAX_SID_SIZE;
    return CreateWellKnownSid(type, NULL, buf, &n) != 0;
}

PSECURITY_DESCRIPTOR mmr_win_private_sd(bool dir)
{
    BYTE system_sid[SECURITY_MAX_SID_SIZE], admins_sid[SECURITY_MAX_SID_SIZE];
    PSID self = mmr_win_self_sid();
    if (!well_known_sid(WinLocalSystemSid, system_sid) ||
        !well_known_sid(WinBuiltinAdministratorsSid, admins_sid) || !self) {
        mmr_win_err_set(GetLastError(), "cannot build a private access list");
        return NULL;
    }
    PSID sids[3] = {system_sid, admins_sid, self};
    /* The agent as a service runs as SYSTEM: no third entry for itself. */
    size_t nsids = EqualSid(self, system_sid) || EqualSid(self, admins_sid) ? 2 : 3;
    DWORD acl_len = sizeof(ACL);
    for (size_t i = 0; i < nsids; i++)
        acl_len += sizeof(ACCESS_ALLOWED_ACE) - sizeof(DWORD) + GetLengthSid(sids[i]);
    PACL acl = mmr_malloc(acl_len);
    SECURITY_DESCRIPTOR abs_sd;
    PSECURITY_DESCRIPTOR rel = NULL;
    /* Files created in a private directory inherit its entries. */
    DWORD inherit = dir ? OBJECT_INHERIT_ACE | CONTAINER_INHERIT_ACE : 0;
    bool ok = InitializeAcl(acl, acl_len, ACL_REVISION);
    for (size_t i = 0; ok && i < nsids; i++)
        ok = AddAccessAllowedAceEx(acl, ACL_REVISION, inherit, FILE_ALL_ACCESS, sids[i]);
    /* Protected: nothing is inherited from the parent directory. */
    ok = ok && InitializeSecurityDescriptor(&abs_sd, SECURITY_DESCRIPTOR_REVISION) &&
         SetSecurityDescriptorDacl(&abs_sd, TRUE, acl, FALSE) &&
         SetSecurityDescriptorControl(&abs_sd, SE_DACL_PROTECTED, SE_DACL_PROTECTED);
    DWORD rel_len = 0;
    if (ok && !MakeSelfRelativeSD(&abs_sd, NULL, &rel_len) &&
        GetLastError() == ERROR_INSUFFICIENT_BUFFER) {
        rel = mmr_malloc(rel_len);
        ok = MakeSelfRelativeSD(&abs_sd, rel, &rel_len);
    } else {
        ok = false;
    }
    if (!ok) {
        mmr_win_err_set(GetLastError(), "cannot build a private access list");
        free(rel);
        rel = NULL;
    }
    free(acl);
    return rel;
}

static PACL dacl_of(PSECURITY_DESCRIPTOR sd)
{
    BOOL present = FALSE, defaulted = FALSE;
    PACL acl = NULL;
    if (!GetSecurityDescriptorDacl(sd, &present, &acl, &defaulted) || !present)
        return NULL;
    return acl;
}

int mmr_win_make_private(const wchar_t *wpath, const char *path, bool dir)
{
    PSECURITY_DESCRIPTOR sd = mmr_win_private_sd(dir);
    if (!sd)
        return mmr_err_wrap(MMR_EIO, "'%s'", path);
    int rc = 0;
    /* SetNamedSecurityInfoW passes a directory's inheritable entries on to
     * what is already inside it (files SQLite created while the directory
     * was more open). */
    if (dir) {
        DWORD err = SetNamedSecurityInfoW((LPWSTR)wpath, SE_FILE_OBJECT, PRIVATE_DACL_INFO, NULL,
                                          NULL, dacl_of(sd), NULL);
        if (err != ERROR_SUCCESS) {
            rc = mmr_win_err_path(err, "cannot restrict to its owner", path);
            goto out;
        }
    }
    /* The object's own DACL, set last and directly: Wine's
     * SetNamedSecurityInfoW does not reliably change what Wine maps a DACL
     * to (the Unix mode), SetFileSecurityW does. */
    if (!SetFileSecurityW(wpath, PRIVATE_DACL_INFO, sd))
        rc = mmr_win_err_path(GetLastError(), "cannot restrict to its owner", path);
out:
    free(sd);
    return rc;
}

/* ---- opening ---------------------------------------------------------------- */

/* CreateFileW on a UTF-8 path. Returns 0 and *h, or the code with the error
 * set ("<what> '<path>': ..."). sd, when given, secures a new file. */
static int open_path(const char *path, DWORD access, DWORD share, DWORD disposition,
                     PSECURITY_DESCRIPTOR sd, const char *what, HANDLE *h)
{
    wchar_t *w = mmr_w_path(path);
    if (!w)
        return mmr_err_wrap(MMR_EINVAL, "%s '%s'", what, path);
    SECURITY_ATTRIBUTES sa = {.nLength = sizeof(sa), .lpSecurityDescriptor = sd};
    int rc = 0;
    *h = CreateFileW(w, access, share, sd ? &sa : NULL, disposition, FILE_ATTRIBUTE_NORMAL, NULL);
    if (*h == INVALID_HANDLE_VALUE) {
        DWORD err = GetLastError();
        DWORD attr = GetFileAttributesW(w);
        /* Windows refuses to open a directory as a file with "access denied". */
        if (err == ERROR_ACCESS_DENIED && attr != INVALID_FILE_ATTRIBUTES &&
            (attr & FILE_ATTRIBUTE_DIRECTORY))
            rc = mmr_err_set(MMR_EINVAL, "'%s' is not a regular file", path);
        else
            rc = mmr_win_err_path(err, what, path);
    }
    /* Callers of OPEN_ALWAYS read ERROR_ALREADY_EXISTS after a success. */
    DWORD last = GetLastError();
    free(w);
    SetLastError(last);
    return rc;
}

static int read_exact(HANDLE h, char *buf, size_t len, size_t *got)
{
    size_t done = 0;
    while (done < len) {
        DWORD want = len - done > IO_CHUNK ? IO_CHUNK : (DWORD)(len - done);
        DWORD n = 0;
        if (!ReadFile(h, buf + done, want, &n, NULL))
            return -1;
        if (n == 0)
            break;
        done += n;
    }
    *got = done;
    return 0;
}

static int write_all(HANDLE h, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        DWORD want = len > IO_CHUNK ? IO_CHUNK : (DWORD)len;
        DWORD n = 0;
        if (!WriteFile(h, p, want, &n, NULL))
            return -1;
        p += n;
        len -= n;
    }
    return 0;
}

/* Regular files only: no directories, pipes or consoles. */
static int regular_size(HANDLE h, const char *path, uint64_t *size)
{
    FILE_STANDARD_INFO info;
    if (GetFileType(h) != FILE_TYPE_DISK ||
        !GetFileInformationByHandleEx(h, FileStandardInfo, &info, sizeof(info)) || info.Directory)
        return mmr_err_set(MMR_EINVAL, "'%s' is not a regular file", path);
    *size = (uint64_t)info.EndOfFile.QuadPart;
    return 0;
}

/* ---- reading and writing whole files ------------------------------------------ */

int mmr_file_read_all(const char *path, size_t max_bytes, char **out, size_t *len)
{
    HANDLE h;
    int rc = open_path(path, GENERIC_READ, SHARE_ALL, OPEN_EXISTING, NULL, "cannot open", &h);
    if (rc < 0)
        return rc;
    char *buf = NULL;
    uint64_t size;
    if ((rc = regular_size(h, path, &size)) < 0)
        goto out;
    if (size > max_bytes) {
        rc = mmr_err_set(MMR_ETOOBIG, "'%s' is %llu bytes, over the limit of %zu", path,
                         (unsigned long long)size, max_bytes);
        goto out;
    }
    /* Read one byte past the limit so that a file growing under us is caught. */
    buf = mmr_malloc(max_bytes + 2);
    size_t got;
    if (read_exact(h, buf, max_bytes + 1, &got) != 0) {
        rc = mmr_win_err_path(GetLastError(), "cannot read", path);
        goto out;
    }
    if (got > max_bytes) {
        rc = mmr_err_set(MMR_ETOOBIG, "'%s' is over the limit of %zu bytes", path, max_bytes);
        goto out;
    }
    buf[got] = '\0';
    *out = mmr_realloc(buf, got + 1);
    *len = got;
    buf = NULL;
out:
    free(buf);
    CloseHandle(h);
    return rc;
}

int mmr_file_read_tail(const char *path, size_t max_bytes, char **out, size_t *len)
{
    HANDLE h;
    int rc = open_path(path, GENERIC_READ, SHARE_ALL, OPEN_EXISTING, NULL, "cannot open", &h);
    if (rc < 0)
        return rc;
    char *buf = NULL;
    uint64_t size;
    if ((rc = regular_size(h, path, &size)) < 0)
        goto out;
    uint64_t start = size > max_bytes ? size - max_bytes : 0;
    LARGE_INTEGER pos = {.QuadPart = (LONGLONG)start};
    if (!SetFilePointerEx(h, pos, NULL, FILE_BEGIN)) {
        rc = mmr_win_err_path(GetLastError(), "cannot seek", path);
        goto out;
    }
    buf = mmr_malloc(max_bytes + 1);
    size_t got;
    if (read_exact(h, buf, max_bytes, &got) != 0) {
        rc = mmr_win_err_path(GetLastError(), "cannot read", path);
        goto out;
    }
    size_t skip = 0;
    if (start > 0) {
        /* Drop the partial first line. */
        char *nl = memchr(buf, '\n', got);
        skip = nl ? (size_t)(nl - buf) + 1 : got;
    }
    memmove(buf, buf + skip, got - skip);
    buf[got - skip] = '\0';
    *out = buf;
    *len = got - skip;
    buf = NULL;
out:
    free(buf);
    CloseHandle(h);
    return rc;
}

static int move_replacing(const char *from, const char *to, DWORD flags)
{
    wchar_t *wfrom = mmr_w_path(from);
    wchar_t *wto = mmr_w_path(to);
    int rc = 0;
    if (!wfrom || !wto)
        rc = mmr_err_wrap(MMR_EINVAL, "cannot rename '%s'", from);
    else if (!MoveFileExW(wfrom, wto, MOVEFILE_REPLACE_EXISTING | flags))
        rc = mmr_win_err_path(GetLastError(), "cannot rename into place", to);
    free(wfrom);
    free(wto);
    return rc;
}

static void remove_quietly(const char *path)
{
    wchar_t *w = mmr_w_path(path);
    if (w)
        DeleteFileW(w);
    free(w);
}

int mmr_file_write_atomic(const char *path, const void *data, size_t len)
{
    char *tmp = mmr_asprintf("%s.tmp.%lu", path, (unsigned long)GetCurrentProcessId());
    PSECURITY_DESCRIPTOR sd = mmr_win_private_sd(false);
    HANDLE h = INVALID_HANDLE_VALUE;
    int rc = 0;
    if (!sd) {
        rc = mmr_err_wrap(MMR_EIO, "cannot create '%s'", tmp);
        goto out;
    }
    /* A leftover temporary file would keep its old ACL (CreateFileW ignores
     * the security descriptor of a file that exists): start from nothing. */
    remove_quietly(tmp);
    rc = open_path(tmp, GENERIC_WRITE, 0, CREATE_NEW, sd, "cannot create", &h);
    if (rc < 0)
        goto out;
    if (write_all(h, data, len) != 0) {
        rc = mmr_win_err_path(GetLastError(), "cannot write", tmp);
        goto fail_remove;
    }
    if (!FlushFileBuffers(h)) {
        rc = mmr_win_err_path(GetLastError(), "cannot sync", tmp);
        goto fail_remove;
    }
    CloseHandle(h);
    h = INVALID_HANDLE_VALUE;
    /* There is no directory fsync on Windows: MOVEFILE_WRITE_THROUGH returns
     * once the rename is on disk. */
    rc = move_replacing(tmp, path, MOVEFILE_WRITE_THROUGH);
    if (rc == 0)
        goto out;
fail_remove:
    if (h != INVALID_HANDLE_VALUE)
        CloseHandle(h);
    remove_quietly(tmp);
out:
    free(sd);
    free(tmp);
    return rc;
}

int mmr_file_rename(const char *from, const char *to)
{
    return move_replacing(from, to, 0);
}

int mmr_file_remove(const char *path)
{
    /* A pipe goes away with its last handle; there is nothing to unlink
     * (callers remove a stale Unix socket the same way). */
    if (strncmp(path, "\\\\.\\pipe\\", 9) == 0)
        return 0;
    wchar_t *w = mmr_w_path(path);
    if (!w)
        return mmr_err_wrap(MMR_EINVAL, "cannot remove '%s'", path);
    int rc = 0;
    if (!DeleteFileW(w)) {
        DWORD err = GetLastError();
        if (err != ERROR_FILE_NOT_FOUND && err != ERROR_PATH_NOT_FOUND)
            rc = mmr_win_err_path(err, "cannot remove", path);
    }
    free(w);
    return rc;
}

int64_t mmr_file_size(const char *path)
{
    wchar_t *w = mmr_w_path(path);
    if (!w)
        return mmr_err_wrap(MMR_EINVAL, "cannot stat '%s'", path);
    WIN32_FILE_ATTRIBUTE_DATA data;
    int64_t rc;
    if (GetFileAttributesExW(w, GetFileExInfoStandard, &data))
        rc = (int64_t)(((uint64_t)data.nFileSizeHigh << 32) | data.nFileSizeLow);
    else
        rc = mmr_win_err_path(GetLastError(), "cannot stat", path);
    free(w);
    return rc;
}

/* ---- private files ------------------------------------------------------------- */

int mmr_file_make_private(const char *path)
{
    PSECURITY_DESCRIPTOR sd = mmr_win_private_sd(false);
    if (!sd)
        return mmr_err_wrap(MMR_EIO, "cannot create '%s'", path);
    HANDLE h;
    int rc =
        open_path(path, READ_CONTROL | WRITE_DAC, SHARE_ALL, OPEN_ALWAYS, sd, "cannot create", &h);
    if (rc < 0)
        goto out;
    /* A file that already existed kept its old ACL. */
    if (GetLastError() == ERROR_ALREADY_EXISTS) {
        if (!SetKernelObjectSecurity(h, PRIVATE_DACL_INFO, sd))
            rc = mmr_win_err_path(GetLastError(), "cannot restrict permissions of", path);
    }
    CloseHandle(h);
out:
    free(sd);
    return rc;
}

/* Trustees a private file may grant access to: SYSTEM, Administrators, the
 * file's owner and the user this process runs as. */
static bool trusted_sid(PSID sid, PSID owner)
{
    BYTE system_sid[SECURITY_MAX_SID_SIZE], admins_sid[SECURITY_MAX_SID_SIZE];
    PSID self = mmr_win_self_sid();
    return (well_known_sid(WinLocalSystemSid, system_sid) && EqualSid(sid, system_sid)) ||
           (well_known_sid(WinBuiltinAdministratorsSid, admins_sid) && EqualSid(sid, admins_sid)) ||
           (owner && EqualSid(sid, owner)) || (self && EqualSid(sid, self));
}

static bool acl_is_private(PACL acl, PSID owner)
{
    /* No DACL at all grants everyone everything. */
    if (!acl)
        return false;
    for (DWORD i = 0; i < acl->AceCount; i++) {
        ACE_HEADER *ace;
        if (!GetAce(acl, i, (void **)&ace))
            return false;
        switch (ace->AceType) {
        case ACCESS_ALLOWED_ACE_TYPE: {
            ACCESS_ALLOWED_ACE *allow = (ACCESS_ALLOWED_ACE *)ace;
            if (allow->Mask != 0 && !trusted_sid((PSID)&allow->SidStart, owner))
                return false;
            break;
        }
        case ACCESS_ALLOWED_OBJECT_ACE_TYPE:
        case ACCESS_ALLOWED_CALLBACK_ACE_TYPE:
        case ACCESS_ALLOWED_CALLBACK_OBJECT_ACE_TYPE:
            /* Conditional grants are never ours: someone else wrote them. */
            return false;
        default:
            break; /* denials, audit entries and labels grant nothing */
        }
    }
    return true;
}

int mmr_file_is_private(const char *path, bool *is_private)
{
    wchar_t *w = mmr_w_path(path);
    if (!w)
        return mmr_err_wrap(MMR_EINVAL, "cannot stat '%s'", path);
    PSID owner = NULL;
    PACL acl = NULL;
    PSECURITY_DESCRIPTOR sd = NULL;
    DWORD err = GetNamedSecurityInfoW(w, SE_FILE_OBJECT,
                                      OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
                                      &owner, NULL, &acl, NULL, &sd);
    free(w);
    if (err != ERROR_SUCCESS)
        return mmr_win_err_path(err, "cannot read the access list of", path);
    *is_private = acl_is_private(acl, owner);
    LocalFree(sd);
    return 0;
}

/* ---- append-only files ----------------------------------------------------------- */

int mmr_file_open_append(const char *path, struct mmr_file **out)
{
    PSECURITY_DESCRIPTOR sd = mmr_win_private_sd(false);
    if (!sd)
        return mmr_err_wrap(MMR_EIO, "cannot open '%s'", path);
    /* FILE_APPEND_DATA without FILE_WRITE_DATA: every write lands at the end.
     * Sharing delete lets the log be rotated (renamed) while it is open. */
    HANDLE h;
    int rc = open_path(path, FILE_APPEND_DATA | SYNCHRONIZE, SHARE_ALL, OPEN_ALWAYS, sd,
                       "cannot open", &h);
    free(sd);
    if (rc < 0)
        return rc;
    struct mmr_file *f = mmr_malloc(sizeof(*f));
    f->h = h;
    *out = f;
    return 0;
}

int mmr_file_append(struct mmr_file *f, const void *data, size_t len)
{
    if (write_all(f->h, data, len) != 0)
        return mmr_win_err_set(GetLastError(), "cannot append");
    return 0;
}

int mmr_file_sync(struct mmr_file *f)
{
    if (!FlushFileBuffers(f->h))
        return mmr_win_err_set(GetLastError(), "cannot sync");
    return 0;
}

void mmr_file_close(struct mmr_file *f)
{
    if (!f)
        return;
    CloseHandle(f->h);
    free(f);
}

/* ---- identity ------------------------------------------------------------------ */

/* FILETIME ticks (100 ns since 1601) to nanoseconds since the Unix epoch. */
static int64_t unix_ns(LARGE_INTEGER t)
{
    const int64_t epoch_ticks = 116444736000000000LL;
    return (t.QuadPart - epoch_ticks) * 100;
}

int mmr_file_identify(const char *path, bool follow_symlinks, struct mmr_file_id *out)
{
    /* Attributes only: no read access needed, and backup semantics lets a
     * directory open too so that it can be told apart. */
    DWORD flags = FILE_FLAG_BACKUP_SEMANTICS | (follow_symlinks ? 0 : FILE_FLAG_OPEN_REPARSE_POINT);
    wchar_t *w = mmr_w_path(path);
    if (!w)
        return mmr_err_wrap(MMR_EINVAL, "cannot stat '%s'", path);
    HANDLE h = CreateFileW(w, FILE_READ_ATTRIBUTES, SHARE_ALL, NULL, OPEN_EXISTING, flags, NULL);
    free(w);
    if (h == INVALID_HANDLE_VALUE)
        return mmr_win_err_path(GetLastError(), "cannot stat", path);
    BY_HANDLE_FILE_INFORMATION info;
    FILE_BASIC_INFO basic;
    int rc = 0;
    if (!GetFileInformationByHandle(h, &info) ||
        !GetFileInformationByHandleEx(h, FileBasicInfo, &basic, sizeof(basic))) {
        rc = mmr_win_err_path(GetLastError(), "cannot stat", path);
        goto out;
    }
    const DWORD special =
        FILE_ATTRIBUTE_DIRECTORY | FILE_ATTRIBUTE_REPARSE_POINT | FILE_ATTRIBUTE_DEVICE;
    *out = (struct mmr_file_id){
        .dev = info.dwVolumeSerialNumber,
        .ino = ((uint64_t)info.nFileIndexHigh << 32) | info.nFileIndexLow,
        .size = ((uint64_t)info.nFileSizeHigh << 32) | info.nFileSizeLow,
        .mtime_ns = unix_ns(basic.LastWriteTime),
        .ctime_ns = unix_ns(basic.ChangeTime),
        .regular = GetFileType(h) == FILE_TYPE_DISK && !(info.dwFileAttributes & special),
    };
out:
    CloseHandle(h);
    return rc;
}

/* ---- the file system and the process --------------------------------------------- */

int mmr_disk_space(const char *path, uint64_t *free_bytes, uint64_t *total_bytes)
{
    wchar_t *w = mmr_w_path(path);
    if (!w)
        return mmr_err_wrap(MMR_EINVAL, "cannot read filesystem space of '%s'", path);
    int rc = 0;
    DWORD attr = GetFileAttributesW(w);
    if (attr == INVALID_FILE_ATTRIBUTES) {
        rc = mmr_win_err_path(GetLastError(), "cannot read filesystem space of", path);
        goto out;
    }
    /* GetDiskFreeSpaceExW wants a directory, with a trailing separator. */
    size_t len = wcslen(w);
    if (!(attr & FILE_ATTRIBUTE_DIRECTORY)) {
        while (len > 0 && w[len - 1] != L'\\')
            len--;
    } else if (len > 0 && w[len - 1] != L'\\') {
        w = mmr_realloc(w, (len + 2) * sizeof(wchar_t));
        w[len++] = L'\\';
    }
    w[len] = L'\0';
    ULARGE_INTEGER avail, total;
    if (!GetDiskFreeSpaceExW(w, &avail, &total, NULL)) {
        rc = mmr_win_err_path(GetLastError(), "cannot read filesystem space of", path);
        goto out;
    }
    *free_bytes = avail.QuadPart;
    *total_bytes = total.QuadPart;
out:
    free(w);
    return rc;
}

void mmr_process_ignore_sigpipe(void)
{
    /* Windows has no SIGPIPE: a write to a closed pipe or socket fails with
     * ERROR_NO_DATA / WSAECONNRESET, which libuv reports as an error. */
}

void mmr_process_private_files(void)
{
    /* Windows has no umask: new files take their ACL from the directory they
     * are created in. Mamori's directories are private (mmr_mkdir_p) and
     * hand their entries down, and the files it secures itself are created
     * with an explicit private ACL. */
}
