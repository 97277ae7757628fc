/* Unit tests for shared/config.c: the schema-driven INI loader against good
 * files and many broken ones, the redacted dump, and the value parsers. */
#include <criterion/criterion.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/base64.h"
#include "shared/config.h"
#include "shared/err.h"
#include "shared/mem.h"
#include "testutil.h"

struct tcfg {
    char *name;
    int64_t count;
    bool flag;
    char *token;
    char *level;
    uint64_t max_size;
    int64_t rotate;
    int64_t port;
    uint64_t cache;
    int64_t timeout;
    char *mode;
    int64_t offset;
};

static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const modes[] = {"auto", "manual", NULL};

#define K(sec, nm, ty, fld, def, lo, hi, ch, secret)                                               \
    {                                                                                              \
        sec, nm, ty, offsetof(struct tcfg, fld), def, lo, hi, ch, secret, "help for " nm           \
    }

static const struct mmr_cfg_key schema[] = {
    K("agent", "name", MMR_CFG_STRING, name, "mamori", 0, 0, NULL, false),
    K("agent", "count", MMR_CFG_INT, count, "5", 1, 100, NULL, false),
    K("agent", "flag", MMR_CFG_BOOL, flag, "false", 0, 0, NULL, false),
    K("agent", "token", MMR_CFG_STRING, token, NULL, 0, 0, NULL, true),
    K("log", "level", MMR_CFG_ENUM, level, "info", 0, 0, levels, false),
    K("log", "max_size", MMR_CFG_SIZE, max_size, "10M", 64 * 1024, 1024LL * 1024 * 1024, NULL,
      false),
    K("log", "rotate", MMR_CFG_DURATION, rotate, "1d", 1000, 30LL * 86400 * 1000, NULL, false),
    K("net", "port", MMR_CFG_INT, port, "8443", 1, 65535, NULL, false),
    K("net", "cache", MMR_CFG_SIZE, cache, NULL, 0, 0, NULL, false),
    K("net", "timeout", MMR_CFG_DURATION, timeout, "30s", 0, 0, NULL, false),
    K("net", "mode", MMR_CFG_ENUM, mode, NULL, 0, 0, modes, false),
    K("net", "offset", MMR_CFG_INT, offset, "-3", 0, 0, NULL, false),
};
#define NKEYS (sizeof(schema) / sizeof(schema[0]))

static struct tcfg cfg;
static char dir[512];

static void setup(void)
{
    memset(&cfg, 0, sizeof(cfg));
    mmr_test_mkdtemp("mmr-test-config", dir, sizeof(dir));
}

static void teardown(void)
{
    mmr_config_free(schema, NKEYS, &cfg);
    mmr_test_rmtree(dir);
}

TestSuite(config, .init = setup, .fini = teardown);

/* Writes len bytes to dir/name; returns the allocated path. */
static char *write_file(const char *name, const char *data, size_t len)
{
    char *path = mmr_asprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
    return path;
}

static char *write_text(const char *name, const char *text)
{
    return write_file(name, text, strlen(text));
}

static void load_ok(const char *text)
{
    int rc = mmr_config_load_string("t.conf", text, schema, NKEYS, &cfg);
    cr_assert_eq(rc, 0, "load failed: %s", mmr_err_msg());
}

static void assert_nothing_held(void)
{
    cr_assert_null(cfg.name);
    cr_assert_null(cfg.token);
    cr_assert_null(cfg.level);
    cr_assert_null(cfg.mode);
}

/* Loads text expecting code and exactly the message msg. */
static void load_bad(const char *text, int code, const char *msg)
{
    mmr_err_clear();
    int rc = mmr_config_load_string("t.conf", text, schema, NKEYS, &cfg);
    cr_assert_eq(rc, code, "rc %d for:\n%s\nmessage: %s", rc, text, mmr_err_msg());
    cr_assert_str_eq(mmr_err_msg(), msg);
    assert_nothing_held();
}

static void load_file_bad(const char *data, size_t len, int code, const char *fragment)
{
    char *path = write_file("bad.conf", data, len);
    mmr_err_clear();
    int rc = mmr_config_load(path, false, schema, NKEYS, &cfg);
    cr_assert_eq(rc, code, "rc %d: %s", rc, mmr_err_msg());
    cr_assert(strstr(mmr_err_msg(), fragment), "message '%s' lacks '%s'", mmr_err_msg(), fragment);
    cr_assert(strstr(mmr_err_msg(), path), "message '%s' lacks the path", mmr_err_msg());
    assert_nothing_held();
    remove(path);
    free(path);
}

static void assert_defaults(void)
{
    cr_assert_str_eq(cfg.name, "mamori");
    cr_assert_eq(cfg.count, 5);
    cr_assert_not(cfg.flag);
    cr_assert_str_eq(cfg.token, "");
    cr_assert_str_eq(cfg.level, "info");
    cr_assert_eq(cfg.max_size, 10u * 1024 * 1024);
    cr_assert_eq(cfg.rotate, 86400 * 1000);
    cr_assert_eq(cfg.port, 8443);
    cr_assert_eq(cfg.cache, 0);
    cr_assert_eq(cfg.timeout, 30000);
    cr_assert_str_eq(cfg.mode, "auto", "enum without a default takes its first choice");
    cr_assert_eq(cfg.offset, -3);
}

/* ---- good input ---------------------------------------------------------------- */

Test(config, defaults_without_text)
{
    cfg.name = (char *)"garbage the loader must not free";
    cr_assert_eq(mmr_config_load_string("t.conf", NULL, schema, NKEYS, &cfg), 0);
    assert_defaults();
}

Test(config, defaults_without_path)
{
    cr_assert_eq(mmr_config_load(NULL, false, schema, NKEYS, &cfg), 0, "%s", mmr_err_msg());
    assert_defaults();
}

