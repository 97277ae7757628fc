/* Windows single-instance lock: LockFileEx on a lock file holding the
 * owner's pid. Windows drops the lock when the handle closes or the process
 * dies, even when it is killed. */
#include "shared/platform.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform/win32/win32.h"

/* Windows locks are mandatory: a locked byte cannot be read by others. The
 * lock covers one byte far past the pid, so that a second instance can still
 * read who holds it. */
#define LOCK_OFFSET 0x40000000u

struct mmr_lock {
    HANDLE h;
};

static void lock_region(OVERLAPPED *ov)
{
    memset(ov, 0, sizeof(*ov));
    ov->Offset = LOCK_OFFSET;
}

/* The pid the holder wrote, or 0. */
static unsigned long holder_pid(HANDLE h)
{
    char buf[32] = "";
    DWORD n = 0;
    OVERLAPPED ov = {0};
    if (!ReadFile(h, buf, sizeof(buf) - 1, &n, &ov))
        return 0;
    buf[n] = '\0';
    return strtoul(buf, NULL, 10);
}

int mmr_lock_acquire(const char *path, struct mmr_lock **out)
{
    wchar_t *w = mmr_w_path(path);
    if (!w)
        return mmr_err_wrap(MMR_EINVAL, "cannot open lock file '%s'", path);
    PSECURITY_DESCRIPTOR sd = mmr_win_private_sd(false);
    if (!sd) {
        free(w);
        return mmr_err_wrap(MMR_EIO, "cannot open lock file '%s'", path);
    }
    SECURITY_ATTRIBUTES sa = {.nLength = sizeof(sa), .lpSecurityDescriptor = sd};
    /* Shared, so that a second instance can open it, fail to lock, and read
     * the pid. */
    HANDLE h = CreateFileW(w, GENERIC_READ | GENERIC_WRITE,
                           FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, &sa, OPEN_ALWAYS,
                           FILE_ATTRIBUTE_NORMAL, NULL);
    DWORD err = GetLastError();
    free(sd);
    free(w);
    if (h == INVALID_HANDLE_VALUE)
        return mmr_win_err_path(err, "cannot open lock file", path);

    OVERLAPPED ov;
    lock_region(&ov);
    if (!LockFileEx(h, LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ov)) {
        err = GetLastError();
        int rc;
        if (err == ERROR_LOCK_VIOLATION || err == ERROR_IO_PENDING)
            rc = mmr_err_set(MMR_EBUSY, "'%s' is locked by another running instance (pid %lu)",
                             path, holder_pid(h));
        else
            rc = mmr_win_err_path(err, "cannot lock", path);
        CloseHandle(h);
        return rc;
    }
    char pidbuf[32];
    int n = snprintf(pidbuf, sizeof(pidbuf), "%lu\n", (unsigned long)GetCurrentProcessId());
    DWORD written = 0;
    OVERLAPPED at0 = {0};
    /* The lock is what matters; the pid inside is for humans. */
    if (SetEndOfFile(h))
        (void)WriteFile(h, pidbuf, (DWORD)n, &written, &at0);
    struct mmr_lock *lock = mmr_malloc(sizeof(*lock));
    lock->h = h;
    *out = lock;
    return 0;
}

void mmr_lock_release(struct mmr_lock *lock)
{
    if (!lock)
        return;
    /* Closing would drop the lock too, but only "when the system gets to it";
     * unlocking first makes it available at once. The file stays. */
    OVERLAPPED ov;
    lock_region(&ov);
    UnlockFileEx(lock->h, 0, 1, 0, &ov);
    CloseHandle(lock->h);
    free(lock);
}
