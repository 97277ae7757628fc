/* Integration (Windows only): mamori-agent.exe as a Windows service. Installs it
 * with `service install`, starts and stops it through the Service Control
 * Manager (Wine has one), asks mamorictl.exe for its status, and removes it. */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#include <winsvc.h>

#include "proc.h"
#include "shared/platform.h"

#define SERVICE_W L"mamori-agent"
#define EXIT_CONFIG 2
#define EXIT_SERVICE 7

/* Every wait is bounded well under the suite's timeout (45 s per test: six
 * stuck tests still end within ctest's 300 s, each reported on its own). A
 * command takes well under a second; starting and stopping the service within
 * 15 and 10 s; StartServiceW itself returns within the SCM's own limit for a
 * service to connect (10 s under Wine, 30 s on Windows). */
#define TEST_TIMEOUT_S 45
#define COMMAND_MS 15000
#define START_MS 15000
#define STOP_MS 10000

/* A data directory named in Japanese: the service's command line carries it
 * through the SCM in UTF-16 and the agent must get it back intact. */
static wchar_t dir_w[MAX_PATH];
static char dir[MAX_PATH * 3];
static SC_HANDLE scm;

static bool on_wine(void)
{
    HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");
    return ntdll && GetProcAddress(ntdll, "wine_get_version");
}

/* Removes a directory tree (the agent's database, logs and lock). */
static void remove_tree(const wchar_t *path)
{
    wchar_t pattern[MAX_PATH];
    _snwprintf(pattern, MAX_PATH, L"%ls\\*", path);
    pattern[MAX_PATH - 1] = L'\0';
    WIN32_FIND_DATAW fd;
    HANDLE h = FindFirstFileW(pattern, &fd);
    if (h != INVALID_HANDLE_VALUE) {
        do {
            if (wcscmp(fd.cFileName, L".") == 0 || wcscmp(fd.cFileName, L"..") == 0)
                continue;
            wchar_t child[MAX_PATH];
            _snwprintf(child, MAX_PATH, L"%ls\\%ls", path, fd.cFileName);
            child[MAX_PATH - 1] = L'\0';
            if (fd.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)
                remove_tree(child);
            else
                DeleteFileW(child);
        } while (FindNextFileW(h, &fd));
        FindClose(h);
    }
    RemoveDirectoryW(path);
}

/* Stops and deletes the service with the SCM's own calls, whatever a failed
 * test left behind: an installed automatic service would otherwise start
 * again with every new Wine session. */
static void remove_service(void)
{
    SC_HANDLE s = OpenServiceW(scm, SERVICE_W, SERVICE_STOP | SERVICE_QUERY_STATUS | DELETE);
    if (!s)
        return;
    SERVICE_STATUS st;
    ControlService(s, SERVICE_CONTROL_STOP, &st);
    ULONGLONG deadline = GetTickCount64() + STOP_MS;
    while (QueryServiceStatus(s, &st) && st.dwCurrentState != SERVICE_STOPPED &&
           GetTickCount64() < deadline)
        Sleep(100);
    DeleteService(s);
    CloseServiceHandle(s);
}

static void setup(void)
{
    scm = OpenSCManagerW(NULL, NULL, SC_MANAGER_CONNECT);
    cr_assert(scm, "cannot open the SCM: error %lu", GetLastError());
    remove_service();
    wchar_t tmp[MAX_PATH];
    DWORD n = GetTempPathW(MAX_PATH, tmp);
    cr_assert(n > 0 && n < MAX_PATH);
    _snwprintf(dir_w, MAX_PATH, L"%lsmamori-svc-\u30c6\u30b9\u30c8-%lu-%lu", tmp,
               GetCurrentProcessId(), GetTickCount());
    dir_w[MAX_PATH - 1] = L'\0';
    cr_assert(CreateDirectoryW(dir_w, NULL), "cannot create %ls: error %lu", dir_w,
              GetLastError());
    int len = WideCharToMultiByte(CP_UTF8, 0, dir_w, -1, dir, sizeof(dir), NULL, NULL);
    cr_assert(len > 0);
}