Test(config, empty_file_gives_defaults)
{
    char *path = write_file("empty.conf", "", 0);
    cr_assert_eq(mmr_config_load(path, false, schema, NKEYS, &cfg), 0, "%s", mmr_err_msg());
    assert_defaults();
    remove(path);
    free(path);
}

Test(config, comments_and_blank_lines_only)
{
    load_ok("; comment\n# another\n\n   \n\t; indented comment\n");
    assert_defaults();
}

Test(config, missing_file)
{
    char *path = mmr_asprintf("%s/absent.conf", dir);
    cr_assert_eq(mmr_config_load(path, true, schema, NKEYS, &cfg), 0, "%s", mmr_err_msg());
    assert_defaults();
    mmr_config_free(schema, NKEYS, &cfg);

    cr_assert_eq(mmr_config_load(path, false, schema, NKEYS, &cfg), MMR_ENOENT);
    cr_assert(strstr(mmr_err_msg(), path), "%s", mmr_err_msg());
    assert_nothing_held();
    free(path);
}

Test(config, directory_is_refused)
{
    cr_assert_lt(mmr_config_load(dir, true, schema, NKEYS, &cfg), 0);
    assert_nothing_held();
}

Test(config, full_file)
{
    char *path = write_text("agent.conf", "; Mamori agent\n"
                                          "[agent]\n"
                                          "name = host-01\n"
                                          "count=100\n"
                                          "flag = Yes\n"
                                          "token = s3cr3t\n"
                                          "\n"
                                          "# logging\n"
                                          "[log]\n"
                                          "level = debug\n"
                                          "max_size = 64K\n"
                                          "rotate = 30d\n"
                                          "[net]\n"
                                          "port = 1\n"
                                          "cache = 18446744073709551615\n"
                                          "timeout = 500ms\n"
                                          "mode = manual\n"
                                          "offset = -9223372036854775808\n");
    cr_assert_eq(mmr_config_load(path, false, schema, NKEYS, &cfg), 0, "%s", mmr_err_msg());
    cr_assert_str_eq(cfg.name, "host-01");
    cr_assert_eq(cfg.count, 100);
    cr_assert(cfg.flag);
    cr_assert_str_eq(cfg.token, "s3cr3t");
    cr_assert_str_eq(cfg.level, "debug");
    cr_assert_eq(cfg.max_size, 64 * 1024);
    cr_assert_eq(cfg.rotate, 30LL * 86400 * 1000);
    cr_assert_eq(cfg.port, 1);
    cr_assert_eq(cfg.cache, UINT64_MAX);
    cr_assert_eq(cfg.timeout, 500);
    cr_assert_str_eq(cfg.mode, "manual");
    cr_assert_eq(cfg.offset, INT64_MIN);
    remove(path);
    free(path);
}

Test(config, crlf_line_endings)
{
    load_ok("[agent]\r\nname = crlf\r\ncount = 7\r\n[log]\r\nlevel = warn\r\n");
    cr_assert_str_eq(cfg.name, "crlf");
    cr_assert_eq(cfg.count, 7);
    cr_assert_str_eq(cfg.level, "warn");
}

Test(config, utf8_bom)
{
    load_ok("\xEF\xBB\xBF[agent]\nname = bom\n");
    cr_assert_str_eq(cfg.name, "bom");
    mmr_config_free(schema, NKEYS, &cfg);
    load_ok("\xEF\xBB\xBF\r\n[agent]\r\nname = bom2\r\n");
    cr_assert_str_eq(cfg.name, "bom2");
}

Test(config, bom_only_on_the_first_line)
{
    load_bad("[agent]\n\xEF\xBB\xBFname = x\n", MMR_EINVAL,
             "t.conf:2: [agent] unknown key '\xEF\xBB\xBFname' (valid keys: 'name', 'count', "
             "'flag', 'token')");
}

Test(config, japanese_values)
{
    load_ok("[agent]\nname = 東京都庁-端末０１\ntoken = パスワード\n");
    cr_assert_str_eq(cfg.name, "東京都庁-端末０１");
    cr_assert_str_eq(cfg.token, "パスワード");
    mmr_config_free(schema, NKEYS, &cfg);
    /* 1000 characters, 3000 bytes: far past the 199 bytes inih allowed. */
    struct mmr_buf b = {0};
    mmr_buf_appendf(&b, "[agent]\nname = ");
    for (int i = 0; i < 1000; i++)
        mmr_buf_appendf(&b, "日");
    load_ok(b.data);
    cr_assert_eq(strlen(cfg.name), 3000);
    cr_assert_str_eq(cfg.name, b.data + strlen("[agent]\nname = "));
    mmr_buf_free(&b);
}

Test(config, whitespace_and_indentation)
{
    load_ok("  [agent]  \n\tname\t=\t spaced value \t\n   count =  9\n");
    cr_assert_str_eq(cfg.name, "spaced value");
    cr_assert_eq(cfg.count, 9);
}

Test(config, empty_string_value)
{
    load_ok("[agent]\nname =\n");
    cr_assert_str_eq(cfg.name, "");
}

Test(config, last_line_without_newline)
{
    load_ok("[agent]\ncount = 42");
    cr_assert_eq(cfg.count, 42);
}

Test(config, same_section_twice)
{
    load_ok("[agent]\nname = a\n[log]\nlevel = warn\n[agent]\ncount = 3\n");
    cr_assert_str_eq(cfg.name, "a");
    cr_assert_eq(cfg.count, 3);
}

Test(config, free_zeroes_and_is_repeatable)
{
    load_ok("[agent]\nname = x\n");
    mmr_config_free(schema, NKEYS, &cfg);
    assert_nothing_held();
    mmr_config_free(schema, NKEYS, &cfg);
    assert_nothing_held();
}

