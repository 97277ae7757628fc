/* The Windows test runner behind test/wincrit/criterion/criterion.h: main() of every test
 * program, running each test in a fresh child process of the same .exe with a timeout
 * and printing a Criterion-like report. Usage: prog [--list] [--jobs N] [--filter GLOB] */
#ifndef __USE_MINGW_ANSI_STDIO
#define __USE_MINGW_ANSI_STDIO 1
#endif
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif

#include <criterion/criterion.h>

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <windows.h>

/* The hidden argument that makes a process the child running one test. */
#define CHILD_ARG         "--wcr-child="
#define DEFAULT_TIMEOUT_S 60.0
/* Exit codes of a child: 0 when the test passed; FAILED after failed assertions;
 * TIMEOUT is what the parent terminates an overdue child with. Values no test uses. */
#define EXIT_FAILED  0x6D6D0001u
#define EXIT_TIMEOUT 0x6D6D0002u
/* abort() in the Microsoft C runtime raises SIGABRT, whose default action exits with 3. */
#define EXIT_ABORT 3u

static struct wcr_test *tests_head;
static struct wcr_suite *suites_head;

void wcr_register_test(struct wcr_test *test)
{
    test->next = tests_head;
    tests_head = test;
}

void wcr_register_suite(struct wcr_suite *suite)
{
    suite->next = suites_head;
    suites_head = suite;
}

/* ---- the child: one test ------------------------------------------------------------ */

static jmp_buf test_jmp;
static DWORD test_thread;
static volatile LONG test_failed;
static CRITICAL_SECTION print_lock;

int wcr_strcmp_(const char *a, const char *b)
{
    if (!a || !b)
        return 1;
    return strcmp(a, b);
}

/* Prints text with prefix before every line, as one block even with several threads. */
static void print_block(const char *prefix, const char *text)
{
    EnterCriticalSection(&print_lock);
    for (;;) {
        const char *nl = strchr(text, '\n');
        int n = nl ? (int)(nl - text) : (int)strlen(text);
        fprintf(stderr, "%s%.*s\n", prefix, n, text);
        if (!nl || !nl[1])
            break;
        text = nl + 1;
    }
    fflush(stderr);
    LeaveCriticalSection(&print_lock);
}

/* Formats fmt into a new string. */
static char *format_message(const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        n = 0;
    char *msg = malloc((size_t)n + 1);
    if (!msg) {
        fputs("wincrit: out of memory\n", stderr);
        abort();
    }
    vsnprintf(msg, (size_t)n + 1, fmt, ap);
    return msg;
}

static void format_value(char *buf, size_t len, const struct wcr_value *v)
{
    switch (v->kind) {
    case WCR_SIGNED:
        snprintf(buf, len, "%lld", v->i);
        break;
    case WCR_UNSIGNED:
        snprintf(buf, len, "%llu", v->u);
        break;
    case WCR_FLOAT:
        snprintf(buf, len, "%.17Lg", v->f);
        break;
    case WCR_POINTER:
        if (v->p)
            snprintf(buf, len, "0x%llx", (unsigned long long)(uintptr_t)v->p);
        else
            snprintf(buf, len, "NULL");
        break;
    default:
        snprintf(buf, len, "?");
        break;
    }
}

/* A growing text for one report, printed as one block. */
struct text {
    char *data;
    size_t len;
};

static void text_append(struct text *t, const char *s, size_t n)
{
    char *p = realloc(t->data, t->len + n + 1);
    if (!p) {
        fputs("wincrit: out of memory\n", stderr);
        abort();
    }
    memcpy(p + t->len, s, n);
    t->data = p;
    t->len += n;
    t->data[t->len] = '\0';
}

/* Appends each line of s indented by two spaces. */
static void text_append_lines(struct text *t, const char *s)
{
    while (*s) {
        const char *nl = strchr(s, '\n');
        size_t n = nl ? (size_t)(nl - s) : strlen(s);
        text_append(t, "  ", 2);
        text_append(t, s, n);
        text_append(t, "\n", 1);
        s += nl ? n + 1 : n;
    }
}

