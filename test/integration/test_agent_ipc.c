/* Integration: a real mamori-agent in a temporary data directory, driven by
 * the real mamorictl and by raw bytes on its socket or pipe. The tests here
 * run on Linux and under Wine; test_agent_ipc_posix.c holds the POSIX ones. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mamori_version.h"
#include "shared/err.h"
#include "shared/ipc.h"
#include "shared/json.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "shared/targz.h"
#include "test/unit/testutil.h"
#include "test_agent_ipc.h"

char ipc_dir[IPC_PATH_MAX];
char ipc_out_dir[IPC_PATH_MAX];
char ipc_endpoint[IPC_PATH_MAX];
struct proc *ipc_agent;

int ipc_ms(int normal)
{
    return proc_wrapped() ? normal * 10 : normal;
}

static void write_file(const char *name, const char *text)
{
    char *path = mmr_path_join(ipc_dir, name);
    mmr_test_write_file(path, text, strlen(text));
    free(path);
}

static void run_ctl(struct proc_result *res, const char *a1, const char *a2, const char *a3,
                    const char *a4)
{
    const char *argv[] = {MMR_CTL_BIN, "--socket", ipc_endpoint, a1, a2, a3, a4, NULL};
    proc_run(argv, NULL, ipc_ms(10000), res);
}

void ipc_start_agent(void)
{
    const char *argv[] = {MMR_AGENT_BIN, "-f", "--data-dir", ipc_dir, NULL};
    ipc_agent = proc_start(argv, NULL);
    /* Ready when it answers status. */
    for (int i = 0; i < ipc_ms(10000) / 50; i++) {
        json_t *st = NULL;
        if (mmr_ipc_call(ipc_endpoint, "status", NULL, 1000, &st) == 0) {
            json_decref(st);
            return;
        }
        mmr_test_sleep_ms(50);
    }
    struct proc_result res;
    proc_wait(ipc_agent, 1000, &res);
    ipc_agent = NULL;
    cr_assert_fail("agent did not become ready; stderr:\n%s", res.err);
}

static void setup(void)
{
    mmr_test_mkdtemp("mmr-it", ipc_dir, sizeof(ipc_dir));
    char *agent_section = ipc_os_setup();
    char *conf = mmr_asprintf("%s[log]\nlevel = debug\n\n[server]\n"
                              "url = https://127.0.0.1:8443\nenroll_token = %s\n",
                              agent_section, TOKEN);
    write_file("agent.conf", conf);
    free(conf);
    free(agent_section);
    write_file("device.key", "-----BEGIN EC PRIVATE KEY-----\n" KEY_MATERIAL
                             "\n-----END EC PRIVATE KEY-----\n");
}

static void teardown(void)
{
    if (ipc_agent)
        ipc_os_stop_agent();
    ipc_agent = NULL;
    cr_expect_eq(mmr_test_rmtree(ipc_dir), 0, "cannot remove %s", ipc_dir);
    if (ipc_out_dir[0] && strcmp(ipc_out_dir, ipc_dir) != 0)
        cr_expect_eq(mmr_test_rmtree(ipc_out_dir), 0, "cannot remove %s", ipc_out_dir);
}

TestSuite(agent, .init = setup, .fini = teardown, .timeout = 240);

Test(agent, status_json_and_table)
{
    ipc_start_agent();
    struct proc_result res;
    run_ctl(&res, "status", "--json", NULL, NULL);
    cr_assert_eq(res.exit_code, 0, "stderr: %s", res.err);
    json_t *st;
    cr_assert_eq(mmr_json_parse_object(res.out, strlen(res.out), 32, &st), 0, "%s", res.out);
    json_t *agent_obj = json_object_get(st, "agent");
    cr_expect_str_eq(json_string_value(json_object_get(agent_obj, "version")), MMR_VERSION);
    cr_expect(json_integer_value(json_object_get(agent_obj, "uptime_s")) >= 0);
    cr_expect(json_is_false(json_object_get(json_object_get(st, "enrollment"), "enrolled")));
    cr_expect(json_is_null(json_object_get(json_object_get(st, "policy"), "version")));
    cr_expect(json_is_null(json_object_get(json_object_get(st, "checkin"), "last")));
    size_t i;
    json_t *m;
    int ok_modules = 0;
    json_array_foreach(json_object_get(st, "modules"), i, m)
    {
        if (strcmp(json_string_value(json_object_get(m, "state")), "ok") == 0)
            ok_modules++;
    }
    cr_expect_geq(ok_modules, 2, "control and database should be ok");
    json_decref(st);
    proc_result_free(&res);

    run_ctl(&res, "status", NULL, NULL, NULL);
    cr_assert_eq(res.exit_code, 0);
    cr_expect(strstr(res.out, "Mamori agent " MMR_VERSION), "%s", res.out);
    cr_expect(strstr(res.out, "not enrolled"), "%s", res.out);
    cr_expect(strstr(res.out, "database"), "%s", res.out);
    proc_result_free(&res);

    /* State files are owner-only. */
    ipc_os_expect_state_private();
}

