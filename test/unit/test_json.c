/* Unit tests for shared/json.c: bounded parsing of hostile input with
 * located messages, the typed getters' path-naming errors, and dumps. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/json.h"
#include "shared/mem.h"

static json_t *parse_ok(const char *text)
{
    json_t *v = NULL;
    int rc = mmr_json_parse(text, strlen(text), MMR_JSON_MAX_DEPTH, &v);
    cr_assert_eq(rc, 0, "parse '%s': %s", text, mmr_err_msg());
    cr_assert_not_null(v);
    return v;
}

/* Parses len bytes expecting code; the message must contain fragment. */
static void parse_bad_n(const char *text, size_t len, size_t depth, int code, const char *fragment)
{
    json_t *v = (json_t *)(uintptr_t)0x1;
    mmr_err_clear();
    int rc = mmr_json_parse(text, len, depth, &v);
    cr_assert_eq(rc, code, "parse '%.*s' gave %d (%s)", (int)len, text, rc, mmr_err_msg());
    cr_assert_eq(v, (json_t *)(uintptr_t)0x1, "*out written on error");
    cr_assert(strstr(mmr_err_msg(), fragment), "message '%s' lacks '%s'", mmr_err_msg(), fragment);
}

static void parse_bad(const char *text, int code, const char *fragment)
{
    parse_bad_n(text, strlen(text), MMR_JSON_MAX_DEPTH, code, fragment);
}

/* '[' * open + "1" + ']' * open: a document nested `open` levels deep. */
static char *nested(size_t open, char o, char c)
{
    char *s = mmr_malloc(open * 2 + 2);
    memset(s, o, open);
    s[open] = '1';
    memset(s + open + 1, c, open);
    s[open * 2 + 1] = '\0';
    return s;
}

/* ---- parsing ---------------------------------------------------------------- */

Test(json_parse, scalars_objects_arrays)
{
    const char *docs[] = {"1",
                          "-5",
                          "2.5",
                          "\"x\"",
                          "true",
                          "false",
                          "null",
                          "[]",
                          "{}",
                          "{\"a\": [1, {\"b\": null}], \"c\": \"d\"}",
                          " \n\t[1]\r\n "};
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++)
        json_decref(parse_ok(docs[i]));
}

Test(json_parse, reads_only_len_bytes)
{
    /* Not NUL-terminated: the text continues past len with garbage. */
    const char buf[] = {'{', '"', 'a', '"', ':', '1', '}', 'x', 'y', 'z'};
    json_t *v = NULL;
    cr_assert_eq(mmr_json_parse(buf, 7, 4, &v), 0, "%s", mmr_err_msg());
    cr_assert_eq(json_integer_value(json_object_get(v, "a")), 1);
    json_decref(v);
}

Test(json_parse, empty_input)
{
    parse_bad_n("", 0, 8, MMR_EINVAL, "line 1, column 1: empty JSON document");
    parse_bad("   \n\t ", MMR_EINVAL, "empty JSON document");
    parse_bad_n(NULL, 0, 8, MMR_EINVAL, "empty");
}

Test(json_parse, truncated)
{
    parse_bad("{\"a\": [1, 2", MMR_EINVAL, "line 1, column 11: ']' expected near end of file");
    parse_bad("{\"a\":", MMR_EINVAL, "line 1, column 5:");
    parse_bad("{\"a\"", MMR_EINVAL, "':' expected");
    parse_bad("\"abc", MMR_EINVAL, "premature end of input");
    parse_bad("tru", MMR_EINVAL, "invalid token");
    parse_bad("[1,2,]", MMR_EINVAL, "unexpected token near ']'");
}

Test(json_parse, error_names_line_and_column)
{
    parse_bad("{\n  \"a\": 1,\n  \"b\": x\n}", MMR_EINVAL, "line 3, column 8: invalid token");
    /* Columns count characters, not bytes. */
    parse_bad("{\"日本\": x}", MMR_EINVAL, "line 1, column 8:");
}

Test(json_parse, trailing_garbage)
{
    parse_bad("{} x", MMR_EINVAL, "end of file expected");
    parse_bad("{}{}", MMR_EINVAL, "line 1, column 3: end of file expected");
    parse_bad("1 2", MMR_EINVAL, "end of file expected");
    parse_bad("[1]\n]", MMR_EINVAL, "line 2, column 1");
    json_decref(parse_ok("{\"a\": 1}\n\n"));
}

