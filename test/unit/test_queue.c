/* Tests for agent/queue.c: order and seqs across reopen, group commit under
 * concurrent producers, the drop rule and its agent.gap events, both bounds,
 * back-pressure, a full disk, tail and stats (kill -9 durability: test_queue_posix.c). */
#include <criterion/criterion.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sqlite3.h>
#include <uv.h>

#include "agent/queue.h"
#include "shared/db.h"
#include "shared/db_fault.h"
#include "shared/err.h"
#include "shared/json.h"
#include "shared/mem.h"
#include "testutil.h"

static char dir[512];
static char path[600];

static void setup(void)
{
    mmr_test_mkdtemp("mmr-queue", dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/agent.db", dir);
}

static void teardown(void)
{
    mmr_db_fault_disarm();
    mmr_test_rmtree(dir);
}

TestSuite(queue, .init = setup, .fini = teardown);

/* ---- helpers ------------------------------------------------------------- */

static struct mmr_queue *open_q(const struct mmr_queue_opts *opts)
{
    struct mmr_queue *q = NULL;
    int rc = mmr_queue_open(path, NULL, opts, &q);
    cr_assert_eq(rc, 0, "mmr_queue_open: %d %s", rc, mmr_err_msg());
    cr_assert_not_null(q);
    return q;
}

static struct mmr_queue *open_caps(uint64_t max_rows, uint64_t max_bytes)
{
    struct mmr_queue_opts o = {.max_rows = max_rows, .max_bytes = max_bytes};
    return open_q(&o);
}

static uint64_t push_ok(struct mmr_queue *q, const char *type, int sev, const char *data)
{
    struct mmr_event ev = {.type = type, .severity = sev, .data = data};
    uint64_t seq = 0;
    int rc = mmr_queue_push_sync(q, &ev, &seq);
    cr_assert_eq(rc, 0, "push_sync: %d %s", rc, mmr_err_msg());
    cr_assert_gt(seq, 0);
    return seq;
}

static struct mmr_queue_stats stats_of(struct mmr_queue *q)
{
    struct mmr_queue_stats st;
    mmr_queue_stats(q, &st);
    return st;
}

/* Every stored event, as the upload JSON parsed back. */
static json_t *read_all(struct mmr_queue *q)
{
    struct mmr_queue_batch b;
    int rc = mmr_queue_read(q, 0, 10000000, 1u << 30, &b);
    cr_assert_eq(rc, 0, "read: %s", mmr_err_msg());
    json_error_t err;
    json_t *arr = json_loadb(b.json, b.json_len, 0, &err);
    cr_assert_not_null(arr, "batch JSON: %s: %.200s", err.text, b.json);
    cr_assert(json_is_array(arr));
    cr_assert_eq(json_array_size(arr), b.count);
    mmr_queue_batch_free(&b);
    return arr;
}

static uint64_t ev_seq(json_t *ev)
{
    return (uint64_t)json_integer_value(json_object_get(ev, "seq"));
}

static int ev_sev(json_t *ev)
{
    return (int)json_integer_value(json_object_get(ev, "severity"));
}

static const char *ev_type(json_t *ev)
{
    return json_string_value(json_object_get(ev, "type"));
}

/* Every stored event, oldest first, through tail: unlike an upload read, it
 * leaves the drop episode open. */
static json_t *peek_all(struct mmr_queue *q)
{
    struct mmr_event *ev;
    size_t n;
    cr_assert_eq(mmr_queue_tail(q, 1000000, &ev, &n), 0, "tail: %s", mmr_err_msg());
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *data = json_loads(ev[i].data, 0, NULL);
        cr_assert_not_null(data, "stored data %s", ev[i].data);
        json_array_append_new(arr, json_pack("{sI sI ss si so}", "seq", (json_int_t)ev[i].seq,
                                             "time", (json_int_t)ev[i].time_ms, "type", ev[i].type,
                                             "severity", ev[i].severity, "data", data));
    }
    mmr_queue_events_free(ev, n);
    return arr;
}

/* The seqs stored, in order, as "1,2,3". */
static void seq_list(struct mmr_queue *q, char *buf, size_t len)
{
    json_t *arr = peek_all(q);
    size_t i, used = 0;
    json_t *ev;
    buf[0] = '\0';
    json_array_foreach(arr, i, ev)
    {
        used += (size_t)snprintf(buf + used, len - used, "%s%llu", i ? "," : "",
                                 (unsigned long long)ev_seq(ev));
        cr_assert_lt(used, len);
    }
    json_decref(arr);
}

/* The compact data of the only agent.gap event stored. */
static char *gap_data(struct mmr_queue *q, uint64_t *seq)
{
    json_t *arr = peek_all(q);
    size_t i;
    json_t *ev;
    char *data = NULL;
    json_array_foreach(arr, i, ev)
    {
        if (strcmp(ev_type(ev), MMR_QUEUE_GAP_TYPE) != 0)
            continue;
        cr_assert_null(data, "more than one agent.gap event");
        cr_assert_eq(ev_sev(ev), MMR_SEV_MEDIUM);
        data = json_dumps(json_object_get(ev, "data"), JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (seq)
            *seq = ev_seq(ev);
    }
    json_decref(arr);
    cr_assert_not_null(data, "no agent.gap event");
    return data;
}

static void expect_gap(struct mmr_queue *q, const char *want)
{
    char *data = gap_data(q, NULL);
    cr_expect_str_eq(data, want);
    free(data);
}

static size_t count_type(struct mmr_queue *q, const char *type)
{
    json_t *arr = peek_all(q);
    size_t i, n = 0;
    json_t *ev;
    json_array_foreach(arr, i, ev) n += strcmp(ev_type(ev), type) == 0;
    json_decref(arr);
    return n;
}

/* ---- order, seqs, reopen ------------------------------------------------- */

Test(queue, push_read_ack_in_order_across_reopen)
{
    struct mmr_queue *q = open_q(NULL);
    for (int i = 1; i <= 100; i++) {
        char data[64];
        snprintf(data, sizeof(data), "{\"i\":%d}", i);
        cr_assert_eq(push_ok(q, "test.order", i % 4, data), (uint64_t)i);
    }
    json_t *arr = read_all(q);
    cr_assert_eq(json_array_size(arr), 100);
    for (size_t i = 0; i < 100; i++) {
        json_t *ev = json_array_get(arr, i);
        cr_expect_eq(ev_seq(ev), i + 1);
        cr_expect_eq(ev_sev(ev), (int)((i + 1) % 4));
        cr_expect_str_eq(ev_type(ev), "test.order");
        cr_expect_eq(json_integer_value(json_object_get(json_object_get(ev, "data"), "i")),
                     (json_int_t)(i + 1));
        cr_expect(json_integer_value(json_object_get(ev, "time")) > 1600000000000LL);
        cr_expect_eq(json_object_size(ev), 5);
    }
    json_decref(arr);

    cr_assert_eq(mmr_queue_ack(q, 50), 0, "%s", mmr_err_msg());
    struct mmr_queue_batch b;
    cr_assert_eq(mmr_queue_read(q, 0, 10, 1 << 20, &b), 0);
    cr_expect_eq(b.count, 10);
    cr_expect_eq(b.first_seq, 51);
    cr_expect_eq(b.last_seq, 60);
    mmr_queue_batch_free(&b);
    mmr_queue_close(q);

    q = open_q(NULL);
    struct mmr_queue_stats st = stats_of(q);
    cr_expect_eq(st.events, 50);
    cr_expect_eq(st.last_seq, 100);
    cr_expect_eq(push_ok(q, "test.order", 0, NULL), 101);
    cr_assert_eq(mmr_queue_read(q, 0, 1, 1 << 20, &b), 0);
    cr_expect_eq(b.first_seq, 51);
    mmr_queue_batch_free(&b);
    mmr_queue_close(q);
}

Test(queue, seq_never_reused_after_ack_and_restart)
{
    struct mmr_queue *q = open_q(NULL);
    for (int i = 0; i < 10; i++)
        push_ok(q, "test.seq", 1, NULL);
    cr_assert_eq(mmr_queue_ack(q, 10), 0);
    cr_expect_eq(stats_of(q).events, 0);
    cr_expect_eq(stats_of(q).oldest_ms, 0);
    mmr_queue_close(q);

    /* The table is empty: only the stored last seq remembers 10. */
    q = open_q(NULL);
    cr_expect_eq(stats_of(q).last_seq, 10);
    cr_expect_eq(push_ok(q, "test.seq", 1, NULL), 11);
    cr_assert_eq(mmr_queue_ack(q, 11), 0);
    mmr_queue_close(q);
    q = open_q(NULL);
    cr_expect_eq(push_ok(q, "test.seq", 1, NULL), 12);
    mmr_queue_close(q);
}

Test(queue, ack_refuses_seqs_never_assigned)
{
    struct mmr_queue *q = open_q(NULL);
    push_ok(q, "test.ack", 0, NULL);
    cr_expect_eq(mmr_queue_ack(q, 2), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "last event is 1") != NULL, "%s", mmr_err_msg());
    cr_expect_eq(stats_of(q).events, 1);
    cr_expect_eq(mmr_queue_ack(q, 0), 0);
    cr_expect_eq(mmr_queue_ack(q, 1), 0);
    cr_expect_eq(mmr_queue_ack(q, 1), 0, "acknowledging again is harmless");
    cr_expect_eq(stats_of(q).events, 0);
    mmr_queue_close(q);
}