Test(agent, second_instance_refused)
{
    ipc_start_agent();
    const char *argv[] = {MMR_AGENT_BIN, "-f", "--data-dir", ipc_dir, NULL};
    struct proc_result res;
    proc_run(argv, NULL, ipc_ms(10000), &res);
    cr_expect_eq(res.exit_code, 3, "exit %d, stderr: %s", res.exit_code, res.err);
    cr_expect(strstr(res.err, "another running instance"), "stderr: %s", res.err);
    proc_result_free(&res);
}

static void expect_error_reply_n(const char *bytes, size_t len, const char *code)
{
    char *reply = NULL;
    cr_assert_eq(mmr_ipc_call_raw(ipc_endpoint, bytes, len, 5000, &reply), 0, "%s", mmr_err_msg());
    cr_assert(reply, "no reply to garbage");
    json_t *doc;
    cr_assert_eq(mmr_json_parse_object(reply, strlen(reply), 32, &doc), 0, "reply: %s", reply);
    cr_expect(json_is_false(json_object_get(doc, "ok")), "reply: %s", reply);
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(doc, "error"), "code")),
                     code, "reply: %s", reply);
    json_decref(doc);
    free(reply);
}

static void expect_error_reply(const char *line, const char *code)
{
    expect_error_reply_n(line, strlen(line), code);
}

Test(agent, garbage_on_the_socket)
{
    ipc_start_agent();
    expect_error_reply("hello agent\n", "EINVAL");
    expect_error_reply("[1,2,3]\n", "EINVAL");
    expect_error_reply("{\"id\":7,\"cmd\":\"no-such-verb\"}\n", "EINVAL");
    expect_error_reply("{\"id\":7,\"cmd\":42}\n", "EINVAL");
    expect_error_reply("{\"cmd\":\"status\",\"args\":[]}\n", "EINVAL");
    static const char binary[] = "\x00\xff\xfe{\"cmd\":\x01}\n";
    expect_error_reply_n(binary, sizeof(binary) - 1, "EINVAL");
    char deep[200];
    memset(deep, '[', 100);
    memcpy(deep + 100, "\n", 2);
    expect_error_reply(deep, "EINVAL");

    size_t big = 100 * 1024;
    char *huge = mmr_malloc(big + 1);
    memset(huge, 'x', big);
    huge[big] = '\n';
    expect_error_reply_n(huge, big + 1, "ETOOBIG");
    free(huge);

    /* A client that connects and goes away mid-line harms no one. */
    char *reply = NULL;
    mmr_ipc_call_raw(ipc_endpoint, "{\"cmd\":\"sta", 11, 300, &reply);
    free(reply);

    /* The agent still serves everyone. */
    json_t *st = NULL;
    cr_expect_eq(mmr_ipc_call(ipc_endpoint, "status", NULL, 5000, &st), 0, "%s", mmr_err_msg());
    json_decref(st);
}

struct bundle_check {
    int entries;
    bool summary, status, config, log, database;
    bool leaked;
    bool redacted;
};

static bool contains(const void *data, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp((const char *)data + i, needle, n) == 0)
            return true;
    return false;
}

static int inspect_entry(const char *name, const void *data, size_t len, void *ud)
{
    struct bundle_check *c = ud;
    c->entries++;
    if (contains(data, len, TOKEN) || contains(data, len, KEY_MATERIAL))
        c->leaked = true;
    c->summary |= strcmp(name, "mamori-diag/summary.txt") == 0;
    c->status |= strcmp(name, "mamori-diag/status.json") == 0 && contains(data, len, "\"modules\"");
    c->log |= strcmp(name, "mamori-diag/agent.log") == 0 && contains(data, len, "msg=\"started\"");
    c->database |= strcmp(name, "mamori-diag/database.txt") == 0 &&
                   contains(data, len, "quick_check: ok");
    if (strcmp(name, "mamori-diag/config.ini") == 0) {
        c->config = true;
        c->redacted = contains(data, len, "enroll_token = <redacted>");
    }
    return 0;
}

static void check_bundle(const char *path, bool expect_running)
{
    char *data;
    size_t len;
    cr_assert_eq(mmr_file_read_all(path, 64 << 20, &data, &len), 0, "%s", mmr_err_msg());
    struct bundle_check c = {0};
    cr_assert_eq(mmr_targz_read(data, len, NULL, inspect_entry, &c), 0, "%s", mmr_err_msg());
    cr_expect(c.summary && c.config && c.log && c.database, "missing entries");
    cr_expect(c.redacted, "config.ini does not show the token as redacted");
    cr_expect(!c.leaked, "a secret reached the bundle");
    if (expect_running)
        cr_expect(c.status, "status.json lacks module health");
    ipc_os_expect_bundle_private(path);
    free(data);
}

