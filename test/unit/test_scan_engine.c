/* Tests for agent/scan_engine.c: rule compilation and its errors, externals,
 * severity mapping, timeouts, saved rules and scanning files by UTF-8 path.
 * The yara CLI oracle is in test_scan_engine_posix.c. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "agent/scan_engine.h"
#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "testutil.h"

#define RULES_DIR MMR_TEST_DATA "/scan/rules"

static void engine_up(void)
{
    cr_assert_eq(mmr_scan_engine_init(), 0);
}

static void engine_down(void)
{
    mmr_scan_engine_shutdown();
}

TestSuite(scan_engine, .init = engine_up, .fini = engine_down);

static struct mmr_scan_rules *compile_ok(const char *sub)
{
    struct mmr_scan_rules *rules = NULL;
    char *dir = mmr_asprintf("%s/%s", RULES_DIR, sub);
    int rc = mmr_scan_rules_compile_dir(dir, NULL, &rules);
    cr_assert_eq(rc, 0, "%s: %s", dir, mmr_err_msg());
    free(dir);
    return rules;
}

static const struct mmr_scan_match *find(const struct mmr_scan_result *r, const char *rule)
{
    for (size_t i = 0; i < r->count; i++)
        if (strcmp(r->matches[i].rule, rule) == 0)
            return &r->matches[i];
    return NULL;
}

/* Scans text and returns the severity of rule, which must match. */
static int severity_of(struct mmr_scanner *s, const char *text, const char *rule)
{
    struct mmr_scan_result r;
    cr_assert_eq(mmr_scanner_scan_mem(s, text, strlen(text), &r), 0, "%s", mmr_err_msg());
    const struct mmr_scan_match *m = find(&r, rule);
    cr_assert_not_null(m, "%s did not match", rule);
    int sev = m->severity;
    mmr_scan_result_free(&r);
    return sev;
}

Test(scan_engine, init_nests)
{
    cr_assert_eq(mmr_scan_engine_init(), 0);
    mmr_scan_engine_shutdown();
    struct mmr_scan_rules *rules;
    cr_assert_eq(mmr_scan_rules_compile_string("rule t { condition: true }", "t", &rules), 0);
    cr_assert_eq(mmr_scan_rules_count(rules), 1);
    mmr_scan_rules_unref(rules);
    mmr_scan_rules_unref(NULL);
}

Test(scan_engine, compiles_directory_recursively_in_namespaces)
{
    struct mmr_scan_rules *rules = compile_ok("ok");
    cr_assert_eq(mmr_scan_rules_count(rules), 12);
    struct mmr_scanner *s;
    cr_assert_eq(mmr_scanner_create(rules, &s), 0);
    const char text[] = "xx MAMORI-TEST-MARKER yy HIDDEN";
    struct mmr_scan_result r;
    cr_assert_eq(mmr_scanner_scan_mem(s, text, sizeof(text) - 1, &r), 0, "%s", mmr_err_msg());
    cr_assert_eq(r.count, 2);
    const struct mmr_scan_match *m = find(&r, "plain_marker");
    cr_assert_not_null(m);
    cr_assert_str_eq(m->ns, "basic.yar");
    cr_assert_eq(m->tag_count, 2);
    cr_assert_str_eq(m->tags[0], "malware");
    cr_assert_str_eq(m->tags[1], "test");
    cr_assert_eq(m->meta_count, 4);
    cr_assert_str_eq(m->meta[0].name, "description");
    cr_assert_eq(m->meta[0].type, MMR_SCAN_META_STRING);
    cr_assert_str_eq(m->meta[0].str, "plain marker");
    cr_assert_eq(m->meta[2].type, MMR_SCAN_META_INT);
    cr_assert_eq(m->meta[2].num, 3);
    cr_assert_eq(m->meta[3].type, MMR_SCAN_META_BOOL);
    cr_assert_eq(m->meta[3].num, 1);
    cr_assert_eq(m->severity, MMR_SCAN_SEV_CRITICAL);
    /* The private rule is not reported; the rule using it is. */
    cr_assert_null(find(&r, "hidden"));
    cr_assert_not_null(find(&r, "uses_hidden"));
    cr_assert_not(r.too_many_matches);
    mmr_scan_result_free(&r);
    mmr_scanner_destroy(s);
    mmr_scan_rules_unref(rules);
}

