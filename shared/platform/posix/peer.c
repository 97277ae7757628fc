/* POSIX local IPC peers: who is connected to the agent's Unix socket, from
 * the kernel's SO_PEERCRED (not from anything the client says). */
#include "shared/platform.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shared/err.h"

/* SO_PEERCRED names the other end of a connected Unix socket, whichever
 * side asks: the client from the server, the server from the client. */
static int identify(uv_pipe_t *pipe, struct mmr_peer *out)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)pipe, &fd) != 0)
        return mmr_err_set(MMR_EINVAL, "IPC connection has no descriptor");
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return mmr_err_set(MMR_EIO, "cannot read IPC peer credentials: %s", strerror(errno));

    memset(out, 0, sizeof(*out));
    out->uid = (uint32_t)cred.uid;
    out->pid = (int64_t)cred.pid;
    /* Root administers every agent; an unprivileged agent (development,
     * tests) is administered by the user it runs as. */
    out->admin = cred.uid == 0 || cred.uid == geteuid();

    struct passwd pw, *found = NULL;
    char buf[1024];
    if (getpwuid_r(cred.uid, &pw, buf, sizeof(buf), &found) == 0 && found)
        snprintf(out->name, sizeof(out->name), "%s", pw.pw_name);
    else
        snprintf(out->name, sizeof(out->name), "%u", (unsigned)cred.uid);
    return 0;
}

int mmr_peer_identify(uv_pipe_t *pipe, struct mmr_peer *out)
{
    return identify(pipe, out);
}

int mmr_peer_identify_server(uv_pipe_t *client, struct mmr_peer *out)
{
    return identify(client, out);
}

int mmr_ipc_endpoint_open_to_all(uv_pipe_t *server)
{
    char path[512];
    size_t len = sizeof(path) - 1;
    if (uv_pipe_getsockname(server, path, &len) != 0)
        return mmr_err_set(MMR_EINVAL, "the IPC endpoint is not bound");
    path[len] = '\0';
    /* Everyone may connect; admin verbs are checked per request. */
    if (chmod(path, 0666) != 0)
        return mmr_err_set(MMR_EIO, "cannot set permissions of '%s': %s", path, strerror(errno));
    return 0;
}

bool mmr_user_is_admin(void)
{
    return geteuid() == 0;
}
