/* Unit tests for shared/ipc.c: line framing with limits and the envelope. */
#include <criterion/criterion.h>

#include <string.h>

#include "shared/err.h"
#include "shared/ipc.h"
#include "shared/json.h"
#include "shared/mem.h"

struct seen {
    int lines;
    int oversized;
    char last[256];
};

static int collect(const char *line, size_t len, void *ud)
{
    struct seen *s = ud;
    if (!line) {
        s->oversized++;
        return 0;
    }
    s->lines++;
    snprintf(s->last, sizeof(s->last), "%.*s", (int)len, line);
    return 0;
}

Test(linebuf, splits_lines_across_chunks)
{
    struct mmr_linebuf lb;
    struct seen s = {0};
    mmr_linebuf_init(&lb, 64);
    mmr_linebuf_feed(&lb, "ab", 2, collect, &s);
    cr_expect_eq(s.lines, 0);
    mmr_linebuf_feed(&lb, "c\nde", 4, collect, &s);
    cr_expect_eq(s.lines, 1);
    cr_expect_str_eq(s.last, "abc");
    mmr_linebuf_feed(&lb, "f\n\nxyz\n", 7, collect, &s);
    cr_expect_eq(s.lines, 4);
    cr_expect_str_eq(s.last, "xyz");
    mmr_linebuf_free(&lb);
}

Test(linebuf, oversized_line_reported_once_and_skipped)
{
    struct mmr_linebuf lb;
    struct seen s = {0};
    mmr_linebuf_init(&lb, 8);
    char big[40];
    memset(big, 'x', sizeof(big));
    for (int i = 0; i < 4; i++)
        mmr_linebuf_feed(&lb, big, 10, collect, &s);
    cr_expect_eq(s.oversized, 1);
    mmr_linebuf_feed(&lb, "tail\nok\n", 8, collect, &s);
    cr_expect_eq(s.oversized, 1);
    cr_expect_eq(s.lines, 1, "only the line after the oversized one");
    cr_expect_str_eq(s.last, "ok");
    /* Oversized within one chunk, with its newline. */
    mmr_linebuf_feed(&lb, "0123456789abc\nfine\n", 19, collect, &s);
    cr_expect_eq(s.oversized, 2);
    cr_expect_str_eq(s.last, "fine");
    mmr_linebuf_free(&lb);
}

static int stop_at_first(const char *line, size_t len, void *ud)
{
    (*(int *)ud)++;
    return 7;
}

Test(linebuf, callback_can_stop)
{
    struct mmr_linebuf lb;
    int calls = 0;
    mmr_linebuf_init(&lb, 64);
    cr_expect_eq(mmr_linebuf_feed(&lb, "a\nb\nc\n", 6, stop_at_first, &calls), 7);
    cr_expect_eq(calls, 1);
    mmr_linebuf_free(&lb);
}

Test(envelope, parses_a_request)
{
    const char *line = "{\"id\":3,\"cmd\":\"status\",\"args\":{\"verbose\":true}}";
    struct mmr_ipc_request r;
    cr_assert_eq(mmr_ipc_request_parse(line, strlen(line), &r), 0, "%s", mmr_err_msg());
    cr_expect_str_eq(r.cmd, "status");
    cr_expect_eq(json_integer_value(r.id), 3);
    cr_expect(json_is_true(json_object_get(r.args, "verbose")));
    mmr_ipc_request_free(&r);

    line = "{\"cmd\":\"status\"}";
    cr_assert_eq(mmr_ipc_request_parse(line, strlen(line), &r), 0);
    cr_expect(json_is_object(r.args), "absent args become {}");
    cr_expect_null(r.id);
    mmr_ipc_request_free(&r);
}

Test(envelope, refuses_bad_requests_keeping_the_id)
{
    static const char *const bad[] = {
        "", "{", "[]", "\"status\"", "{\"id\":1}", "{\"id\":1,\"cmd\":5}",
        "{\"id\":1,\"cmd\":\"x\",\"args\":[1]}", "{\"id\":[1],\"cmd\":\"x\"}",
        "{\"id\":1,\"cmd\":\"x\",\"cmd\":\"y\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct mmr_ipc_request r;
        cr_expect_lt(mmr_ipc_request_parse(bad[i], strlen(bad[i]), &r), 0, "accepted: %s",
                     bad[i]);
        cr_expect_neq(mmr_err_msg()[0], '\0');
        mmr_ipc_request_free(&r);
    }
    struct mmr_ipc_request r;
    const char *line = "{\"id\":9,\"cmd\":17}";
    cr_expect_lt(mmr_ipc_request_parse(line, strlen(line), &r), 0);
    cr_expect_eq(json_integer_value(r.id), 9, "the error reply can echo the id");
    mmr_ipc_request_free(&r);
}

Test(envelope, replies_are_single_lines)
{
    json_t *id = json_integer(5);
    char *ok = mmr_ipc_reply_ok(id, json_pack("{s:s}", "text", "a\nb"));
    cr_expect_eq(strchr(ok, '\n'), ok + strlen(ok) - 1, "%s", ok);
    cr_expect(strstr(ok, "\"id\":5"));
    cr_expect(strstr(ok, "\"ok\":true"));
    free(ok);
    char *err = mmr_ipc_reply_error(id, MMR_EPERM, "nope\nreally");
    cr_expect_eq(strchr(err, '\n'), err + strlen(err) - 1, "%s", err);
    cr_expect(strstr(err, "\"code\":\"EPERM\""), "%s", err);
    free(err);
    err = mmr_ipc_reply_error(NULL, MMR_EINVAL, "bad \xff utf-8");
    cr_expect(strstr(err, "not valid UTF-8"), "%s", err);
    cr_expect(strstr(err, "\"id\":null"), "%s", err);
    free(err);
    json_decref(id);
}

Test(client, no_agent_is_a_clear_error)
{
    json_t *res = NULL;
    int rc = mmr_ipc_call("/tmp/mmr-no-such-dir/agent.sock", "status", NULL, 1000, &res);
    cr_expect_eq(rc, MMR_ECONN);
    cr_expect(strstr(mmr_err_msg(), "not running"), "%s", mmr_err_msg());
}
