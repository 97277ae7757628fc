/* Integration: a real mamori-agent in a temporary data directory, driven by
 * the real mamorictl and by raw bytes on its socket. */
#include <criterion/criterion.h>

#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mamori_version.h"
#include "proc.h"
#include "shared/err.h"
#include "shared/ipc.h"
#include "shared/json.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "shared/targz.h"

#define TOKEN "mmr1.SECRET-ENROLL-TOKEN-0123456789abcdef"
#define KEY_MATERIAL "MHcCAQEEIDeadBeefPrivateKeyMaterialThatMustNeverLeave"

static char dir[64];      /* data directory */
static char run_dir[80];  /* world-reachable socket directory */
static char socket_path[128];
static struct proc *agent;

static int timeout_ms(int normal)
{
    return proc_wrapped() ? normal * 10 : normal;
}

static void write_file(const char *name, const char *text)
{
    char *path = mmr_path_join(dir, name);
    FILE *f = fopen(path, "w");
    cr_assert(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
    free(path);
}

static void run_ctl(struct proc_result *res, const char *a1, const char *a2, const char *a3,
                    const char *a4)
{
    const char *argv[] = {MMR_CTL_BIN, "--socket", socket_path, a1, a2, a3, a4, NULL};
    proc_run(argv, NULL, timeout_ms(10000), res);
}

static void start_agent(void)
{
    const char *argv[] = {MMR_AGENT_BIN, "-f", "--data-dir", dir, NULL};
    agent = proc_start(argv, NULL);
    /* Ready when it answers status. */
    for (int i = 0; i < timeout_ms(10000) / 50; i++) {
        json_t *st = NULL;
        if (mmr_ipc_call(socket_path, "status", NULL, 1000, &st) == 0) {
            json_decref(st);
            return;
        }
        usleep(50 * 1000);
    }
    struct proc_result res;
    proc_wait(agent, 1000, &res);
    agent = NULL;
    cr_assert_fail("agent did not become ready; stderr:\n%s", res.err);
}

/* Stops the agent with SIGTERM and checks it exits cleanly and in time. */
static void stop_agent(void)
{
    if (!agent)
        return;
    struct proc_result res;
    uint64_t t0 = mmr_time_mono_ms();
    proc_kill(agent, SIGTERM);
    bool in_time = proc_wait(agent, timeout_ms(2000), &res);
    agent = NULL;
    uint64_t took = mmr_time_mono_ms() - t0;
    cr_expect(in_time, "agent did not stop within 2 s of SIGTERM");
    cr_expect_eq(res.exit_code, 0, "agent exit code %d (signal %d); stderr:\n%s", res.exit_code,
                 res.term_signal, res.err);
    cr_log_info("agent stopped in %llu ms", (unsigned long long)took);
    proc_result_free(&res);
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/mmr-it-XXXXXX");
    cr_assert(mkdtemp(dir));
    snprintf(run_dir, sizeof(run_dir), "%s-run", dir);
    cr_assert_eq(mkdir(run_dir, 0755), 0);
    chmod(run_dir, 0755);
    snprintf(socket_path, sizeof(socket_path), "%s/agent.sock", run_dir);
    char *conf = mmr_asprintf("[agent]\nrun_dir = %s\n\n[log]\nlevel = debug\n\n[server]\n"
                              "url = https://127.0.0.1:8443\nenroll_token = %s\n",
                              run_dir, TOKEN);
    write_file("agent.conf", conf);
    free(conf);
    write_file("device.key", "-----BEGIN EC PRIVATE KEY-----\n" KEY_MATERIAL
                             "\n-----END EC PRIVATE KEY-----\n");
    chmod(dir, 0700);
}

static void teardown(void)
{
    stop_agent();
    char *cmd = mmr_asprintf("rm -rf '%s' '%s'", dir, run_dir);
    cr_expect_eq(system(cmd), 0);
    free(cmd);
}

TestSuite(agent, .init = setup, .fini = teardown, .timeout = 240);

Test(agent, status_json_and_table)
{
    start_agent();
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
    char *db = mmr_path_join(dir, "agent.db");
    struct stat sb;
    cr_assert_eq(stat(db, &sb), 0);
    cr_expect_eq(sb.st_mode & 0777, 0600, "agent.db mode %o", sb.st_mode & 0777);
    cr_assert_eq(stat(dir, &sb), 0);
    cr_expect_eq(sb.st_mode & 077, 0, "data dir mode %o", sb.st_mode & 0777);
    free(db);
}

Test(agent, second_instance_refused)
{
    start_agent();
    const char *argv[] = {MMR_AGENT_BIN, "-f", "--data-dir", dir, NULL};
    struct proc_result res;
    proc_run(argv, NULL, timeout_ms(10000), &res);
    cr_expect_eq(res.exit_code, 3, "exit %d, stderr: %s", res.exit_code, res.err);
    cr_expect(strstr(res.err, "another running instance"), "stderr: %s", res.err);
    proc_result_free(&res);
}

static void expect_error_reply_n(const char *bytes, size_t len, const char *code)
{
    char *reply = NULL;
    cr_assert_eq(mmr_ipc_call_raw(socket_path, bytes, len, 5000, &reply), 0, "%s",
                 mmr_err_msg());
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
    start_agent();
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
    mmr_ipc_call_raw(socket_path, "{\"cmd\":\"sta", 11, 300, &reply);
    free(reply);

    /* The agent still serves everyone. */
    json_t *st = NULL;
    cr_expect_eq(mmr_ipc_call(socket_path, "status", NULL, 5000, &st), 0, "%s", mmr_err_msg());
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
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_expect_eq(sb.st_mode & 077, 0, "bundle is readable by others");
    free(data);
}

Test(agent, diag_bundle_has_no_secrets)
{
    start_agent();
    /* Even if a secret slipped into the log, the bundle scrubs it. */
    char *log_path = mmr_asprintf("%s/logs/agent.log", dir);
    FILE *f = fopen(log_path, "a");
    cr_assert(f);
    fprintf(f, "ts=x level=info mod=test msg=\"leak\" token=%s\n", TOKEN);
    fclose(f);
    free(log_path);

    char *out = mmr_asprintf("%s/bundle.tar.gz", run_dir);
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
    char *out = mmr_asprintf("%s/offline.tar.gz", run_dir);
    const char *argv[] = {MMR_CTL_BIN, "--data-dir", dir, "--socket", socket_path, "diag", "-o",
                          out, NULL};
    struct proc_result res;
    proc_run(argv, NULL, timeout_ms(10000), &res);
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

Test(agent, admin_verbs_need_admin)
{
    start_agent();
    struct passwd *nobody = getpwnam("nobody");
    cr_assert(nobody, "no 'nobody' user on this machine");
    struct proc_opts as_nobody = {.uid = nobody->pw_uid, .gid = nobody->pw_gid, .set_user = true};
    const char *status_argv[] = {MMR_CTL_BIN, "--socket", socket_path, "status", NULL};
    const char *reload_argv[] = {MMR_CTL_BIN, "--socket", socket_path, "reload", NULL};
    struct proc_result res;

    proc_run(status_argv, &as_nobody, timeout_ms(10000), &res);
    cr_expect_eq(res.exit_code, 0, "any user may read status; stderr: %s", res.err);
    proc_result_free(&res);

    proc_run(reload_argv, &as_nobody, timeout_ms(10000), &res);
    cr_expect_eq(res.exit_code, 3, "exit %d stderr: %s", res.exit_code, res.err);
    cr_expect(strstr(res.err, "administrators"), "stderr: %s", res.err);
    proc_result_free(&res);

    proc_run(reload_argv, NULL, timeout_ms(10000), &res);
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
                             (unsigned)nobody->pw_gid, dir, run_dir);
    cr_assert_eq(system(cmd), 0);
    free(cmd);
    struct proc_opts as_nobody = {.uid = nobody->pw_uid, .gid = nobody->pw_gid, .set_user = true};
    const char *agent_argv[] = {MMR_AGENT_BIN, "-f", "--data-dir", dir, NULL};
    agent = proc_start(agent_argv, &as_nobody);
    const char *status_argv[] = {MMR_CTL_BIN, "--socket", socket_path, "status", NULL};
    struct proc_result res = {0};
    bool up = false;
    for (int i = 0; i < timeout_ms(10000) / 100 && !up; i++) {
        proc_run(status_argv, &as_nobody, timeout_ms(10000), &res);
        up = res.exit_code == 0; /* its own user trusts it */
        proc_result_free(&res);
        if (!up)
            usleep(100 * 1000);
    }
    cr_assert(up, "the agent run by nobody did not answer nobody");

    proc_run(status_argv, NULL, timeout_ms(10000), &res);
    cr_expect_neq(res.exit_code, 0, "root talked to an agent run by nobody: %s", res.out);
    cr_expect(strstr(res.err, "refusing") && strstr(res.err, "nobody"), "stderr: %s", res.err);
    proc_result_free(&res);
    json_t *st = NULL;
    cr_expect_eq(mmr_ipc_call(socket_path, "status", NULL, 5000, &st), MMR_EPERM, "%s",
                 mmr_err_msg());
    json_decref(st);
}

Test(agent, broken_config_on_reload_keeps_running)
{
    start_agent();
    write_file("agent.conf", "[agent\nthis is not ini\n");
    proc_kill(agent, SIGHUP);
    usleep(200 * 1000);
    json_t *st = NULL;
    cr_expect_eq(mmr_ipc_call(socket_path, "status", NULL, 5000, &st), 0, "%s", mmr_err_msg());
    json_decref(st);
}

Test(agent, broken_config_at_start_names_the_line)
{
    write_file("agent.conf", "[log]\nlevel = loud\n");
    const char *argv[] = {MMR_AGENT_BIN, "-f", "--data-dir", dir, NULL};
    struct proc_result res;
    proc_run(argv, NULL, timeout_ms(10000), &res);
    cr_expect_eq(res.exit_code, 2, "stderr: %s", res.err);
    cr_expect(strstr(res.err, "agent.conf:2"), "stderr: %s", res.err);
    proc_result_free(&res);
}

Test(agent, corrupt_database_is_moved_aside)
{
    char garbage[8192];
    memset(garbage, 0x5a, sizeof(garbage));
    char *db = mmr_path_join(dir, "agent.db");
    FILE *f = fopen(db, "w");
    cr_assert(f);
    fwrite(garbage, 1, sizeof(garbage), f);
    fclose(f);
    free(db);

    start_agent();
    json_t *st = NULL;
    cr_assert_eq(mmr_ipc_call(socket_path, "status", NULL, 5000, &st), 0);
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
    char *cmd = mmr_asprintf("ls %s/agent.db.corrupt-* >/dev/null 2>&1", dir);
    cr_expect_eq(system(cmd), 0, "damaged database was not kept aside");
    free(cmd);
}
