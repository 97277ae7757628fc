/* Unit tests for the Windows platform layer only: the named pipe's name and
 * ACL, private ACLs, administrators and pipe peers, system facts, the lock
 * between handles, and paths longer than MAX_PATH. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>

#include <aclapi.h>
#include <shlobj.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "testutil.h"

static char dir[512];

static void setup(void)
{
    mmr_test_mkdtemp("mmr-plat-win", dir, sizeof(dir));
}

static void teardown(void)
{
    cr_expect_eq(mmr_test_rmtree(dir), 0);
}

TestSuite(platform_win32, .init = setup, .fini = teardown);

static char *endpoint_of(const char *run_dir)
{
    char *ep = NULL;
    cr_assert_eq(mmr_ipc_endpoint(run_dir, &ep), 0, "%s: %s", run_dir, mmr_err_msg());
    return ep;
}

static void expect_same_endpoint(const char *a, const char *b)
{
    char *ea = endpoint_of(a), *eb = endpoint_of(b);
    cr_expect_str_eq(ea, eb, "'%s' and '%s' are one directory", a, b);
    free(ea);
    free(eb);
}

Test(platform_win32, pipe_name_rule)
{
    const char *def = mmr_default_run_dir();
    char *ep = endpoint_of(def);
    cr_expect_str_eq(ep, "\\\\.\\pipe\\mamori-agent");
    free(ep);
    cr_expect_str_eq(mmr_default_run_dir(), mmr_default_data_dir());
    char *conf = mmr_path_join(mmr_default_data_dir(), "agent.conf");
    cr_expect_str_eq(mmr_default_config_path(), conf);
    free(conf);
    cr_expect(strstr(mmr_default_data_dir(), "\\Mamori"));

    /* Other spellings of the default directory are the default directory. */
    char *slashed = mmr_asprintf("%s\\", def);
    expect_same_endpoint(def, slashed);
    for (char *c = slashed; *c; c++)
        if (*c == '\\')
            *c = '/';
    expect_same_endpoint(def, slashed);
    free(slashed);
    char *lower = mmr_strdup(def);
    for (char *c = lower; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    expect_same_endpoint(def, lower);
    free(lower);

    /* Any other directory: a name of its own, derived from the directory. */
    ep = endpoint_of(dir);
    const char *prefix = "\\\\.\\pipe\\mamori-agent-";
    cr_assert_eq(strncmp(ep, prefix, strlen(prefix)), 0, "%s", ep);
    const char *hex = ep + strlen(prefix);
    cr_expect_eq(strlen(hex), 16, "%s", ep);
    for (const char *c = hex; *c; c++)
        cr_expect((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f'), "%s", ep);
    free(ep);
    char *dotted = mmr_asprintf("%s/./", dir);
    expect_same_endpoint(dir, dotted);
    free(dotted);
    char *sub = mmr_path_join(dir, "sub");
    char *up = mmr_asprintf("%s\\..", sub);
    expect_same_endpoint(dir, up);
    char *e_sub = endpoint_of(sub), *e_dir = endpoint_of(dir);
    cr_expect_str_neq(e_sub, e_dir);
    free(e_sub);
    free(e_dir);
    free(up);
    free(sub);
    cr_expect_eq(mmr_ipc_endpoint("", &ep), MMR_EINVAL);
    /* The pipe vanishes with its last handle: removing it is a no-op. */
    cr_expect_eq(mmr_file_remove("\\\\.\\pipe\\mamori-agent-0000000000000000"), 0);
}

Test(platform_win32, path_join_separators)
{
    char *p = mmr_path_join("C:\\", "x");
    cr_expect_str_eq(p, "C:\\x");
    free(p);
    p = mmr_path_join("C:\\ProgramData\\Mamori\\", "agent.db");
    cr_expect_str_eq(p, "C:\\ProgramData\\Mamori\\agent.db");
    free(p);
    p = mmr_path_join("C:/data/", "x");
    cr_expect_str_eq(p, "C:/data\\x");
    free(p);
}

/* Every entry granting access names SYSTEM, Administrators or this user. */
static void expect_only_trusted_entries(const char *path)
{
    int n = MultiByteToWideChar(CP_UTF8, 0, path, -1, NULL, 0);
    wchar_t *w = mmr_malloc((size_t)n * sizeof(wchar_t));
    MultiByteToWideChar(CP_UTF8, 0, path, -1, w, n);
    PACL acl = NULL;
    PSECURITY_DESCRIPTOR sd = NULL;
    DWORD err = GetNamedSecurityInfoW(w, SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, NULL, NULL,
                                      &acl, NULL, &sd);
    free(w);
    cr_assert_eq(err, ERROR_SUCCESS, "GetNamedSecurityInfoW %s: %lu", path, err);
    cr_assert_not_null(acl, "%s has no DACL", path);
    HANDLE token;
    cr_assert(OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &token));
    union {
        TOKEN_USER user;
        BYTE bytes[sizeof(TOKEN_USER) + SECURITY_MAX_SID_SIZE];
    } me;
    DWORD len;
    cr_assert(GetTokenInformation(token, TokenUser, &me, sizeof(me), &len));
    CloseHandle(token);
    for (DWORD i = 0; i < acl->AceCount; i++) {
        ACE_HEADER *ace;
        cr_assert(GetAce(acl, i, (void **)&ace));
        if (ace->AceType != ACCESS_ALLOWED_ACE_TYPE)
            continue;
        PSID sid = &((ACCESS_ALLOWED_ACE *)ace)->SidStart;
        cr_expect(IsWellKnownSid(sid, WinLocalSystemSid) ||
                      IsWellKnownSid(sid, WinBuiltinAdministratorsSid) ||
                      EqualSid(sid, me.user.User.Sid),
                  "entry %lu of %s grants someone else", (unsigned long)i, path);
    }
    LocalFree(sd);
}

Test(platform_win32, private_dacl)
{
    char *p = mmr_path_join(dir, "secret");
    cr_assert_eq(mmr_file_make_private(p), 0, "%s", mmr_err_msg());
    bool priv = false;
    cr_assert_eq(mmr_file_is_private(p, &priv), 0, "%s", mmr_err_msg());
    cr_expect(priv);
    expect_only_trusted_entries(p);
    /* An Everyone entry makes it public; make_private takes it away again. */
    mmr_test_expose_to_others(p);
    cr_assert_eq(mmr_file_is_private(p, &priv), 0);
    cr_expect_not(priv);
    cr_assert_eq(mmr_file_make_private(p), 0, "%s", mmr_err_msg());
    cr_assert_eq(mmr_file_is_private(p, &priv), 0);
    cr_expect(priv);
    expect_only_trusted_entries(p);

    char *d = mmr_path_join(dir, "private-dir");
    cr_assert_eq(mmr_mkdir_p(d, true), 0, "%s", mmr_err_msg());
    expect_only_trusted_entries(d);
    char *f = mmr_path_join(d, "state");
    cr_assert_eq(mmr_file_write_atomic(f, "x", 1), 0, "%s", mmr_err_msg());
    expect_only_trusted_entries(f);
    free(f);
    free(d);
    free(p);
}

Test(platform_win32, admin_detection_is_consistent)
{
    /* IsUserAnAdmin: an independent reading of the same token (enabled
     * Administrators membership). */
    cr_expect_eq(mmr_user_is_admin(), (bool)IsUserAnAdmin());
    cr_expect_eq(mmr_user_is_admin(), mmr_user_is_admin());
}

struct peer_test {
    uv_pipe_t server, client, conn;
    uv_connect_t req;
    int connect_status;
    int identify_rc;
    char identify_msg[256];
    struct mmr_peer peer;
    bool accepted;
};

static void on_connection(uv_stream_t *server, int status)
{
    struct peer_test *t = server->data;
    cr_assert_eq(status, 0, "%s", uv_strerror(status));
    uv_pipe_init(server->loop, &t->conn, 0);
    cr_assert_eq(uv_accept(server, (uv_stream_t *)&t->conn), 0);
    t->identify_rc = mmr_peer_identify(&t->conn, &t->peer);
    snprintf(t->identify_msg, sizeof(t->identify_msg), "%s", mmr_err_msg());
    t->accepted = true;
    uv_close((uv_handle_t *)&t->conn, NULL);
    uv_close((uv_handle_t *)server, NULL);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct peer_test *t = req->data;
    t->connect_status = status;
    uv_close((uv_handle_t *)&t->client, NULL);
}

/* The pipe's DACL: remote clients denied first, local users may read and
 * write, nothing for Everyone. */
static void expect_pipe_acl(uv_pipe_t *server)
{
    uv_os_fd_t h;
    cr_assert_eq(uv_fileno((uv_handle_t *)server, &h), 0);
    PACL acl = NULL;
    PSECURITY_DESCRIPTOR sd = NULL;
    DWORD err = GetSecurityInfo(h, SE_KERNEL_OBJECT, DACL_SECURITY_INFORMATION, NULL, NULL, &acl,
                                NULL, &sd);
    cr_assert_eq(err, ERROR_SUCCESS, "GetSecurityInfo: %lu", err);
    cr_assert_not_null(acl);
    bool users_rw = false;
    for (DWORD i = 0; i < acl->AceCount; i++) {
        ACE_HEADER *ace;
        cr_assert(GetAce(acl, i, (void **)&ace));
        PSID sid = &((ACCESS_ALLOWED_ACE *)ace)->SidStart;
        ACCESS_MASK mask = ((ACCESS_ALLOWED_ACE *)ace)->Mask;
        if (i == 0) {
            cr_expect_eq(ace->AceType, ACCESS_DENIED_ACE_TYPE);
            cr_expect(IsWellKnownSid(sid, WinNetworkSid), "remote clients are denied first");
            continue;
        }
        cr_expect_eq(ace->AceType, ACCESS_ALLOWED_ACE_TYPE);
        cr_expect_not(IsWellKnownSid(sid, WinWorldSid), "no entry for Everyone");
        cr_expect_not(IsWellKnownSid(sid, WinAnonymousSid), "no entry for Anonymous");
        if (IsWellKnownSid(sid, WinAuthenticatedUserSid)) {
            users_rw = (mask & (FILE_GENERIC_READ | FILE_GENERIC_WRITE)) ==
                       (FILE_GENERIC_READ | FILE_GENERIC_WRITE);
            cr_expect_eq(mask & (WRITE_DAC | WRITE_OWNER | DELETE), 0, "users cannot re-secure it");
        }
    }
    cr_expect(users_rw, "local users may connect, read and write");
    LocalFree(sd);
}

Test(platform_win32, pipe_peer_is_this_process)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    struct peer_test t = {.connect_status = 1, .identify_rc = 1};
    unsigned char r[8];
    cr_assert_eq(mmr_random_bytes(r, sizeof(r)), 0);
    char *name = mmr_asprintf("\\\\.\\pipe\\mamori-test-%lu-%02x%02x%02x%02x",
                              (unsigned long)GetCurrentProcessId(), r[0], r[1], r[2], r[3]);
    uv_pipe_init(&loop, &t.server, 0);
    t.server.data = &t;
    cr_assert_eq(uv_pipe_bind(&t.server, name), 0);
    cr_assert_eq(mmr_ipc_endpoint_open_to_all(&t.server), 0, "%s", mmr_err_msg());
    expect_pipe_acl(&t.server);
    cr_assert_eq(uv_listen((uv_stream_t *)&t.server, 4, on_connection), 0);
    uv_pipe_init(&loop, &t.client, 0);
    t.req.data = &t;
    uv_pipe_connect(&t.req, &t.client, name, on_connect);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(&loop), 0);

    cr_expect_eq(t.connect_status, 0);
    cr_assert(t.accepted);
    cr_assert_eq(t.identify_rc, 0, "%s", t.identify_msg);
    cr_expect_eq(t.peer.pid, (int64_t)GetCurrentProcessId());
    cr_expect(t.peer.admin, "the agent's own user administers it");
    wchar_t user[256];
    DWORD n = 256;
    cr_assert(GetUserNameW(user, &n));
    char user8[256];
    cr_assert_gt(WideCharToMultiByte(CP_UTF8, 0, user, -1, user8, sizeof(user8), NULL, NULL), 0);
    cr_expect_str_eq(t.peer.name, user8);
    cr_expect_gt(t.peer.uid, 0, "the RID of a user SID");
    free(name);
}

