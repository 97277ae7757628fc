/* Linux-only tests for agent/scan_engine.c that need the yara CLI tools: the
 * correctness oracle (every match `yara -r` reports, we report too) and rules
 * compiled by yarac, which lack the agent's external variables. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/scan_engine.h"
#include "shared/err.h"
#include "shared/mem.h"
#include "testutil.h"

#define ORACLE_DIR MMR_TEST_DATA "/scan/oracle"

static void engine_up(void)
{
    cr_assert_eq(mmr_scan_engine_init(), 0);
}

static void engine_down(void)
{
    mmr_scan_engine_shutdown();
}

TestSuite(scan_engine_posix, .init = engine_up, .fini = engine_down);

static bool reports(struct mmr_scanner *s, const char *path, const char *rule)
{
    struct mmr_scan_result r;
    int rc = mmr_scanner_scan_file(s, path, 64 << 20, &r);
    cr_assert_eq(rc, 0, "%s: %s", path, mmr_err_msg());
    bool found = false;
    for (size_t i = 0; i < r.count; i++)
        if (strcmp(r.matches[i].rule, rule) == 0)
            found = true;
    mmr_scan_result_free(&r);
    return found;
}

Test(scan_engine_posix, every_yara_cli_match_is_reported)
{
    struct mmr_scan_rules *rules;
    int rc = mmr_scan_rules_compile_dir(ORACLE_DIR "/rules", NULL, &rules);
    cr_assert_eq(rc, 0, "%s", mmr_err_msg());
    struct mmr_scanner *s;
    cr_assert_eq(mmr_scanner_create(rules, &s), 0);

    FILE *p = popen("yara -r '" ORACLE_DIR "/rules/oracle.yar' '" ORACLE_DIR "/corpus'", "r");
    cr_assert_not_null(p);
    char line[4096];
    int pairs = 0;
    while (fgets(line, sizeof(line), p)) {
        line[strcspn(line, "\n")] = '\0';
        char *sp = strchr(line, ' ');
        cr_assert_not_null(sp, "unexpected yara output '%s'", line);
        *sp = '\0';
        cr_assert(reports(s, sp + 1, line), "yara reports %s on %s, we do not", line, sp + 1);
        pairs++;
    }
    cr_assert_eq(pclose(p), 0, "yara failed");
    /* The corpus plants 14 matches; fewer means the oracle itself broke. */
    cr_assert_geq(pairs, 14);

    /* And nothing where yara finds nothing. */
    cr_assert_not(reports(s, ORACLE_DIR "/corpus/clean.txt", "text_marker"));
    cr_assert_not(reports(s, ORACLE_DIR "/corpus/one_token.txt", "two_of_three"));
    mmr_scanner_destroy(s);
    mmr_scan_rules_unref(rules);
}

Test(scan_engine_posix, refuses_compiled_rules_without_our_externals)
{
    char tmp[512];
    mmr_test_mkdtemp("mmr-yeng", tmp, sizeof(tmp));
    char *src = mmr_test_path(tmp, "t.yar", NULL);
    char *bin = mmr_test_path(tmp, "t.yarc", NULL);
    mmr_test_write_file(src, "rule t { condition: true }\n", 27);
    char *cmd = mmr_asprintf("yarac '%s' '%s'", src, bin);
    cr_assert_eq(system(cmd), 0);
    struct mmr_scan_rules *rules = NULL;
    cr_assert_eq(mmr_scan_rules_load(bin, 1 << 20, &rules), MMR_ECORRUPT);
    cr_assert(strstr(mmr_err_msg(), "lacks the external variable 'filename'") != NULL, "%s",
              mmr_err_msg());
    cr_assert_null(rules);
    free(cmd);
    free(bin);
    free(src);
    mmr_test_rmtree(tmp);
}
