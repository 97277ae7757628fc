/* POSIX single-instance lock: an fcntl write lock on a file holding the
 * owner's pid. The kernel drops it when the process dies, even on kill -9. */
#include "shared/platform.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shared/err.h"
#include "shared/mem.h"

struct mmr_lock {
    int fd;
    char *path;
};

int mmr_lock_acquire(const char *path, struct mmr_lock **out)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return mmr_err_set(errno == EACCES ? MMR_EPERM : MMR_EIO, "cannot open lock file '%s': %s",
                           path, strerror(errno));
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_SETLK, &fl) != 0) {
        int e = errno;
        struct flock who = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
        long pid = 0;
        if (fcntl(fd, F_GETLK, &who) == 0 && who.l_type != F_UNLCK)
            pid = (long)who.l_pid;
        close(fd);
        if (e == EACCES || e == EAGAIN)
            return mmr_err_set(MMR_EBUSY, "'%s' is locked by another running instance (pid %ld)",
                               path, pid);
        return mmr_err_set(MMR_EIO, "cannot lock '%s': %s", path, strerror(e));
    }
    char pidbuf[32];
    int n = snprintf(pidbuf, sizeof(pidbuf), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pidbuf, (size_t)n, 0) != n) {
        /* The lock is what matters; the pid inside is for humans. */
    }
    struct mmr_lock *lock = mmr_malloc(sizeof(*lock));
    lock->fd = fd;
    lock->path = mmr_strdup(path);
    *out = lock;
    return 0;
}

void mmr_lock_release(struct mmr_lock *lock)
{
    if (!lock)
        return;
    /* Closing drops the lock; the file stays so that its permissions do too. */
    close(lock->fd);
    free(lock->path);
    free(lock);
}