Test(json_parse, duplicate_keys_refused)
{
    parse_bad("{\"a\": 1, \"a\": 2}", MMR_EINVAL, "duplicate object key");
    parse_bad("{\"x\": {\"b\": 1, \"b\": 1}}", MMR_EINVAL, "duplicate object key near '\"b\"'");
    /* The same key in sibling objects is fine. */
    json_decref(parse_ok("[{\"a\": 1}, {\"a\": 2}]"));
}

Test(json_parse, huge_numbers)
{
    parse_bad("123456789012345678901234567890", MMR_EINVAL, "too big integer");
    parse_bad("-99999999999999999999", MMR_EINVAL, "too big negative integer");
    parse_bad("[1e400]", MMR_EINVAL, "real number overflow");
    parse_bad("-1e999", MMR_EINVAL, "real number overflow");
    json_t *v = parse_ok("[9223372036854775807, -9223372036854775808, 1.5e308]");
    cr_assert_eq(json_integer_value(json_array_get(v, 0)), INT64_MAX);
    cr_assert_eq(json_integer_value(json_array_get(v, 1)), INT64_MIN);
    json_decref(v);
}

Test(json_parse, invalid_utf8)
{
    parse_bad("\"\xff\"", MMR_EINVAL, "unable to decode byte 0xff");
    parse_bad("\"\xc0\xaf\"", MMR_EINVAL, "0xc0");             /* overlong '/' */
    parse_bad("\"\xed\xa0\x80\"", MMR_EINVAL, "0xed");         /* UTF-8 encoded surrogate */
    parse_bad("\"\xe6\x97\"", MMR_EINVAL, "0xe6");             /* truncated sequence */
    parse_bad("{\"k\xf8\": 1}", MMR_EINVAL, "line 1, column"); /* invalid lead byte in a key */
    parse_bad("\xef\xbb\xbf{}", MMR_EINVAL, "line 1");         /* BOM is not JSON */
    parse_bad("\"\\ud800\"", MMR_EINVAL, "invalid Unicode");
}

Test(json_parse, nul_bytes)
{
    parse_bad_n("[1,\0 2]", 7, 8, MMR_EINVAL, "line 1, column 4: NUL byte");
    parse_bad_n("\"a\0b\"", 5, 8, MMR_EINVAL, "NUL byte");
    parse_bad_n("{}\0", 3, 8, MMR_EINVAL, "NUL byte");
    parse_bad("\"\\u0000\"", MMR_EINVAL, "\\u0000 is not allowed");
}

Test(json_parse, control_characters_not_echoed)
{
    parse_bad("\"ab\x1b[31m\"", MMR_EINVAL, "control character 0x1b");
    cr_assert_null(strchr(mmr_err_msg(), '\x1b'), "message carries the raw escape");
}

Test(json_parse, japanese_text)
{
    json_t *v = parse_ok("{\"名前\": \"山田太郎\", \"メモ\": \"\\u65e5\\u672c\"}");
    cr_assert_str_eq(json_string_value(json_object_get(v, "名前")), "山田太郎");
    cr_assert_str_eq(json_string_value(json_object_get(v, "メモ")), "日本");
    json_decref(v);
}

Test(json_depth, limit_is_inclusive)
{
    for (size_t depth = 0; depth <= 40; depth++) {
        char *arr = nested(depth, '[', ']');
        json_t *v = NULL;
        cr_assert_eq(mmr_json_parse(arr, strlen(arr), depth, &v), 0, "depth %zu: %s", depth,
                     mmr_err_msg());
        json_decref(v);
        if (depth > 0)
            parse_bad_n(arr, strlen(arr), depth - 1, MMR_ETOOBIG, "nesting deeper than");
        free(arr);
    }
}

Test(json_depth, beyond_default_limit)
{
    char *arr = nested(MMR_JSON_MAX_DEPTH + 1, '[', ']');
    parse_bad(arr, MMR_ETOOBIG, "line 1, column 33: nesting deeper than 32 levels");
    free(arr);
}

Test(json_depth, objects_and_mixed)
{
    const char *doc = "{\"a\": {\"b\": [ {\"c\": []} ]}}"; /* five levels */
    json_t *v = NULL;
    cr_assert_eq(mmr_json_parse(doc, strlen(doc), 5, &v), 0, "%s", mmr_err_msg());
    json_decref(v);
    parse_bad_n(doc, strlen(doc), 4, MMR_ETOOBIG, "column 21: nesting deeper than 4 levels");
}