/* ---- refused input --------------------------------------------------------------- */

Test(config, unknown_section)
{
    load_bad("[agent]\nname = x\n[lgo]\nlevel = info\n", MMR_EINVAL,
             "t.conf:3: unknown section [lgo] (did you mean [log]?)");
    load_bad("[zzzzzz]\nkey = 1\n", MMR_EINVAL,
             "t.conf:1: unknown section [zzzzzz] (valid sections: [agent], [log], [net])");
    load_bad("[ agnet ]\nname = x\n", MMR_EINVAL,
             "t.conf:1: unknown section [agnet] (did you mean [agent]?)");
    /* Refused even without keys: a typo'd header would hide the keys after it. */
    load_bad("[agent]\n[lgo]\n", MMR_EINVAL,
             "t.conf:2: unknown section [lgo] (did you mean [log]?)");
    load_bad("[]\n", MMR_EINVAL,
             "t.conf:1: unknown section [] (valid sections: [agent], [log], [net])");
    load_bad("[agent]\n[log ; comment]\n", MMR_EINVAL,
             "t.conf:2: unknown section [log ; comment] (valid sections: [agent], [log], [net])");
}

Test(config, section_header_spacing)
{
    load_ok("[ agent ]\nname = a\n[\tlog\t]\nlevel = warn\n  [net]  \nport = 2\n");
    cr_assert_str_eq(cfg.name, "a");
    cr_assert_str_eq(cfg.level, "warn");
    cr_assert_eq(cfg.port, 2);
}

Test(config, text_after_section_header)
{
    load_bad("[agent]\n[lo]g]\n", MMR_EINVAL, "t.conf:2: text after the section header: 'g]'");
    /* No inline comments, after a header either. */
    load_bad("[agent] ; trailing comment\nname = ok\n", MMR_EINVAL,
             "t.conf:1: text after the section header: '; trailing comment'");
    load_bad("[agent]\n[log] # logging\n", MMR_EINVAL,
             "t.conf:2: text after the section header: '# logging'");
    load_bad("[agent]x\n", MMR_EINVAL, "t.conf:1: text after the section header: 'x'");
    load_bad("[agent] name = x\n", MMR_EINVAL,
             "t.conf:1: text after the section header: 'name = x'");
    load_bad("[agent]]\n", MMR_EINVAL, "t.conf:1: text after the section header: ']'");
    load_bad("[agent] = 0123456789012345678901234567890123456789abc\n", MMR_EINVAL,
             "t.conf:1: text after the section header: "
             "'= 01234567890123456789012345678901234567...'");
    /* Checked before the name, so a typo and junk give the junk. */
    load_bad("[lgo] x\n", MMR_EINVAL, "t.conf:1: text after the section header: 'x'");
}

Test(config, unknown_key)
{
    load_bad("[log]\nmax_szie = 10M\n", MMR_EINVAL,
             "t.conf:2: [log] unknown key 'max_szie' (did you mean 'max_size'?)");
    load_bad("[log]\nmax size = 10M\n", MMR_EINVAL,
             "t.conf:2: [log] unknown key 'max size' (did you mean 'max_size'?)");
    load_bad("[log]\nverbosity = 3\n", MMR_EINVAL,
             "t.conf:2: [log] unknown key 'verbosity' (valid keys: 'level', 'max_size', "
             "'rotate')");
    load_bad("[agent]\nNAME = x\n", MMR_EINVAL,
             "t.conf:2: [agent] unknown key 'NAME' (valid keys: 'name', 'count', 'flag', "
             "'token')");
    load_bad("[agent]\n= x\n", MMR_EINVAL,
             "t.conf:2: [agent] unknown key '' (valid keys: 'name', 'count', 'flag', 'token')");
}

Test(config, long_unknown_names)
{
    /* Too far from any valid name for a suggestion: the message lists them. */
    load_bad("[log]\nlevel_of_detail_for_every_message_written_to_the_log_file = 1\n", MMR_EINVAL,
             "t.conf:2: [log] unknown key "
             "'level_of_detail_for_every_message_written_to_the_log_file' "
             "(valid keys: 'level', 'max_size', 'rotate')");
    load_bad("[a_section_name_too_long_for_a_did_you_mean_suggestion_at_all]\nname = x\n",
             MMR_EINVAL,
             "t.conf:1: unknown section [a_section_name_too_long_for_a_did_you_mean_suggestion_"
             "at_all] (valid sections: [agent], [log], [net])");
}

Test(config, key_outside_section)
{
    load_bad("name = x\n[agent]\n", MMR_EINVAL, "t.conf:1: key 'name' is outside any [section]");
    load_bad("; header\n\ncount = 1\n", MMR_EINVAL,
             "t.conf:3: key 'count' is outside any [section]");
}

Test(config, duplicate_key)
{
    load_bad("[agent]\nname = a\ncount = 2\nname = b\n", MMR_EINVAL,
             "t.conf:4: [agent] name: set twice (first on line 2)");
    load_bad("[agent]\ncount = 2\n[log]\n[agent]\ncount = 2\n", MMR_EINVAL,
             "t.conf:5: [agent] count: set twice (first on line 2)");
}

Test(config, continuation_lines_are_not_values)
{
    load_bad("[agent]\nname = first\n  second part\n", MMR_EINVAL,
             "t.conf:3: expected 'key = value', a [section] or a comment, got 'second part' "
             "(indented lines do not continue a value)");
    /* Indentation means nothing: an indented key is a key. */
    load_ok("[agent]\nname = first\n  count = 4\n");
    cr_assert_str_eq(cfg.name, "first");
    cr_assert_eq(cfg.count, 4);
}

