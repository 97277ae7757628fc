/* End to end across systems: the native Linux mamori-server on 127.0.0.1 and
 * the Windows mamori-agent.exe and mamorictl.exe under Wine. The agent's data
 * directory lies under a folder named テスト; it enrolls with a token, checks
 * in over mTLS, and the server stores selftest events exactly once, across a
 * hard kill of the agent. MMR_WIN_BIN_DIR names the Windows build tree
 * (scripts/windows/run-tests sets it, with the Wine prefix). */
#include <criterion/criterion.h>

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleet.h"
#include "shared/json.h"
#include "shared/mem.h"
#include "shared/platform.h"

#define SELFTEST "agent.selftest"

static struct fleet fl;
static struct fleet_server srv;
static struct fleet_agent agent;
static char agent_exe[512], ctl_exe[512];
static char win_dir[FLEET_PATH_MAX + 8]; /* the data directory as Windows sees it */

static void setup(void)
{
    const char *bin = getenv("MMR_WIN_BIN_DIR");
    cr_assert(bin && bin[0], "MMR_WIN_BIN_DIR is not set: run this through make test-windows");
    snprintf(agent_exe, sizeof(agent_exe), "%s/agent/mamori-agent.exe", bin);
    snprintf(ctl_exe, sizeof(ctl_exe), "%s/agent/mamorictl.exe", bin);
    cr_assert(mmr_path_exists(agent_exe), "no %s: run make windows", agent_exe);
    fleet_init(&fl);
    fleet_server_init(&fl, &srv, NULL);
    fleet_server_start(&srv);
}

static void teardown(void)
{
    fleet_agent_kill9(&agent);
    fleet_server_stop(&srv);
    fleet_cleanup(&fl);
}

TestSuite(cross_windows, .init = setup, .fini = teardown, .timeout = 300);

/* wine mamorictl.exe --data-dir Z:... ARGS; exit code, output in res. */
static int ctl(struct proc_result *res, const char *a1, const char *a2, const char *a3,
               const char *a4, const char *a5)
{
    const char *argv[] = {"wine", ctl_exe, "--data-dir", win_dir, a1, a2, a3, a4, a5, NULL};
    proc_run(argv, &(struct proc_opts){.no_wrapper = true}, 60000, res);
    return res->exit_code;
}

static json_t *ctl_json(const char *a1, const char *a2, const char *a3, const char *a4)
{
    struct proc_result res;
    int rc = ctl(&res, "--json", a1, a2, a3, a4);
    json_t *doc = NULL;
    if (rc != 0 || mmr_json_parse_object(res.out, strlen(res.out), MMR_JSON_MAX_DEPTH, &doc) < 0)
        doc = NULL;
    if (!doc)
        cr_log_error("mamorictl.exe %s: exit %d\n%s%s", a1, rc, res.out, res.err);
    proc_result_free(&res);
    return doc;
}

/* Starts the agent under Wine with its stderr appended to a file. */
static void agent_start(void)
{
    const char *argv[] = {"/bin/sh", "-c", "exec \"$@\" 2>>\"$0\"", agent.stderr_path, "wine",
                          agent_exe, "-f", "--data-dir", win_dir, NULL};
    agent.proc = proc_start(argv, &(struct proc_opts){.no_wrapper = true});
}

static bool enrolled_and_checked_in(void *ud)
{
    (void)ud;
    struct proc_result res;
    int rc = ctl(&res, "status", "--json", NULL, NULL, NULL);
    json_t *st = NULL;
    bool yes = rc == 0 &&
               mmr_json_parse_object(res.out, strlen(res.out), MMR_JSON_MAX_DEPTH, &st) == 0 &&
               json_is_true(fleet_json_path(st, "enrollment.enrolled")) &&
               fleet_json_str(st, "checkin.result") &&
               strcmp(fleet_json_str(st, "checkin.result"), "ok") == 0;
    json_decref(st);
    proc_result_free(&res);
    return yes;
}

static void wait_checked_in(void)
{
    if (fleet_wait_for(enrolled_and_checked_in, NULL, 90000))
        return;
    char *err = fleet_read_file(agent.stderr_path, NULL);
    cr_assert_fail("the Windows agent did not enroll and check in; stderr:\n%s",
                   err ? err : "");
}

/* mamorictl.exe selftest --events n: the seq range it reports as stored. */
static void selftest(int n, long long *first, long long *last)
{
    char count[16];
    snprintf(count, sizeof(count), "%d", n);
    json_t *r = ctl_json("selftest", "--events", count, NULL);
    cr_assert(r, "mamorictl.exe selftest failed");
    cr_assert_eq(fleet_json_int(r, "queued"), n, "selftest stored %lld of %d",
                 fleet_json_int(r, "queued"), n);
    *first = fleet_json_int(r, "first_seq");
    *last = fleet_json_int(r, "last_seq");
    cr_assert_eq(*last - *first + 1, n, "seqs %lld..%lld for %d events", *first, *last, n);
    json_decref(r);
}