/* One failed assertion: where, the caller's message, the expression that was false (or
 * Criterion's "conditions were not met" for cr_assert_fail without a message), and the
 * values when there are any. */
static void report(const char *file, int line, const char *expr, const char *details,
                   const char *fmt, va_list ap)
{
    InterlockedExchange(&test_failed, 1);
    /* The assertion macros' formats start with a space of their own (criterion.h). */
    char *msg = format_message(fmt + 1, ap);
    char head[64];
    struct text t = {0};
    text_append(&t, file, strlen(file));
    snprintf(head, sizeof(head), ":%d: Assertion Failed\n", line);
    text_append(&t, head, strlen(head));
    text_append_lines(&t, msg);
    if (expr) {
        text_append(&t, "  The expression ", 17);
        text_append(&t, expr, strlen(expr));
        text_append(&t, " is false.\n", 11);
    } else if (!msg[0]) {
        text_append_lines(&t, "The conditions for this assertion were not met.");
    }
    if (details)
        text_append_lines(&t, details);
    print_block("[----] ", t.data);
    free(t.data);
    free(msg);
}

void wcr_report_(const char *file, int line, const char *expr, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    report(file, line, expr, NULL, fmt, ap);
    va_end(ap);
}

void wcr_report_cmp_(const char *file, int line, const char *expr, struct wcr_value actual,
                     struct wcr_value expected, const char *fmt, ...)
{
    char a[64], b[64], details[160];
    format_value(a, sizeof(a), &actual);
    format_value(b, sizeof(b), &expected);
    snprintf(details, sizeof(details), "left:  %s\nright: %s", a, b);
    va_list ap;
    va_start(ap, fmt);
    report(file, line, expr, details, fmt, ap);
    va_end(ap);
}

void wcr_report_str_(const char *file, int line, const char *expr, const char *actual,
                     const char *expected, const char *fmt, ...)
{
    const char *a = actual ? actual : "(null)";
    const char *b = expected ? expected : "(null)";
    size_t cap = strlen(a) + strlen(b) + 24;
    char *details = malloc(cap);
    if (!details) {
        fputs("wincrit: out of memory\n", stderr);
        abort();
    }
    snprintf(details, cap, "left:  \"%s\"\nright: \"%s\"", a, b);
    va_list ap;
    va_start(ap, fmt);
    report(file, line, expr, details, fmt, ap);
    va_end(ap);
    free(details);
}

_Noreturn void wcr_abort_test_(void)
{
    if (GetCurrentThreadId() == test_thread)
        longjmp(test_jmp, 1);
    /* A failed cr_assert on another thread: there is no frame to return to, so the whole
     * process ends (Criterion's longjmp from another thread would be undefined). */
    fflush(NULL);
    ExitProcess(EXIT_FAILED);
}

void wcr_log_(enum wcr_log_level level, const char *fmt, ...)
{
    static const char *const prefix[] = {"[----] ", "[WARN] ", "[ERR ] "};
    va_list ap;
    va_start(ap, fmt);
    char *msg = format_message(fmt, ap);
    va_end(ap);
    print_block(prefix[level], msg);
    free(msg);
}

/* ---- tests, their options, and selection --------------------------------------------- */

/* A test with its suite's options folded in. */
struct entry {
    struct wcr_test *test;
    struct wcr_options opts;
    char id[256]; /* "suite/name" */
};

static struct entry *entries;
static size_t n_entries;

static int compare_entries(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    int c = strcmp(x->test->suite, y->test->suite);
    return c ? c : strcmp(x->test->name, y->test->name);
}

static void merge_options(struct wcr_options *out, const struct wcr_options *test,
                          const struct wcr_options *suite)
{
    *out = *test;
    if (!suite)
        return;
    if (!out->init)
        out->init = suite->init;
    if (!out->fini)
        out->fini = suite->fini;
    if (out->timeout <= 0)
        out->timeout = suite->timeout;
    if (!out->signal)
        out->signal = suite->signal;
    if (!out->exit_code)
        out->exit_code = suite->exit_code;
    out->disabled = out->disabled || suite->disabled;
    if (!out->description)
        out->description = suite->description;
}