Test(queue, read_batches_by_count_and_bytes)
{
    struct mmr_queue *q = open_q(NULL);
    char data[300];
    snprintf(data, sizeof(data), "{\"pad\":\"%0200d\"}", 0);
    for (int i = 0; i < 20; i++)
        push_ok(q, "test.read", i == 7 ? MMR_SEV_HIGH : MMR_SEV_LOW, data);

    struct mmr_queue_batch b;
    cr_assert_eq(mmr_queue_read(q, 0, 5, 1 << 20, &b), 0);
    cr_expect_eq(b.count, 5);
    cr_expect_eq(b.after, 0);
    cr_expect_eq(b.first_seq, 1);
    cr_expect_eq(b.last_seq, 5);
    cr_expect_eq(b.max_severity, MMR_SEV_LOW);
    cr_expect_eq(b.json_len, strlen(b.json));
    uint64_t after = b.last_seq;
    size_t one = (b.json_len - 2) / 5; /* each event (with its comma) */
    mmr_queue_batch_free(&b);

    /* Pipelined: the next batch after the one in flight, cut by bytes. */
    cr_assert_eq(mmr_queue_read(q, after, 100, 3 * one + 4, &b), 0);
    cr_expect_eq(b.count, 3);
    cr_expect_eq(b.after, 5);
    cr_expect_eq(b.first_seq, 6);
    cr_expect_eq(b.last_seq, 8);
    cr_expect_eq(b.max_severity, MMR_SEV_HIGH);
    cr_expect_leq(b.json_len, 3 * one + 4);
    json_t *arr = json_loadb(b.json, b.json_len, 0, NULL);
    cr_expect(json_is_array(arr) && json_array_size(arr) == 3);
    json_decref(arr);
    mmr_queue_batch_free(&b);

    /* One event larger than the byte budget still goes, alone. */
    cr_assert_eq(mmr_queue_read(q, 8, 100, 10, &b), 0);
    cr_expect_eq(b.count, 1);
    cr_expect_eq(b.first_seq, 9);
    mmr_queue_batch_free(&b);

    cr_assert_eq(mmr_queue_read(q, 20, 100, 1 << 20, &b), 0);
    cr_expect_eq(b.count, 0);
    cr_expect_str_eq(b.json, "[]");
    mmr_queue_batch_free(&b);

    cr_expect_eq(mmr_queue_read(q, 0, 0, 100, &b), MMR_EINVAL);
    cr_expect_null(b.json);
    mmr_queue_batch_free(NULL);
    mmr_queue_close(q);
}

Test(queue, critical_events_go_ahead_of_a_backlog)
{
    struct mmr_queue *q = open_q(NULL);
    push_ok(q, "test.low", MMR_SEV_LOW, NULL);              /* 1 */
    push_ok(q, "test.crit", MMR_SEV_CRITICAL, "{\"a\":1}"); /* 2 */
    push_ok(q, "test.high", MMR_SEV_HIGH, NULL);            /* 3 */
    push_ok(q, "test.crit", MMR_SEV_CRITICAL, "{\"a\":2}"); /* 4 */
    push_ok(q, "test.low", MMR_SEV_LOW, NULL);              /* 5 */

    struct mmr_queue_batch b;
    cr_assert_eq(mmr_queue_read_critical(q, 0, &b), 0, "%s", mmr_err_msg());
    cr_expect_eq(b.count, 1);
    cr_expect_eq(b.first_seq, 2);
    cr_expect_eq(b.last_seq, 2);
    cr_expect_eq(b.after, 1, "the stored event before it");
    cr_expect_eq(b.max_severity, MMR_SEV_CRITICAL);
    json_t *arr = json_loadb(b.json, b.json_len, 0, NULL);
    cr_assert(json_is_array(arr) && json_array_size(arr) == 1, "%s", b.json);
    cr_expect_eq(ev_seq(json_array_get(arr, 0)), 2);
    json_decref(arr);
    mmr_queue_batch_free(&b);

    cr_assert_eq(mmr_queue_read_critical(q, 2, &b), 0);
    cr_expect_eq(b.first_seq, 4);
    cr_expect_eq(b.after, 3);
    mmr_queue_batch_free(&b);
    cr_assert_eq(mmr_queue_read_critical(q, 4, &b), 0);
    cr_expect_eq(b.count, 0);
    cr_expect_str_eq(b.json, "[]");
    mmr_queue_batch_free(&b);

    /* Nothing stored before it: no event below it can come any more. */
    cr_assert_eq(mmr_queue_ack(q, 3), 0);
    cr_assert_eq(mmr_queue_read_critical(q, 0, &b), 0);
    cr_expect_eq(b.first_seq, 4);
    cr_expect_eq(b.after, 0);
    mmr_queue_batch_free(&b);
    mmr_queue_close(q);
}