Test(scan_engine, compile_error_names_file_and_line)
{
    struct mmr_scan_rules *rules = NULL;
    cr_assert_eq(mmr_scan_rules_compile_dir(RULES_DIR "/bad", NULL, &rules), MMR_EINVAL);
    cr_assert_null(rules);
    cr_assert(strstr(mmr_err_msg(), "z_broken.yar:4: ") != NULL, "%s", mmr_err_msg());

    cr_assert_eq(mmr_scan_rules_compile_string("rule a {\ncondition:\n  nope\n}", "mem", &rules),
                 MMR_EINVAL);
    cr_assert(strstr(mmr_err_msg(), "mem:3: ") != NULL, "%s", mmr_err_msg());
    cr_assert(strstr(mmr_err_msg(), "nope") != NULL, "%s", mmr_err_msg());
}

Test(scan_engine, include_is_refused)
{
    struct mmr_scan_rules *rules = NULL;
    cr_assert_eq(mmr_scan_rules_compile_dir(RULES_DIR "/include", NULL, &rules), MMR_EINVAL);
    cr_assert(strstr(mmr_err_msg(), "main.yar:2: include \"other.yar\" refused") != NULL, "%s",
              mmr_err_msg());
}

Test(scan_engine, directory_errors_and_limits)
{
    struct mmr_scan_rules *rules = NULL;
    cr_assert_eq(mmr_scan_rules_compile_dir(RULES_DIR "/missing", NULL, &rules), MMR_ENOENT);
    char tmp[512];
    mmr_test_mkdtemp("mmr-yeng", tmp, sizeof(tmp));
    cr_assert_eq(mmr_scan_rules_compile_dir(tmp, NULL, &rules), MMR_ENOENT);
    cr_assert(strstr(mmr_err_msg(), "no .yar or .yara files") != NULL, "%s", mmr_err_msg());
    mmr_test_rmtree(tmp);

    struct mmr_scan_compile_limits lim = {1, 1 << 20, 1 << 20};
    cr_assert_eq(mmr_scan_rules_compile_dir(RULES_DIR "/ok", &lim, &rules), MMR_ETOOBIG);
    cr_assert(strstr(mmr_err_msg(), "more than 1 rule files") != NULL, "%s", mmr_err_msg());
    lim = (struct mmr_scan_compile_limits){10, 100, 1 << 20};
    cr_assert_eq(mmr_scan_rules_compile_dir(RULES_DIR "/ok", &lim, &rules), MMR_ETOOBIG);
    cr_assert(strstr(mmr_err_msg(), "basic.yar") != NULL, "%s", mmr_err_msg());
    lim = (struct mmr_scan_compile_limits){10, 1 << 20, 1000};
    cr_assert_eq(mmr_scan_rules_compile_dir(RULES_DIR "/ok", &lim, &rules), MMR_ETOOBIG);
    cr_assert(strstr(mmr_err_msg(), "in total") != NULL, "%s", mmr_err_msg());
    cr_assert_null(rules);
}

Test(scan_engine, externals_in_conditions)
{
    struct mmr_scan_rules *rules = compile_ok("ok");
    struct mmr_scanner *s;
    cr_assert_eq(mmr_scanner_create(rules, &s), 0);
    /* The scanner holds its own reference. */
    mmr_scan_rules_unref(rules);
    struct mmr_scan_result r;
    cr_assert_eq(mmr_scanner_scan_mem(s, "x", 1, &r), 0);
    cr_assert_null(find(&r, "ext_all"));
    mmr_scan_result_free(&r);

    struct mmr_scan_externals ext = {"evil.exe", "C:/Users/taro/Downloads/evil.exe", "exe", "pe",
                                     "DOMAIN\\taro.yamada"};
    cr_assert_eq(mmr_scanner_set_externals(s, &ext), 0, "%s", mmr_err_msg());
    cr_assert_eq(mmr_scanner_scan_mem(s, "x", 1, &r), 0);
    cr_assert_not_null(find(&r, "ext_all"));
    cr_assert_null(find(&r, "empty_file"));
    mmr_scan_result_free(&r);

    ext.owner = NULL;
    cr_assert_eq(mmr_scanner_set_externals(s, &ext), 0);
    cr_assert_eq(mmr_scanner_scan_mem(s, NULL, 0, &r), 0);
    cr_assert_null(find(&r, "ext_all"));
    cr_assert_not_null(find(&r, "empty_file"));
    mmr_scan_result_free(&r);
    mmr_scanner_destroy(s);
    mmr_scanner_destroy(NULL);
}

