/* Windows service glue: runs the program's body under the Service Control
 * Manager (ServiceMain, status reports, stop requests from the SCM) and
 * registers or removes the service with its recovery actions. */
#include "shared/platform.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform/win32/win32.h"

#include <tlhelp32.h>
#include <winsvc.h>

/* What the SCM is told to wait for while we start and stop. The agent stops
 * within 2 s; a longer hint keeps a slow disk from being reported as hung. */
#define START_WAIT_HINT_MS 30000
#define STOP_WAIT_HINT_MS 10000
#define UNINSTALL_WAIT_MS 10000

/* The one service this process runs (SERVICE_WIN32_OWN_PROCESS). */
static struct {
    CRITICAL_SECTION lock; /* status and the accepting/stopping flags */
    SERVICE_STATUS_HANDLE handle;
    SERVICE_STATUS status;
    bool accepting; /* RUNNING: stop(ctx) may be called */
    bool stopping;  /* STOP_PENDING reported: never RUNNING again */
    wchar_t *name;
    int (*run)(void *ctx);
    void (*stop)(void *ctx);
    void *ctx;
    int result;
    char failure[256]; /* why ServiceMain could not run, for the main thread */
} svc;

static atomic_bool managed;

bool mmr_service_managed(void)
{
    return atomic_load(&managed);
}

/* Caller holds svc.lock. Pending states count their checkpoint up, so the
 * SCM sees progress; settled states reset it. */
static void report(DWORD state, DWORD accepted, DWORD wait_hint)
{
    svc.status.dwServiceType = SERVICE_WIN32_OWN_PROCESS;
    svc.status.dwCurrentState = state;
    svc.status.dwControlsAccepted = accepted;
    svc.status.dwWaitHint = wait_hint;
    if (state == SERVICE_START_PENDING || state == SERVICE_STOP_PENDING)
        svc.status.dwCheckPoint++;
    else
        svc.status.dwCheckPoint = 0;
    /* Nothing useful to do on failure: the SCM then times the service out. */
    SetServiceStatus(svc.handle, &svc.status);
}

/* True when state holds the line want ("READY=1\nSTATUS=..." as systemd). */
static bool has_line(const char *state, const char *want)
{
    size_t n = strlen(want);
    const char *p = state;
    while (p) {
        if (strncmp(p, want, n) == 0 && (p[n] == '\0' || p[n] == '\n'))
            return true;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return false;
}

void mmr_service_notify(const char *state)
{
    if (!mmr_service_managed())
        return;
    EnterCriticalSection(&svc.lock);
    if (has_line(state, "STOPPING=1")) {
        svc.accepting = false;
        svc.stopping = true;
        report(SERVICE_STOP_PENDING, 0, STOP_WAIT_HINT_MS);
    } else if (has_line(state, "READY=1") && !svc.stopping) {
        /* Also the end of a reload: Windows has no RELOADING state, the
         * service simply stays RUNNING meanwhile. */
        svc.accepting = true;
        report(SERVICE_RUNNING, SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN, 0);
    }
    LeaveCriticalSection(&svc.lock);
}

int mmr_daemonize(const char *pidfile)
{
    (void)pidfile;
    return mmr_err_set(MMR_EUNSUP, "a Windows program has no terminal to detach from: "
                                   "it runs in the foreground, or as a service");
}

/* Runs on the dispatcher (main) thread. stop(ctx) is called at most once and
 * only between READY=1 and STOPPING=1, so the program's stop handle is live. */
static DWORD WINAPI control_handler(DWORD control, DWORD event_type, void *event_data,
                                    void *context)
{
    (void)event_type;
    (void)event_data;
    (void)context;
    switch (control) {
    case SERVICE_CONTROL_STOP:
    case SERVICE_CONTROL_SHUTDOWN:
        EnterCriticalSection(&svc.lock);
        if (svc.accepting) {
            svc.accepting = false;
            svc.stopping = true;
            report(SERVICE_STOP_PENDING, 0, STOP_WAIT_HINT_MS);
            svc.stop(svc.ctx);
        }
        LeaveCriticalSection(&svc.lock);
        return NO_ERROR;
    case SERVICE_CONTROL_INTERROGATE:
        return NO_ERROR;
    default:
        return ERROR_CALL_NOT_IMPLEMENTED;
    }
}

static void WINAPI service_main(DWORD argc, wchar_t **argv)
{
    (void)argc;
    (void)argv; /* start parameters: ours are on the registered command line */
    svc.handle = RegisterServiceCtrlHandlerExW(svc.name, control_handler, NULL);
    if (!svc.handle) {
        svc.result = mmr_win_err_set(GetLastError(), "cannot register the service control handler");
        snprintf(svc.failure, sizeof(svc.failure), "%s", mmr_err_msg());
        return;
    }
    EnterCriticalSection(&svc.lock);
    report(SERVICE_START_PENDING, 0, START_WAIT_HINT_MS);
    LeaveCriticalSection(&svc.lock);
    atomic_store(&managed, true);

    int rc = svc.run(svc.ctx);

    EnterCriticalSection(&svc.lock);
    svc.result = rc;
    svc.accepting = false;
    svc.stopping = true;
    /* A non-zero exit is a failure the recovery actions act on (with
     * SERVICE_CONFIG_FAILURE_ACTIONS_FLAG set at install). */
    svc.status.dwWin32ExitCode = rc == 0 ? NO_ERROR : ERROR_SERVICE_SPECIFIC_ERROR;
    svc.status.dwServiceSpecificExitCode = rc < 0 ? (DWORD)-rc : (DWORD)rc;
    report(SERVICE_STOPPED, 0, 0);
    LeaveCriticalSection(&svc.lock);
}

/* The SCM starts services as children of %SystemRoot%\System32\services.exe.
 * Asking first spares a console run the dispatcher's attempt to connect:
 * under Wine that attempt waits 10 s for the last started service's control
 * pipe (and could take a pipe meant for a service being started). */
static bool started_by_scm(void)
{
    HANDLE snap = CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0);
    if (snap == INVALID_HANDLE_VALUE)
        return true; /* cannot tell: let the dispatcher decide */
    DWORD self = GetCurrentProcessId(), parent = 0;
    PROCESSENTRY32W pe = {.dwSize = sizeof(pe)};
    for (BOOL ok = Process32FirstW(snap, &pe); ok; ok = Process32NextW(snap, &pe)) {
        if (pe.th32ProcessID == self) {
            parent = pe.th32ParentProcessID;
            break;
        }
    }
    CloseHandle(snap);
    if (!parent)
        return false; /* started from outside Windows (Wine from a Unix shell) */
    HANDLE h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, parent);
    if (!h) /* the SCM outlives its services: a parent that is gone was not it */
        return GetLastError() != ERROR_INVALID_PARAMETER;
    wchar_t image[MAX_PATH], expected[MAX_PATH];
    DWORD len = MAX_PATH;
    bool ok = QueryFullProcessImageNameW(h, 0, image, &len);
    CloseHandle(h);
    UINT n = GetSystemDirectoryW(expected, MAX_PATH);
    if (!ok || n == 0 || n + sizeof("\\services.exe") > MAX_PATH)
        return true;
    wcscat(expected, L"\\services.exe");
    return CompareStringOrdinal(image, -1, expected, -1, TRUE) == CSTR_EQUAL;
}