Test(platform_win32, endpoint_needs_a_bound_pipe)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    uv_pipe_t unbound;
    uv_pipe_init(&loop, &unbound, 0);
    cr_expect_eq(mmr_ipc_endpoint_open_to_all(&unbound), MMR_EINVAL);
    struct mmr_peer peer;
    cr_expect_eq(mmr_peer_identify(&unbound, &peer), MMR_EINVAL);
    uv_close((uv_handle_t *)&unbound, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_expect_eq(uv_loop_close(&loop), 0);
}

Test(platform_win32, system_facts)
{
    struct mmr_sysinfo si;
    cr_assert_eq(mmr_sysinfo_get(&si), 0);
    cr_expect(strstr(si.os_name, "Windows"), "%s", si.os_name);
    cr_expect(strchr(si.os_version, '.'), "%s", si.os_version);
    cr_expect(strcmp(si.arch, "x86_64") == 0 || strcmp(si.arch, "aarch64") == 0, "%s", si.arch);
    cr_expect_neq(si.hostname[0], '\0');
    cr_expect_gt(si.uptime_s, 0);
    char hw[65], hw2[65];
    cr_assert_eq(mmr_hardware_id(hw, sizeof(hw)), 0, "%s", mmr_err_msg());
    cr_assert_eq(mmr_hardware_id(hw2, sizeof(hw2)), 0);
    cr_expect_str_eq(hw, hw2, "stable between calls");
    /* Either source is a GUID: 8-4-4-4-12 lower-case hex digits. */
    cr_expect_eq(strlen(hw), 36, "%s", hw);
    for (size_t i = 0; i < strlen(hw); i++) {
        char c = hw[i];
        if (i == 8 || i == 13 || i == 18 || i == 23)
            cr_expect_eq(c, '-', "%s", hw);
        else
            cr_expect((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'), "%s", hw);
    }
    cr_expect_eq(mmr_process_id(), (int64_t)GetCurrentProcessId());
}

Test(platform_win32, lock_refuses_a_second_handle)
{
    /* Windows locks belong to a handle, not to a process: a second
     * acquisition in this process is refused like another instance's. */
    char *p = mmr_path_join(dir, "agent.lock");
    struct mmr_lock *lock, *other;
    cr_assert_eq(mmr_lock_acquire(p, &lock), 0, "%s", mmr_err_msg());
    cr_expect_eq(mmr_lock_acquire(p, &other), MMR_EBUSY);
    char want[64];
    snprintf(want, sizeof(want), "(pid %lu)", (unsigned long)GetCurrentProcessId());
    cr_expect(strstr(mmr_err_msg(), want), "%s", mmr_err_msg());
    mmr_lock_release(lock);
    cr_assert_eq(mmr_lock_acquire(p, &other), 0, "%s", mmr_err_msg());
    mmr_lock_release(other);
    free(p);
}

Test(platform_win32, paths_longer_than_max_path)
{
    /* Six levels of 50 characters: well past MAX_PATH (260). */
    char *deep = mmr_strdup(dir);
    for (int i = 0; i < 6; i++) {
        char *next = mmr_asprintf("%s\\%d-ディレクトリ-%040d", deep, i, i);
        free(deep);
        deep = next;
    }
    cr_assert_gt(strlen(deep), 300);
    cr_assert_eq(mmr_mkdir_p(deep, true), 0, "%s", mmr_err_msg());
    cr_expect(mmr_path_exists(deep));
    char *file = mmr_path_join(deep, "state.json");
    cr_assert_eq(mmr_file_write_atomic(file, "{}", 2), 0, "%s", mmr_err_msg());
    char *text;
    size_t len;
    cr_assert_eq(mmr_file_read_all(file, 100, &text, &len), 0, "%s", mmr_err_msg());
    cr_expect_str_eq(text, "{}");
    free(text);
    bool priv = false;
    cr_assert_eq(mmr_file_is_private(file, &priv), 0, "%s", mmr_err_msg());
    cr_expect(priv);
    struct mmr_file *f;
    cr_assert_eq(mmr_file_open_append(file, &f), 0, "%s", mmr_err_msg());
    cr_expect_eq(mmr_file_append(f, "\n", 1), 0);
    mmr_file_close(f);
    cr_expect_eq(mmr_file_size(file), 3);
    char *moved = mmr_path_join(deep, "state.old");
    cr_expect_eq(mmr_file_rename(file, moved), 0, "%s", mmr_err_msg());
    uint64_t free_b, total;
    cr_expect_eq(mmr_disk_space(moved, &free_b, &total), 0, "%s", mmr_err_msg());
    cr_expect_eq(mmr_file_remove(moved), 0, "%s", mmr_err_msg());
    cr_expect_not(mmr_path_exists(moved));
    free(moved);
    free(file);
    free(deep);
}