Test(json_depth, brackets_in_strings_do_not_count)
{
    const char *docs[] = {
        "[\"[[[[[[[[{{{{{{\"]",
        "[\"\\\"[[[[[[[[[\"]", /* escaped quote does not end the string */
        "[\"\\\\\", \"]]]\"]", /* escaped backslash does end it before the quote */
        "{\"[[[[\": \"{{{{\"}",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        json_t *v = NULL;
        cr_assert_eq(mmr_json_parse(docs[i], strlen(docs[i]), 1, &v), 0, "doc %zu: %s", i,
                     mmr_err_msg());
        json_decref(v);
    }
    /* After an escaped backslash the string is over, so the brackets count. */
    parse_bad_n("[\"\\\\\", [[1]]]", 13, 2, MMR_ETOOBIG, "nesting deeper than 2");
}

Test(json_depth, unbalanced_closers_do_not_underflow)
{
    parse_bad_n("]]]]]]]][[1]]", 13, 1, MMR_ETOOBIG, "nesting deeper than 1");
    parse_bad("]]]", MMR_EINVAL, "line 1, column 1");
}

Test(json_depth, very_deep_input_is_cheap)
{
    char *arr = nested(200000, '[', ']');
    parse_bad(arr, MMR_ETOOBIG, "nesting deeper than 32");
    free(arr);
    char *obj = mmr_malloc(400001);
    for (size_t i = 0; i < 100000; i++)
        memcpy(obj + i * 4, "{\"\":", 4);
    obj[400000] = '\0';
    parse_bad(obj, MMR_ETOOBIG, "nesting deeper than 32");
    free(obj);
}

Test(json_parse_object, accepts_objects_only)
{
    json_t *v = NULL;
    cr_assert_eq(mmr_json_parse_object("{\"a\":1}", 7, 4, &v), 0);
    cr_assert(json_is_object(v));
    json_decref(v);

    const char *others[] = {"[]", "1", "\"s\"", "null", "true", "2.5"};
    const char *names[] = {"an array", "an integer", "a string", "null", "true", "a real number"};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        v = (json_t *)(uintptr_t)0x1;
        cr_assert_eq(mmr_json_parse_object(others[i], strlen(others[i]), 4, &v), MMR_EINVAL);
        cr_assert_eq(v, (json_t *)(uintptr_t)0x1);
        cr_assert(strstr(mmr_err_msg(), "expected a JSON object"), "%s", mmr_err_msg());
        cr_assert(strstr(mmr_err_msg(), names[i]), "%s", mmr_err_msg());
    }
}

Test(json_parse_object, passes_parse_errors_through)
{
    json_t *v = NULL;
    cr_assert_eq(mmr_json_parse_object("{\"a\":", 5, 4, &v), MMR_EINVAL);
    cr_assert(strstr(mmr_err_msg(), "line 1, column 5"), "%s", mmr_err_msg());
    cr_assert_eq(mmr_json_parse_object("[[[", 3, 2, &v), MMR_ETOOBIG);
}

/* ---- getters -------------------------------------------------------------------- */

static json_t *doc;

static void load_doc(void)
{
    doc = parse_ok("{\"scan\": {\"cpu_cap\": 150, \"name\": \"nightly\", \"on\": true,"
                   " \"ratio\": 0.5, \"paths\": [\"/a\"], \"opts\": {}, \"nothing\": null,"
                   " \"big\": 9223372036854775807, \"neg\": -9223372036854775808,"
                   " \"a b\": 1, \"q\\\"\\\\\\n\": 2, \"日本\": 3}}");
}

static void free_doc(void)
{
    json_decref(doc);
}

static json_t *scan(void)
{
    return json_object_get(doc, "scan");
}

static void expect_msg(int rc, const char *msg)
{
    cr_assert_eq(rc, MMR_EINVAL, "rc %d (%s)", rc, mmr_err_msg());
    cr_assert_str_eq(mmr_err_msg(), msg);
}

TestSuite(json_get, .init = load_doc, .fini = free_doc);

