/* Unit tests for the platform layer (shared/platform/posix). */
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

static char dir[64];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/mmr-plat-XXXXXX");
    cr_assert(mkdtemp(dir));
}

static void teardown(void)
{
    char *cmd = mmr_asprintf("rm -rf '%s'", dir);
    cr_expect_eq(system(cmd), 0);
    free(cmd);
}

TestSuite(platform, .init = setup, .fini = teardown);

static mode_t mode_of(const char *p)
{
    struct stat st;
    cr_assert_eq(stat(p, &st), 0, "stat %s", p);
    return st.st_mode & 0777;
}

Test(platform, mkdir_p_private_leaf)
{
    char *deep = mmr_asprintf("%s/a/b/c", dir);
    cr_assert_eq(mmr_mkdir_p(deep, true), 0, "%s", mmr_err_msg());
    cr_expect_eq(mode_of(deep), 0700);
    char *parent = mmr_asprintf("%s/a", dir);
    cr_expect_eq(mode_of(parent), 0755 & ~(mode_t)0);
    /* An existing, too-open directory is tightened. */
    chmod(deep, 0777);
    cr_assert_eq(mmr_mkdir_p(deep, true), 0);
    cr_expect_eq(mode_of(deep), 0700);
    /* A file in the way is an error. */
    char *file = mmr_asprintf("%s/file", dir);
    cr_assert_eq(mmr_file_write_atomic(file, "x", 1), 0);
    cr_expect_eq(mmr_mkdir_p(file, false), MMR_EEXIST);
    cr_expect_eq(mmr_mkdir_p("", false), MMR_EINVAL);
    free(deep);
    free(parent);
    free(file);
}

Test(platform, read_all_limits)
{
    char *p = mmr_path_join(dir, "f");
    cr_assert_eq(mmr_file_write_atomic(p, "hello", 5), 0);
    cr_expect_eq(mode_of(p), 0600);
    char *text;
    size_t len;
    cr_assert_eq(mmr_file_read_all(p, 5, &text, &len), 0);
    cr_expect_eq(len, 5);
    cr_expect_str_eq(text, "hello");
    free(text);
    cr_expect_eq(mmr_file_read_all(p, 4, &text, &len), MMR_ETOOBIG);
    cr_expect(strstr(mmr_err_msg(), "limit"));
    cr_expect_eq(mmr_file_read_all(dir, 100, &text, &len), MMR_EINVAL, "a directory");
    char *missing = mmr_path_join(dir, "missing");
    cr_expect_eq(mmr_file_read_all(missing, 100, &text, &len), MMR_ENOENT);
    cr_expect(strstr(mmr_err_msg(), "missing"));
    free(missing);
    free(p);
}

Test(platform, read_tail_starts_at_a_line)
{
    char *p = mmr_path_join(dir, "log");
    const char *text = "first line\nsecond line\nthird\n";
    cr_assert_eq(mmr_file_write_atomic(p, text, strlen(text)), 0);
    char *out;
    size_t len;
    cr_assert_eq(mmr_file_read_tail(p, 15, &out, &len), 0);
    cr_expect_str_eq(out, "third\n");
    free(out);
    cr_assert_eq(mmr_file_read_tail(p, 1000, &out, &len), 0);
    cr_expect_str_eq(out, text);
    free(out);
    free(p);
}

Test(platform, atomic_write_replaces)
{
    char *p = mmr_path_join(dir, "state");
    cr_assert_eq(mmr_file_write_atomic(p, "one", 3), 0);
    cr_assert_eq(mmr_file_write_atomic(p, "two!", 4), 0);
    cr_expect_eq(mmr_file_size(p), 4);
    char *bad = mmr_asprintf("%s/no/such/dir/file", dir);
    cr_expect_eq(mmr_file_write_atomic(bad, "x", 1), MMR_ENOENT);
    free(bad);
    free(p);
}

Test(platform, make_private_and_check)
{
    char *p = mmr_path_join(dir, "db");
    cr_assert_eq(mmr_file_make_private(p), 0);
    bool priv = false;
    cr_assert_eq(mmr_file_is_private(p, &priv), 0);
    cr_expect(priv);
    chmod(p, 0644);
    cr_assert_eq(mmr_file_is_private(p, &priv), 0);
    cr_expect_not(priv);
    cr_assert_eq(mmr_file_make_private(p), 0);
    cr_expect_eq(mode_of(p), 0600);
    free(p);
}

Test(platform, append_file)
{
    char *p = mmr_path_join(dir, "append");
    struct mmr_file *f;
    cr_assert_eq(mmr_file_open_append(p, &f), 0);
    cr_expect_eq(mmr_file_append(f, "ab", 2), 0);
    cr_expect_eq(mmr_file_append(f, "cd", 2), 0);
    cr_expect_eq(mmr_file_sync(f), 0);
    mmr_file_close(f);
    cr_expect_eq(mmr_file_size(p), 4);
    cr_expect_eq(mode_of(p), 0600);
    cr_expect_lt(mmr_file_size("/nonexistent/x"), 0);
    free(p);
}

Test(platform, lock_is_exclusive_across_processes)
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

Test(platform, time_format)
{
    char buf[32];
    mmr_time_format(0, buf);
    cr_expect_str_eq(buf, "1970-01-01T00:00:00.000Z");
    mmr_time_format(1795305600123LL, buf);
    cr_expect_str_eq(buf, "2026-11-22T00:00:00.123Z");
    mmr_time_format(-1, buf);
    cr_expect_str_eq(buf, "1969-12-31T23:59:59.999Z");
    uint64_t a = mmr_time_mono_ms();
    cr_expect_geq(mmr_time_mono_ms(), a);
    cr_expect_gt(mmr_time_now_ms(), 1700000000000LL);
}

Test(platform, paths_and_endpoint)
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
}

Test(platform, system_facts)
{
    struct mmr_sysinfo si;
    cr_assert_eq(mmr_sysinfo_get(&si), 0);
    cr_expect_neq(si.hostname[0], '\0');
    cr_expect_neq(si.os_name[0], '\0');
    cr_expect_gt(si.mem_total, 0);
    uint64_t free_b, total;
    cr_assert_eq(mmr_disk_space(dir, &free_b, &total), 0);
    cr_expect_gt(total, 0);
    cr_expect_leq(free_b, total);
    cr_expect_lt(mmr_disk_space("/nonexistent/path", &free_b, &total), 0);
    unsigned char a[32] = {0}, b[32] = {0};
    cr_assert_eq(mmr_random_bytes(a, sizeof(a)), 0);
    cr_assert_eq(mmr_random_bytes(b, sizeof(b)), 0);
    cr_expect_neq(memcmp(a, b, sizeof(a)), 0);
    cr_expect_eq(mmr_process_id(), (int64_t)getpid());
    char hw[65], hw2[65];
    cr_assert_eq(mmr_hardware_id(hw, sizeof(hw)), 0, "%s", mmr_err_msg());
    cr_assert_eq(mmr_hardware_id(hw2, sizeof(hw2)), 0);
    cr_expect_str_eq(hw, hw2, "stable");
    cr_expect_geq(strlen(hw), 16);
}

Test(platform, service_notify_reaches_the_socket)
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
