/* Portable helpers for the unit tests (testutil.h): temporary directories,
 * recursive removal, whole-file writes and truncation on libuv's uv_fs_*. */
#include "testutil.h"

#include <criterion/criterion.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include <uv.h>

#include "shared/mem.h"
#include "shared/platform.h"

void mmr_test_mkdtemp(const char *prefix, char *buf, size_t len)
{
    char tmp[1024];
    size_t tmp_len = sizeof(tmp);
    int rc = uv_os_tmpdir(tmp, &tmp_len);
    cr_assert_eq(rc, 0, "uv_os_tmpdir: %s", uv_strerror(rc));
    char *tmpl = mmr_path_join(tmp, prefix);
    char *pattern = mmr_asprintf("%s-XXXXXX", tmpl);
    free(tmpl);

    uv_fs_t req;
    rc = uv_fs_mkdtemp(NULL, &req, pattern, NULL);
    free(pattern);
    size_t n = rc == 0 ? (size_t)snprintf(buf, len, "%s", req.path) : 0;
    uv_fs_req_cleanup(&req);
    cr_assert_eq(rc, 0, "uv_fs_mkdtemp in %s: %s", tmp, uv_strerror(rc));
    cr_assert_lt(n, len, "temporary path %s too long", buf);
}

static int remove_entry(const char *path, uv_dirent_type_t type);

static int remove_dir(const char *path)
{
    uv_fs_t req;
    int rc = uv_fs_scandir(NULL, &req, path, 0, NULL);
    if (rc < 0) {
        uv_fs_req_cleanup(&req);
        return rc;
    }
    uv_dirent_t ent;
    int first_err = 0;
    while (uv_fs_scandir_next(&req, &ent) != UV_EOF) {
        char *child = mmr_path_join(path, ent.name);
        int err = remove_entry(child, ent.type);
        free(child);
        if (err < 0 && first_err == 0)
            first_err = err;
    }
    uv_fs_req_cleanup(&req);
    rc = uv_fs_rmdir(NULL, &req, path, NULL);
    uv_fs_req_cleanup(&req);
    return first_err < 0 ? first_err : rc;
}

/* A directory is emptied first; anything else, symbolic links to directories
 * included, is unlinked without looking behind it. */
static int remove_entry(const char *path, uv_dirent_type_t type)
{
    uv_fs_t req;
    if (type == UV_DIRENT_UNKNOWN) {
        int rc = uv_fs_lstat(NULL, &req, path, NULL);
        uint64_t mode = req.statbuf.st_mode;
        uv_fs_req_cleanup(&req);
        if (rc < 0)
            return rc;
        type = (mode & S_IFMT) == S_IFDIR ? UV_DIRENT_DIR : UV_DIRENT_FILE;
    }
    if (type == UV_DIRENT_DIR)
        return remove_dir(path);
    int rc = uv_fs_unlink(NULL, &req, path, NULL);
    uv_fs_req_cleanup(&req);
    return rc;
}

int mmr_test_rmtree(const char *path)
{
    int rc = remove_entry(path, UV_DIRENT_UNKNOWN);
    return rc == UV_ENOENT ? 0 : rc;
}

static void write_file(const char *path, int flags, int64_t offset, const void *data, size_t len)
{
    uv_fs_t req;
    int fd = uv_fs_open(NULL, &req, path, flags, 0600, NULL);
    uv_fs_req_cleanup(&req);
    cr_assert_geq(fd, 0, "open %s: %s", path, uv_strerror(fd));
    uv_buf_t buf = uv_buf_init((char *)data, (unsigned)len);
    int rc = uv_fs_write(NULL, &req, fd, &buf, 1, offset, NULL);
    uv_fs_req_cleanup(&req);
    uv_fs_close(NULL, &req, fd, NULL);
    uv_fs_req_cleanup(&req);
    cr_assert_eq(rc, (int)len, "write %s: %s", path, rc < 0 ? uv_strerror(rc) : "short write");
}

void mmr_test_write_file(const char *path, const void *data, size_t len)
{
    write_file(path, UV_FS_O_WRONLY | UV_FS_O_CREAT | UV_FS_O_TRUNC, 0, data, len);
}

void mmr_test_write_at(const char *path, int64_t offset, const void *data, size_t len)
{
    write_file(path, UV_FS_O_WRONLY, offset, data, len);
}

void mmr_test_truncate(const char *path, int64_t size)
{
    uv_fs_t req;
    int fd = uv_fs_open(NULL, &req, path, UV_FS_O_WRONLY, 0, NULL);
    uv_fs_req_cleanup(&req);
    cr_assert_geq(fd, 0, "open %s: %s", path, uv_strerror(fd));
    int rc = uv_fs_ftruncate(NULL, &req, fd, size, NULL);
    uv_fs_req_cleanup(&req);
    uv_fs_close(NULL, &req, fd, NULL);
    uv_fs_req_cleanup(&req);
    cr_assert_eq(rc, 0, "truncate %s: %s", path, uv_strerror(rc));
}

char *mmr_test_path(const char *dir, ...)
{
    va_list ap;
    va_start(ap, dir);
    char *path = mmr_strdup(dir);
    const char *name;
    while ((name = va_arg(ap, const char *))) {
        char *next = mmr_path_join(path, name);
        free(path);
        path = next;
    }
    va_end(ap);
    return path;
}

void mmr_test_sleep_ms(unsigned ms)
{
    uv_sleep(ms);
}