Test(json_get, string)
{
    const char *s = NULL;
    cr_assert_eq(mmr_json_get_str(scan(), "$.scan", "name", true, &s), 0);
    cr_assert_str_eq(s, "nightly");
    s = "kept";
    cr_assert_eq(mmr_json_get_str(scan(), "$.scan", "absent", false, &s), 0);
    cr_assert_str_eq(s, "kept");
    expect_msg(mmr_json_get_str(scan(), "$.scan", "absent", true, &s),
               "$.scan.absent: required field is missing");
    expect_msg(mmr_json_get_str(scan(), "$.scan", "cpu_cap", true, &s),
               "$.scan.cpu_cap: expected a string, got an integer");
    expect_msg(mmr_json_get_str(scan(), "$.scan", "nothing", false, &s),
               "$.scan.nothing: expected a string, got null");
    cr_assert_str_eq(s, "kept");
}

Test(json_get, integer_in_range)
{
    int64_t n = -1;
    cr_assert_eq(mmr_json_get_int(scan(), "$.scan", "cpu_cap", true, 0, 200, &n), 0);
    cr_assert_eq(n, 150);
    cr_assert_eq(mmr_json_get_int(scan(), "$.scan", "cpu_cap", true, 150, 150, &n), 0);
    cr_assert_eq(mmr_json_get_int(scan(), "$.scan", "big", true, INT64_MIN, INT64_MAX, &n), 0);
    cr_assert_eq(n, INT64_MAX);
    cr_assert_eq(mmr_json_get_int(scan(), "$.scan", "neg", true, INT64_MIN, INT64_MAX, &n), 0);
    cr_assert_eq(n, INT64_MIN);
    n = 7;
    cr_assert_eq(mmr_json_get_int(scan(), "$.scan", "absent", false, 0, 1, &n), 0);
    cr_assert_eq(n, 7);
}

Test(json_get, integer_errors)
{
    int64_t n = 7;
    expect_msg(mmr_json_get_int(scan(), "$.scan", "cpu_cap", true, 1, 100, &n),
               "$.scan.cpu_cap: expected an integer between 1 and 100, got 150");
    expect_msg(mmr_json_get_int(scan(), "$.scan", "cpu_cap", true, 151, 200, &n),
               "$.scan.cpu_cap: expected an integer between 151 and 200, got 150");
    expect_msg(mmr_json_get_int(scan(), "$.scan", "name", true, 1, 100, &n),
               "$.scan.name: expected an integer between 1 and 100, got a string");
    expect_msg(mmr_json_get_int(scan(), "$.scan", "ratio", true, INT64_MIN, INT64_MAX, &n),
               "$.scan.ratio: expected an integer, got a real number");
    expect_msg(mmr_json_get_int(scan(), "$.scan", "on", true, INT64_MIN, INT64_MAX, &n),
               "$.scan.on: expected an integer, got true");
    expect_msg(mmr_json_get_int(scan(), "$.scan", "absent", true, 0, 1, &n),
               "$.scan.absent: required field is missing");
    cr_assert_eq(n, 7, "*out changed on error");
}

Test(json_get, boolean)
{
    bool b = false;
    cr_assert_eq(mmr_json_get_bool(scan(), "$.scan", "on", true, &b), 0);
    cr_assert(b);
    expect_msg(mmr_json_get_bool(scan(), "$.scan", "cpu_cap", true, &b),
               "$.scan.cpu_cap: expected true or false, got an integer");
    expect_msg(mmr_json_get_bool(scan(), "$.scan", "missing", true, &b),
               "$.scan.missing: required field is missing");
    b = false;
    cr_assert_eq(mmr_json_get_bool(scan(), "$.scan", "missing", false, &b), 0);
    cr_assert_not(b);
}

Test(json_get, object_and_array)
{
    json_t *o = NULL, *a = NULL;
    cr_assert_eq(mmr_json_get_object(doc, "$", "scan", true, &o), 0);
    cr_assert_eq(o, scan(), "borrowed reference to the member");
    cr_assert_eq(mmr_json_get_array(scan(), "$.scan", "paths", true, &a), 0);
    cr_assert_eq(json_array_size(a), 1);
    cr_assert_eq(mmr_json_get_object(scan(), "$.scan", "opts", true, &o), 0);
    cr_assert(json_is_object(o));
    expect_msg(mmr_json_get_object(scan(), "$.scan", "paths", true, &o),
               "$.scan.paths: expected an object, got an array");
    expect_msg(mmr_json_get_array(scan(), "$.scan", "opts", true, &a),
               "$.scan.opts: expected an array, got an object");
    expect_msg(mmr_json_get_array(scan(), "$.scan", "nothing", true, &a),
               "$.scan.nothing: expected an array, got null");
    a = NULL;
    cr_assert_eq(mmr_json_get_array(scan(), "$.scan", "absent", false, &a), 0);
    cr_assert_null(a);
    expect_msg(mmr_json_get_object(doc, "$", "absent", true, &o),
               "$.absent: required field is missing");
}

