/* Test helper: start real programs (the agent, mamorictl) with libuv's
 * process API, capture their output, signal them and wait with timeouts.
 * MMR_TEST_WRAPPER (e.g. "valgrind --leak-check=full --error-exitcode=99")
 * is put in front of every command. */
#ifndef MMR_TEST_PROC_H
#define MMR_TEST_PROC_H

#include <stdbool.h>
#include <stdint.h>

struct proc;

struct proc_result {
    int exit_code;   /* -1 when killed by a signal */
    int term_signal;
    char *out;       /* stdout, NUL-terminated */
    char *err;       /* stderr */
    bool timed_out;
};

struct proc_opts {
    uint32_t uid, gid; /* run as this user when set_user */
    bool set_user;
    bool no_wrapper;   /* never run under MMR_TEST_WRAPPER */
};

/* Runs argv (NULL-terminated) to completion. */
void proc_run(const char *const argv[], const struct proc_opts *opts, int timeout_ms,
              struct proc_result *res);
void proc_result_free(struct proc_result *res);

/* Starts argv in the background; output is collected until proc_wait. */
struct proc *proc_start(const char *const argv[], const struct proc_opts *opts);
int proc_kill(struct proc *p, int signum);
/* Waits for exit; returns false on timeout (the process is then killed). */
bool proc_wait(struct proc *p, int timeout_ms, struct proc_result *res);
int64_t proc_pid(const struct proc *p);

/* True when MMR_TEST_WRAPPER is set (timeouts should be generous). */
bool proc_wrapped(void);

#endif