Test(agent, diag_bundle_has_no_secrets)
{
    ipc_start_agent();
    /* Even if a secret slipped into the log, the bundle scrubs it. */
    char *log_path = mmr_test_path(ipc_dir, "logs", "agent.log", NULL);
    struct mmr_file *f;
    cr_assert_eq(mmr_file_open_append(log_path, &f), 0, "%s", mmr_err_msg());
    char *line = mmr_asprintf("ts=x level=info mod=test msg=\"leak\" token=%s\n", TOKEN);
    cr_assert_eq(mmr_file_append(f, line, strlen(line)), 0, "%s", mmr_err_msg());
    mmr_file_close(f);
    free(line);
    free(log_path);

    char *out = mmr_path_join(ipc_out_dir, "bundle.tar.gz");
    struct proc_result res;
    run_ctl(&res, "diag", "-o", out, NULL);
    cr_assert_eq(res.exit_code, 0, "stderr: %s", res.err);
    cr_expect(strstr(res.out, "Support bundle written"), "%s", res.out);
    proc_result_free(&res);
    check_bundle(out, true);
    free(out);
}

Test(agent, diag_without_agent)
{
    /* The helpdesk's first question is often "why is the agent not running". */
    char *out = mmr_path_join(ipc_out_dir, "offline.tar.gz");
    const char *argv[] = {MMR_CTL_BIN, "--data-dir", ipc_dir, "--socket", ipc_endpoint, "diag",
                          "-o", out, NULL};
    struct proc_result res;
    proc_run(argv, NULL, ipc_ms(10000), &res);
    cr_assert_eq(res.exit_code, 0, "stderr: %s", res.err);
    cr_expect(strstr(res.out, "PROBLEM: the agent is not running"), "%s", res.out);
    proc_result_free(&res);
    char *data;
    size_t len;
    cr_assert_eq(mmr_file_read_all(out, 64 << 20, &data, &len), 0);
    struct bundle_check c = {0};
    cr_assert_eq(mmr_targz_read(data, len, NULL, inspect_entry, &c), 0);
    cr_expect(!c.leaked && c.redacted && c.summary);
    free(data);
    free(out);
}

Test(agent, not_running_is_one_line)
{
    struct proc_result res;
    run_ctl(&res, "status", NULL, NULL, NULL);
    cr_expect_eq(res.exit_code, 2);
    cr_expect(strstr(res.err, "not running"), "stderr: %s", res.err);
    cr_expect_eq(strchr(res.err, '\n'), res.err + strlen(res.err) - 1, "more than one line: %s",
                 res.err);
    proc_result_free(&res);
}

Test(agent, broken_config_on_reload_keeps_running)
{
    ipc_start_agent();
    write_file("agent.conf", "[agent\nthis is not ini\n");
    ipc_os_reload_broken_config();
    mmr_test_sleep_ms(200);
    json_t *st = NULL;
    cr_expect_eq(mmr_ipc_call(ipc_endpoint, "status", NULL, 5000, &st), 0, "%s", mmr_err_msg());
    json_decref(st);
}

Test(agent, broken_config_at_start_names_the_line)
{
    write_file("agent.conf", "[log]\nlevel = loud\n");
    const char *argv[] = {MMR_AGENT_BIN, "-f", "--data-dir", ipc_dir, NULL};
    struct proc_result res;
    proc_run(argv, NULL, ipc_ms(10000), &res);
    cr_expect_eq(res.exit_code, 2, "stderr: %s", res.err);
    cr_expect(strstr(res.err, "agent.conf:2"), "stderr: %s", res.err);
    proc_result_free(&res);
}

/* True when the data directory holds a file named agent.db.corrupt-*. */
static bool corrupt_copy_kept(void)
{
    static const char prefix[] = "agent.db.corrupt-";
    uv_fs_t req;
    bool found = false;
    if (uv_fs_scandir(NULL, &req, ipc_dir, 0, NULL) >= 0) {
        uv_dirent_t ent;
        while (uv_fs_scandir_next(&req, &ent) != UV_EOF)
            found |= strncmp(ent.name, prefix, sizeof(prefix) - 1) == 0;
    }
    uv_fs_req_cleanup(&req);
    return found;
}

Test(agent, corrupt_database_is_moved_aside)
{
    char garbage[8192];
    memset(garbage, 0x5a, sizeof(garbage));
    char *db = mmr_path_join(ipc_dir, "agent.db");
    mmr_test_write_file(db, garbage, sizeof(garbage));
    free(db);

    ipc_start_agent();
    json_t *st = NULL;
    cr_assert_eq(mmr_ipc_call(ipc_endpoint, "status", NULL, 5000, &st), 0);
    size_t i;
    json_t *m;
    bool degraded = false;
    json_array_foreach(json_object_get(st, "modules"), i, m)
    {
        if (strcmp(json_string_value(json_object_get(m, "module")), "database") == 0)
            degraded = strcmp(json_string_value(json_object_get(m, "state")), "degraded") == 0;
    }
    cr_expect(degraded, "database module should report the damaged file");
    json_decref(st);
    cr_expect(corrupt_copy_kept(), "damaged database was not kept aside");
}