static void teardown(void)
{
    if (scm) {
        remove_service();
        CloseServiceHandle(scm);
        scm = NULL;
    }
    if (dir_w[0])
        remove_tree(dir_w);
    dir_w[0] = L'\0';
}

TestSuite(service, .init = setup, .fini = teardown, .timeout = TEST_TIMEOUT_S);

/* Runs mamori-agent.exe with up to four arguments. */
static void agent(struct proc_result *res, const char *a1, const char *a2, const char *a3,
                  const char *a4)
{
    const char *argv[] = {MMR_AGENT_BIN, a1, a2, a3, a4, NULL};
    proc_run(argv, NULL, COMMAND_MS, res);
}

static void install(const char *config)
{
    struct proc_result res;
    agent(&res, "service", "install", "--data-dir", dir);
    if (config) {
        proc_result_free(&res);
        const char *argv[] = {MMR_AGENT_BIN, "service", "install", "--data-dir", dir,
                              "--config", config, NULL};
        proc_run(argv, NULL, COMMAND_MS, &res);
    }
    cr_assert_eq(res.exit_code, 0, "service install failed:\n%s%s", res.out, res.err);
    cr_expect(strstr(res.out, "installed"), "%s", res.out);
    proc_result_free(&res);
}

static SC_HANDLE open_service(void)
{
    SC_HANDLE s = OpenServiceW(scm, SERVICE_W, SERVICE_ALL_ACCESS);
    cr_assert(s, "service not installed: error %lu", GetLastError());
    return s;
}

/* Polls until the service reaches state; returns the milliseconds it took,
 * or -1 on timeout. */
static long wait_state(SC_HANDLE s, DWORD state, DWORD timeout_ms, SERVICE_STATUS *st)
{
    ULONGLONG start = GetTickCount64();
    for (;;) {
        cr_assert(QueryServiceStatus(s, st), "QueryServiceStatus: error %lu", GetLastError());
        ULONGLONG took = GetTickCount64() - start;
        if (st->dwCurrentState == state)
            return (long)took;
        if (took > timeout_ms)
            return -1;
        Sleep(20);
    }
}

static void start_and_wait_running(SC_HANDLE s)
{
    cr_assert(StartServiceW(s, 0, NULL), "StartServiceW: error %lu", GetLastError());
    SERVICE_STATUS st;
    long took = wait_state(s, SERVICE_RUNNING, START_MS, &st);
    cr_assert(took >= 0, "service not RUNNING after %d s: state %lu, exit %lu/%lu", START_MS / 1000,
              st.dwCurrentState, st.dwWin32ExitCode, st.dwServiceSpecificExitCode);
    cr_expect(st.dwControlsAccepted & SERVICE_ACCEPT_STOP);
    cr_expect(st.dwControlsAccepted & SERVICE_ACCEPT_SHUTDOWN);
    cr_log_info("service RUNNING %ld ms after StartServiceW", took);
}

/* The registration: automatic, own process, LocalSystem, our arguments. */
static void check_config(SC_HANDLE s, const char *config)
{
    union {
        QUERY_SERVICE_CONFIGW qc;
        BYTE bytes[8192];
    } buf;
    DWORD need = 0;
    cr_assert(QueryServiceConfigW(s, &buf.qc, sizeof(buf), &need), "error %lu", GetLastError());
    cr_expect_eq(buf.qc.dwServiceType, SERVICE_WIN32_OWN_PROCESS);
    cr_expect_eq(buf.qc.dwStartType, SERVICE_AUTO_START);
    cr_expect(buf.qc.lpServiceStartName &&
              _wcsicmp(buf.qc.lpServiceStartName, L"LocalSystem") == 0);
    const wchar_t *cmd = buf.qc.lpBinaryPathName;
    cr_expect(cmd[0] == L'"' && wcsstr(cmd, L"mamori-agent.exe\" "), "%ls", cmd);
    wchar_t want[MAX_PATH + 32];
    _snwprintf(want, MAX_PATH + 32, L"--data-dir \"%ls\"", dir_w);
    want[MAX_PATH + 31] = L'\0';
    cr_expect(wcsstr(cmd, want), "command line %ls lacks %ls", cmd, want);
    cr_expect_eq(wcsstr(cmd, L"--config") != NULL, config != NULL, "%ls", cmd);
}