Test(config, bad_values)
{
    load_bad("[log]\nmax_size = 10X\n", MMR_EINVAL,
             "t.conf:2: [log] max_size: '10X' is not a size (use e.g. 512K, 10M, 1G)");
    load_bad("[agent]\ncount = 12abc\n", MMR_EINVAL,
             "t.conf:2: [agent] count: '12abc' is not "
             "an integer");
    load_bad("[agent]\ncount =\n", MMR_EINVAL, "t.conf:2: [agent] count: '' is not an integer");
    load_bad("[agent]\nflag = maybe\n", MMR_EINVAL,
             "t.conf:2: [agent] flag: 'maybe' is not a boolean (use true or false)");
    load_bad("[log]\nlevel = loud\n", MMR_EINVAL,
             "t.conf:2: [log] level: 'loud' is not one of: debug, info, warn, error");
    load_bad("[log]\nlevel = INFO\n", MMR_EINVAL,
             "t.conf:2: [log] level: 'INFO' is not one of: debug, info, warn, error");
    load_bad("[log]\nrotate = 1 day\n", MMR_EINVAL,
             "t.conf:2: [log] rotate: '1 day' is not a duration (use e.g. 500ms, 30s, 5m, 2h, "
             "7d)");
    load_bad("[net]\noffset = 9223372036854775808\n", MMR_EINVAL,
             "t.conf:2: [net] offset: '9223372036854775808' is too large for an integer");
    load_bad("[net]\ncache = 16777216T\n", MMR_EINVAL,
             "t.conf:2: [net] cache: '16777216T' is too large for a size");
    load_bad("[agent]\ncount = 3 # not a comment mid-line\n", MMR_EINVAL,
             "t.conf:2: [agent] count: '3 # not a comment mid-line' is not an integer");
}

Test(config, out_of_range)
{
    load_bad("[agent]\ncount = 150\n", MMR_EINVAL,
             "t.conf:2: [agent] count: '150' is out of range (1 to 100)");
    load_bad("[agent]\ncount = 0\n", MMR_EINVAL,
             "t.conf:2: [agent] count: '0' is out of range (1 to 100)");
    load_bad("[log]\nmax_size = 2G\n", MMR_EINVAL,
             "t.conf:2: [log] max_size: '2G' is out of range (64K to 1G)");
    load_bad("[log]\nmax_size = 65535\n", MMR_EINVAL,
             "t.conf:2: [log] max_size: '65535' is out of range (64K to 1G)");
    load_bad("[log]\nrotate = 999ms\n", MMR_EINVAL,
             "t.conf:2: [log] rotate: '999ms' is out of range (1s to 30d)");
    load_bad("[net]\nport = 65536\n", MMR_EINVAL,
             "t.conf:2: [net] port: '65536' is out of range (1 to 65535)");
    load_ok("[agent]\ncount = 1\n[log]\nmax_size = 1G\nrotate = 1s\n");
}

Test(config, syntax_errors)
{
    load_bad("[agent\nname = x\n", MMR_EINVAL, "t.conf:1: section name is not closed with ']'");
    load_bad("[agent]\n  [log\n", MMR_EINVAL, "t.conf:2: section name is not closed with ']'");
    load_bad("[agent]\n[log = x\n", MMR_EINVAL, "t.conf:2: section name is not closed with ']'");
    load_bad("[agent]\ngarbage\n", MMR_EINVAL,
             "t.conf:2: expected 'key = value', a [section] or a comment, got 'garbage'");
    load_bad("[agent]\nport: 1\n", MMR_EINVAL,
             "t.conf:2: expected 'key = value', a [section] or a comment, got 'port: 1'");
    load_bad("[agent]\nname ; = x\n", MMR_EINVAL,
             "t.conf:2: [agent] unknown key 'name ;' (did you mean 'name'?)");
    load_bad("[agent]\nname: x = y\n", MMR_EINVAL,
             "t.conf:2: [agent] unknown key 'name: x' (valid keys: 'name', 'count', 'flag', "
             "'token')");
    load_bad("[agent]\nname\n", MMR_EINVAL,
             "t.conf:2: expected 'key = value', a [section] or a comment, got 'name'");
    load_bad("[agent]\ngarbage   \t\n", MMR_EINVAL,
             "t.conf:2: expected 'key = value', a [section] or a comment, got 'garbage'");
    load_bad("[agent]\nthis line is quite long and has no equals sign at all in it\n", MMR_EINVAL,
             "t.conf:2: expected 'key = value', a [section] or a comment, got 'this line is "
             "quite long and has no equal...'");
    load_bad("[agent]\n日本語日本語日本語日本語日本語\n", MMR_EINVAL,
             "t.conf:2: expected 'key = value', a [section] or a comment, got "
             "'日本語日本語日本語日本語日...'");
}

Test(config, first_error_wins)
{
    /* A syntax error before a bad value, and a bad value before a syntax error. */
    load_bad("[agent]\ngarbage\ncount = 0\n", MMR_EINVAL,
             "t.conf:2: expected 'key = value', a [section] or a comment, got 'garbage'");
    load_bad("[agent]\ncount = 0\ngarbage\n", MMR_EINVAL,
             "t.conf:2: [agent] count: '0' is out of range (1 to 100)");
    load_bad("[agent]\ncount = 0\n\xff\n", MMR_EINVAL,
             "t.conf:2: [agent] count: '0' is out of range (1 to 100)");
    load_bad("[agent\n\xff\n", MMR_EINVAL, "t.conf:1: section name is not closed with ']'");
}