int mmr_service_run(const char *name, int (*run)(void *ctx), void (*stop)(void *ctx), void *ctx)
{
    wchar_t *wname = mmr_w_from_utf8(name);
    if (!wname)
        return mmr_err_wrap(MMR_EINVAL, "service name");
    InitializeCriticalSection(&svc.lock);
    svc.name = wname;
    svc.run = run;
    svc.stop = stop;
    svc.ctx = ctx;
    SERVICE_TABLE_ENTRYW table[] = {{wname, service_main}, {NULL, NULL}};
    int rc;
    if (!started_by_scm()) {
        rc = run(ctx);
    } else if (StartServiceCtrlDispatcherW(table)) {
        /* Returns once the service reported STOPPED (or never started). */
        atomic_store(&managed, false);
        rc = svc.failure[0] ? mmr_err_set(svc.result, "%s", svc.failure) : svc.result;
    } else if (GetLastError() == ERROR_FAILED_SERVICE_CONTROLLER_CONNECT) {
        rc = run(ctx); /* started from a console or a script, not by the SCM */
    } else {
        rc = mmr_win_err_set(GetLastError(), "cannot connect to the Service Control Manager");
    }
    DeleteCriticalSection(&svc.lock);
    free(wname);
    memset(&svc, 0, sizeof(svc));
    return rc;
}

/* ---- registration --------------------------------------------------------- */

/* Sets the error for a failed SCM call, with what to do for the usual causes. */
static int scm_error(DWORD err, const char *what, const char *name)
{
    const char *hint = "";
    if (err == ERROR_ACCESS_DENIED)
        hint = " (run this as Administrator)";
    else if (err == ERROR_SERVICE_MARKED_FOR_DELETE)
        hint = " (an earlier removal is still pending: close the Services console and stop "
               "the service, then try again)";
    char buf[384];
    snprintf(buf, sizeof(buf), "%s%s%s%s", what, name ? " " : "", name ? name : "", hint);
    return mmr_win_err_set(err, buf);
}