/* Restart after 5 s, 30 s, 60 s, reset after a day, also on a failed exit.
 * Wine's SCM takes these settings without keeping them and answers every
 * query with ERROR_INVALID_LEVEL: there the check can only be made on Windows. */
static void check_recovery(SC_HANDLE s)
{
    union {
        SERVICE_FAILURE_ACTIONSW fa;
        SERVICE_FAILURE_ACTIONS_FLAG flag;
        BYTE bytes[1024];
    } buf;
    DWORD need = 0;
    if (!QueryServiceConfig2W(s, SERVICE_CONFIG_FAILURE_ACTIONS, buf.bytes, sizeof(buf), &need)) {
        DWORD err = GetLastError();
        cr_assert(on_wine() && err == ERROR_INVALID_LEVEL, "failure actions: error %lu", err);
        cr_log_warn("Wine's SCM keeps no recovery actions: checked on Windows only");
        return;
    }
    cr_expect_eq(buf.fa.dwResetPeriod, 86400);
    cr_assert_eq(buf.fa.cActions, 3);
    static const DWORD delays[] = {5000, 30000, 60000};
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(buf.fa.lpsaActions[i].Type, SC_ACTION_RESTART);
        cr_expect_eq(buf.fa.lpsaActions[i].Delay, delays[i]);
    }
    cr_assert(QueryServiceConfig2W(s, SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, buf.bytes, sizeof(buf),
                                   &need),
              "failure actions flag: error %lu", GetLastError());
    cr_expect(buf.flag.fFailureActionsOnNonCrashFailures);
}

static void ctl_status(struct proc_result *res)
{
    const char *argv[] = {MMR_CTL_BIN, "--data-dir", dir, "status", NULL};
    proc_run(argv, NULL, COMMAND_MS, res);
}

Test(service, install_start_status_stop_uninstall)
{
    install(NULL);
    SC_HANDLE s = open_service();
    check_config(s, NULL);
    check_recovery(s);

    start_and_wait_running(s);
    struct proc_result res;
    ctl_status(&res);
    cr_expect_eq(res.exit_code, 0, "mamorictl status:\n%s%s", res.out, res.err);
    cr_expect(strstr(res.out, "running"), "%s", res.out);
    cr_expect(strstr(res.out, dir), "status names another data directory:\n%s", res.out);
    proc_result_free(&res);

    /* The helpdesk's commands work against the service too. */
    const char *selftest[] = {MMR_CTL_BIN, "--data-dir", dir, "--json", "selftest", "--events",
                              "5", NULL};
    proc_run(selftest, NULL, COMMAND_MS, &res);
    cr_expect_eq(res.exit_code, 0, "mamorictl selftest:\n%s%s", res.out, res.err);
    cr_expect(strstr(res.out, "\"queued\": 5"), "%s", res.out);
    proc_result_free(&res);
    char *bundle = mmr_path_join(dir, "support.tar.gz");
    const char *diag[] = {MMR_CTL_BIN, "--data-dir", dir, "diag", "-o", bundle, NULL};
    proc_run(diag, NULL, COMMAND_MS, &res);
    cr_expect_eq(res.exit_code, 0, "mamorictl diag:\n%s%s", res.out, res.err);
    cr_expect_gt(mmr_file_size(bundle), 0, "no bundle at %s", bundle);
    proc_result_free(&res);
    free(bundle);

    SERVICE_STATUS st;
    cr_assert(ControlService(s, SERVICE_CONTROL_STOP, &st), "stop: error %lu", GetLastError());
    long took = wait_state(s, SERVICE_STOPPED, STOP_MS, &st);
    cr_assert(took >= 0, "service not STOPPED %d s after the stop request", STOP_MS / 1000);
    cr_expect_leq(took, 2000, "service took %ld ms to stop", took);
    cr_expect_eq(st.dwWin32ExitCode, NO_ERROR, "exit %lu/%lu", st.dwWin32ExitCode,
                 st.dwServiceSpecificExitCode);
    cr_log_info("service STOPPED %ld ms after the stop request", took);
    CloseServiceHandle(s);

    /* Installing again updates the registration (here: adds --config). */
    char *conf = malloc(strlen(dir) + 16);
    sprintf(conf, "%s\\agent.conf", dir);
    wchar_t conf_w[MAX_PATH];
    _snwprintf(conf_w, MAX_PATH, L"%ls\\agent.conf", dir_w);
    conf_w[MAX_PATH - 1] = L'\0';
    FILE *f = _wfopen(conf_w, L"w");
    cr_assert(f);
    fputs("[log]\nlevel = debug\n", f);
    fclose(f);
    install(conf);
    s = open_service();
    check_config(s, conf);
    CloseServiceHandle(s);
    free(conf);

    agent(&res, "service", "uninstall", NULL, NULL);
    cr_assert_eq(res.exit_code, 0, "service uninstall:\n%s%s", res.out, res.err);
    proc_result_free(&res);
    cr_assert_null(OpenServiceW(scm, SERVICE_W, SERVICE_QUERY_STATUS));
    cr_expect_eq(GetLastError(), ERROR_SERVICE_DOES_NOT_EXIST);

    /* Not installed: removing it again succeeds. */
    agent(&res, "service", "uninstall", NULL, NULL);
    cr_expect_eq(res.exit_code, 0, "second uninstall:\n%s%s", res.out, res.err);
    proc_result_free(&res);
}