Test(config, garbage_bytes)
{
    load_bad("[agent]\nname = caf\xe9\n", MMR_EINVAL, "t.conf:2: invalid UTF-8 (byte 0xe9)");
    load_bad("\xff\xfe[", MMR_EINVAL, "t.conf:1: invalid UTF-8 (byte 0xff)");
    load_bad("[agent]\nname = \xc0\xaf\n", MMR_EINVAL, "t.conf:2: invalid UTF-8 (byte 0xc0)");
    load_bad("[agent]\nname = \xed\xa0\x80\n", MMR_EINVAL, "t.conf:2: invalid UTF-8 (byte 0xed)");
    load_bad("[agent]\nname = \xf4\x90\x80\x80\n", MMR_EINVAL,
             "t.conf:2: invalid UTF-8 (byte 0xf4)");
    load_bad("[agent]\nname = \xe6\x97\n", MMR_EINVAL, "t.conf:2: invalid UTF-8 (byte 0xe6)");
    load_bad("[agent]\nname = a\x1b[31mred\n", MMR_EINVAL, "t.conf:2: control character 0x1b");
    load_bad("[agent]\nname = a\rb\n", MMR_EINVAL, "t.conf:2: control character 0x0d");
    load_bad("[agent]\n; comment with \x7f\n", MMR_EINVAL, "t.conf:2: control character 0x7f");
    load_bad("\x01\x02\x03", MMR_EINVAL, "t.conf:1: control character 0x01");
}

Test(config, nul_bytes)
{
#define BYTES(s) s, sizeof(s) - 1
    load_file_bad(BYTES("[agent]\nname = a\0b\n"), MMR_EINVAL, ":2: NUL byte");
    load_file_bad(BYTES("\0"), MMR_EINVAL, ":1: NUL byte");
    load_file_bad(BYTES("[agent]\nname = x\n; trailing\0"), MMR_EINVAL, ":3: NUL byte");
#undef BYTES
}

/* "[agent]\n" then a line of exactly len bytes "name = xxx...", then end. */
static char *line_of(size_t len, const char *end)
{
    struct mmr_buf b = {0};
    mmr_buf_appendf(&b, "[agent]\nname = ");
    size_t fill = len - strlen("name = ");
    char *x = mmr_malloc(fill);
    memset(x, 'x', fill);
    mmr_buf_append(&b, x, fill);
    free(x);
    mmr_buf_appendf(&b, "%s", end);
    return b.data;
}

Test(config, line_limit)
{
    /* 64 KiB exactly, with either line ending or none. */
    static const char *const ends[] = {"\n", "\r\n", ""};
    for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++) {
        char *text = line_of(64 * 1024, ends[i]);
        load_ok(text);
        cr_assert_eq(strlen(cfg.name), 64 * 1024 - strlen("name = "));
        mmr_config_free(schema, NKEYS, &cfg);
        free(text);
    }
    char *text = line_of(64 * 1024 + 1, "\ncount = 7\n");
    load_bad(text, MMR_ETOOBIG, "t.conf:2: line is longer than 65536 bytes");
    free(text);
}

Test(config, very_long_lines_name_their_line)
{
    /* 70 KiB, on line 4, in a file and in a string. */
    struct mmr_buf b = {0};
    mmr_buf_appendf(&b, "[agent]\n; a comment\ncount = 3\ntoken = ");
    for (int i = 0; i < 70 * 1024; i++)
        mmr_buf_append(&b, "k", 1);
    mmr_buf_appendf(&b, "\nflag = true\n");
    load_bad(b.data, MMR_ETOOBIG, "t.conf:4: line is longer than 65536 bytes");
    load_file_bad(b.data, b.len, MMR_ETOOBIG, ":4: line is longer than 65536 bytes");
    mmr_buf_free(&b);

    /* Comments and indentation count too: the limit is on the line as written. */
    mmr_buf_appendf(&b, "[agent]\n;");
    for (int i = 0; i < 70 * 1024; i++)
        mmr_buf_append(&b, " ", 1);
    load_bad(b.data, MMR_ETOOBIG, "t.conf:2: line is longer than 65536 bytes");
    mmr_buf_free(&b);
}

/* An enrollment token as the server makes it: "mmr1." + base64url(JSON) with
 * the URL, id, secret, CA pin and Japanese organisation and group names,
 * json_len bytes of JSON. Allocated. */
static char *make_token(size_t json_len)
{
    const char *head =
        "{\"v\":1,\"url\":\"https://mamori.example.lg.jp:8443\","
        "\"id\":\"6f1c2b9e-3d47-4a8e-9b21-0c5d7e8f9a10\","
        "\"ca\":\"3b7e9f0a1c2d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071829304a5b6c7\","
        "\"org\":\"東京都総務局デジタル推進課\","
        "\"group\":\"本庁舎 三階 情報システム担当\","
        "\"secret\":\"";
    size_t fixed = strlen(head) + strlen("\"}");
    cr_assert_gt(json_len, fixed);
    struct mmr_buf json = {0};
    mmr_buf_appendf(&json, "%s", head);
    for (size_t i = 0; i < json_len - fixed; i++)
        mmr_buf_append(&json, &"Zq3-x_9K"[i % 8], 1);
    mmr_buf_appendf(&json, "\"}");
    cr_assert_eq(json.len, json_len);

    char *b64 = mmr_base64_encode(json.data, json.len);
    mmr_buf_free(&json);
    struct mmr_buf tok = {0};
    mmr_buf_appendf(&tok, "mmr1.");
    for (const char *c = b64; *c && *c != '='; c++) {
        char u = *c == '+' ? '-' : *c == '/' ? '_' : *c;
        mmr_buf_append(&tok, &u, 1);
    }
    free(b64);
    return tok.data;
}