/* "C:\Program Files\Mamori\mamori-agent.exe" plus the extra arguments. */
static int command_line(const struct mmr_service_spec *spec, wchar_t **out)
{
    wchar_t *exe = NULL;
    if (spec->exe_path) {
        exe = mmr_w_from_utf8(spec->exe_path);
        if (!exe)
            return mmr_err_wrap(MMR_EINVAL, "service program path");
    } else {
        DWORD cap = MAX_PATH;
        for (;;) {
            exe = mmr_realloc(exe, cap * sizeof(wchar_t));
            DWORD n = GetModuleFileNameW(NULL, exe, cap);
            if (n == 0) {
                free(exe);
                return mmr_win_err_set(GetLastError(), "cannot find this program's path");
            }
            if (n < cap)
                break;
            cap *= 2; /* truncated: a long path */
        }
    }
    wchar_t *args = NULL;
    if (spec->args && spec->args[0]) {
        args = mmr_w_from_utf8(spec->args);
        if (!args) {
            free(exe);
            return mmr_err_wrap(MMR_EINVAL, "service arguments");
        }
    }
    size_t exe_len = wcslen(exe), args_len = args ? wcslen(args) : 0;
    wchar_t *cmd = mmr_malloc((exe_len + args_len + 4) * sizeof(wchar_t));
    wchar_t *p = cmd;
    *p++ = L'"';
    memcpy(p, exe, exe_len * sizeof(wchar_t));
    p += exe_len;
    *p++ = L'"';
    if (args) {
        *p++ = L' ';
        memcpy(p, args, args_len * sizeof(wchar_t));
        p += args_len;
    }
    *p = L'\0';
    free(args);
    free(exe);
    *out = cmd;
    return 0;
}

/* Restart after 5 s, 30 s, then every 60 s; the count resets after a day
 * without failure. The flag makes a clean exit with a non-zero code (a
 * start-up failure) count as a failure too, not only a crash.
 * Wine's SCM accepts the actions without storing them and rejects the flag
 * with ERROR_INVALID_LEVEL; a real Windows SCM has both since Vista, so that
 * one answer is taken to mean "no recovery support" rather than an error. */
static int set_recovery(SC_HANDLE service, const char *name)
{
    SC_ACTION actions[] = {
        {SC_ACTION_RESTART, 5000},
        {SC_ACTION_RESTART, 30000},
        {SC_ACTION_RESTART, 60000},
    };
    SERVICE_FAILURE_ACTIONSW fa = {
        .dwResetPeriod = 86400,
        .cActions = sizeof(actions) / sizeof(actions[0]),
        .lpsaActions = actions,
    };
    if (!ChangeServiceConfig2W(service, SERVICE_CONFIG_FAILURE_ACTIONS, &fa))
        return scm_error(GetLastError(), "cannot set the recovery actions of service", name);
    SERVICE_FAILURE_ACTIONS_FLAG flag = {.fFailureActionsOnNonCrashFailures = TRUE};
    if (!ChangeServiceConfig2W(service, SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, &flag)) {
        DWORD err = GetLastError();
        if (err == ERROR_INVALID_LEVEL)
            return 0;
        return scm_error(err, "cannot make a failed exit trigger the recovery of service", name);
    }
    return 0;
}

static int set_description(SC_HANDLE service, const char *name, const char *description)
{
    if (!description)
        return 0;
    wchar_t *wdesc = mmr_w_from_utf8(description);
    if (!wdesc)
        return mmr_err_wrap(MMR_EINVAL, "service description");
    SERVICE_DESCRIPTIONW sd = {.lpDescription = wdesc};
    int rc = 0;
    if (!ChangeServiceConfig2W(service, SERVICE_CONFIG_DESCRIPTION, &sd))
        rc = scm_error(GetLastError(), "cannot set the description of service", name);
    free(wdesc);
    return rc;
}

/* Creates the service, or updates it to this registration when it exists. */
static int create_or_update(SC_HANDLE scm, const struct mmr_service_spec *spec,
                            const wchar_t *wname, const wchar_t *wdisplay, const wchar_t *cmd,
                            SC_HANDLE *out)
{
    const DWORD access = SERVICE_CHANGE_CONFIG | SERVICE_START | SERVICE_QUERY_CONFIG;
    SC_HANDLE service = OpenServiceW(scm, wname, access);
    if (!service && GetLastError() != ERROR_SERVICE_DOES_NOT_EXIST)
        return scm_error(GetLastError(), "cannot open service", spec->name);
    if (service) {
        if (!ChangeServiceConfigW(service, SERVICE_WIN32_OWN_PROCESS, SERVICE_AUTO_START,
                                  SERVICE_ERROR_NORMAL, cmd, NULL, NULL, NULL, L"LocalSystem",
                                  L"", wdisplay)) {
            int rc = scm_error(GetLastError(), "cannot update service", spec->name);
            CloseServiceHandle(service);
            return rc;
        }
        *out = service;
        return 0;
    }
    service = CreateServiceW(scm, wname, wdisplay, access, SERVICE_WIN32_OWN_PROCESS,
                             SERVICE_AUTO_START, SERVICE_ERROR_NORMAL, cmd, NULL, NULL, NULL,
                             NULL /* LocalSystem */, NULL);
    if (!service)
        return scm_error(GetLastError(), "cannot create service", spec->name);
    *out = service;
    return 0;
}

