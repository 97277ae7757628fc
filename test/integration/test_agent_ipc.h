/* The fixture of the agent IPC integration test: test_agent_ipc.c holds the
 * portable tests and this fixture, test_agent_ipc_posix.c / _win32.c the
 * tests and the steps (users, signals, file modes, endpoints) of one system. */
#ifndef MMR_TEST_AGENT_IPC_H
#define MMR_TEST_AGENT_IPC_H

#include <stdbool.h>

#include "proc.h"

#define TOKEN        "mmr1.SECRET-ENROLL-TOKEN-0123456789abcdef"
#define KEY_MATERIAL "MHcCAQEEIDeadBeefPrivateKeyMaterialThatMustNeverLeave"

#define IPC_PATH_MAX 512

extern char ipc_dir[IPC_PATH_MAX];      /* the agent's data directory */
extern char ipc_out_dir[IPC_PATH_MAX];  /* outside it: support bundles */
extern char ipc_endpoint[IPC_PATH_MAX]; /* the socket path or pipe name */
extern struct proc *ipc_agent;          /* the running agent, or NULL */

/* Timeouts grow tenfold under MMR_TEST_WRAPPER (valgrind). */
int ipc_ms(int normal_ms);

/* Starts `mamori-agent -f --data-dir DIR` and waits until it answers status
 * (asserts). */
void ipc_start_agent(void);

/* ---- test_agent_ipc_posix.c / test_agent_ipc_win32.c --------------------------- */

/* Called by the suite's setup once ipc_dir exists: sets ipc_out_dir and
 * ipc_endpoint and returns what agent.conf's [agent] section must hold for
 * that endpoint (allocated, possibly empty). */
char *ipc_os_setup(void);

/* Stops ipc_agent and reaps it: SIGTERM and a clean exit in time on POSIX;
 * TerminateProcess on Windows, which has no SIGTERM (the clean stop is the
 * service test's business there). */
void ipc_os_stop_agent(void);

/* Asks the running agent to read its configuration again after the test has
 * broken it: SIGHUP on POSIX (nothing answers); `mamorictl reload` on
 * Windows, which must report the refusal with the file and line. */
void ipc_os_reload_broken_config(void);

/* The agent's state (agent.db, the data directory) is owner-only. */
void ipc_os_expect_state_private(void);

/* The support bundle at path is owner-only. */
void ipc_os_expect_bundle_private(const char *path);

#endif
