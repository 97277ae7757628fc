/* Unit tests for the POSIX platform layer only: file modes, the lock between
 * processes, the Unix socket path, and systemd's notify socket. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "testutil.h"

static char dir[512];

static void setup(void)
{
    mmr_test_mkdtemp("mmr-plat-posix", dir, sizeof(dir));
}

static void teardown(void)
{
    cr_expect_eq(mmr_test_rmtree(dir), 0);
}

TestSuite(platform_posix, .init = setup, .fini = teardown);

static mode_t mode_of(const char *p)
{
    struct stat st;
    cr_assert_eq(stat(p, &st), 0, "stat %s", p);
    return st.st_mode & 0777;
}

Test(platform_posix, modes)
{
    mode_t old = umask(022);
    char *deep = mmr_asprintf("%s/a/b/c", dir);
    cr_assert_eq(mmr_mkdir_p(deep, true), 0, "%s", mmr_err_msg());
    cr_expect_eq(mode_of(deep), 0700);
    char *parent = mmr_asprintf("%s/a", dir);
    cr_expect_eq(mode_of(parent), 0755);
    chmod(deep, 0777);
    cr_assert_eq(mmr_mkdir_p(deep, true), 0);
    cr_expect_eq(mode_of(deep), 0700);
    char *file = mmr_path_join(dir, "f");
    cr_assert_eq(mmr_file_write_atomic(file, "x", 1), 0);
    cr_expect_eq(mode_of(file), 0600);
    chmod(file, 0644);
    cr_assert_eq(mmr_file_make_private(file), 0);
    cr_expect_eq(mode_of(file), 0600);
    char *log = mmr_path_join(dir, "log");
    struct mmr_file *f;
    cr_assert_eq(mmr_file_open_append(log, &f), 0);
    mmr_file_close(f);
    cr_expect_eq(mode_of(log), 0600);
    umask(old);
    free(log);
    free(file);
    free(parent);
    free(deep);
}

Test(platform_posix, lock_is_exclusive_across_processes)
{
    char *p = mmr_path_join(dir, "agent.lock");
    struct mmr_lock *lock;
    cr_assert_eq(mmr_lock_acquire(p, &lock), 0, "%s", mmr_err_msg());
    pid_t child = fork();
    if (child == 0) {
        struct mmr_lock *other;
        int rc = mmr_lock_acquire(p, &other);
        _exit(rc == MMR_EBUSY && strstr(mmr_err_msg(), "pid") ? 0 : 1);
    }
    int status;
    waitpid(child, &status, 0);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "second locker was not refused");
    mmr_lock_release(lock);
    child = fork();
    if (child == 0) {
        struct mmr_lock *other;
        _exit(mmr_lock_acquire(p, &other) == 0 ? 0 : 1);
    }
    waitpid(child, &status, 0);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "released lock not available");
    free(p);
}

Test(platform_posix, paths_and_endpoint)
{
    char *j = mmr_path_join("/var/lib/mamori/", "agent.db");
    cr_expect_str_eq(j, "/var/lib/mamori/agent.db");
    free(j);
    char *ep;
    cr_assert_eq(mmr_ipc_endpoint("/run/mamori", &ep), 0);
    cr_expect_str_eq(ep, "/run/mamori/agent.sock");
    free(ep);
    char longdir[200];
    memset(longdir, 'a', sizeof(longdir) - 1);
    longdir[0] = '/';
    longdir[sizeof(longdir) - 1] = '\0';
    cr_expect_eq(mmr_ipc_endpoint(longdir, &ep), MMR_ETOOBIG);
    cr_expect(strstr(mmr_err_msg(), "shorter"));
    cr_expect_eq(mmr_process_id(), (int64_t)getpid());
}

Test(platform_posix, endpoint_open_to_all)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_pipe_t server;
    uv_pipe_init(&loop, &server, 0);
    char *ep;
    cr_assert_eq(mmr_ipc_endpoint(dir, &ep), 0);
    cr_assert_eq(uv_pipe_bind(&server, ep), 0);
    cr_assert_eq(mmr_ipc_endpoint_open_to_all(&server), 0, "%s", mmr_err_msg());
    cr_expect_eq(mode_of(ep), 0666);
    uv_close((uv_handle_t *)&server, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_pipe_t unbound;
    uv_pipe_init(&loop, &unbound, 0);
    cr_expect_eq(mmr_ipc_endpoint_open_to_all(&unbound), MMR_EINVAL);
    uv_close((uv_handle_t *)&unbound, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(&loop), 0);
    free(ep);
}

Test(platform_posix, service_notify_reaches_the_socket)
{
    /* A datagram socket standing in for systemd's notify socket. */
    char *sock = mmr_path_join(dir, "notify");
    char *cmd = mmr_asprintf("python3 -c \"import socket,sys;s=socket.socket(socket.AF_UNIX,"
                             "socket.SOCK_DGRAM);s.bind('%s');s.settimeout(5);"
                             "open('%s.out','wb').write(s.recv(100))\" &",
                             sock, sock);
    cr_assert_eq(system(cmd), 0);
    for (int i = 0; i < 100 && !mmr_path_exists(sock); i++)
        usleep(20000);
    setenv("NOTIFY_SOCKET", sock, 1);
    cr_expect(mmr_service_managed());
    mmr_service_notify("READY=1");
    unsetenv("NOTIFY_SOCKET");
    char *out = mmr_asprintf("%s.out", sock);
    for (int i = 0; i < 100 && mmr_file_size(out) < 7; i++)
        usleep(20000);
    char *text;
    size_t len;
    cr_assert_eq(mmr_file_read_all(out, 100, &text, &len), 0, "%s", mmr_err_msg());
    cr_expect_str_eq(text, "READY=1");
    free(text);
    free(out);
    free(cmd);
    free(sock);
}
