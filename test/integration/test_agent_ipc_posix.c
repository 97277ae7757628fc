/* Integration, POSIX only: the agent's socket in a world-reachable run_dir,
 * signals (SIGTERM stops, SIGHUP reloads), file modes, and other users
 * (`nobody`) as clients of the agent and as an impostor agent. */
#include <criterion/criterion.h>

#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shared/err.h"
#include "shared/ipc.h"
#include "shared/json.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "test_agent_ipc.h"

char *ipc_os_setup(void)
{
    /* The data directory is root's alone; the socket lives where others reach it. */
    snprintf(ipc_out_dir, sizeof(ipc_out_dir), "%s-run", ipc_dir);
    cr_assert_eq(mkdir(ipc_out_dir, 0755), 0, "mkdir %s", ipc_out_dir);
    chmod(ipc_out_dir, 0755);
    snprintf(ipc_endpoint, sizeof(ipc_endpoint), "%s/agent.sock", ipc_out_dir);
    chmod(ipc_dir, 0700);
    return mmr_asprintf("[agent]\nrun_dir = %s\n\n", ipc_out_dir);
}

/* Stops the agent with SIGTERM and checks it exits cleanly and in time. */
void ipc_os_stop_agent(void)
{
    struct proc_result res;
    uint64_t t0 = mmr_time_mono_ms();
    proc_kill(ipc_agent, SIGTERM);
    bool in_time = proc_wait(ipc_agent, ipc_ms(2000), &res);
    ipc_agent = NULL;
    uint64_t took = mmr_time_mono_ms() - t0;
    cr_expect(in_time, "agent did not stop within 2 s of SIGTERM");
    cr_expect_eq(res.exit_code, 0, "agent exit code %d (signal %d); stderr:\n%s", res.exit_code,
                 res.term_signal, res.err);
    cr_log_info("agent stopped in %llu ms", (unsigned long long)took);
    proc_result_free(&res);
}

void ipc_os_reload_broken_config(void)
{
    proc_kill(ipc_agent, SIGHUP);
}

void ipc_os_expect_state_private(void)
{
    char *db = mmr_path_join(ipc_dir, "agent.db");
    struct stat sb;
    cr_assert_eq(stat(db, &sb), 0);
    cr_expect_eq(sb.st_mode & 0777, 0600, "agent.db mode %o", sb.st_mode & 0777);
    cr_assert_eq(stat(ipc_dir, &sb), 0);
    cr_expect_eq(sb.st_mode & 077, 0, "data dir mode %o", sb.st_mode & 0777);
    free(db);
}

void ipc_os_expect_bundle_private(const char *path)
{
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_expect_eq(sb.st_mode & 077, 0, "bundle is readable by others");
}

Test(agent, admin_verbs_need_admin)
{
    ipc_start_agent();
    struct passwd *nobody = getpwnam("nobody");
    cr_assert(nobody, "no 'nobody' user on this machine");
    struct proc_opts as_nobody = {.uid = nobody->pw_uid, .gid = nobody->pw_gid, .set_user = true};
    const char *status_argv[] = {MMR_CTL_BIN, "--socket", ipc_endpoint, "status", NULL};
    const char *reload_argv[] = {MMR_CTL_BIN, "--socket", ipc_endpoint, "reload", NULL};
    struct proc_result res;

    proc_run(status_argv, &as_nobody, ipc_ms(10000), &res);
    cr_expect_eq(res.exit_code, 0, "any user may read status; stderr: %s", res.err);
    proc_result_free(&res);

    proc_run(reload_argv, &as_nobody, ipc_ms(10000), &res);
    cr_expect_eq(res.exit_code, 3, "exit %d stderr: %s", res.exit_code, res.err);
    cr_expect(strstr(res.err, "administrators"), "stderr: %s", res.err);
    proc_result_free(&res);

    proc_run(reload_argv, NULL, ipc_ms(10000), &res);
    cr_expect_eq(res.exit_code, 0, "root may reload; stderr: %s", res.err);
    proc_result_free(&res);
}

/* A "agent" run by an ordinary user is an impostor to everybody else: the
 * client checks who serves the endpoint before it sends anything. */
Test(agent, client_refuses_an_agent_run_by_another_user)
{
    struct passwd *nobody = getpwnam("nobody");
    cr_assert(nobody, "no 'nobody' user on this machine");
    char *cmd = mmr_asprintf("chown -R %u:%u '%s' '%s'", (unsigned)nobody->pw_uid,
                             (unsigned)nobody->pw_gid, ipc_dir, ipc_out_dir);
    cr_assert_eq(system(cmd), 0);
    free(cmd);
    struct proc_opts as_nobody = {.uid = nobody->pw_uid, .gid = nobody->pw_gid, .set_user = true};
    const char *agent_argv[] = {MMR_AGENT_BIN, "-f", "--data-dir", ipc_dir, NULL};
    ipc_agent = proc_start(agent_argv, &as_nobody);
    const char *status_argv[] = {MMR_CTL_BIN, "--socket", ipc_endpoint, "status", NULL};
    struct proc_result res = {0};
    bool up = false;
    for (int i = 0; i < ipc_ms(10000) / 100 && !up; i++) {
        proc_run(status_argv, &as_nobody, ipc_ms(10000), &res);
        up = res.exit_code == 0; /* its own user trusts it */
        proc_result_free(&res);
        if (!up)
            usleep(100 * 1000);
    }
    cr_assert(up, "the agent run by nobody did not answer nobody");

    proc_run(status_argv, NULL, ipc_ms(10000), &res);
    cr_expect_neq(res.exit_code, 0, "root talked to an agent run by nobody: %s", res.out);
    cr_expect(strstr(res.err, "refusing") && strstr(res.err, "nobody"), "stderr: %s", res.err);
    proc_result_free(&res);
    json_t *st = NULL;
    cr_expect_eq(mmr_ipc_call(ipc_endpoint, "status", NULL, 5000, &st), MMR_EPERM, "%s",
                 mmr_err_msg());
    json_decref(st);
}