Test(service, uninstall_stops_a_running_service)
{
    install(NULL);
    SC_HANDLE s = open_service();
    start_and_wait_running(s);
    CloseServiceHandle(s);

    struct proc_result res;
    agent(&res, "service", "uninstall", NULL, NULL);
    cr_assert_eq(res.exit_code, 0, "service uninstall:\n%s%s", res.out, res.err);
    proc_result_free(&res);
    cr_expect_null(OpenServiceW(scm, SERVICE_W, SERVICE_QUERY_STATUS));

    /* The agent is gone with it: nobody answers on its endpoint. */
    ctl_status(&res);
    cr_expect_eq(res.exit_code, 2, "mamorictl status after uninstall:\n%s%s", res.out, res.err);
    proc_result_free(&res);
}

/* A start-up failure ends the service with a service-specific error carrying
 * the agent's exit code: what the recovery actions (and the event log) see. */
Test(service, failed_start_reports_the_exit_code)
{
    wchar_t conf_w[MAX_PATH];
    _snwprintf(conf_w, MAX_PATH, L"%ls\\broken.conf", dir_w);
    conf_w[MAX_PATH - 1] = L'\0';
    FILE *f = _wfopen(conf_w, L"w");
    cr_assert(f);
    fputs("[agent\n", f);
    fclose(f);
    char conf[MAX_PATH * 3];
    cr_assert(WideCharToMultiByte(CP_UTF8, 0, conf_w, -1, conf, sizeof(conf), NULL, NULL) > 0);
    install(conf);

    SC_HANDLE s = open_service();
    cr_assert(StartServiceW(s, 0, NULL), "StartServiceW: error %lu", GetLastError());
    SERVICE_STATUS st;
    cr_assert(wait_state(s, SERVICE_STOPPED, START_MS, &st) >= 0, "still in state %lu",
              st.dwCurrentState);
    cr_expect_eq(st.dwWin32ExitCode, ERROR_SERVICE_SPECIFIC_ERROR);
    cr_expect_eq(st.dwServiceSpecificExitCode, EXIT_CONFIG);
    CloseServiceHandle(s);
}

/* Not started by the SCM and without -f: no terminal to leave, so it runs in
 * the foreground at once (no pidfile). With the service running beside it,
 * asking Wine's dispatcher instead would wait 10 s on the service's pipe. */