int mmr_service_install(const struct mmr_service_spec *spec)
{
    wchar_t *wname = mmr_w_from_utf8(spec->name);
    wchar_t *wdisplay = mmr_w_from_utf8(spec->display_name ? spec->display_name : spec->name);
    wchar_t *cmd = NULL;
    SC_HANDLE scm = NULL, service = NULL;
    int rc = 0;
    if (!wname || !wdisplay) {
        rc = mmr_err_wrap(MMR_EINVAL, "service name");
        goto out;
    }
    rc = command_line(spec, &cmd);
    if (rc < 0)
        goto out;
    scm = OpenSCManagerW(NULL, NULL, SC_MANAGER_CONNECT | SC_MANAGER_CREATE_SERVICE);
    if (!scm) {
        rc = scm_error(GetLastError(), "cannot open the Service Control Manager", NULL);
        goto out;
    }
    rc = create_or_update(scm, spec, wname, wdisplay, cmd, &service);
    if (rc == 0)
        rc = set_description(service, spec->name, spec->description);
    if (rc == 0)
        rc = set_recovery(service, spec->name);
out:
    if (service)
        CloseServiceHandle(service);
    if (scm)
        CloseServiceHandle(scm);
    free(cmd);
    free(wdisplay);
    free(wname);
    return rc;
}

/* Asks a running service to stop (once it accepts STOP: a starting service
 * does not yet) and waits for STOPPED. */
static int stop_and_wait(SC_HANDLE service, const char *name)
{
    ULONGLONG deadline = GetTickCount64() + UNINSTALL_WAIT_MS;
    bool asked = false;
    for (;;) {
        SERVICE_STATUS st;
        if (!QueryServiceStatus(service, &st))
            return scm_error(GetLastError(), "cannot query service", name);
        if (st.dwCurrentState == SERVICE_STOPPED)
            return 0;
        if (!asked && (st.dwControlsAccepted & SERVICE_ACCEPT_STOP)) {
            if (ControlService(service, SERVICE_CONTROL_STOP, &st)) {
                asked = true;
            } else {
                DWORD err = GetLastError();
                /* It stopped or started stopping meanwhile: keep waiting. */
                if (err != ERROR_SERVICE_NOT_ACTIVE && err != ERROR_SERVICE_CANNOT_ACCEPT_CTRL)
                    return scm_error(err, "cannot stop service", name);
            }
        }
        if (GetTickCount64() >= deadline)
            return mmr_err_set(MMR_ETIMEDOUT, "service %s did not stop within %d s", name,
                               UNINSTALL_WAIT_MS / 1000);
        Sleep(100);
    }
}

int mmr_service_uninstall(const char *name)
{
    wchar_t *wname = mmr_w_from_utf8(name);
    if (!wname)
        return mmr_err_wrap(MMR_EINVAL, "service name");
    SC_HANDLE scm = OpenSCManagerW(NULL, NULL, SC_MANAGER_CONNECT);
    SC_HANDLE service = NULL;
    int rc = 0;
    if (!scm) {
        rc = scm_error(GetLastError(), "cannot open the Service Control Manager", NULL);
        goto out;
    }
    service = OpenServiceW(scm, wname, SERVICE_STOP | SERVICE_QUERY_STATUS | DELETE);
    if (!service) {
        DWORD err = GetLastError();
        if (err != ERROR_SERVICE_DOES_NOT_EXIST)
            rc = scm_error(err, "cannot open service", name);
        goto out; /* not installed: nothing to remove */
    }
    int stopped = stop_and_wait(service, name);
    char why[256];
    snprintf(why, sizeof(why), "%s", mmr_err_msg());
    /* Delete even when the stop failed: the SCM removes the entry once the
     * service stops and the last handle to it closes. */
    if (!DeleteService(service) && GetLastError() != ERROR_SERVICE_MARKED_FOR_DELETE) {
        rc = scm_error(GetLastError(), "cannot remove service", name);
        goto out;
    }
    if (stopped < 0)
        rc = mmr_err_set(stopped, "%s; it is marked for removal and goes away when it stops",
                         why);
out:
    if (service)
        CloseServiceHandle(service);
    if (scm)
        CloseServiceHandle(scm);
    free(wname);
    return rc;
}