Test(config, enrollment_token_of_400_bytes)
{
    /* 296 bytes of JSON: 395 characters of base64url, 400 with "mmr1.". */
    char *token = make_token(296);
    cr_assert_eq(strlen(token), 400);
    char *text = mmr_asprintf("\xEF\xBB\xBF; enrolled by the installer\r\n[agent]\r\n"
                              "token = %s\r\nname = pc-01\r\n",
                              token);
    char *path = write_text("agent.conf", text);
    cr_assert_eq(mmr_config_load(path, false, schema, NKEYS, &cfg), 0, "%s", mmr_err_msg());
    cr_assert_str_eq(cfg.token, token);
    cr_assert_str_eq(cfg.name, "pc-01");
    char *dump = mmr_config_dump(schema, NKEYS, &cfg);
    cr_assert(strstr(dump, "token = <redacted>\n"), "%s", dump);
    cr_assert_null(strstr(dump, "mmr1."));
    free(dump);
    remove(path);
    free(path);
    free(text);
    free(token);
}

Test(config, values_keep_equals_semicolons_and_hashes)
{
    /* No inline comments: everything after the first '=' is the value. */
    load_ok("[agent]\n"
            "name = a=b ; not a comment # nor this\n"
            "token = ;leading;=x==#\n"
            "# a comment\n"
            "  ; an indented comment\n"
            "\t# another\n"
            "flag=on\n");
    cr_assert_str_eq(cfg.name, "a=b ; not a comment # nor this");
    cr_assert_str_eq(cfg.token, ";leading;=x==#");
    cr_assert(cfg.flag);
    mmr_config_free(schema, NKEYS, &cfg);

    load_ok("[agent]\nname = # starts with a hash\ntoken==\n");
    cr_assert_str_eq(cfg.name, "# starts with a hash");
    cr_assert_str_eq(cfg.token, "=");
    mmr_config_free(schema, NKEYS, &cfg);

    /* A comment after a typed value makes it invalid rather than vanish. */
    load_bad("[net]\nmode = manual ; was auto\n", MMR_EINVAL,
             "t.conf:2: [net] mode: 'manual ; was auto' is not one of: auto, manual");
    load_bad("[net]\nport = 8443 ; default\n", MMR_EINVAL,
             "t.conf:2: [net] port: '8443 ; default' is not an integer");
}

Test(config, file_over_one_mebibyte)
{
    size_t len = 1024 * 1024 + 1;
    char *data = mmr_malloc(len);
    memset(data, '\n', len);
    load_file_bad(data, len, MMR_ETOOBIG, "over the limit");
    free(data);

    /* Exactly 1 MiB is accepted. */
    data = mmr_malloc(len - 1);
    memset(data, '\n', len - 1);
    memcpy(data, "[agent]\ncount = 6\n", 18);
    char *path = write_file("big.conf", data, len - 1);
    cr_assert_eq(mmr_config_load(path, false, schema, NKEYS, &cfg), 0, "%s", mmr_err_msg());
    cr_assert_eq(cfg.count, 6);
    remove(path);
    free(path);
    free(data);
}

Test(config, message_names_the_file)
{
    char *path = write_text("named.conf", "[agent]\ncount = x\n");
    cr_assert_eq(mmr_config_load(path, false, schema, NKEYS, &cfg), MMR_EINVAL);
    char *want = mmr_asprintf("%s:2: [agent] count: 'x' is not an integer", path);
    cr_assert_str_eq(mmr_err_msg(), want);
    free(want);
    remove(path);
    free(path);

    cr_assert_eq(mmr_config_load_string(NULL, "[agent]\n", schema, NKEYS, &cfg), 0);
    mmr_config_free(schema, NKEYS, &cfg);
    cr_assert_eq(mmr_config_load_string(NULL, "[agent]\nbad\n", schema, NKEYS, &cfg), MMR_EINVAL);
    cr_assert(strncmp(mmr_err_msg(), "config:2: ", 10) == 0, "%s", mmr_err_msg());
}

/* ---- schema mistakes --------------------------------------------------------------- */

struct small {
    int64_t n;
    char *s;
    char *e;
};

Test(config_schema, bad_default_names_the_key)
{
    struct mmr_cfg_key bad[] = {
        {"x", "s", MMR_CFG_STRING, offsetof(struct small, s), "ok", 0, 0, NULL, false, ""},
        {"x", "n", MMR_CFG_INT, offsetof(struct small, n), "ten", 0, 0, NULL, false, ""},
    };
    struct small c = {0};
    cr_assert_eq(mmr_config_load_string("t", "", bad, 2, &c), MMR_EINVAL);
    cr_assert_str_eq(mmr_err_msg(), "config schema: default of [x] n: 'ten' is not an integer");
    cr_assert_null(c.s, "default string freed on error");

    bad[1].def = "500";
    bad[1].min = 1;
    bad[1].max = 100;
    cr_assert_eq(mmr_config_load_string("t", "", bad, 2, &c), MMR_EINVAL);
    cr_assert_str_eq(mmr_err_msg(),
                     "config schema: default of [x] n: '500' is out of range (1 to 100)");
}