static void collect_tests(void)
{
    for (struct wcr_test *t = tests_head; t; t = t->next)
        n_entries++;
    entries = calloc(n_entries ? n_entries : 1, sizeof(*entries));
    if (!entries) {
        fputs("wincrit: out of memory\n", stderr);
        exit(2);
    }
    size_t i = 0;
    for (struct wcr_test *t = tests_head; t; t = t->next, i++) {
        const struct wcr_suite *suite = NULL;
        for (const struct wcr_suite *s = suites_head; s; s = s->next)
            if (strcmp(s->name, t->suite) == 0)
                suite = s;
        entries[i].test = t;
        merge_options(&entries[i].opts, &t->opts, suite ? &suite->opts : NULL);
        if (entries[i].opts.timeout <= 0)
            entries[i].opts.timeout = DEFAULT_TIMEOUT_S;
        snprintf(entries[i].id, sizeof(entries[i].id), "%s/%s", t->suite, t->name);
    }
    qsort(entries, n_entries, sizeof(*entries), compare_entries);
}

/* Criterion-style filter: '*' matches any run of characters, '?' any one. */
static bool glob_match(const char *pat, const char *s)
{
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*pat == '*') {
            star = pat++;
            resume = s;
        } else if (*pat == '?' || *pat == *s) {
            pat++;
            s++;
        } else if (star) {
            pat = star + 1;
            s = ++resume;
        } else {
            return false;
        }
    }
    while (*pat == '*')
        pat++;
    return *pat == '\0';
}

static int run_child(const char *id)
{
    const struct entry *e = NULL;
    for (size_t i = 0; i < n_entries && !e; i++)
        if (strcmp(entries[i].id, id) == 0)
            e = &entries[i];
    if (!e) {
        fprintf(stderr, "wincrit: no test named %s\n", id);
        return 2;
    }
    /* A crash ends the process with its exception code instead of a dialog box. */
    SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX | SEM_NOOPENFILEERRORBOX);
    setvbuf(stdout, NULL, _IONBF, 0);
    setvbuf(stderr, NULL, _IONBF, 0);
    test_thread = GetCurrentThreadId();

    /* As in Criterion: a failed cr_assert in .init skips the test; .fini always runs. */
    if (!setjmp(test_jmp)) {
        if (e->opts.init)
            e->opts.init();
        e->test->fn();
    }
    if (!setjmp(test_jmp)) {
        if (e->opts.fini)
            e->opts.fini();
    }
    fflush(NULL);
    return test_failed ? (int)EXIT_FAILED : 0;
}

/* ---- the parent: children, timeouts, the report --------------------------------------- */

struct slot {
    const struct entry *e;
    HANDLE process;
    HANDLE output; /* the child's stdout and stderr, a temporary file deleted on close */
    ULONGLONG started;
    ULONGLONG deadline;
};

struct totals {
    unsigned tested, passing, failing, crashing, skipped;
};

static const char *exception_name(DWORD code)
{
    switch (code) {
    case 0xC0000005:
        return "access violation";
    case 0xC00000FD:
        return "stack overflow";
    case 0xC0000094:
        return "integer division by zero";
    case 0xC000001D:
        return "illegal instruction";
    case 0xC0000409:
        return "stack buffer overrun / fast fail";
    case 0xC0000374:
        return "heap corruption";
    case 0x80000003:
        return "breakpoint";
    default:
        return "exception";
    }
}

/* A job that ends every child when the runner ends, even when it is killed (ctest's own
 * timeout): no test process outlives its runner. NULL when jobs are unavailable; the
 * children then only end by themselves or by their timeout. */
static HANDLE make_job(void)
{
    HANDLE job = CreateJobObjectW(NULL, NULL);
    if (!job)
        return NULL;
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION limits = {0};
    limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
    if (!SetInformationJobObject(job, JobObjectExtendedLimitInformation, &limits, sizeof(limits))) {
        CloseHandle(job);
        return NULL;
    }
    return job;
}

