/* POSIX service glue: systemd's readiness protocol (sd_notify, written by
 * hand: one datagram to $NOTIFY_SOCKET) and classic daemonisation. */
#include "shared/platform.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "shared/err.h"

bool mmr_service_managed(void)
{
    /* systemd sets INVOCATION_ID for every unit, NOTIFY_SOCKET for Type=notify. */
    return getenv("NOTIFY_SOCKET") != NULL || getenv("INVOCATION_ID") != NULL;
}

void mmr_service_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || (path[0] != '/' && path[0] != '@'))
        return;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t plen = strlen(path);
    if (plen >= sizeof(sun.sun_path))
        return;
    memcpy(sun.sun_path, path, plen);
    if (sun.sun_path[0] == '@')
        sun.sun_path[0] = '\0'; /* abstract namespace */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
    /* Best effort: systemd reports a missed READY=1 itself, with a timeout. */
    (void)!sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun, alen);
    close(fd);
}

int mmr_daemonize(const char *pidfile)
{
    pid_t pid = fork();
    if (pid < 0)
        return mmr_err_set(MMR_EIO, "cannot fork: %s", strerror(errno));
    if (pid > 0)
        _exit(0);
    if (setsid() < 0)
        return mmr_err_set(MMR_EIO, "cannot start a session: %s", strerror(errno));
    pid = fork();
    if (pid < 0)
        return mmr_err_set(MMR_EIO, "cannot fork: %s", strerror(errno));
    if (pid > 0)
        _exit(0);
    if (chdir("/") != 0)
        return mmr_err_set(MMR_EIO, "cannot change to /: %s", strerror(errno));
    int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
        dup2(fd, STDIN_FILENO);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        if (fd > STDERR_FILENO)
            close(fd);
    }
    if (pidfile) {
        char buf[32];
        int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
        return mmr_file_write_atomic(pidfile, buf, (size_t)n);
    }
    return 0;
}

int mmr_service_run(const char *name, int (*run)(void *ctx), void (*stop)(void *ctx), void *ctx)
{
    (void)name;
    (void)stop; /* systemd stops us with SIGTERM, handled by the program */
    return run(ctx);
}

int mmr_service_install(const struct mmr_service_spec *spec)
{
    return mmr_err_set(MMR_EUNSUP,
                       "service %s: on Linux the package installs the systemd unit "
                       "(installer/linux/mamori-agent.service); use systemctl enable --now",
                       spec->name);
}

int mmr_service_uninstall(const char *name)
{
    return mmr_err_set(MMR_EUNSUP, "service %s: use systemctl disable --now", name);
}

void mmr_process_init(int *argc, char ***argv)
{
    (void)argc;
    (void)argv; /* POSIX arguments are bytes; ours are UTF-8 already */
}
