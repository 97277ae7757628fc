/* POSIX well-known locations, path joining, directory creation and the IPC
 * endpoint path. */
#include "shared/platform.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "shared/err.h"
#include "shared/mem.h"

const char *mmr_default_data_dir(void)
{
    return "/var/lib/mamori";
}

const char *mmr_default_run_dir(void)
{
    return "/run/mamori";
}

const char *mmr_default_config_path(void)
{
    return "/etc/mamori/agent.conf";
}

int mmr_ipc_endpoint(const char *run_dir, char **out)
{
    struct sockaddr_un sun;
    char *path = mmr_path_join(run_dir, "agent.sock");
    if (strlen(path) >= sizeof(sun.sun_path)) {
        int rc = mmr_err_set(MMR_ETOOBIG,
                             "socket path '%s' is %zu bytes, over the system limit of %zu: "
                             "use a shorter directory",
                             path, strlen(path), sizeof(sun.sun_path) - 1);
        free(path);
        return rc;
    }
    *out = path;
    return 0;
}

char *mmr_path_join(const char *dir, const char *name)
{
    size_t dlen = strlen(dir);
    while (dlen > 1 && dir[dlen - 1] == '/')
        dlen--;
    return mmr_asprintf("%.*s/%s", (int)dlen, dir, name);
}

bool mmr_path_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int make_one_dir(const char *path, bool private_dir)
{
    mode_t mode = private_dir ? 0700 : 0755;
    if (mkdir(path, mode) == 0)
        return 0;
    if (errno != EEXIST)
        return mmr_err_set(errno == EACCES ? MMR_EPERM : MMR_EIO, "cannot create directory '%s': %s",
                           path, strerror(errno));
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return mmr_err_set(MMR_EEXIST, "'%s' exists and is not a directory", path);
    return 0;
}

int mmr_mkdir_p(const char *path, bool private_dir)
{
    if (path[0] == '\0')
        return mmr_err_set(MMR_EINVAL, "empty directory path");
    char *copy = mmr_strdup(path);
    int rc = 0;
    /* Parents are created as ordinary directories; only the leaf is private. */
    for (char *p = copy + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        rc = make_one_dir(copy, false);
        *p = '/';
        if (rc < 0)
            goto out;
    }
    rc = make_one_dir(copy, private_dir);
    if (rc == 0 && private_dir && chmod(copy, 0700) != 0)
        rc = mmr_err_set(MMR_EPERM, "cannot restrict '%s' to its owner: %s", copy, strerror(errno));
out:
    free(copy);
    return rc;
}