Test(scan_engine, severity_and_score_mapping)
{
    cr_assert_eq(mmr_scan_severity_from_score(0), MMR_SCAN_SEV_LOW);
    cr_assert_eq(mmr_scan_severity_from_score(39), MMR_SCAN_SEV_LOW);
    cr_assert_eq(mmr_scan_severity_from_score(40), MMR_SCAN_SEV_MEDIUM);
    cr_assert_eq(mmr_scan_severity_from_score(59), MMR_SCAN_SEV_MEDIUM);
    cr_assert_eq(mmr_scan_severity_from_score(60), MMR_SCAN_SEV_HIGH);
    cr_assert_eq(mmr_scan_severity_from_score(79), MMR_SCAN_SEV_HIGH);
    cr_assert_eq(mmr_scan_severity_from_score(80), MMR_SCAN_SEV_CRITICAL);
    cr_assert_eq(mmr_scan_severity_from_score(1000), MMR_SCAN_SEV_CRITICAL);
    cr_assert_eq(mmr_scan_severity_from_score(-1), -1);
    cr_assert_str_eq(mmr_scan_severity_name(MMR_SCAN_SEV_MEDIUM), "medium");
    cr_assert_str_eq(mmr_scan_severity_name(7), "unknown");
    cr_assert_str_eq(mmr_scan_severity_name(-1), "unknown");

    struct mmr_scan_rules *rules = compile_ok("ok");
    struct mmr_scanner *s;
    cr_assert_eq(mmr_scanner_create(rules, &s), 0);
    cr_assert_eq(severity_of(s, "SEV-NUMERIC", "sev_numeric"), MMR_SCAN_SEV_MEDIUM);
    cr_assert_eq(severity_of(s, "SEV-BOGUS", "sev_bogus_score"), MMR_SCAN_SEV_CRITICAL);
    cr_assert_eq(severity_of(s, "SCORE-45", "score_45"), MMR_SCAN_SEV_MEDIUM);
    cr_assert_eq(severity_of(s, "SCORE-STR", "score_string"), MMR_SCAN_SEV_HIGH);
    cr_assert_eq(severity_of(s, "SCORE-10", "score_10"), MMR_SCAN_SEV_LOW);
    cr_assert_eq(severity_of(s, "NO-META", "no_meta"), MMR_SCAN_SEV_DEFAULT);
    cr_assert_eq(MMR_SCAN_SEV_DEFAULT, MMR_SCAN_SEV_HIGH);
    cr_assert_eq(severity_of(s, "SEV-UPPER", "sev_upper"), MMR_SCAN_SEV_MEDIUM);
    mmr_scanner_destroy(s);
    mmr_scan_rules_unref(rules);
}

Test(scan_engine, slow_rule_times_out)
{
    struct mmr_scan_rules *rules = compile_ok("slow");
    struct mmr_scanner *s;
    cr_assert_eq(mmr_scanner_create(rules, &s), 0);
    mmr_scanner_set_timeout(s, 1);
    size_t len = 200000;
    char *data = mmr_malloc(len);
    memset(data, 'a', len);
    uint64_t t0 = mmr_time_mono_ms();
    struct mmr_scan_result r;
    cr_assert_eq(mmr_scanner_scan_mem(s, data, len, &r), MMR_ETIMEDOUT, "%s", mmr_err_msg());
    uint64_t took = mmr_time_mono_ms() - t0;
    cr_assert(took < 20000, "took %llu ms", (unsigned long long)took);
    cr_assert(strstr(mmr_err_msg(), "timed out") != NULL, "%s", mmr_err_msg());
    cr_assert_eq(r.count, 0);
    mmr_scan_result_free(&r);
    /* The scanner is still usable. */
    cr_assert_eq(mmr_scanner_scan_mem(s, "aa", 2, &r), 0, "%s", mmr_err_msg());
    cr_assert_eq(r.count, 1);
    mmr_scan_result_free(&r);
    free(data);
    mmr_scanner_destroy(s);
    mmr_scan_rules_unref(rules);
}

Test(scan_engine, too_many_matches_is_flagged)
{
    struct mmr_scan_rules *rules;
    cr_assert_eq(mmr_scan_rules_compile_string("rule many { strings: $a = \"ab\" condition: $a }",
                                               "many", &rules),
                 0);
    struct mmr_scanner *s;
    cr_assert_eq(mmr_scanner_create(rules, &s), 0);
    size_t len = 2 * 1100000;
    char *data = mmr_malloc(len);
    for (size_t i = 0; i < len; i += 2)
        memcpy(data + i, "ab", 2);
    struct mmr_scan_result r;
    int rc = mmr_scanner_scan_mem(s, data, len, &r);
    cr_assert(rc == 0 || rc == MMR_ETOOBIG, "%d %s", rc, mmr_err_msg());
    cr_assert(r.too_many_matches);
    mmr_scan_result_free(&r);
    free(data);
    mmr_scanner_destroy(s);
    mmr_scan_rules_unref(rules);
}