Test(queue, damaged_rows_still_make_valid_batches)
{
    struct mmr_queue *q = open_q(NULL);
    push_ok(q, "test.ok", 0, "{\"a\":1}");
    /* A row altered behind the queue's back. */
    sqlite3 *h;
    cr_assert_eq(sqlite3_open(path, &h), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(h,
                              "INSERT INTO queue_events(seq, time_ms, severity, type, data, size) "
                              "VALUES (2, 5, 1, 'bad\"type', 'not json', 10);"
                              "INSERT INTO queue_events(seq, time_ms, severity, type, data, size) "
                              "VALUES (3, 5, 1, 'ok.type', '[1,2]', 10);",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    sqlite3_close(h);
    json_t *arr = read_all(q);
    cr_assert_eq(json_array_size(arr), 3);
    cr_expect_str_eq(ev_type(json_array_get(arr, 1)), "agent.unreadable");
    json_t *d = json_object_get(json_array_get(arr, 1), "data");
    cr_expect(json_is_true(json_object_get(d, "unreadable")));
    cr_expect_str_eq(ev_type(json_array_get(arr, 2)), "ok.type");
    d = json_object_get(json_array_get(arr, 2), "data");
    cr_expect(json_is_true(json_object_get(d, "unreadable")));
    json_decref(arr);
    /* The tail too (mamorictl events --tail embeds the data as JSON). */
    struct mmr_event *ev;
    size_t n;
    cr_assert_eq(mmr_queue_tail(q, 3, &ev, &n), 0);
    cr_assert_eq(n, 3);
    cr_expect_str_eq(ev[0].data, "{\"a\":1}");
    cr_expect_str_eq(ev[1].type, "agent.unreadable");
    cr_expect_str_eq(ev[1].data, "{\"unreadable\":true}");
    cr_expect_str_eq(ev[2].type, "ok.type");
    cr_expect_str_eq(ev[2].data, "{\"unreadable\":true}");
    mmr_queue_events_free(ev, n);
    mmr_queue_close(q);
}

/* ---- producers ------------------------------------------------------------ */

Test(queue, push_validates_events)
{
    struct mmr_queue *q = open_q(NULL);
    struct mmr_event ok = {.type = "test.v", .severity = 0, .data = "{\"x\":[1,{\"y\":null}]}"};
    cr_expect_eq(mmr_queue_push_sync(q, &ok, NULL), 0);

    struct mmr_event ev = ok;
    ev.type = NULL;
    cr_expect_eq(mmr_queue_push(q, &ev, NULL, NULL), MMR_EINVAL);
    cr_expect_eq(mmr_queue_push(q, NULL, NULL, NULL), MMR_EINVAL);
    ev.type = "";
    cr_expect_eq(mmr_queue_push(q, &ev, NULL, NULL), MMR_EINVAL);
    ev.type = "has space";
    cr_expect_eq(mmr_queue_push(q, &ev, NULL, NULL), MMR_EINVAL);
    ev.type = "quote\"d";
    cr_expect_eq(mmr_queue_push(q, &ev, NULL, NULL), MMR_EINVAL);
    ev.type = MMR_QUEUE_GAP_TYPE;
    cr_expect_eq(mmr_queue_push(q, &ev, NULL, NULL), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "the queue's own") != NULL, "%s", mmr_err_msg());
    char longtype[MMR_QUEUE_MAX_TYPE + 2];
    memset(longtype, 'a', sizeof(longtype) - 1);
    longtype[sizeof(longtype) - 1] = '\0';
    ev.type = longtype;
    cr_expect_eq(mmr_queue_push(q, &ev, NULL, NULL), MMR_ETOOBIG);
    longtype[MMR_QUEUE_MAX_TYPE] = '\0';
    cr_expect_eq(mmr_queue_push_sync(q, &ev, NULL), 0, "%s", mmr_err_msg());

    ev = ok;
    ev.severity = 4;
    cr_expect_eq(mmr_queue_push(q, &ev, NULL, NULL), MMR_EINVAL);
    ev.severity = -1;
    cr_expect_eq(mmr_queue_push(q, &ev, NULL, NULL), MMR_EINVAL);
    ev = ok;
    ev.time_ms = -5;
    cr_expect_eq(mmr_queue_push(q, &ev, NULL, NULL), MMR_EINVAL);

    ev = ok;
    const char *bad[] = {"[1]", "\"s\"", "{", "{\"a\":1,\"a\":2}", "", "{} {}", "null"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ev.data = bad[i];
        cr_expect_eq(mmr_queue_push(q, &ev, NULL, NULL), MMR_EINVAL, "data %s", bad[i]);
        cr_expect(strstr(mmr_err_msg(), "not a JSON object") != NULL, "%s", mmr_err_msg());
    }
    char *deep = calloc(1, 200);
    for (int i = 0; i < 40; i++)
        strcat(deep, i ? "{\"a\":" : "{");
    cr_expect_neq(mmr_queue_push(q, &(struct mmr_event){.type = "t", .data = deep}, NULL, NULL), 0);
    free(deep);

    char *big = malloc(MMR_QUEUE_MAX_DATA + 16);
    memset(big, ' ', MMR_QUEUE_MAX_DATA + 15);
    big[0] = '{';
    big[MMR_QUEUE_MAX_DATA] = '}';
    big[MMR_QUEUE_MAX_DATA + 1] = '\0';
    ev.data = big;
    cr_expect_eq(mmr_queue_push(q, &ev, NULL, NULL), MMR_ETOOBIG);
    big[MMR_QUEUE_MAX_DATA - 1] = '}';
    big[MMR_QUEUE_MAX_DATA] = '\0';
    cr_expect_eq(mmr_queue_push_sync(q, &ev, NULL), 0, "%s", mmr_err_msg());
    free(big);

    mmr_queue_flush(q);
    struct mmr_queue_stats st = stats_of(q);
    cr_expect_eq(st.events, 3);
    cr_expect_eq(st.committed, 3);
    cr_expect_eq(st.pending, 0);
    mmr_queue_close(q);
}

/* The push's verdict on data is always jansson's (shared/json): the fast
 * scanner in queue.c may only vouch for what jansson accepts. */
static int jansson_verdict(const char *data)
{
    json_t *obj = NULL;
    int rc = mmr_json_parse_object(data, strlen(data), MMR_JSON_MAX_DEPTH, &obj);
    json_decref(obj);
    return rc;
}

static void expect_same_verdict(struct mmr_queue *q, const char *data)
{
    int want = jansson_verdict(data);
    int got = mmr_queue_push(q, &(struct mmr_event){.type = "test.json", .data = data}, NULL, NULL);
    cr_assert_eq(got == 0, want == 0, "data '%s': push %d, jansson %d", data, got, want);
}

Test(queue, data_validation_agrees_with_the_json_parser)
{
    struct mmr_queue_opts o = {.max_rows = 100};
    struct mmr_queue *q = open_q(&o);
    static const char *const cases[] = {
        "{}",
        " { } ",
        "{\"a\":1}",
        "{\"a\":-0}",
        "{\"a\":-0.5}",
        "{\"a\":01}",
        "{\"a\":1.}",
        "{\"a\":.5}",
        "{\"a\":1e5}",
        "{\"a\":1E+400}",
        "{\"a\":123456789012345678901234}",
        "{\"a\":-}",
        "{\"a\":+1}",
        "{\"a\":tru}",
        "{\"a\":true}",
        "{\"a\":nul}",
        "{\"a\":[1,2,]}",
        "{\"a\":[,]}",
        "{\"a\":[]}",
        "{\"a\":{}}",
        "{\"a\":1,}",
        "{,}",
        "{\"a\" 1}",
        "{\"a\":1 \"b\":2}",
        "{\"a\":1,\"a\":1}",
        "{\"a\":1,\"\\u0061\":1}",
        "{\"a\\n\":1,\"a\\n\":2}",
        "{\"a\":\"\\u0000\"}",
        "{\"a\":\"\\ud800\"}",
        "{\"a\":\"\\ud83d\\ude00\"}",
        "{\"a\":\"\\x\"}",
        "{\"a\":\"tab\there\"}",
        "{\"a\":\"caf\xc3\xa9\"}",
        "{\"a\":\"\xc0\xaf\"}",
        "{\"a\":\"\xed\xa0\x80\"}",
        "{\"a\":\"\xf4\x90\x80\x80\"}",
        "{\"a\":\"\xe2\x82\"}",
        "{\"a\":\"\xf0\x9f\x98\x80\"}",
        "{\"\xff\":1}",
        "{\"a\":\"unterminated}",
        "{\"a\":1}}",
        "{\"a\":1} x",
        "[{}]",
        "{\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,\"k6\":6,\"k7\":7,\"k8\":8,\"k9\":9,"
        "\"k10\":1,\"k11\":1,\"k12\":1,\"k13\":1,\"k14\":1,\"k15\":1,\"k16\":1,\"k17\":1,"
        "\"k1\":1}",
        "{\"a\":{\"a\":{\"a\":1}},\"b\":{\"a\":2}}",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_same_verdict(q, cases[i]);

    /* Nesting at the limit and one past it. */
    char deep[200] = "";
    for (int d = 1; d <= MMR_JSON_MAX_DEPTH + 1; d++) {
        deep[0] = '\0';
        for (int k = 0; k < d; k++)
            strcat(deep, k ? "[" : "{\"a\":");
        for (int k = d - 1; k > 0; k--)
            strcat(deep, "]");
        strcat(deep, d > 1 ? "}" : "1}");
        if (d == 1)
            strcpy(deep, "{\"a\":1}");
        expect_same_verdict(q, deep);
    }

    /* Random mutations of a realistic document. */
    static const char seed[] =
        "{\"path\":\"/home/u/caf\xc3\xa9.exe\",\"n\":[1,-2.5,0,true,false,null],"
        "\"o\":{\"k\":\"v\\n\",\"e\":{}},\"s\":\"\\u00e9\\\"x\"}";
    static const char alphabet[] = "{}[]\":,\\ 019.-eEtfnu\x80\xc3\xa9\xed\xa0\xf4\x90"
                                   "a";
    srand(12345);
    char buf[sizeof(seed) + 8];
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(buf, seed, sizeof(seed));
        size_t len = sizeof(seed) - 1;
        for (int m = 1 + rand() % 3; m > 0; m--) {
            size_t at = (size_t)rand() % len;
            char c = alphabet[rand() % (int)(sizeof(alphabet) - 1)];
            int kind = rand() % 3;
            if (kind == 0) {
                buf[at] = c;
            } else if (kind == 1 && len + 1 < sizeof(buf)) {
                memmove(buf + at + 1, buf + at, len - at + 1);
                buf[at] = c;
                len++;
            } else if (len > 1) {
                memmove(buf + at, buf + at + 1, len - at);
                len--;
            }
        }
        buf[len] = '\0';
        expect_same_verdict(q, buf);
    }
    mmr_queue_close(q);
}

struct collect {
    atomic_int calls;
    atomic_int failures;
    atomic_int last_rc;
    uint64_t *seqs; /* indexed by event number */
};

struct cb_arg {
    struct collect *c;
    size_t index;
};

static void collect_cb(void *arg, int rc, uint64_t seq)
{
    struct cb_arg *a = arg;
    if (rc < 0) {
        atomic_fetch_add(&a->c->failures, 1);
        atomic_store(&a->c->last_rc, rc);
        if (!mmr_err_msg()[0])
            atomic_store(&a->c->last_rc, 1); /* no message: flagged as wrong */
    }
    if (a->c->seqs)
        a->c->seqs[a->index] = seq;
    atomic_fetch_add(&a->c->calls, 1);
}

#define PRODUCERS    8
#define PER_PRODUCER 3000

struct producer {
    struct mmr_queue *q;
    struct collect *c;
    struct cb_arg *args;
    int id;
};

static void produce(void *arg)
{
    struct producer *p = arg;
    char data[64];
    for (int i = 0; i < PER_PRODUCER; i++) {
        size_t index = (size_t)p->id * PER_PRODUCER + (size_t)i;
        p->args[index] = (struct cb_arg){p->c, index};
        snprintf(data, sizeof(data), "{\"p\":%d,\"i\":%d}", p->id, i);
        struct mmr_event ev = {.type = "test.many", .severity = i % 3, .data = data};
        int rc = mmr_queue_push_wait(p->q, &ev, collect_cb, &p->args[index]);
        if (rc < 0)
            atomic_fetch_add(&p->c->failures, 1);
    }
}

Test(queue, group_commit_under_concurrent_producers)
{
    struct mmr_queue_opts o = {.max_pending = 512, .max_batch = 256};
    struct mmr_queue *q = open_q(&o);
    struct collect c = {.seqs = calloc(PRODUCERS * PER_PRODUCER, sizeof(uint64_t))};
    struct cb_arg *args = calloc(PRODUCERS * PER_PRODUCER, sizeof(*args));
    struct producer p[PRODUCERS];
    uv_thread_t t[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        p[i] = (struct producer){q, &c, args, i};
        cr_assert_eq(uv_thread_create(&t[i], produce, &p[i]), 0);
    }
    for (int i = 0; i < PRODUCERS; i++)
        uv_thread_join(&t[i]);
    mmr_queue_flush(q);
    cr_assert_eq(atomic_load(&c.calls), PRODUCERS * PER_PRODUCER);
    cr_assert_eq(atomic_load(&c.failures), 0);

    /* Seqs are unique, cover 1..N, and keep each producer's order. */
    size_t n = PRODUCERS * PER_PRODUCER;
    unsigned char *seen = calloc(n + 1, 1);
    for (size_t i = 0; i < n; i++) {
        cr_assert(c.seqs[i] >= 1 && c.seqs[i] <= n, "seq %llu", (unsigned long long)c.seqs[i]);
        cr_assert_eq(seen[c.seqs[i]], 0, "seq %llu twice", (unsigned long long)c.seqs[i]);
        seen[c.seqs[i]] = 1;
        if (i % PER_PRODUCER)
            cr_assert_gt(c.seqs[i], c.seqs[i - 1]);
    }
    struct mmr_queue_stats st = stats_of(q);
    cr_expect_eq(st.events, n);
    cr_expect_eq(st.committed, n);
    cr_expect_eq(st.last_seq, n);
    cr_expect_lt(st.batches, n / 4, "group commit: %llu transactions for %zu events",
                 (unsigned long long)st.batches, n);

    /* What the callbacks said is what is stored. */
    json_t *arr = read_all(q);
    cr_assert_eq(json_array_size(arr), n);
    for (size_t i = 0; i < n; i++) {
        json_t *data = json_object_get(json_array_get(arr, c.seqs[i] - 1), "data");
        cr_assert_eq(json_integer_value(json_object_get(data, "p")),
                     (json_int_t)(i / PER_PRODUCER));
        cr_assert_eq(json_integer_value(json_object_get(data, "i")),
                     (json_int_t)(i % PER_PRODUCER));
    }
    json_decref(arr);
    free(seen);
    free(args);
    free(c.seqs);
    mmr_queue_close(q);
}

struct loop_ctx {
    int calls;
    int rc;
    uint64_t seq;
    int critical;
    uv_thread_t thread_seen;
};

static void loop_cb(void *arg, int rc, uint64_t seq)
{
    struct loop_ctx *l = arg;
    l->calls++;
    l->rc = rc;
    l->seq = seq;
    l->thread_seen = uv_thread_self();
}

static void on_critical(void *arg)
{
    struct loop_ctx *l = arg;
    l->critical++;
}

static void noop_timer(uv_timer_t *t)
{
    (void)t;
}

Test(queue, callbacks_run_on_the_loop_thread)
{
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    struct loop_ctx l = {0};
    struct mmr_queue_opts o = {.on_critical = on_critical, .arg = &l};
    struct mmr_queue *q = NULL;
    cr_assert_eq(mmr_queue_open(path, &loop, &o, &q), 0, "%s", mmr_err_msg());
    /* The queue's handle does not keep a loop alive (the agent's loop must be
     * able to end with the queue open): a ticking timer does, while we wait. */
    uv_timer_t tick;
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, noop_timer, 10, 10);

    struct mmr_event ev = {.type = "test.loop", .severity = MMR_SEV_HIGH};
    cr_assert_eq(mmr_queue_push(q, &ev, loop_cb, &l), 0);
    while (l.calls < 1)
        uv_run(&loop, UV_RUN_ONCE);
    cr_expect_eq(l.rc, 0);
    cr_expect_eq(l.seq, 1);
    uv_thread_t self = uv_thread_self();
    cr_expect(uv_thread_equal(&l.thread_seen, &self));
    cr_expect_eq(l.critical, 0);

    ev.severity = MMR_SEV_CRITICAL;
    cr_assert_eq(mmr_queue_push(q, &ev, loop_cb, &l), 0);
    while (l.calls < 2 || l.critical < 1)
        uv_run(&loop, UV_RUN_ONCE);
    cr_expect_eq(l.seq, 2);
    cr_expect_eq(l.critical, 1);

    /* Close delivers what is still in flight, then the handle is released. */
    uv_close((uv_handle_t *)&tick, NULL);
    cr_assert_eq(mmr_queue_push(q, &ev, loop_cb, &l), 0);
    mmr_queue_close(q);
    cr_expect_eq(l.calls, 3);
    cr_expect_eq(l.seq, 3);
    cr_expect_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
    cr_expect_eq(uv_loop_close(&loop), 0);
}