Test(json_get, path_quotes_unusual_keys)
{
    const char *s;
    expect_msg(mmr_json_get_str(scan(), "$.scan", "a b", true, &s),
               "$.scan[\"a b\"]: expected a string, got an integer");
    expect_msg(mmr_json_get_str(scan(), "$.scan", "q\"\\\n", true, &s),
               "$.scan[\"q\\\"\\\\\\u000a\"]: expected a string, got an integer");
    expect_msg(mmr_json_get_str(scan(), "$.scan", "日本", true, &s),
               "$.scan[\"日本\"]: expected a string, got an integer");
    expect_msg(mmr_json_get_str(scan(), "$.scan", "", true, &s),
               "$.scan[\"\"]: required field is missing");
    expect_msg(mmr_json_get_str(scan(), "$.scan", "1st", true, &s),
               "$.scan[\"1st\"]: required field is missing");
    expect_msg(mmr_json_get_str(scan(), NULL, "absent", true, &s),
               "$.absent: required field is missing");

    char longkey[200];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    cr_assert_eq(mmr_json_get_str(scan(), "$.scan", longkey, true, &s), MMR_EINVAL);
    cr_assert(strstr(mmr_err_msg(), "kkk...\"]: required field is missing"), "%s", mmr_err_msg());
    cr_assert_lt(strlen(mmr_err_msg()), 120);
}

Test(json_get, container_must_be_an_object)
{
    const char *s;
    int64_t n;
    json_t *arr = json_array();
    expect_msg(mmr_json_get_str(arr, "$.list", "x", false, &s),
               "$.list: expected an object, got an array");
    expect_msg(mmr_json_get_int(NULL, "$.scan", "x", false, 0, 1, &n),
               "$.scan: expected an object, got nothing");
    json_decref(arr);
}

/* ---- dumps ----------------------------------------------------------------------- */

Test(json_dump, line_is_compact_sorted_single_line)
{
    json_t *v = parse_ok("{\"b\": [1, 2.5, \"x\\ny\"], \"a\": {\"z\": null, \"c\": true},"
                         " \"日本\": \"語\"}");
    char *line = mmr_json_dump_line(v);
    cr_assert_str_eq(line,
                     "{\"a\":{\"c\":true,\"z\":null},\"b\":[1,2.5,\"x\\ny\"],\"日本\":\"語\"}");
    cr_assert_null(strchr(line, '\n'));
    free(line);
    json_decref(v);
}

Test(json_dump, pretty_uses_two_spaces)
{
    json_t *v = parse_ok("{\"b\": [1], \"a\": 2}");
    char *text = mmr_json_dump_pretty(v);
    cr_assert_str_eq(text, "{\n  \"a\": 2,\n  \"b\": [\n    1\n  ]\n}");
    free(text);
    json_decref(v);
}

Test(json_dump, scalars_and_null)
{
    json_t *s = json_string("hé\t\"");
    char *text = mmr_json_dump_line(s);
    cr_assert_str_eq(text, "\"hé\\t\\\"\"");
    free(text);
    json_decref(s);
    text = mmr_json_dump_line(NULL);
    cr_assert_str_eq(text, "null");
    free(text);
    text = mmr_json_dump_pretty(NULL);
    cr_assert_str_eq(text, "null");
    free(text);
}

Test(json_dump, round_trip)
{
    const char *docs[] = {"{\"a\":[1,-2,3.25,\"\\u0001\\u2028\"],\"b\":{\"c\":{}}}",
                          "[[[],{}],\"日本語\",0.1,1e300,false]", "\"\\/\""};
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        json_t *v = parse_ok(docs[i]);
        char *line = mmr_json_dump_line(v);
        char *pretty = mmr_json_dump_pretty(v);
        json_t *w1 = parse_ok(line);
        json_t *w2 = parse_ok(pretty);
        cr_assert(json_equal(v, w1), "line dump of doc %zu differs: %s", i, line);
        cr_assert(json_equal(v, w2), "pretty dump of doc %zu differs", i);
        json_decref(w1);
        json_decref(w2);
        free(line);
        free(pretty);
        json_decref(v);
    }
}