Test(config_schema, mistakes_are_refused)
{
    static const char *const none[] = {NULL};
    struct small c = {0};
    struct mmr_cfg_key k[2] = {
        {"x", "n", MMR_CFG_INT, offsetof(struct small, n), NULL, 0, 0, NULL, false, ""},
        {"x", "n", MMR_CFG_STRING, offsetof(struct small, s), NULL, 0, 0, NULL, false, ""},
    };
    cr_assert_eq(mmr_config_load_string("t", "", k, 2, &c), MMR_EINVAL);
    cr_assert_str_eq(mmr_err_msg(), "config schema: [x] n is listed twice");

    k[1].name = "e";
    k[1].type = MMR_CFG_ENUM;
    k[1].offset = offsetof(struct small, e);
    cr_assert_eq(mmr_config_load_string("t", "", k, 2, &c), MMR_EINVAL);
    cr_assert_str_eq(mmr_err_msg(), "config schema: [x] e: enum without choices");
    k[1].choices = none;
    cr_assert_eq(mmr_config_load_string("t", "", k, 2, &c), MMR_EINVAL);

    k[1].type = MMR_CFG_STRING;
    k[0].min = 5;
    k[0].max = 1;
    cr_assert_eq(mmr_config_load_string("t", "", k, 2, &c), MMR_EINVAL);
    cr_assert_str_eq(mmr_err_msg(), "config schema: [x] n: bad limits");

    k[0].min = k[0].max = 0;
    k[0].section = NULL;
    cr_assert_eq(mmr_config_load_string("t", "", k, 2, &c), MMR_EINVAL);
    cr_assert_str_eq(mmr_err_msg(), "config schema: key 0 has no section or name");
    k[0].section = "x";
    k[0].type = (enum mmr_cfg_type)42;
    cr_assert_eq(mmr_config_load_string("t", "", k, 2, &c), MMR_EINVAL);
    cr_assert_str_eq(mmr_err_msg(), "config schema: [x] n: unknown type 42");

    k[0].type = MMR_CFG_INT;
    cr_assert_eq(mmr_config_load_string("t", "[x]\nn = 4\ne = hi\n", k, 2, &c), 0);
    cr_assert_eq(c.n, 4);
    cr_assert_null(c.s, "a field outside the schema is not touched");
    cr_assert_str_eq(c.e, "hi");
    mmr_config_free(k, 2, &c);
    cr_assert_null(c.e);
}

Test(config_schema, empty_schema)
{
    struct small c = {0};
    cr_assert_eq(mmr_config_load_string("t", "", NULL, 0, &c), 0);
    cr_assert_eq(mmr_config_load_string("t", "[a]\nb = c\n", NULL, 0, &c), MMR_EINVAL);
    cr_assert_str_eq(mmr_err_msg(), "t:1: unknown section [a] (no sections are valid)");
    char *dump = mmr_config_dump(NULL, 0, &c);
    cr_assert_str_eq(dump, "");
    free(dump);
}

/* ---- dump ----------------------------------------------------------------------------- */

Test(config, dump_defaults)
{
    load_ok("");
    char *dump = mmr_config_dump(schema, NKEYS, &cfg);
    cr_assert_str_eq(dump, "[agent]\n"
                           "name = mamori\n"
                           "count = 5\n"
                           "flag = false\n"
                           "token =\n"
                           "\n"
                           "[log]\n"
                           "level = info\n"
                           "max_size = 10M\n"
                           "rotate = 1d\n"
                           "\n"
                           "[net]\n"
                           "port = 8443\n"
                           "cache = 0\n"
                           "timeout = 30s\n"
                           "mode = auto\n"
                           "offset = -3\n");
    free(dump);
}

Test(config, dump_redacts_and_canonicalises)
{
    load_ok("[agent]\ntoken = hunter2\nflag = on\n[log]\nmax_size = 1536K\nrotate = 90m\n"
            "[net]\ncache = 1000\ntimeout = 1500ms\n");
    char *dump = mmr_config_dump(schema, NKEYS, &cfg);
    cr_assert(strstr(dump, "token = <redacted>\n"), "%s", dump);
    cr_assert_null(strstr(dump, "hunter2"));
    cr_assert(strstr(dump, "flag = true\n"), "%s", dump);
    cr_assert(strstr(dump, "max_size = 1536K\n"), "%s", dump);
    cr_assert(strstr(dump, "rotate = 90m\n"), "%s", dump);
    cr_assert(strstr(dump, "cache = 1000\n"), "%s", dump);
    cr_assert(strstr(dump, "timeout = 1500ms\n"), "%s", dump);
    free(dump);
}

Test(config, dump_reloads_to_the_same_values)
{
    load_ok("[agent]\nname = 端末 A\ncount = 77\nflag = 1\n[log]\nlevel = error\n"
            "max_size = 3145728\nrotate = 7200s\n[net]\ncache = 5T\ntimeout = 0\nmode = manual\n");
    char *dump = mmr_config_dump(schema, NKEYS, &cfg);
    struct tcfg again = {0};
    cr_assert_eq(mmr_config_load_string("dump", dump, schema, NKEYS, &again), 0, "%s\n%s",
                 mmr_err_msg(), dump);
    cr_assert_str_eq(again.name, cfg.name);
    cr_assert_eq(again.count, cfg.count);
    cr_assert_eq(again.flag, cfg.flag);
    cr_assert_str_eq(again.level, cfg.level);
    cr_assert_eq(again.max_size, 3145728);
    cr_assert_eq(again.rotate, 7200 * 1000);
    cr_assert_eq(again.cache, 5ULL << 40);
    cr_assert_eq(again.timeout, 0);
    cr_assert_str_eq(again.mode, "manual");
    mmr_config_free(schema, NKEYS, &again);
    free(dump);
}

Test(config, dump_neutralises_control_characters)
{
    load_ok("");
    free(cfg.name);
    cfg.name = mmr_strdup("a\nb\x1b\r\x7f\tc");
    char *dump = mmr_config_dump(schema, NKEYS, &cfg);
    cr_assert(strstr(dump, "name = a?b???\tc\n"), "%s", dump);
    free(dump);
}

Test(config, dump_reloads_to_the_same_strings)
{
    /* Whatever a file can hold in a string survives a dump and a reload:
     * '=', ';', '#', '[', tabs inside, a BOM character past line 1. */
    load_ok("[agent]\nname = [x] a=b\t; c # d \xEF\xBB\xBF 端末 =\n");
    char *dump = mmr_config_dump(schema, NKEYS, &cfg);
    struct tcfg again = {0};
    cr_assert_eq(mmr_config_load_string("dump", dump, schema, NKEYS, &again), 0, "%s\n%s",
                 mmr_err_msg(), dump);
    cr_assert_str_eq(again.name, "[x] a=b\t; c # d \xEF\xBB\xBF 端末 =");
    mmr_config_free(schema, NKEYS, &again);
    free(dump);
}