static HANDLE open_output_file(void)
{
    wchar_t dir[MAX_PATH + 1], path[MAX_PATH + 1];
    DWORD n = GetTempPathW(MAX_PATH + 1, dir);
    if (n == 0 || n > MAX_PATH || GetTempFileNameW(dir, L"wcr", 0, path) == 0)
        return INVALID_HANDLE_VALUE;
    return CreateFileW(path, GENERIC_READ | GENERIC_WRITE,
                       FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, NULL, CREATE_ALWAYS,
                       FILE_ATTRIBUTE_TEMPORARY | FILE_FLAG_DELETE_ON_CLOSE, NULL);
}

static bool start_child(const wchar_t *exe, HANDLE job, const struct entry *e, struct slot *s)
{
    wchar_t cmd[MAX_PATH + 600], wid[sizeof(e->id)];
    if (MultiByteToWideChar(CP_UTF8, 0, e->id, -1, wid, (int)(sizeof(wid) / sizeof(wid[0]))) == 0)
        return false;
    _snwprintf(cmd, sizeof(cmd) / sizeof(cmd[0]), L"\"%ls\" " CHILD_ARG "%ls", exe, wid);
    cmd[sizeof(cmd) / sizeof(cmd[0]) - 1] = L'\0';

    s->output = open_output_file();
    if (s->output == INVALID_HANDLE_VALUE)
        return false;
    /* The parent starts children one at a time from one thread: the output handle is
     * inheritable only while its own child is created, so no other child holds it. */
    SetHandleInformation(s->output, HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT);
    STARTUPINFOW si = {.cb = sizeof(si),
                       .dwFlags = STARTF_USESTDHANDLES,
                       .hStdInput = NULL,
                       .hStdOutput = s->output,
                       .hStdError = s->output};
    PROCESS_INFORMATION pi;
    /* Suspended until it is in the job, so that not even its first instructions run
     * outside it. */
    BOOL ok = CreateProcessW(exe, cmd, NULL, NULL, TRUE, CREATE_SUSPENDED, NULL, NULL, &si, &pi);
    SetHandleInformation(s->output, HANDLE_FLAG_INHERIT, 0);
    if (!ok) {
        CloseHandle(s->output);
        return false;
    }
    if (job)
        AssignProcessToJobObject(job, pi.hProcess);
    ResumeThread(pi.hThread);
    CloseHandle(pi.hThread);
    s->e = e;
    s->process = pi.hProcess;
    s->started = GetTickCount64();
    s->deadline = s->started + (ULONGLONG)(e->opts.timeout * 1000.0);
    return true;
}

/* Copies what the child wrote to our stderr. */
static void print_output(HANDLE output)
{
    LARGE_INTEGER zero = {0};
    if (!SetFilePointerEx(output, zero, NULL, FILE_BEGIN))
        return;
    char buf[8192];
    DWORD got;
    while (ReadFile(output, buf, sizeof(buf), &got, NULL) && got > 0)
        fwrite(buf, 1, got, stderr);
    fflush(stderr);
}