Test(service, runs_in_the_foreground_without_the_scm)
{
    install(NULL);
    SC_HANDLE s = open_service();
    start_and_wait_running(s);
    CloseServiceHandle(s);

    char fg[MAX_PATH * 3 + 8];
    snprintf(fg, sizeof(fg), "%s\\fg", dir);
    const char *argv[] = {MMR_AGENT_BIN, "--data-dir", fg, NULL};
    const char *ctl[] = {MMR_CTL_BIN, "--data-dir", fg, "status", NULL};
    struct proc *p = proc_start(argv, NULL);
    ULONGLONG start = GetTickCount64(), deadline = start + START_MS, now;
    struct proc_result res = {0};
    bool up = false;
    while (!up && (now = GetTickCount64()) < deadline) {
        proc_run(ctl, NULL, (int)(deadline - now), &res);
        up = res.exit_code == 0;
        proc_result_free(&res);
        if (!up)
            Sleep(100);
    }
    ULONGLONG took = GetTickCount64() - start;
    cr_log_info("foreground agent answered %llu ms after its start", (unsigned long long)took);
    cr_expect(up, "foreground agent did not answer mamorictl status within %d s", START_MS / 1000);
    cr_expect_lt(took, 5000ull);
    wchar_t pidfile[MAX_PATH];
    _snwprintf(pidfile, MAX_PATH, L"%ls\\fg\\mamori-agent.pid", dir_w);
    pidfile[MAX_PATH - 1] = L'\0';
    cr_expect_eq(GetFileAttributesW(pidfile), INVALID_FILE_ATTRIBUTES, "a pidfile was written");
    proc_kill(p, SIGTERM);
    proc_wait(p, STOP_MS, &res);
    proc_result_free(&res);
}

Test(service, bad_service_commands)
{
    struct proc_result res;
    agent(&res, "service", "restart", NULL, NULL);
    cr_expect_eq(res.exit_code, 1, "%s", res.err);
    proc_result_free(&res);

    agent(&res, "service", "uninstall", "--data-dir", dir);
    cr_expect_eq(res.exit_code, 1, "%s", res.err);
    proc_result_free(&res);

    /* A failed install leaves neither a service nor the data directory it
     * created. */
    char missing[MAX_PATH * 3 + 16], fresh[MAX_PATH * 3 + 16];
    snprintf(missing, sizeof(missing), "%s\\missing.conf", dir);
    snprintf(fresh, sizeof(fresh), "%s\\fresh", dir);
    const char *argv[] = {MMR_AGENT_BIN, "service", "install", "--data-dir", fresh,
                          "--config", missing, NULL};
    proc_run(argv, NULL, COMMAND_MS, &res);
    cr_expect_eq(res.exit_code, EXIT_SERVICE, "%s", res.err);
    cr_expect(strstr(res.err, "missing.conf"), "%s", res.err);
    proc_result_free(&res);
    cr_expect_null(OpenServiceW(scm, SERVICE_W, SERVICE_QUERY_STATUS),
                   "a failed install left a service behind");
    wchar_t fresh_w[MAX_PATH];
    _snwprintf(fresh_w, MAX_PATH, L"%ls\\fresh", dir_w);
    fresh_w[MAX_PATH - 1] = L'\0';
    cr_expect_eq(GetFileAttributesW(fresh_w), INVALID_FILE_ATTRIBUTES,
                 "a failed install left its data directory behind");
}

/* A removal still pending (someone holds the service open) makes a new
 * install fail with a message that says what to do. */
Test(service, install_while_a_removal_is_pending)
{
    install(NULL);
    SC_HANDLE held = open_service();
    cr_assert(DeleteService(held), "DeleteService: error %lu", GetLastError());

    struct proc_result res;
    agent(&res, "service", "install", NULL, NULL);
    cr_expect_eq(res.exit_code, EXIT_SERVICE, "%s%s", res.out, res.err);
    cr_expect(strstr(res.err, "earlier removal is still pending"), "%s", res.err);
    proc_result_free(&res);
    CloseServiceHandle(held);

    /* Once the last handle closes, the service is gone and installs again. */
    agent(&res, "service", "install", NULL, NULL);
    cr_expect_eq(res.exit_code, 0, "%s%s", res.out, res.err);
    proc_result_free(&res);
}
