/* Unit tests for agent/diag.c: findings, secret scrubbing, bundle layout. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent_db.h"
#include "agent/diag.h"
#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "shared/targz.h"
#include "testutil.h"

#define TOKEN "tok-1234567890-SECRET"

static char dir[512];
static char sysfs[600];
static struct mmr_agent_config cfg;
static struct mmr_diag_input in;

static void put(const char *rel, const char *text)
{
    char *p = mmr_asprintf("%s/%s", dir, rel);
    cr_assert_eq(mmr_file_write_atomic(p, text, strlen(text)), 0, "%s", mmr_err_msg());
    free(p);
}

static void setup(void)
{
    mmr_test_mkdtemp("mmr-diag", dir, sizeof(dir));
    snprintf(sysfs, sizeof(sysfs), "%s/sys", dir);
    char *bat = mmr_asprintf("%s/class/power_supply/BAT0", sysfs);
    cr_assert_eq(mmr_mkdir_p(bat, false), 0);
    put("sys/class/power_supply/BAT0/type", "Battery\n");
    put("sys/class/power_supply/BAT0/capacity", "12\n");
    put("sys/class/power_supply/BAT0/status", "Discharging\n");
    free(bat);
    char *logs = mmr_asprintf("%s/logs", dir);
    cr_assert_eq(mmr_mkdir_p(logs, true), 0);
    free(logs);
    put("logs/agent.log", "ts=1 level=info mod=agent msg=\"started\"\n"
                          "ts=2 level=warn mod=x msg=\"oops\" token=" TOKEN "\n");
    put("device.key", "-----BEGIN EC PRIVATE KEY-----\nPRIVATEBYTES\n");

    cr_assert_eq(mmr_agent_config_load(NULL, true, dir, &cfg), 0, "%s", mmr_err_msg());
    free(cfg.enroll_token);
    cfg.enroll_token = mmr_strdup(TOKEN);
    mmr_diag_input_init(&in, "/etc/mamori/agent.conf", &cfg);
    in.sysfs_root = sysfs;
}

static void teardown(void)
{
    mmr_diag_input_free(&in);
    mmr_agent_config_free(&cfg);
    cr_expect_eq(mmr_test_rmtree(dir), 0);
}

TestSuite(diag, .init = setup, .fini = teardown);

struct collected {
    char *summary;
    char *config;
    char *log;
    char *files;
    int entries;
    bool leaked;
};

static bool has(const void *data, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp((const char *)data + i, needle, n) == 0)
            return true;
    return false;
}

static int collect(const char *name, const void *data, size_t len, void *ud)
{
    struct collected *c = ud;
    c->entries++;
    if (has(data, len, TOKEN) || has(data, len, "PRIVATEBYTES"))
        c->leaked = true;
    char **slot = strcmp(name, "mamori-diag/summary.txt") == 0  ? &c->summary
                  : strcmp(name, "mamori-diag/config.ini") == 0 ? &c->config
                  : strcmp(name, "mamori-diag/agent.log") == 0  ? &c->log
                  : strcmp(name, "mamori-diag/files.txt") == 0  ? &c->files
                                                                : NULL;
    if (slot)
        *slot = mmr_strndup(data, len);
    return 0;
}

static void build(struct collected *c)
{
    char *bundle, *name;
    size_t len;
    cr_assert_eq(mmr_diag_build(&in, &bundle, &len, &name), 0, "%s", mmr_err_msg());
    cr_expect(strncmp(name, "mamori-diag-", 12) == 0, "%s", name);
    cr_expect(strstr(name, ".tar.gz"), "%s", name);
    memset(c, 0, sizeof(*c));
    cr_assert_eq(mmr_targz_read(bundle, len, NULL, collect, c), 0, "%s", mmr_err_msg());
    free(bundle);
    free(name);
}

static void collected_free(struct collected *c)
{
    free(c->summary);
    free(c->config);
    free(c->log);
    free(c->files);
}

Test(diag, agent_not_running_and_secrets_scrubbed)
{
    in.status_error = mmr_strdup("cannot reach the agent: the agent is not running");
    struct collected c;
    build(&c);
    cr_expect_eq(c.entries, 8);
    cr_expect_not(c.leaked, "a secret reached the bundle");
    cr_assert(c.summary && c.config && c.log && c.files);
    cr_expect(strstr(c.summary, "PROBLEM: the agent is not running"), "%s", c.summary);
    if (mmr_test_power_reads_sysfs())
        cr_expect(strstr(c.summary, "on battery below 20 %"), "%s", c.summary);
    cr_expect(strstr(c.config, "enroll_token = <redacted>"), "%s", c.config);
    cr_expect(strstr(c.log, "token=<redacted>"), "%s", c.log);
    cr_expect(strstr(c.files, "device.key"), "%s", c.files);
    collected_free(&c);
}

Test(diag, healthy_agent_has_no_problems)
{
    struct mmr_db *db;
    char *dbp = mmr_path_join(dir, "agent.db");
    cr_assert_eq(mmr_agent_db_open(dbp, &db), 0, "%s", mmr_err_msg());
    mmr_db_close(db);
    free(dbp);
    in.status = json_pack("{s:{s:b},s:[{s:s,s:s}]}", "enrollment", "enrolled", 1, "modules",
                          "module", "control", "state", "ok");
    cr_assert_eq(mmr_mkdir_p(dir, true), 0, "%s", mmr_err_msg());
    char *key = mmr_path_join(dir, "device.key");
    cr_assert_eq(mmr_file_make_private(key), 0, "%s", mmr_err_msg());
    free(key);
    struct collected c;
    build(&c);
    if (mmr_test_sqlite_sidecars_private()) {
        cr_expect(strstr(c.summary, "No problems found."), "%s", c.summary);
    } else {
        /* Only the -wal and -shm the diagnosis itself made (testutil.h). */
        for (const char *p = c.summary; (p = strstr(p, "PROBLEM: ")); p++)
            cr_expect(strncmp(p + 9, "agent.db-wal ", 13) == 0 ||
                          strncmp(p + 9, "agent.db-shm ", 13) == 0,
                      "%s", c.summary);
    }
    collected_free(&c);
}

Test(diag, reports_damage_and_exposure)
{
    put("agent.db", "this is not a database, just some bytes that are long enough........");
    char *key = mmr_path_join(dir, "device.key");
    mmr_test_expose_to_others(key);
    free(key);
    in.status = json_pack("{s:{s:b},s:[{s:s,s:s,s:s}]}", "enrollment", "enrolled", 0, "modules",
                          "module", "scan", "state", "failed", "detail", "rules missing");
    struct collected c;
    build(&c);
    cr_expect(strstr(c.summary, "PROBLEM: the agent database"), "%s", c.summary);
    cr_expect(strstr(c.summary, "PROBLEM: device.key is readable by other users"), "%s",
              c.summary);
    cr_expect(strstr(c.summary, "PROBLEM: module scan is failed: rules missing"), "%s", c.summary);
    cr_expect(strstr(c.summary, "NOTE: not enrolled"), "%s", c.summary);
    cr_expect_not(c.leaked);
    collected_free(&c);
}