/* ---- value parsers ---------------------------------------------------------------------- */

Test(parse, size)
{
    static const struct {
        const char *s;
        uint64_t v;
    } ok[] = {
        {"0", 0},
        {"512", 512},
        {"512B", 512},
        {"64K", 65536},
        {"64k", 65536},
        {"64KB", 65536},
        {"10M", 10485760},
        {"2G", 2147483648ULL},
        {"3T", 3ULL << 40},
        {"18446744073709551615", UINT64_MAX},
        {"16777215T", 16777215ULL << 40},
        {"007", 7},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        uint64_t v = 1;
        cr_assert_eq(mmr_parse_size(ok[i].s, &v), 0, "%s: %s", ok[i].s, mmr_err_msg());
        cr_assert_eq(v, ok[i].v, "%s", ok[i].s);
    }
    const char *bad[] = {"",     "K",    "-1",   " 1",   "1 ", "1.5M", "10X",
                         "10MM", "10 M", "0x10", "1KiB", "1P", "+1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 1;
        cr_assert_eq(mmr_parse_size(bad[i], &v), MMR_EINVAL, "accepted '%s'", bad[i]);
        cr_assert(strstr(mmr_err_msg(), "is not a size"), "%s", mmr_err_msg());
        cr_assert_eq(v, 1);
    }
    const char *huge[] = {"18446744073709551616", "16777216T", "17179869184G",
                          "99999999999999999999999999"};
    for (size_t i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
        uint64_t v = 1;
        cr_assert_eq(mmr_parse_size(huge[i], &v), MMR_EINVAL, "accepted '%s'", huge[i]);
        cr_assert(strstr(mmr_err_msg(), "too large"), "%s", mmr_err_msg());
        cr_assert_eq(v, 1);
    }
}

Test(parse, duration)
{
    static const struct {
        const char *s;
        int64_t v;
    } ok[] = {
        {"0", 0},
        {"0ms", 0},
        {"500ms", 500},
        {"30s", 30000},
        {"5m", 300000},
        {"2h", 7200000},
        {"7d", 604800000},
        {"9223372036854775807ms", INT64_MAX},
        {"106751991167d", 106751991167LL * 86400000},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int64_t v = 1;
        cr_assert_eq(mmr_parse_duration_ms(ok[i].s, &v), 0, "%s: %s", ok[i].s, mmr_err_msg());
        cr_assert_eq(v, ok[i].v, "%s", ok[i].s);
    }
    const char *bad[] = {"",      "5",    "s",   "-5s",  "5S", "5M",
                         "1h30m", "1.5s", "5 s", "5sec", "ms", "05x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t v = 1;
        cr_assert_eq(mmr_parse_duration_ms(bad[i], &v), MMR_EINVAL, "accepted '%s'", bad[i]);
        cr_assert(strstr(mmr_err_msg(), "is not a duration"), "%s", mmr_err_msg());
        cr_assert_eq(v, 1);
    }
    const char *huge[] = {"9223372036854775808ms", "106751991168d", "9223372036854775807s",
                          "99999999999999999999999d"};
    for (size_t i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
        int64_t v = 1;
        cr_assert_eq(mmr_parse_duration_ms(huge[i], &v), MMR_EINVAL, "accepted '%s'", huge[i]);
        cr_assert(strstr(mmr_err_msg(), "too long"), "%s", mmr_err_msg());
        cr_assert_eq(v, 1);
    }
}

Test(parse, boolean)
{
    const char *yes[] = {"true", "TRUE", "True", "yes", "Yes", "on", "ON", "1"};
    const char *no[] = {"false", "FALSE", "no", "No", "off", "Off", "0"};
    const char *bad[] = {"", "2", "tru", "truex", "y", "n", "enabled", " true", "00", "-1"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        bool b = false;
        cr_assert_eq(mmr_parse_bool(yes[i], &b), 0, "%s", yes[i]);
        cr_assert(b, "%s", yes[i]);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        bool b = true;
        cr_assert_eq(mmr_parse_bool(no[i], &b), 0, "%s", no[i]);
        cr_assert_not(b, "%s", no[i]);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        bool b = true;
        cr_assert_eq(mmr_parse_bool(bad[i], &b), MMR_EINVAL, "accepted '%s'", bad[i]);
        cr_assert(b);
        cr_assert(strstr(mmr_err_msg(), "is not a boolean"), "%s", mmr_err_msg());
    }
}

Test(config, integers_at_the_limits)
{
    load_ok("[net]\noffset = 9223372036854775807\n");
    cr_assert_eq(cfg.offset, INT64_MAX);
    mmr_config_free(schema, NKEYS, &cfg);
    load_ok("[net]\noffset = -0\n");
    cr_assert_eq(cfg.offset, 0);
    mmr_config_free(schema, NKEYS, &cfg);
    load_bad("[net]\noffset = -9223372036854775809\n", MMR_EINVAL,
             "t.conf:2: [net] offset: '-9223372036854775809' is too large for an integer");
    load_bad("[net]\noffset = +5\n", MMR_EINVAL, "t.conf:2: [net] offset: '+5' is not an integer");
    load_bad("[net]\noffset = -\n", MMR_EINVAL, "t.conf:2: [net] offset: '-' is not an integer");
    load_bad("[net]\noffset = 0x10\n", MMR_EINVAL,
             "t.conf:2: [net] offset: '0x10' is not an integer");
}
