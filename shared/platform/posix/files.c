/* POSIX file helpers: bounded reads, atomic private writes, append-only
 * files for logs, permissions, disk space and file identity. */
#include "shared/platform.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "shared/err.h"
#include "shared/mem.h"

struct mmr_file {
    int fd;
};

static int errno_code(int e)
{
    switch (e) {
    case ENOENT:
    case ENOTDIR:
        return MMR_ENOENT;
    case EACCES:
    case EPERM:
        return MMR_EPERM;
    case ENOSPC:
    case EDQUOT:
        return MMR_ENOSPC;
    case EEXIST:
        return MMR_EEXIST;
    case ENOMEM:
        return MMR_ENOMEM;
    default:
        return MMR_EIO;
    }
}

static int fail(const char *what, const char *path)
{
    int e = errno;
    return mmr_err_set(errno_code(e), "%s '%s': %s", what, path, strerror(e));
}

static int read_exact_fd(int fd, char *buf, size_t len, size_t *got)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = read(fd, buf + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        done += (size_t)n;
    }
    *got = done;
    return 0;
}

int mmr_file_read_all(const char *path, size_t max_bytes, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail("cannot open", path);
    struct stat st;
    int rc = 0;
    char *buf = NULL;
    if (fstat(fd, &st) != 0) {
        rc = fail("cannot stat", path);
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = mmr_err_set(MMR_EINVAL, "'%s' is not a regular file", path);
        goto out;
    }
    if ((uint64_t)st.st_size > max_bytes) {
        rc = mmr_err_set(MMR_ETOOBIG, "'%s' is %lld bytes, over the limit of %zu", path,
                         (long long)st.st_size, max_bytes);
        goto out;
    }
    /* Read one byte past the limit so that a file growing under us is caught. */
    buf = mmr_malloc(max_bytes + 2);
    size_t got;
    if (read_exact_fd(fd, buf, max_bytes + 1, &got) != 0) {
        rc = fail("cannot read", path);
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
    close(fd);
    return rc;
}

int mmr_file_read_tail(const char *path, size_t max_bytes, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail("cannot open", path);
    int rc = 0;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = fail("cannot stat", path);
        close(fd);
        return rc;
    }
    off_t start = st.st_size > (off_t)max_bytes ? st.st_size - (off_t)max_bytes : 0;
    if (lseek(fd, start, SEEK_SET) < 0) {
        rc = fail("cannot seek", path);
        close(fd);
        return rc;
    }
    char *buf = mmr_malloc(max_bytes + 1);
    size_t got;
    if (read_exact_fd(fd, buf, max_bytes, &got) != 0) {
        rc = fail("cannot read", path);
        free(buf);
        close(fd);
        return rc;
    }
    close(fd);
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
    return 0;
}

static int fsync_dir_of(const char *path)
{
    char *copy = mmr_strdup(path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;
    if (fd < 0 || fsync(fd) != 0)
        rc = fail("cannot sync directory of", path);
    if (fd >= 0)
        close(fd);
    free(copy);
    return rc;
}

static int write_all_fd(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int mmr_file_write_atomic(const char *path, const void *data, size_t len)
{
    char *tmp = mmr_asprintf("%s.tmp.%ld", path, (long)getpid());
    int rc = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = fail("cannot create", tmp);
        goto out;
    }
    if (write_all_fd(fd, data, len) != 0) {
        rc = fail("cannot write", tmp);
        goto fail_unlink;
    }
    if (fsync(fd) != 0) {
        rc = fail("cannot sync", tmp);
        goto fail_unlink;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = fail("cannot rename into place", path);
        goto fail_unlink;
    }
    rc = fsync_dir_of(path);
    goto out;
fail_unlink:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
out:
    free(tmp);
    return rc;
}

int mmr_file_make_private(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return fail("cannot create", path);
    int rc = 0;
    if (fchmod(fd, 0600) != 0)
        rc = fail("cannot restrict permissions of", path);
    close(fd);
    return rc;
}

int mmr_file_is_private(const char *path, bool *is_private)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return fail("cannot stat", path);
    *is_private = (st.st_mode & 077) == 0;
    return 0;
}

int mmr_file_remove(const char *path)
{
    if (unlink(path) != 0 && errno != ENOENT)
        return fail("cannot remove", path);
    return 0;
}

int mmr_file_rename(const char *from, const char *to)
{
    if (rename(from, to) != 0)
        return fail("cannot rename", from);
    return 0;
}

int mmr_file_open_append(const char *path, struct mmr_file **out)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return fail("cannot open", path);
    struct mmr_file *f = mmr_malloc(sizeof(*f));
    f->fd = fd;
    *out = f;
    return 0;
}

int mmr_file_append(struct mmr_file *f, const void *data, size_t len)
{
    if (write_all_fd(f->fd, data, len) != 0)
        return mmr_err_set(errno_code(errno), "cannot append: %s", strerror(errno));
    return 0;
}

int mmr_file_sync(struct mmr_file *f)
{
    if (fsync(f->fd) != 0)
        return mmr_err_set(errno_code(errno), "cannot sync: %s", strerror(errno));
    return 0;
}

void mmr_file_close(struct mmr_file *f)
{
    if (!f)
        return;
    close(f->fd);
    free(f);
}

int64_t mmr_file_size(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return fail("cannot stat", path);
    return (int64_t)st.st_size;
}

int mmr_file_identify(const char *path, bool follow_symlinks, struct mmr_file_id *out)
{
    struct stat st;
    if ((follow_symlinks ? stat(path, &st) : lstat(path, &st)) != 0)
        return fail("cannot stat", path);
    *out = (struct mmr_file_id){
        .dev = (uint64_t)st.st_dev,
        .ino = (uint64_t)st.st_ino,
        .size = (uint64_t)st.st_size,
        .mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec,
        .ctime_ns = (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec,
        .regular = S_ISREG(st.st_mode),
    };
    return 0;
}

int mmr_disk_space(const char *path, uint64_t *free_bytes, uint64_t *total_bytes)
{
    struct statvfs sv;
    if (statvfs(path, &sv) != 0)
        return fail("cannot read filesystem space of", path);
    *free_bytes = (uint64_t)sv.f_bavail * sv.f_frsize;
    *total_bytes = (uint64_t)sv.f_blocks * sv.f_frsize;
    return 0;
}

void mmr_process_ignore_sigpipe(void)
{
    signal(SIGPIPE, SIG_IGN);
}

void mmr_process_private_files(void)
{
    umask(077);
}