Test(scan_engine, save_and_load_round_trip)
{
    char tmp[512];
    mmr_test_mkdtemp("mmr-yeng", tmp, sizeof(tmp));
    char *path = mmr_test_path(tmp, "rules.yarc", NULL);
    struct mmr_scan_rules *rules = compile_ok("ok");
    cr_assert_eq(mmr_scan_rules_save(rules, path), 0, "%s", mmr_err_msg());
    mmr_scan_rules_unref(rules);

    struct mmr_scan_rules *loaded;
    cr_assert_eq(mmr_scan_rules_load(path, 64 << 20, &loaded), 0, "%s", mmr_err_msg());
    cr_assert_eq(mmr_scan_rules_count(loaded), 12);
    struct mmr_scanner *s;
    cr_assert_eq(mmr_scanner_create(loaded, &s), 0);
    struct mmr_scan_externals ext = {"evil.exe", "/home/taro/evil.exe", "exe", "pe", "taro"};
    cr_assert_eq(mmr_scanner_set_externals(s, &ext), 0);
    cr_assert_eq(severity_of(s, "MAMORI-TEST-MARKER", "plain_marker"), MMR_SCAN_SEV_CRITICAL);
    cr_assert_eq(severity_of(s, "x", "ext_all"), MMR_SCAN_SEV_DEFAULT);
    mmr_scanner_destroy(s);
    mmr_scan_rules_unref(loaded);

    /* Too big, damaged, not rules at all, missing. */
    cr_assert_eq(mmr_scan_rules_load(path, 16, &loaded), MMR_ETOOBIG);
    char *data;
    size_t len;
    cr_assert_eq(mmr_file_read_all(path, 64 << 20, &data, &len), 0);
    mmr_test_write_file(path, data, len / 2);
    cr_assert_eq(mmr_scan_rules_load(path, 64 << 20, &loaded), MMR_ECORRUPT, "%s", mmr_err_msg());
    free(data);
    mmr_test_write_file(path, "hello, not rules", 16);
    cr_assert_eq(mmr_scan_rules_load(path, 64 << 20, &loaded), MMR_ECORRUPT, "%s", mmr_err_msg());
    cr_assert(strstr(mmr_err_msg(), "rules.yarc") != NULL, "%s", mmr_err_msg());
    mmr_test_write_file(path, "", 0);
    cr_assert_eq(mmr_scan_rules_load(path, 64 << 20, &loaded), MMR_ECORRUPT);
    char *missing = mmr_test_path(tmp, "none.yarc", NULL);
    cr_assert_eq(mmr_scan_rules_load(missing, 64 << 20, &loaded), MMR_ENOENT);
    free(missing);
    free(path);
    mmr_test_rmtree(tmp);
}

Test(scan_engine, scans_japanese_path)
{
    char tmp[512];
    mmr_test_mkdtemp("mmr-yeng", tmp, sizeof(tmp));
    char *dir = mmr_test_path(tmp, "テスト", NULL);
    cr_assert_eq(mmr_mkdir_p(dir, false), 0, "%s", mmr_err_msg());
    char *path = mmr_test_path(dir, "日本語.txt", NULL);
    const char text[] = "請求書 MAMORI-TEST-MARKER です";
    mmr_test_write_file(path, text, sizeof(text) - 1);

    struct mmr_scan_rules *rules = compile_ok("ok");
    struct mmr_scanner *s;
    cr_assert_eq(mmr_scanner_create(rules, &s), 0);
    mmr_scan_rules_unref(rules);
    struct mmr_scan_result r;
    cr_assert_eq(mmr_scanner_scan_file(s, path, 1 << 20, &r), 0, "%s", mmr_err_msg());
    cr_assert_not_null(find(&r, "plain_marker"));
    mmr_scan_result_free(&r);

    /* Over the size limit, a directory, a missing file: errors, no matches. */
    cr_assert_eq(mmr_scanner_scan_file(s, path, 10, &r), MMR_ETOOBIG);
    cr_assert(strstr(mmr_err_msg(), "日本語.txt") != NULL, "%s", mmr_err_msg());
    cr_assert_eq(r.count, 0);
    int rc = mmr_scanner_scan_file(s, dir, 1 << 20, &r);
    cr_assert(rc == MMR_EINVAL || rc == MMR_EPERM, "%d %s", rc, mmr_err_msg());
    char *missing = mmr_test_path(dir, "無い.txt", NULL);
    cr_assert_eq(mmr_scanner_scan_file(s, missing, 1 << 20, &r), MMR_ENOENT);
    cr_assert_eq(r.count, 0);

    /* An empty file scans. */
    mmr_test_write_file(path, "", 0);
    cr_assert_eq(mmr_scanner_scan_file(s, path, 1 << 20, &r), 0, "%s", mmr_err_msg());
    cr_assert_not_null(find(&r, "empty_file"));
    mmr_scan_result_free(&r);

    mmr_scanner_destroy(s);
    free(missing);
    free(path);
    free(dir);
    mmr_test_rmtree(tmp);
}
