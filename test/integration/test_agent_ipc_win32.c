/* Integration, Windows steps of the agent IPC test: the named pipe derived
 * from the data directory, a hard stop (no SIGTERM here), `mamorictl reload`
 * instead of SIGHUP, and owner-only access lists instead of file modes. */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "test/unit/testutil.h"
#include "test_agent_ipc.h"

char *ipc_os_setup(void)
{
    /* Named pipes are not files: the agent names its pipe after the data
     * directory (no run_dir), and mamorictl --data-dir finds it the same way. */
    char *name = NULL;
    cr_assert_eq(mmr_ipc_endpoint(ipc_dir, &name), 0, "%s", mmr_err_msg());
    cr_assert_lt(strlen(name), sizeof(ipc_endpoint));
    strcpy(ipc_endpoint, name);
    free(name);
    mmr_test_mkdtemp("mmr-it-out", ipc_out_dir, sizeof(ipc_out_dir));
    return mmr_strdup("");
}

/* libuv turns every signal but 0 into TerminateProcess: the exit code is not
 * the agent's, so only the time it took to go is checked. */
void ipc_os_stop_agent(void)
{
    struct proc_result res;
    proc_kill(ipc_agent, SIGTERM);
    bool in_time = proc_wait(ipc_agent, ipc_ms(5000), &res);
    ipc_agent = NULL;
    cr_expect(in_time, "agent did not go after TerminateProcess");
    proc_result_free(&res);
}

/* The running configuration stays, and the administrator hears why. */
void ipc_os_reload_broken_config(void)
{
    const char *argv[] = {MMR_CTL_BIN, "--socket", ipc_endpoint, "reload", NULL};
    struct proc_result res;
    proc_run(argv, NULL, ipc_ms(10000), &res);
    cr_expect_eq(res.exit_code, 4, "reload: exit %d, stdout: %s, stderr: %s", res.exit_code,
                 res.out, res.err);
    cr_expect(strstr(res.err, "agent.conf:1"), "stderr: %s", res.err);
    proc_result_free(&res);
}

static void expect_private(const char *path, const char *what)
{
    bool is_private = false;
    cr_assert_eq(mmr_file_is_private(path, &is_private), 0, "%s", mmr_err_msg());
    cr_expect(is_private, "%s %s is open to others", what, path);
}

void ipc_os_expect_state_private(void)
{
    char *db = mmr_path_join(ipc_dir, "agent.db");
    expect_private(db, "agent.db");
    expect_private(ipc_dir, "the data directory");
    free(db);
}

void ipc_os_expect_bundle_private(const char *path)
{
    expect_private(path, "the bundle");
}