static bool queue_drained(void *ud)
{
    (void)ud;
    struct proc_result res;
    ctl(&res, "sync", NULL, NULL, NULL, NULL);
    proc_result_free(&res);
    json_t *st = ctl_json("status", NULL, NULL, NULL);
    bool yes = st && fleet_json_int(st, "queue.depth") == 0 &&
               fleet_json_str(st, "checkin.result") &&
               strcmp(fleet_json_str(st, "checkin.result"), "ok") == 0;
    json_decref(st);
    return yes;
}

/* The server's selftest rows of the device: per seq, how many rows and
 * whether the data ("n" of "of") is the event reported at that seq. */
static void expect_exactly_once(const char *device, long long first[2], long long last[2], int n)
{
    char *path = mmr_path_join(srv.dir, "server.db");
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    free(path);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT e.seq, json_extract(e.data, '$.n'), "
                                    "json_extract(e.data, '$.of') FROM events e JOIN devices d "
                                    "ON d.id = e.device WHERE d.uuid = ?1 AND e.type = ?2",
                                    -1, &st, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, device, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, SELFTEST, -1, SQLITE_STATIC);
    long long rows = 0, wrong = 0, seen_first = 0, seen_second = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        long long seq = sqlite3_column_int64(st, 0);
        int at = sqlite3_column_int(st, 1), of = sqlite3_column_int(st, 2);
        rows++;
        int round = seq >= first[0] && seq <= last[0] ? 0 : seq >= first[1] && seq <= last[1] ? 1
                                                                                              : -1;
        if (round < 0 || of != n || at != seq - first[round] + 1) {
            wrong++;
            continue;
        }
        seen_first += round == 0;
        seen_second += round == 1;
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    cr_expect_eq(rows, 2 * n, "the server holds %lld selftest events, the agent stored %d", rows,
                 2 * n);
    cr_expect_eq(wrong, 0, "%lld stored events are not the ones reported at their seq", wrong);
    cr_expect_eq(seen_first, n, "first round: %lld of %d distinct events", seen_first, n);
    cr_expect_eq(seen_second, n, "second round: %lld of %d distinct events", seen_second, n);
}

Test(cross_windows, linux_server_windows_agent_exactly_once)
{
    /* テスト: the agent's data directory has a Japanese name. */
    char *jp = mmr_path_join(fl.root, "\xe3\x83\x86\xe3\x82\xb9\xe3\x83\x88");
    cr_assert_eq(mmr_mkdir_p(jp, true), 0);
    char *token = fleet_token_create(&srv, "City", "windows", 1, NULL);
    fleet_agent_init(&fl, &agent, "\xe3\x83\x86\xe3\x82\xb9\xe3\x83\x88/agent", &srv, NULL,
                     token, NULL);
    free(token);
    free(jp);
    snprintf(win_dir, sizeof(win_dir), "Z:%s", agent.dir);

    agent_start();
    wait_checked_in();
    json_t *st = ctl_json("status", NULL, NULL, NULL);
    cr_assert(st);
    char device[64];
    snprintf(device, sizeof(device), "%s", fleet_json_str(st, "enrollment.device_id"));
    cr_log_info("Windows agent enrolled as %s", device);
    json_decref(st);

    /* The server sees a Windows device. */
    json_t *d = fleet_adm_json(&srv, "device", "show", device, NULL);
    cr_expect_str_eq(fleet_json_str(d, "hardware_id"), agent.hardware_id);
    const char *os = fleet_json_str(d, "os");
    cr_expect(os && strstr(os, "Windows"), "os %s", os ? os : "(none)");
    json_decref(d);

    /* Round one, delivered; then a hard kill, a restart, round two. */
    enum { N = 50 };
    long long first[2], last[2];
    selftest(N, &first[0], &last[0]);
    cr_assert(fleet_wait_for(queue_drained, NULL, 60000), "round one was not delivered");
    fleet_agent_kill9(&agent);
    agent_start();
    wait_checked_in();
    selftest(N, &first[1], &last[1]);
    cr_assert(first[1] > last[0], "seqs went back after the restart: %lld after %lld", first[1],
              last[0]);
    cr_assert(fleet_wait_for(queue_drained, NULL, 60000), "round two was not delivered");
    expect_exactly_once(device, first, last, N);

    /* A diagnostic bundle written under テスト too. */
    char *bundle = mmr_asprintf("%s/diag.tar.gz", win_dir);
    struct proc_result res;
    int rc = ctl(&res, "diag", "-o", bundle, NULL, NULL);
    cr_expect_eq(rc, 0, "mamorictl.exe diag: exit %d\n%s%s", rc, res.out, res.err);
    proc_result_free(&res);
    char *linux_bundle = mmr_asprintf("%s/diag.tar.gz", agent.dir);
    cr_expect(mmr_file_size(linux_bundle) > 0, "no bundle at %s", linux_bundle);
    char *cmd = mmr_asprintf("tar -tzf '%s' | grep -q summary.txt", linux_bundle);
    cr_expect_eq(system(cmd), 0, "the bundle has no summary.txt");
    free(cmd);
    free(linux_bundle);
    free(bundle);
}