Test(queue, critical_signal_without_a_loop)
{
    struct loop_ctx l = {0};
    struct mmr_queue_opts o = {.on_critical = on_critical, .arg = &l};
    struct mmr_queue *q = open_q(&o);
    push_ok(q, "test.crit", MMR_SEV_HIGH, NULL);
    cr_expect_eq(l.critical, 0);
    push_ok(q, "test.crit", MMR_SEV_CRITICAL, NULL);
    mmr_queue_flush(q);
    mmr_queue_close(q);
    cr_expect_eq(l.critical, 1);
}

Test(queue, close_commits_what_was_pushed)
{
    struct mmr_queue *q = open_q(NULL);
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(mmr_queue_push_wait(q, &(struct mmr_event){.type = "test.close"}, NULL, NULL),
                     0);
    mmr_queue_close(q);
    mmr_queue_close(NULL);
    q = open_q(NULL);
    cr_expect_eq(stats_of(q).events, 1000);
    cr_expect_eq(stats_of(q).last_seq, 1000);
    mmr_queue_close(q);
}

/* The writer stalls on the SQLite lock another connection holds, so that the
 * pending list fills up. */
struct waiting_push {
    struct mmr_queue *q;
    atomic_int done;
    int rc;
};

static void push_waiting(void *arg)
{
    struct waiting_push *w = arg;
    w->rc = mmr_queue_push_wait(w->q, &(struct mmr_event){.type = "test.wait"}, NULL, NULL);
    atomic_store(&w->done, 1);
}

