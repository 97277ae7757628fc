/* Unit tests for shared/log.c: format, levels, escaping, rotation. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/log.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "testutil.h"

static char dir[512];
static char *path;

static void setup(void)
{
    mmr_test_mkdtemp("mmr-log", dir, sizeof(dir));
    path = mmr_path_join(dir, "agent.log");
}

static void teardown(void)
{
    mmr_log_close();
    cr_expect_eq(mmr_test_rmtree(dir), 0);
    free(path);
}

static char *slurp(const char *p)
{
    char *text;
    size_t len;
    cr_assert_eq(mmr_file_read_all(p, 1 << 24, &text, &len), 0, "%s", mmr_err_msg());
    return text;
}

TestSuite(log, .init = setup, .fini = teardown);

Test(log, writes_logfmt_lines)
{
    struct mmr_log_opts o = {.level = MMR_LOG_INFO, .file_path = path};
    cr_assert_eq(mmr_log_open(&o), 0);
    mmr_info("test", "hello world", "n=%d path=\"%s\"", 42, "/tmp/x y");
    mmr_debug("test", "hidden", NULL);
    char *text = slurp(path);
    cr_expect(strstr(text, " level=info mod=test msg=\"hello world\" n=42 path=\"/tmp/x y\"\n"),
              "%s", text);
    cr_expect(strncmp(text, "ts=20", 5) == 0, "%s", text);
    cr_expect_null(strstr(text, "hidden"));
    free(text);
}

Test(log, one_record_is_one_line)
{
    struct mmr_log_opts o = {.level = MMR_LOG_DEBUG, .file_path = path};
    cr_assert_eq(mmr_log_open(&o), 0);
    mmr_warn("test", "multi\nline \"quoted\"", "value=%s", "a\nb\tc\x01");
    char *text = slurp(path);
    cr_expect_eq(strchr(text, '\n'), text + strlen(text) - 1, "%s", text);
    cr_expect(strstr(text, "msg=\"multi\\nline \\\"quoted\\\"\""), "%s", text);
    cr_expect(strstr(text, "value=a\\nb\\tc\\x01"), "%s", text);
    free(text);
}

Test(log, rotates_by_size)
{
    struct mmr_log_opts o = {.level = MMR_LOG_INFO, .file_path = path, .max_bytes = 4096,
                             .keep = 2};
    cr_assert_eq(mmr_log_open(&o), 0);
    for (int i = 0; i < 400; i++)
        mmr_info("test", "filler line for rotation", "i=%d", i);
    char *r1 = mmr_asprintf("%s.1", path);
    char *r2 = mmr_asprintf("%s.2", path);
    char *r3 = mmr_asprintf("%s.3", path);
    cr_expect(mmr_path_exists(r1));
    cr_expect(mmr_path_exists(r2));
    cr_expect_not(mmr_path_exists(r3), "keep=2 must bound the number of files");
    cr_expect_leq(mmr_file_size(path), 4096 + 200);
    char *text = slurp(path);
    cr_expect(strstr(text, "i=399"), "the newest record is in the live file");
    free(text);
    bool priv = false;
    cr_expect_eq(mmr_file_is_private(r1, &priv), 0);
    cr_expect(priv, "rotated logs stay owner-only");
    free(r1);
    free(r2);
    free(r3);
}

Test(log, level_names)
{
    enum mmr_log_level l;
    cr_expect_eq(mmr_log_level_parse("warn", &l), 0);
    cr_expect_eq(l, MMR_LOG_WARN);
    cr_expect_eq(mmr_log_level_parse("loud", &l), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "loud"));
    cr_expect_str_eq(mmr_log_level_name(MMR_LOG_ERROR), "error");
}

Test(log, unwritable_file_is_an_error_not_a_crash)
{
    struct mmr_log_opts o = {.level = MMR_LOG_INFO, .file_path = "/nonexistent-dir/x.log"};
    cr_expect_lt(mmr_log_open(&o), 0);
    mmr_info("test", "still fine", NULL);
}