/* Decides the test's fate from how its child ended and prints the line for it. */
static void finish_child(struct slot *s, bool timed_out, struct totals *t)
{
    DWORD code = 0;
    if (!GetExitCodeProcess(s->process, &code))
        code = EXIT_FAILED;
    double secs = (double)(GetTickCount64() - s->started) / 1000.0;
    print_output(s->output);
    CloseHandle(s->output);
    CloseHandle(s->process);

    const struct entry *e = s->e;
    const char *suite = e->test->suite, *name = e->test->name;
    bool expect_abort = e->opts.signal == SIGABRT;
    t->tested++;
    if (timed_out) {
        fprintf(stderr, "[----] %s::%s: Timed out. (%.2fs)\n", suite, name, e->opts.timeout);
        fprintf(stderr, "[FAIL] %s::%s: (%.2fs)\n", suite, name, secs);
        t->failing++;
    } else if (e->opts.signal && !expect_abort) {
        fprintf(stderr, "[FAIL] %s::%s: .signal = %d: only SIGABRT is supported on Windows\n",
                suite, name, e->opts.signal);
        t->failing++;
    } else if (code == EXIT_FAILED) {
        fprintf(stderr, "[FAIL] %s::%s: (%.2fs)\n", suite, name, secs);
        t->failing++;
    } else if (expect_abort && code == EXIT_ABORT) {
        fprintf(stderr, "[PASS] %s::%s: aborted as expected (%.2fs)\n", suite, name, secs);
        t->passing++;
    } else if (expect_abort) {
        fprintf(stderr, "[----] %s::%s: expected to abort, exit code 0x%lx\n", suite, name,
                (unsigned long)code);
        fprintf(stderr, "[FAIL] %s::%s: (%.2fs)\n", suite, name, secs);
        t->failing++;
    } else if (code == (DWORD)e->opts.exit_code) {
        fprintf(stderr, "[PASS] %s::%s: (%.2fs)\n", suite, name, secs);
        t->passing++;
    } else if (code >= 0xC0000000u || code == 0x80000003u || code == EXIT_ABORT) {
        const char *what = code == EXIT_ABORT ? "abort()" : exception_name(code);
        fprintf(stderr, "[----] %s:%d: Unexpected signal caught below this line!\n", e->test->file,
                e->test->line);
        fprintf(stderr, "[FAIL] %s::%s: CRASH! (%s, exit code 0x%lx)\n", suite, name, what,
                (unsigned long)code);
        t->failing++;
        t->crashing++;
    } else {
        fprintf(stderr, "[----] %s::%s: exited with code %lu, expected %d\n", suite, name,
                (unsigned long)code, e->opts.exit_code);
        fprintf(stderr, "[FAIL] %s::%s: (%.2fs)\n", suite, name, secs);
        t->failing++;
    }
    fflush(stderr);
    s->e = NULL;
}

static int run_all(const char *filter, unsigned jobs)
{
    wchar_t exe[32768];
    DWORD n = GetModuleFileNameW(NULL, exe, sizeof(exe) / sizeof(exe[0]));
    if (n == 0 || n >= sizeof(exe) / sizeof(exe[0])) {
        fprintf(stderr, "wincrit: GetModuleFileNameW failed (%lu)\n", GetLastError());
        return 2;
    }
    HANDLE job = make_job();
    struct slot slots[MAXIMUM_WAIT_OBJECTS];
    memset(slots, 0, sizeof(slots));
    struct totals t = {0};
    size_t next = 0;
    unsigned running = 0;

    for (;;) {
        while (running < jobs && next < n_entries) {
            const struct entry *e = &entries[next++];
            if (filter && !glob_match(filter, e->id))
                continue;
            if (e->opts.disabled) {
                fprintf(stderr, "[SKIP] %s::%s: Test is disabled\n", e->test->suite, e->test->name);
                t.skipped++;
                continue;
            }
            struct slot *s = slots;
            while (s->e)
                s++;
            if (!start_child(exe, job, e, s)) {
                fprintf(stderr, "[FAIL] %s::%s: could not start the test process (%lu)\n",
                        e->test->suite, e->test->name, GetLastError());
                t.tested++;
                t.failing++;
                t.crashing++;
                continue;
            }
            running++;
        }
        if (running == 0)
            break;

        HANDLE handles[MAXIMUM_WAIT_OBJECTS];
        struct slot *owners[MAXIMUM_WAIT_OBJECTS];
        DWORD count = 0;
        ULONGLONG now = GetTickCount64(), first_deadline = UINT64_MAX;
        for (unsigned i = 0; i < jobs; i++) {
            if (!slots[i].e)
                continue;
            handles[count] = slots[i].process;
            owners[count++] = &slots[i];
            if (slots[i].deadline < first_deadline)
                first_deadline = slots[i].deadline;
        }
        DWORD wait = first_deadline <= now ? 0 : (DWORD)(first_deadline - now);
        DWORD r = WaitForMultipleObjects(count, handles, FALSE, wait);
        if (r < WAIT_OBJECT_0 + count) {
            finish_child(owners[r - WAIT_OBJECT_0], false, &t);
            running--;
        } else if (r == WAIT_TIMEOUT) {
            now = GetTickCount64();
            for (DWORD i = 0; i < count; i++) {
                if (owners[i]->deadline > now)
                    continue;
                TerminateProcess(owners[i]->process, EXIT_TIMEOUT);
                WaitForSingleObject(owners[i]->process, INFINITE);
                finish_child(owners[i], true, &t);
                running--;
            }
        } else {
            fprintf(stderr, "wincrit: WaitForMultipleObjects failed (%lu)\n", GetLastError());
            if (job)
                CloseHandle(job);
            return 2;
        }
    }
    if (job)
        CloseHandle(job);
    fprintf(stderr, "[====] Synthesis: Tested: %u | Passing: %u | Failing: %u | Crashing: %u",
            t.tested, t.passing, t.failing, t.crashing);
    if (t.skipped)
        fprintf(stderr, " | Skipped: %u", t.skipped);
    fprintf(stderr, "\n");
    return t.failing ? 1 : 0;
}