Test(queue, back_pressure_bounds_pending_events)
{
    struct mmr_queue_opts o = {.max_pending = 4, .max_batch = 2};
    struct mmr_queue *q = open_q(&o);
    push_ok(q, "test.bp", 0, NULL);

    sqlite3 *h;
    cr_assert_eq(sqlite3_open(path, &h), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    int accepted = 0, rc = 0;
    for (int round = 0; round < 2; round++) {
        /* The second round refills what the writer took after it woke up:
         * by then it is stuck on the lock. */
        rc = 0;
        for (int i = 0; i < 20 && rc == 0; i++) {
            rc = mmr_queue_push(q, &(struct mmr_event){.type = "test.bp"}, NULL, NULL);
            accepted += rc == 0;
        }
        cr_expect_eq(rc, MMR_EBUSY);
        mmr_test_sleep_ms(100);
    }
    cr_expect(strstr(mmr_err_msg(), "waiting for the disk") != NULL, "%s", mmr_err_msg());
    cr_expect(accepted >= 4 && accepted <= 6, "accepted %d", accepted);
    cr_expect_eq(stats_of(q).refused, 2);
    cr_expect_eq(stats_of(q).pending, (uint64_t)accepted);

    /* A worker thread waits for room instead. */
    struct waiting_push w = {.q = q};
    uv_thread_t t;
    cr_assert_eq(uv_thread_create(&t, push_waiting, &w), 0);
    mmr_test_sleep_ms(100);
    cr_expect_eq(atomic_load(&w.done), 0);

    cr_assert_eq(sqlite3_exec(h, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);
    uv_thread_join(&t);
    cr_expect_eq(w.rc, 0);
    mmr_queue_flush(q);
    struct mmr_queue_stats st = stats_of(q);
    cr_expect_eq(st.events, (uint64_t)accepted + 2);
    cr_expect_eq(st.failed, 0);
    cr_expect_eq(st.pending, 0);
    mmr_queue_close(q);
}

/* ---- the drop rule -------------------------------------------------------- */

Test(queue, drop_rule_with_a_row_cap)
{
    struct mmr_queue *q = open_caps(10, 0);
    for (int i = 0; i < 15; i++)
        push_ok(q, "test.low", MMR_SEV_LOW, NULL);
    /* 15 pushed, 10 rows: one gap event and the 9 newest Low ones. */
    struct mmr_queue_stats st = stats_of(q);
    cr_expect_eq(st.events, 10);
    cr_expect_eq(st.depth[MMR_SEV_LOW], 9);
    cr_expect_eq(st.depth[MMR_SEV_MEDIUM], 1);
    cr_expect_eq(st.dropped[MMR_SEV_LOW], 6);
    uint64_t gap_seq;
    char *data = gap_data(q, &gap_seq);
    cr_expect_str_eq(data,
                     "{\"dropped\":{\"low\":6,\"medium\":0,\"high\":0},\"reason\":\"queue full\"}");
    free(data);
    cr_expect_eq(gap_seq, 12, "the gap event is recorded at the first drop");
    char seqs[256];
    seq_list(q, seqs, sizeof(seqs));
    cr_expect_str_eq(seqs, "7,8,9,10,11,12,13,14,15,16");
    mmr_queue_close(q);
}

Test(queue, drop_rule_order_and_critical_kept)
{
    struct mmr_queue *q = open_caps(10, 0);
    for (int i = 0; i < 3; i++)
        push_ok(q, "test.low", MMR_SEV_LOW, NULL); /* 1..3 */
    for (int i = 0; i < 3; i++)
        push_ok(q, "test.medium", MMR_SEV_MEDIUM, NULL); /* 4..6 */
    for (int i = 0; i < 4; i++)
        push_ok(q, "test.high", MMR_SEV_HIGH, NULL); /* 7..10 */
    cr_expect_eq(stats_of(q).dropped[0], 0);

    /* 11 rows, plus the gap event (12): the two oldest Low go. */
    cr_expect_eq(push_ok(q, "test.crit", MMR_SEV_CRITICAL, NULL), 11);
    expect_gap(q, "{\"dropped\":{\"low\":2,\"medium\":0,\"high\":0},\"reason\":\"queue full\"}");
    /* The last Low, then the oldest Medium. */
    cr_expect_eq(push_ok(q, "test.crit", MMR_SEV_CRITICAL, NULL), 13);
    cr_expect_eq(push_ok(q, "test.crit", MMR_SEV_CRITICAL, NULL), 14);
    expect_gap(q, "{\"dropped\":{\"low\":3,\"medium\":1,\"high\":0},\"reason\":\"queue full\"}");
    /* A new Low event is itself the oldest of the lowest severity. */
    cr_expect_eq(push_ok(q, "test.low", MMR_SEV_LOW, NULL), 15);
    expect_gap(q, "{\"dropped\":{\"low\":4,\"medium\":1,\"high\":0},\"reason\":\"queue full\"}");
    char seqs[256];
    seq_list(q, seqs, sizeof(seqs));
    cr_expect_str_eq(seqs, "5,6,7,8,9,10,11,12,13,14");

    /* Criticals push out the Medium (never the gap event), then the High. */
    for (int i = 0; i < 6; i++)
        push_ok(q, "test.crit", MMR_SEV_CRITICAL, NULL); /* 16..21 */
    seq_list(q, seqs, sizeof(seqs));
    cr_expect_str_eq(seqs, "11,12,13,14,16,17,18,19,20,21");
    expect_gap(q, "{\"dropped\":{\"low\":4,\"medium\":3,\"high\":4},\"reason\":\"queue full\"}");

    /* Only Critical events are left over the cap: kept, and said so. */
    push_ok(q, "test.crit", MMR_SEV_CRITICAL, NULL); /* 22 */
    expect_gap(q, "{\"dropped\":{\"low\":4,\"medium\":3,\"high\":4},\"reason\":\"queue full\","
                  "\"critical_kept\":true}");
    struct mmr_queue_stats st = stats_of(q);
    cr_expect_eq(st.events, 11);
    cr_expect_eq(st.depth[MMR_SEV_CRITICAL], 10);
    cr_expect_eq(st.depth[MMR_SEV_MEDIUM], 1);
    cr_expect_eq(st.dropped[MMR_SEV_LOW], 4);
    cr_expect_eq(st.dropped[MMR_SEV_MEDIUM], 3);
    cr_expect_eq(st.dropped[MMR_SEV_HIGH], 4);
    cr_expect_eq(st.dropped[MMR_SEV_CRITICAL], 0);
    mmr_queue_close(q);

    /* The dropped counters survive a restart. */
    q = open_caps(10, 0);
    st = stats_of(q);
    cr_expect_eq(st.dropped[MMR_SEV_LOW], 4);
    cr_expect_eq(st.dropped[MMR_SEV_MEDIUM], 3);
    cr_expect_eq(st.dropped[MMR_SEV_HIGH], 4);
    cr_expect_eq(st.events, 11);
    cr_expect_eq(st.depth[MMR_SEV_CRITICAL], 10);
    mmr_queue_close(q);
}

Test(queue, only_critical_events_are_kept_over_the_cap)
{
    struct mmr_queue *q = open_caps(5, 0);
    for (int i = 0; i < 8; i++)
        push_ok(q, "test.crit", MMR_SEV_CRITICAL, NULL);
    struct mmr_queue_stats st = stats_of(q);
    cr_expect_eq(st.depth[MMR_SEV_CRITICAL], 8);
    cr_expect_eq(st.events, 9);
    expect_gap(q, "{\"dropped\":{\"low\":0,\"medium\":0,\"high\":0},\"reason\":\"queue full\","
                  "\"critical_kept\":true}");
    push_ok(q, "test.low", MMR_SEV_LOW, NULL);
    expect_gap(q, "{\"dropped\":{\"low\":1,\"medium\":0,\"high\":0},\"reason\":\"queue full\","
                  "\"critical_kept\":true}");
    cr_expect_eq(stats_of(q).events, 9);
    mmr_queue_close(q);
}

Test(queue, one_gap_event_per_drop_episode)
{
    struct mmr_queue *q = open_caps(10, 0);
    for (int i = 0; i < 12; i++)
        push_ok(q, "test.low", MMR_SEV_LOW, NULL);
    uint64_t first_gap;
    char *data = gap_data(q, &first_gap);
    cr_expect_str_eq(data,
                     "{\"dropped\":{\"low\":3,\"medium\":0,\"high\":0},\"reason\":\"queue full\"}");
    free(data);
    /* Tail is not an upload: the episode goes on. */
    push_ok(q, "test.low", MMR_SEV_LOW, NULL);
    expect_gap(q, "{\"dropped\":{\"low\":4,\"medium\":0,\"high\":0},\"reason\":\"queue full\"}");
    /* An uploader reads it. */
    json_decref(read_all(q));

    /* The first episode's event has gone out: a new drop opens a new one. */
    push_ok(q, "test.low", MMR_SEV_LOW, NULL);
    cr_expect_eq(count_type(q, MMR_QUEUE_GAP_TYPE), 2);
    json_t *arr = peek_all(q);
    size_t i;
    json_t *ev;
    int gaps = 0;
    json_array_foreach(arr, i, ev)
    {
        if (strcmp(ev_type(ev), MMR_QUEUE_GAP_TYPE) != 0)
            continue;
        char *d = json_dumps(json_object_get(ev, "data"), JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (ev_seq(ev) == first_gap)
            cr_expect_str_eq(d, "{\"dropped\":{\"low\":4,\"medium\":0,\"high\":0},"
                                "\"reason\":\"queue full\"}");
        else
            cr_expect_str_eq(d, "{\"dropped\":{\"low\":2,\"medium\":0,\"high\":0},"
                                "\"reason\":\"queue full\"}");
        free(d);
        gaps++;
    }
    json_decref(arr);
    cr_expect_eq(gaps, 2);
    cr_expect_eq(stats_of(q).dropped[MMR_SEV_LOW], 6);

    /* Acknowledging the gap events ends that episode too. */
    uint64_t last = stats_of(q).last_seq;
    cr_assert_eq(mmr_queue_ack(q, last), 0);
    cr_expect_eq(stats_of(q).events, 0);
    for (int k = 0; k < 11; k++)
        push_ok(q, "test.low", MMR_SEV_LOW, NULL);
    cr_expect_eq(count_type(q, MMR_QUEUE_GAP_TYPE), 1);
    expect_gap(q, "{\"dropped\":{\"low\":2,\"medium\":0,\"high\":0},\"reason\":\"queue full\"}");
    mmr_queue_close(q);
}

Test(queue, unread_episode_keeps_counting_in_one_event)
{
    struct mmr_queue *q = open_caps(10, 0);
    for (int i = 0; i < 500; i++)
        push_ok(q, "test.low", MMR_SEV_LOW, NULL);
    /* Offline for days: one gap event however many drops. */
    struct mmr_queue_stats st = stats_of(q);
    cr_expect_eq(st.events, 10);
    cr_expect_eq(st.dropped[MMR_SEV_LOW], 491);
    expect_gap(q, "{\"dropped\":{\"low\":491,\"medium\":0,\"high\":0},\"reason\":\"queue full\"}");
    mmr_queue_close(q);
}

Test(queue, drop_rule_with_a_byte_cap)
{
    /* 200 bytes of data and a 3-byte type: 267 accounted bytes each. */
    char data[201];
    snprintf(data, sizeof(data), "{\"pad\":\"%0190d\"}", 0);
    cr_assert_eq(strlen(data), 200);
    uint64_t each = MMR_QUEUE_EVENT_OVERHEAD + 3 + 200;
    uint64_t cap = 10 * each + MMR_QUEUE_GAP_SIZE;
    struct mmr_queue *q = open_caps(0, cap);
    for (int i = 0; i < 11; i++)
        push_ok(q, "t.x", MMR_SEV_LOW, data);
    /* 11 fit alone, not with the gap event: one dropped. */
    struct mmr_queue_stats st = stats_of(q);
    cr_expect_eq(st.depth[MMR_SEV_LOW], 10);
    cr_expect_eq(st.dropped[MMR_SEV_LOW], 1);
    cr_expect_eq(st.bytes, cap);
    for (int i = 0; i < 9; i++)
        push_ok(q, "t.x", MMR_SEV_LOW, data);
    st = stats_of(q);
    cr_expect_eq(st.depth[MMR_SEV_LOW], 10);
    cr_expect_eq(st.dropped[MMR_SEV_LOW], 10);
    cr_expect_eq(st.bytes, cap);
    cr_expect_eq(st.max_bytes, cap);
    expect_gap(q, "{\"dropped\":{\"low\":10,\"medium\":0,\"high\":0},\"reason\":\"queue full\"}");

    /* A big High event pushes out as many Low ones as its bytes need. */
    char big[2001];
    snprintf(big, sizeof(big), "{\"pad\":\"%01990d\"}", 0);
    push_ok(q, "t.x", MMR_SEV_HIGH, big);
    st = stats_of(q);
    uint64_t need = MMR_QUEUE_EVENT_OVERHEAD + 3 + 2000;
    uint64_t gone = (need + each - 1) / each;
    cr_expect_eq(st.depth[MMR_SEV_LOW], 10 - gone);
    cr_expect_eq(st.dropped[MMR_SEV_LOW], 10 + gone);
    cr_expect_leq(st.bytes, cap);
    mmr_queue_close(q);

    /* Bytes are recomputed from the rows at open. */
    q = open_caps(0, cap);
    cr_expect_eq(stats_of(q).bytes, st.bytes);
    cr_expect_eq(stats_of(q).depth[MMR_SEV_HIGH], 1);
    mmr_queue_close(q);
}

Test(queue, limits_change_at_runtime)
{
    struct mmr_queue *q = open_q(NULL);
    struct mmr_queue_stats st = stats_of(q);
    cr_expect_eq(st.max_rows, MMR_QUEUE_DEFAULT_MAX_ROWS);
    cr_expect_eq(st.max_bytes, MMR_QUEUE_DEFAULT_MAX_BYTES);
    for (int i = 0; i < 20; i++)
        push_ok(q, "test.low", MMR_SEV_LOW, NULL);
    push_ok(q, "test.high", MMR_SEV_HIGH, NULL);
    mmr_queue_set_limits(q, 5, 0);
    mmr_queue_flush(q);
    st = stats_of(q);
    cr_expect_eq(st.max_rows, 5);
    cr_expect_eq(st.max_bytes, MMR_QUEUE_DEFAULT_MAX_BYTES);
    cr_expect_eq(st.events, 5);
    cr_expect_eq(st.depth[MMR_SEV_LOW], 3);
    cr_expect_eq(st.depth[MMR_SEV_HIGH], 1);
    cr_expect_eq(st.dropped[MMR_SEV_LOW], 17);
    expect_gap(q, "{\"dropped\":{\"low\":17,\"medium\":0,\"high\":0},\"reason\":\"queue full\"}");

    mmr_queue_set_limits(q, 1000, 1u << 20);
    mmr_queue_set_limits(q, 0, 0); /* keeps both */
    mmr_queue_flush(q);
    st = stats_of(q);
    cr_expect_eq(st.max_rows, 1000);
    cr_expect_eq(st.max_bytes, 1u << 20);
    cr_expect_eq(st.events, 5);
    mmr_queue_close(q);
}

/* ---- tail and stats --------------------------------------------------------- */

Test(queue, tail_returns_the_most_recent_events)
{
    struct mmr_queue *q = open_q(NULL);
    struct mmr_event *ev;
    size_t n;
    cr_assert_eq(mmr_queue_tail(q, 5, &ev, &n), 0);
    cr_expect_eq(n, 0);
    cr_expect_null(ev);
    for (int i = 1; i <= 30; i++) {
        char data[32];
        snprintf(data, sizeof(data), "{\"i\":%d}", i);
        struct mmr_event in = {
            .type = "test.tail", .severity = i % 4, .time_ms = 1000 + i, .data = data};
        cr_assert_eq(mmr_queue_push_sync(q, &in, NULL), 0);
    }
    cr_assert_eq(mmr_queue_tail(q, 5, &ev, &n), 0);
    cr_assert_eq(n, 5);
    for (size_t i = 0; i < n; i++) {
        int k = 26 + (int)i;
        char data[32];
        snprintf(data, sizeof(data), "{\"i\":%d}", k);
        cr_expect_eq(ev[i].seq, (uint64_t)k);
        cr_expect_eq(ev[i].time_ms, 1000 + k);
        cr_expect_eq(ev[i].severity, k % 4);
        cr_expect_str_eq(ev[i].type, "test.tail");
        cr_expect_str_eq(ev[i].data, data);
    }
    mmr_queue_events_free(ev, n);
    cr_assert_eq(mmr_queue_tail(q, 100, &ev, &n), 0);
    cr_expect_eq(n, 30);
    cr_expect_eq(ev[0].seq, 1);
    cr_expect_eq(ev[29].seq, 30);
    mmr_queue_events_free(ev, n);
    cr_assert_eq(mmr_queue_tail(q, 0, &ev, &n), 0);
    cr_expect_eq(n, 0);
    mmr_queue_events_free(NULL, 0);
    mmr_queue_close(q);
}

Test(queue, stats_reflect_the_queue)
{
    struct mmr_queue *q = open_q(NULL);
    struct mmr_queue_stats st = stats_of(q);
    cr_expect_eq(st.events, 0);
    cr_expect_eq(st.bytes, 0);
    cr_expect_eq(st.oldest_ms, 0);
    cr_expect_eq(st.last_seq, 0);
    const int per_sev[MMR_SEV_COUNT] = {4, 3, 2, 1};
    uint64_t bytes = 0;
    int64_t t = 1700000000000;
    for (int sev = 0; sev < MMR_SEV_COUNT; sev++) {
        for (int i = 0; i < per_sev[sev]; i++) {
            struct mmr_event ev = {
                .type = "test.stats", .severity = sev, .time_ms = t++, .data = "{\"k\":\"v\"}"};
            cr_assert_eq(mmr_queue_push_sync(q, &ev, NULL), 0);
            bytes += MMR_QUEUE_EVENT_OVERHEAD + strlen(ev.type) + strlen(ev.data);
        }
    }
    st = stats_of(q);
    for (int sev = 0; sev < MMR_SEV_COUNT; sev++)
        cr_expect_eq(st.depth[sev], (uint64_t)per_sev[sev]);
    cr_expect_eq(st.events, 10);
    cr_expect_eq(st.bytes, bytes);
    cr_expect_eq(st.oldest_ms, 1700000000000);
    cr_expect_eq(st.last_seq, 10);
    cr_expect_eq(st.committed, 10);
    cr_expect_geq(st.batches, 1);
    cr_expect_eq(st.pending, 0);
    cr_expect_eq(st.failed, 0);

    cr_assert_eq(mmr_queue_ack(q, 5), 0); /* 4 Low, 1 Medium */
    st = stats_of(q);
    cr_expect_eq(st.events, 5);
    cr_expect_eq(st.depth[MMR_SEV_LOW], 0);
    cr_expect_eq(st.depth[MMR_SEV_MEDIUM], 2);
    cr_expect_eq(st.oldest_ms, 1700000000005);
    cr_expect_eq(st.bytes, bytes / 2);
    mmr_queue_close(q);

    q = open_q(NULL);
    struct mmr_queue_stats again = stats_of(q);
    cr_expect_eq(again.events, 5);
    cr_expect_eq(again.bytes, bytes / 2);
    cr_expect_eq(again.oldest_ms, 1700000000005);
    cr_expect_eq(again.depth[MMR_SEV_CRITICAL], 1);
    cr_expect_eq(again.committed, 0, "per-run counters start again");
    mmr_queue_close(q);

    cr_expect_str_eq(mmr_severity_name(0), "low");
    cr_expect_str_eq(mmr_severity_name(3), "critical");
    cr_expect_null(mmr_severity_name(4));
    cr_expect_null(mmr_severity_name(-1));
}

/* ---- failures ------------------------------------------------------------- */

static struct mmr_queue *open_fault(void)
{
    cr_assert_eq(mmr_db_fault_install(), 0);
    struct mmr_queue_opts o = {.vfs = MMR_DB_FAULT_VFS};
    return open_q(&o);
}

Test(queue, full_disk_fails_cleanly_and_recovers)
{
    struct mmr_queue *q = open_fault();
    uint64_t first = push_ok(q, "test.disk", 0, NULL);

    mmr_db_fault_arm(MMR_FAULT_WRITE, 1, SQLITE_FULL);
    struct mmr_event ev = {.type = "test.disk", .severity = 2};
    uint64_t seq = 99;
    cr_expect_eq(mmr_queue_push_sync(q, &ev, &seq), MMR_ENOSPC);
    cr_expect_eq(seq, 0);
    cr_expect(strstr(mmr_err_msg(), path) != NULL, "%s", mmr_err_msg());
    /* The callback hears it too, with the message. */
    struct collect c = {0};
    struct cb_arg a = {&c, 0};
    cr_assert_eq(mmr_queue_push(q, &ev, collect_cb, &a), 0);
    mmr_queue_flush(q);
    cr_expect_eq(atomic_load(&c.calls), 1);
    cr_expect_eq(atomic_load(&c.failures), 1);
    cr_expect_eq(atomic_load(&c.last_rc), MMR_ENOSPC);
    cr_expect_gt(mmr_db_fault_failed(MMR_FAULT_WRITE), 0);
    struct mmr_queue_stats st = stats_of(q);
    cr_expect_eq(st.failed, 2);
    cr_expect_eq(st.events, 1);

    /* Space returns: the queue works again, seqs keep increasing. */
    mmr_db_fault_disarm();
    uint64_t next = push_ok(q, "test.disk", 0, NULL);
    cr_expect_gt(next, first);
    char seqs[64];
    seq_list(q, seqs, sizeof(seqs));
    char want[64];
    snprintf(want, sizeof(want), "%llu,%llu", (unsigned long long)first, (unsigned long long)next);
    cr_expect_str_eq(seqs, want);
    mmr_queue_close(q);

    q = open_q(NULL);
    cr_expect_eq(stats_of(q).events, 2);
    cr_expect_geq(push_ok(q, "test.disk", 0, NULL), next + 1);
    mmr_queue_close(q);
}

Test(queue, failed_sync_is_reported_and_seqs_are_not_reused)
{
    struct mmr_queue *q = open_fault();
    push_ok(q, "test.sync", 0, NULL);
    mmr_db_fault_arm(MMR_FAULT_SYNC, 1, SQLITE_IOERR_FSYNC);
    struct mmr_event ev = {.type = "test.sync"};
    cr_expect_eq(mmr_queue_push_sync(q, &ev, NULL), MMR_EIO);
    mmr_db_fault_disarm();
    /* Seq 2 may sit in the WAL after a failed fsync: it is never handed out again. */
    cr_expect_eq(push_ok(q, "test.sync", 0, NULL), 3);
    mmr_queue_close(q);
}

Test(queue, every_write_fault_during_a_batch_is_survived)
{
    /* Fail the nth write of a batch with the drop rule at work, for every n,
     * until a batch goes through: each failure leaves the queue as it was. */
    struct mmr_queue_opts o = {.vfs = MMR_DB_FAULT_VFS, .max_rows = 5};
    cr_assert_eq(mmr_db_fault_install(), 0);
    struct mmr_queue *q = open_q(&o);
    for (int i = 0; i < 5; i++)
        push_ok(q, "test.sweep", MMR_SEV_LOW, NULL);
    for (int nth = 1; nth < 100; nth++) {
        struct mmr_queue_stats before = stats_of(q);
        mmr_db_fault_arm(MMR_FAULT_WRITE, nth, SQLITE_IOERR_WRITE);
        int rc = mmr_queue_push_sync(q, &(struct mmr_event){.type = "test.sweep"}, NULL);
        int failed = mmr_db_fault_failed(MMR_FAULT_WRITE);
        mmr_db_fault_disarm();
        struct mmr_queue_stats after = stats_of(q);
        if (rc == 0 && failed == 0) {
            cr_expect_eq(after.dropped[MMR_SEV_LOW], before.dropped[MMR_SEV_LOW] + 2);
            break;
        }
        if (rc < 0) {
            cr_expect_eq(after.events, before.events, "nth %d", nth);
            cr_expect_eq(after.bytes, before.bytes, "nth %d", nth);
            cr_expect_eq(after.dropped[0], before.dropped[0], "nth %d", nth);
        }
    }
    /* What the counters say is what the file holds. */
    struct mmr_queue_stats st = stats_of(q);
    mmr_queue_close(q);
    q = open_caps(5, 0);
    struct mmr_queue_stats re = stats_of(q);
    cr_expect_eq(re.events, st.events);
    cr_expect_eq(re.bytes, st.bytes);
    cr_expect_eq(re.dropped[0], st.dropped[0]);
    cr_expect_eq(count_type(q, MMR_QUEUE_GAP_TYPE), 1);
    mmr_queue_close(q);
}

Test(queue, failed_ack_keeps_the_events)
{
    struct mmr_queue *q = open_fault();
    for (int i = 0; i < 3; i++)
        push_ok(q, "test.ack", 0, NULL);
    mmr_db_fault_arm(MMR_FAULT_WRITE, 1, SQLITE_FULL);
    cr_expect_eq(mmr_queue_ack(q, 2), MMR_ENOSPC);
    mmr_db_fault_disarm();
    cr_expect_eq(stats_of(q).events, 3);
    cr_expect_eq(mmr_queue_ack(q, 2), 0, "%s", mmr_err_msg());
    cr_expect_eq(stats_of(q).events, 1);
    mmr_queue_close(q);
}

Test(queue, open_refuses_a_file_that_is_not_a_database)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    for (int i = 0; i < 512; i++)
        fputs("not a database ", f);
    fclose(f);
    struct mmr_queue *q = (struct mmr_queue *)1;
    cr_expect_eq(mmr_queue_open(path, NULL, NULL, &q), MMR_ECORRUPT);
    cr_expect_null(q);
    cr_expect(strstr(mmr_err_msg(), "opening the event queue") != NULL, "%s", mmr_err_msg());

    cr_expect_neq(mmr_queue_open(dir, NULL, NULL, &q), 0);
    cr_expect_null(q);
}

Test(queue, shares_agent_db_with_other_tables)
{
    /* agent.db as agent_db.c makes it: its own tables, then the queue's
     * schema as a migration. The queue leaves both and the version alone. */
    static const struct mmr_db_migration migs[] = {
        {1, "CREATE TABLE agent_state (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;"},
        {2, mmr_queue_schema_sql},
    };
    struct mmr_db *db;
    struct mmr_db_opts dbo = {.sync_full = true};
    cr_assert_eq(mmr_db_open(path, &dbo, migs, 2, &db), 0, "%s", mmr_err_msg());
    struct mmr_queue *q = open_q(NULL);
    push_ok(q, "test.shared", 0, NULL);
    cr_expect_eq(mmr_db_exec(db, "INSERT INTO agent_state VALUES ('k', 'v')"), 0);
    push_ok(q, "test.shared", 0, NULL);
    cr_expect_eq(mmr_db_schema_version(db), 2);
    mmr_queue_close(q);
    mmr_db_close(db);

    /* Opened again in the other order: the queue first on a fresh file. */
    cr_assert_eq(remove(path), 0);
    char side[160];
    snprintf(side, sizeof(side), "%s-wal", path);
    remove(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    remove(side);
    q = open_q(NULL);
    push_ok(q, "test.shared", 0, NULL);
    cr_assert_eq(mmr_db_open(path, &dbo, migs, 2, &db), 0, "%s", mmr_err_msg());
    cr_expect_eq(mmr_db_schema_version(db), 2);
    push_ok(q, "test.shared", 0, NULL);
    mmr_db_close(db);
    cr_expect_eq(stats_of(q).events, 2);
    mmr_queue_close(q);
}
