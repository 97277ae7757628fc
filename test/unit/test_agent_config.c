/* Unit tests for agent/agent_config.c: defaults and override rules. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent_config.h"
#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "testutil.h"

Test(agent_config, defaults_without_a_file)
{
    struct mmr_agent_config cfg;
    cr_assert_eq(mmr_agent_config_load("/nonexistent/agent.conf", true, NULL, &cfg), 0, "%s",
                 mmr_err_msg());
    cr_expect_str_eq(cfg.data_dir, mmr_default_data_dir());
    cr_expect_str_eq(cfg.run_dir, mmr_default_run_dir());
    cr_expect_str_eq(cfg.log_level, "info");
    char *log = mmr_test_path(mmr_default_data_dir(), "logs", "agent.log", NULL);
    cr_expect_str_eq(cfg.log_file, log);
    free(log);
    cr_expect_eq(cfg.log_max_size, 10u * 1024 * 1024);
    cr_expect_eq(cfg.log_keep, 5);
    mmr_agent_config_free(&cfg);
}

Test(agent_config, missing_explicit_file_is_an_error)
{
    struct mmr_agent_config cfg;
    cr_expect_eq(mmr_agent_config_load("/nonexistent/agent.conf", false, NULL, &cfg), MMR_ENOENT);
}

Test(agent_config, data_dir_override_moves_socket_and_log)
{
    struct mmr_agent_config cfg;
    cr_assert_eq(mmr_agent_config_load(NULL, true, "/tmp/d", &cfg), 0, "%s", mmr_err_msg());
    cr_expect_str_eq(cfg.data_dir, "/tmp/d");
    cr_expect_str_eq(cfg.run_dir, "/tmp/d");
    char *log = mmr_test_path("/tmp/d", "logs", "agent.log", NULL);
    cr_expect_str_eq(cfg.log_file, log);
    free(log);
    mmr_agent_config_free(&cfg);
}

Test(agent_config, path_choice)
{
    bool ex;
    char *p = mmr_agent_config_path("/etc/x.conf", "/tmp/d", &ex);
    cr_expect_str_eq(p, "/etc/x.conf");
    cr_expect(ex);
    free(p);
    p = mmr_agent_config_path(NULL, "/tmp/d", &ex);
    char *conf = mmr_test_path("/tmp/d", "agent.conf", NULL);
    cr_expect_str_eq(p, conf);
    free(conf);
    cr_expect_not(ex);
    free(p);
    p = mmr_agent_config_path(NULL, NULL, &ex);
    cr_expect_str_eq(p, mmr_default_config_path());
    free(p);
}

Test(agent_config, file_values_and_redaction)
{
    char dir[512];
    mmr_test_mkdtemp("mmr-acfg", dir, sizeof(dir));
    char *path = mmr_path_join(dir, "agent.conf");
    const char *text = "[agent]\nrun_dir = /tmp/sock\n[log]\nlevel = debug\nmax_size = 1M\n"
                       "[server]\nurl = https://127.0.0.1:8443\nenroll_token = topsecretvalue\n";
    cr_assert_eq(mmr_file_write_atomic(path, text, strlen(text)), 0);
    struct mmr_agent_config cfg;
    cr_assert_eq(mmr_agent_config_load(path, false, dir, &cfg), 0, "%s", mmr_err_msg());
    cr_expect_str_eq(cfg.run_dir, "/tmp/sock", "the file's run_dir wins over the data dir");
    cr_expect_str_eq(cfg.log_level, "debug");
    cr_expect_eq(cfg.log_max_size, 1024 * 1024);
    cr_expect_str_eq(cfg.enroll_token, "topsecretvalue");
    char *dump = mmr_config_dump(mmr_agent_config_schema, mmr_agent_config_nkeys, &cfg);
    cr_expect_null(strstr(dump, "topsecretvalue"), "%s", dump);
    cr_expect(strstr(dump, "<redacted>"), "%s", dump);
    free(dump);
    mmr_agent_config_free(&cfg);

    const char *bad = "[log]\nmax_size = 1K\n";
    cr_assert_eq(mmr_file_write_atomic(path, bad, strlen(bad)), 0);
    cr_expect_eq(mmr_agent_config_load(path, false, dir, &cfg), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "agent.conf:2"), "%s", mmr_err_msg());
    free(path);
    mmr_test_rmtree(dir);
}