static void list_tests(const char *filter)
{
    const char *suite = NULL;
    for (size_t i = 0; i < n_entries; i++) {
        const struct entry *e = &entries[i];
        if (filter && !glob_match(filter, e->id))
            continue;
        if (!suite || strcmp(suite, e->test->suite) != 0) {
            suite = e->test->suite;
            printf("%s:\n", suite);
        }
        printf("    %s%s%s%s\n", e->test->name, e->opts.disabled ? " (disabled)" : "",
               e->opts.description ? ": " : "", e->opts.description ? e->opts.description : "");
    }
}

static int usage(const char *prog, int code)
{
    fprintf(code ? stderr : stdout,
            "usage: %s [--list] [--jobs N] [--filter SUITE/NAME-GLOB]\n"
            "Runs each test in its own process (default timeout %.0f s, 1 job).\n",
            prog, DEFAULT_TIMEOUT_S);
    return code;
}

/* "--opt=value" or "--opt value"; NULL when argv[*i] is not opt. */
static const char *option_value(int argc, char **argv, int *i, const char *opt)
{
    size_t n = strlen(opt);
    if (strncmp(argv[*i], opt, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] == '\0' && *i + 1 < argc)
        return argv[++*i];
    return NULL;
}

int main(int argc, char **argv)
{
    InitializeCriticalSection(&print_lock);
    collect_tests();

    const char *filter = NULL, *value;
    unsigned jobs = 1;
    bool list = false;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], CHILD_ARG, strlen(CHILD_ARG)) == 0)
            return run_child(argv[i] + strlen(CHILD_ARG));
        if (strcmp(argv[i], "--list") == 0) {
            list = true;
        } else if ((value = option_value(argc, argv, &i, "--filter"))) {
            filter = value;
        } else if ((value = option_value(argc, argv, &i, "--jobs")) ||
                   (strncmp(argv[i], "-j", 2) == 0 && argv[i][2] && (value = argv[i] + 2))) {
            char *end;
            unsigned long v = strtoul(value, &end, 10);
            if (*end || end == value)
                return usage(argv[0], 2);
            if (v == 0) {
                SYSTEM_INFO si;
                GetSystemInfo(&si);
                v = si.dwNumberOfProcessors;
            }
            jobs = v > MAXIMUM_WAIT_OBJECTS ? MAXIMUM_WAIT_OBJECTS : (unsigned)v;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            return usage(argv[0], 0);
        } else {
            fprintf(stderr, "%s: unknown argument '%s'\n", argv[0], argv[i]);
            return usage(argv[0], 2);
        }
    }
    if (list) {
        list_tests(filter);
        return 0;
    }
    return run_all(filter, jobs);
}
