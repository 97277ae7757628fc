/* Integration: the telemetry path loses nothing and duplicates nothing. Real
 * agents and a real mamori-server: three agents at once, kill -9 of the agent
 * (50 times) and of the server during uploads, the server down for a while,
 * and the drop rule with a tiny queue cap. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "fleet.h"
#include "shared/json.h"
#include "shared/mem.h"
#include "shared/platform.h"

#define SELFTEST   "agent.selftest"
#define MAX_AGENTS 3

static struct fleet fl;
static struct fleet_server srv;
/* The running test's agents: the teardown kills those an assertion left
 * running (they live here, not on the test's stack, for that reason). */
static struct fleet_agent agents[MAX_AGENTS];

/* ---- randomness (seed logged; MMR_TEST_SEED repeats a run) --------------- */

static uint64_t rng_state;

static void rng_seed(void)
{
    const char *env = getenv("MMR_TEST_SEED");
    if (env && env[0])
        rng_state = strtoull(env, NULL, 10);
    else
        mmr_random_bytes(&rng_state, sizeof(rng_state));
    if (!rng_state)
        rng_state = 1;
    cr_log_info("random seed %llu (set MMR_TEST_SEED to repeat)", (unsigned long long)rng_state);
}

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Uniform in [lo, hi]. */
static int rng_between(int lo, int hi)
{
    return lo + (int)(rng() % (uint64_t)(hi - lo + 1));
}

static void sleep_ms(int ms)
{
    if (ms > 0)
        usleep((useconds_t)ms * 1000);
}

/* ---- a set of sequence numbers --------------------------------------------- */

struct seqset {
    uint8_t *bits;
    uint64_t cap; /* seqs 0 .. cap-1 */
    uint64_t count;
    uint64_t max;
};

static void seqset_add(struct seqset *s, uint64_t seq)
{
    if (seq >= s->cap) {
        uint64_t cap = s->cap ? s->cap : 4096;
        while (cap <= seq)
            cap *= 2;
        s->bits = mmr_realloc(s->bits, cap / 8);
        memset(s->bits + s->cap / 8, 0, (cap - s->cap) / 8);
        s->cap = cap;
    }
    uint8_t bit = (uint8_t)(1u << (seq % 8));
    if (!(s->bits[seq / 8] & bit)) {
        s->bits[seq / 8] |= bit;
        s->count++;
    }
    if (seq > s->max)
        s->max = seq;
}

static bool seqset_has(const struct seqset *s, uint64_t seq)
{
    return seq < s->cap && (s->bits[seq / 8] & (1u << (seq % 8)));
}

static void seqset_free(struct seqset *s)
{
    free(s->bits);
    memset(s, 0, sizeof(*s));
}

/* What a selftest reported as stored: the seq range of its events. */
struct stored {
    long long queued, first, last;
};

/* What selftests reported as stored: their seqs, and each range with its
 * size (the events' data says "n" of "of"). */
struct reported {
    struct seqset seqs;
    struct stored *ranges;
    size_t count, cap;
};

/* ---- fixture ------------------------------------------------------------------ */

static void setup(void)
{
    fleet_init(&fl);
    fleet_server_init(&fl, &srv, NULL);
    fleet_server_start(&srv);
    rng_seed();
}

static void teardown(void)
{
    for (int i = 0; i < MAX_AGENTS; i++)
        fleet_agent_kill9(&agents[i]);
    fleet_server_stop(&srv);
    fleet_cleanup(&fl);
}

TestSuite(delivery, .init = setup, .fini = teardown, .timeout = 600);

/* An enrolled agent named name; device_id receives its id. */
static void agent_enrolled(struct fleet_agent *a, const char *name, const char *token,
                           char device_id[64])
{
    fleet_agent_init(&fl, a, name, &srv, NULL, token, NULL);
    fleet_agent_start_enrolled(a);
    json_t *st = fleet_agent_status(a);
    cr_assert(st, "agent %s does not answer", name);
    const char *id = fleet_json_str(st, "enrollment.device_id");
    cr_assert(id && id[0], "no device id in status");
    snprintf(device_id, 64, "%s", id);
    json_decref(st);
}

/* Status of a running agent (asserts that it answers). */
static json_t *status(const struct fleet_agent *a)
{
    json_t *st = fleet_agent_status(a);
    cr_assert(st, "agent %s does not answer status", a->dir);
    return st;
}

static long long status_int(const struct fleet_agent *a, const char *path)
{
    json_t *st = status(a);
    long long v = fleet_json_int(st, path);
    json_decref(st);
    return v;
}

/* ---- mamorictl ------------------------------------------------------------------ */

/* `mamorictl --data-dir D --json selftest --events N --severity S`, started. */
static struct proc *selftest_start(const struct fleet_agent *a, int n, int severity)
{
    char ns[16], ss[8];
    snprintf(ns, sizeof(ns), "%d", n);
    snprintf(ss, sizeof(ss), "%d", severity);
    const char *argv[] = {MMR_CTL_BIN, "--data-dir", a->dir,       "--json", "selftest",
                          "--events",  ns,           "--severity", ss,       NULL};
    return proc_start(argv, NULL);
}

/* Waits for a selftest. True when it reported its events as stored (then
 * *out says which); false when it failed (the agent was killed). */
static bool selftest_finish(struct proc *p, int n, struct stored *out)
{
    struct proc_result res;
    cr_assert(proc_wait(p, fleet_ms(60000), &res), "mamorictl selftest hung");
    bool ok = res.exit_code == 0;
    if (ok) {
        json_t *doc = NULL;
        cr_assert_eq(mmr_json_parse_object(res.out, strlen(res.out), 8, &doc), 0,
                     "selftest printed no JSON: %s", res.out);
        out->queued = fleet_json_int(doc, "queued");
        out->first = fleet_json_int(doc, "first_seq");
        out->last = fleet_json_int(doc, "last_seq");
        json_decref(doc);
        cr_assert_eq(out->queued, n, "selftest stored %lld of %d", out->queued, n);
        cr_assert(out->first >= 1 && out->last >= out->first + n - 1,
                  "selftest range %lld..%lld for %d events", out->first, out->last, n);
    }
    proc_result_free(&res);
    return ok;
}

/* A selftest that must succeed. */
static struct stored selftest(const struct fleet_agent *a, int n, int severity)
{
    struct stored s = {0};
    cr_assert(selftest_finish(selftest_start(a, n, severity), n, &s),
              "selftest of %d events failed", n);
    return s;
}

/* Records a selftest's range in rep. Without interleaved gap events (no queue
 * cap) a selftest's events have consecutive seqs: the range is exact. */
static void add_range(struct reported *rep, const struct stored *s)
{
    cr_assert_eq(s->last - s->first + 1, s->queued,
                 "selftest of %lld events reported seqs %lld..%lld", s->queued, s->first, s->last);
    for (long long q = s->first; q <= s->last; q++)
        seqset_add(&rep->seqs, (uint64_t)q);
    if (rep->count == rep->cap) {
        rep->cap = rep->cap ? rep->cap * 2 : 64;
        rep->ranges = mmr_realloc(rep->ranges, rep->cap * sizeof(*rep->ranges));
    }
    rep->ranges[rep->count++] = *s;
}

static void reported_free(struct reported *rep)
{
    seqset_free(&rep->seqs);
    free(rep->ranges);
    memset(rep, 0, sizeof(*rep));
}

static void sync_now(const struct fleet_agent *a)
{
    struct proc_result res;
    int rc = fleet_ctl(a, &res, "sync", NULL);
    cr_assert_eq(rc, 0, "mamorictl sync: exit %d: %s", rc, res.err);
    proc_result_free(&res);
}

/* Syncs until the agent's queue is empty and the last check-in succeeded. */
static void drain(const struct fleet_agent *a, int timeout_ms)
{
    uint64_t deadline = mmr_time_mono_ms() + (uint64_t)fleet_ms(timeout_ms);
    uint64_t next_sync = 0;
    long long depth = -1;
    const char *result = NULL;
    json_t *st = NULL;
    while (mmr_time_mono_ms() < deadline) {
        if (mmr_time_mono_ms() >= next_sync) {
            sync_now(a);
            /* Again now and then: a sync during a backoff may have failed. */
            next_sync = mmr_time_mono_ms() + (proc_wrapped() ? 10000 : 3000);
        }
        sleep_ms(100);
        json_decref(st);
        st = status(a);
        depth = fleet_json_int(st, "queue.depth");
        result = fleet_json_str(st, "checkin.result");
        if (depth == 0 && result && strcmp(result, "ok") == 0)
            break;
    }
    cr_assert_eq(depth, 0, "queue of %s still holds %lld events (last check-in: %s)", a->dir, depth,
                 result ? result : "none");
    json_decref(st);
}

/* ---- the server's side ---------------------------------------------------------- */

/* `mamoriadm events count --device ID [--type T] [--severity S]`. */
static long long adm_count(const char *device, const char *type, int severity)
{
    char sev[8];
    snprintf(sev, sizeof(sev), "%d", severity);
    struct proc_result res;
    int rc;
    if (type && severity >= 0)
        rc = fleet_adm(&srv, &res, "events", "count", "--device", device, "--type", type,
                       "--severity", sev, NULL);
    else if (type)
        rc = fleet_adm(&srv, &res, "events", "count", "--device", device, "--type", type, NULL);
    else
        rc = fleet_adm(&srv, &res, "events", "count", "--device", device, NULL);
    cr_assert_eq(rc, 0, "mamoriadm events count: exit %d: %s", rc, res.err);
    char *end;
    long long n = strtoll(res.out, &end, 10);
    cr_assert(end != res.out, "mamoriadm events count printed %s", res.out);
    proc_result_free(&res);
    return n;
}

/* The device's acknowledged seq as `mamoriadm device show` reports it. */
static long long adm_event_ack(const char *device)
{
    json_t *doc = fleet_adm_json(&srv, "device", "show", device, NULL);
    long long ack = fleet_json_int(doc, "event_ack");
    json_decref(doc);
    return ack;
}

static sqlite3 *server_db(void)
{
    char *path = mmr_path_join(srv.dir, "server.db");
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    cr_assert_eq(rc, SQLITE_OK, "cannot open %s read-only: %s", path,
                 db ? sqlite3_errmsg(db) : "?");
    free(path);
    sqlite3_busy_timeout(db, 10000);
    return db;
}

/* The server's events of a device (type NULL: all, severity -1: all), read
 * from server.db read-only. Asserts that no (device, seq) appears twice.
 * Returns the number of rows. */
static long long server_seqs(const char *device, const char *type, int severity, struct seqset *out)
{
    sqlite3 *db = server_db();
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT e.seq FROM events e JOIN devices d ON d.id = e.device "
                                    "WHERE d.uuid = ?1 AND (?2 IS NULL OR e.type = ?2) "
                                    "AND (?3 < 0 OR e.severity = ?3) ORDER BY e.seq",
                                    -1, &st, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, device, -1, SQLITE_STATIC);
    if (type)
        sqlite3_bind_text(st, 2, type, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 2);
    sqlite3_bind_int(st, 3, severity);
    long long rows = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        uint64_t seq = (uint64_t)sqlite3_column_int64(st, 0);
        cr_assert(!seqset_has(out, seq), "the server holds seq %llu of %s twice",
                  (unsigned long long)seq, device);
        seqset_add(out, seq);
        rows++;
    }
    cr_assert_eq(step, SQLITE_DONE, "%s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rows;
}

/* The data of the device's events of one type, oldest first, as a JSON array
 * of {"seq":..,"data":{..}}. */
static json_t *server_events(const char *device, const char *type)
{
    sqlite3 *db = server_db();
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT e.seq, e.data FROM events e JOIN devices d "
                                    "ON d.id = e.device WHERE d.uuid = ?1 AND e.type = ?2 "
                                    "ORDER BY e.seq",
                                    -1, &st, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, device, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, type, -1, SQLITE_STATIC);
    json_t *arr = json_array();
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(st, 1);
        json_t *data = NULL;
        cr_assert_eq(mmr_json_parse_object(text, strlen(text), 16, &data), 0,
                     "event data is not JSON: %s", text);
        json_array_append_new(
            arr,
            json_pack("{s:I,s:o}", "seq", (json_int_t)sqlite3_column_int64(st, 0), "data", data));
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return arr;
}

static void server_db_intact(void)
{
    sqlite3 *db = server_db();
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_expect_str_eq((const char *)sqlite3_column_text(st, 0), "ok", "server.db is damaged");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* At every reported seq the server holds the event reported there (its
 * data "n" and "of"), not another one that was given the same seq. */
static void expect_reported_data(const char *device, const struct reported *rep)
{
    size_t size = (size_t)rep->seqs.max + 1;
    int *n_at = mmr_calloc(size, sizeof(int)), *of_at = mmr_calloc(size, sizeof(int));
    sqlite3 *db = server_db();
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT e.seq, json_extract(e.data, '$.n'), "
                                    "json_extract(e.data, '$.of') FROM events e JOIN devices d "
                                    "ON d.id = e.device WHERE d.uuid = ?1 AND e.type = ?2",
                                    -1, &st, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, device, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, SELFTEST, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) {
        sqlite3_int64 seq = sqlite3_column_int64(st, 0);
        if (seq >= 0 && (size_t)seq < size) {
            n_at[seq] = sqlite3_column_int(st, 1);
            of_at[seq] = sqlite3_column_int(st, 2);
        }
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    long long wrong = 0;
    for (size_t r = 0; r < rep->count; r++) {
        const struct stored *s = &rep->ranges[r];
        for (long long i = 0; i < s->queued; i++) {
            size_t seq = (size_t)(s->first + i);
            if (n_at[seq] == i + 1 && of_at[seq] == s->queued)
                continue;
            if (!wrong)
                cr_log_error("seq %zu holds event %d of %d, reported as %lld of %lld", seq,
                             n_at[seq], of_at[seq], i + 1, s->queued);
            wrong++;
        }
    }
    cr_expect_eq(wrong, 0, "%lld reported seqs hold another event on the server", wrong);
    free(n_at);
    free(of_at);
}

/* The server holds exactly the reported selftest events of the device, its
 * counters agree, and its ack covers the agent's last seq. */
static void expect_exactly(const char *device, const struct reported *rep, long long last_seq)
{
    const struct seqset *want = &rep->seqs;
    struct seqset got = {0};
    long long rows = server_seqs(device, SELFTEST, -1, &got);
    long long missing = 0, extra = 0;
    for (uint64_t q = 1; q <= want->max; q++)
        missing += seqset_has(want, q) && !seqset_has(&got, q);
    for (uint64_t q = 1; q <= got.max; q++)
        extra += seqset_has(&got, q) && !seqset_has(want, q);
    cr_expect_eq(missing, 0, "%lld reported events are not on the server", missing);
    cr_expect_eq(extra, 0, "%lld events on the server were never reported", extra);
    cr_expect_eq(rows, (long long)want->count, "server rows %lld, reported %llu", rows,
                 (unsigned long long)want->count);
    cr_expect_eq(adm_count(device, SELFTEST, -1), rows,
                 "mamoriadm events count disagrees with the stored rows");
    cr_expect_eq(adm_event_ack(device), last_seq, "the server's ack is not the agent's last seq");
    expect_reported_data(device, rep);
    seqset_free(&got);
}

/* ---- tests ------------------------------------------------------------------------- */

Test(delivery, three_agents_exactly_once)
{
    char *token = fleet_token_create(&srv, "City", "laptops", 3, NULL);
    char ids[3][64];
    struct reported sent[3];
    memset(sent, 0, sizeof(sent));
    const char *names[3] = {"agent1", "agent2", "agent3"};
    for (int i = 0; i < 3; i++)
        agent_enrolled(&agents[i], names[i], token, ids[i]);
    free(token);
    cr_assert(strcmp(agents[0].hardware_id, agents[1].hardware_id) != 0 &&
              strcmp(agents[1].hardware_id, agents[2].hardware_id) != 0 &&
              strcmp(agents[0].hardware_id, agents[2].hardware_id) != 0);
    cr_assert(strcmp(ids[0], ids[1]) != 0 && strcmp(ids[1], ids[2]) != 0 &&
                  strcmp(ids[0], ids[2]) != 0,
              "agents share a device id");

    uint64_t t0 = mmr_time_mono_ms();
    for (int round = 0; round < 3; round++) {
        /* All three at once, then a sync each. */
        struct proc *p[3];
        for (int i = 0; i < 3; i++)
            p[i] = selftest_start(&agents[i], 1000, 0);
        for (int i = 0; i < 3; i++) {
            struct stored s;
            cr_assert(selftest_finish(p[i], 1000, &s), "selftest on %s failed", names[i]);
            add_range(&sent[i], &s);
        }
        for (int i = 0; i < 3; i++)
            sync_now(&agents[i]);
    }
    for (int i = 0; i < 3; i++)
        drain(&agents[i], 60000);
    cr_log_info("3 agents x 3000 events delivered in %llu ms",
                (unsigned long long)(mmr_time_mono_ms() - t0));

    for (int i = 0; i < 3; i++) {
        cr_expect_eq(sent[i].seqs.count, 3000);
        cr_expect_eq(adm_count(ids[i], SELFTEST, -1), 3000, "%s", names[i]);
        expect_exactly(ids[i], &sent[i], status_int(&agents[i], "queue.last_seq"));
        cr_expect_eq(status_int(&agents[i], "checkin.events_sent"), 3000);
    }
    json_t *sum = fleet_adm_json(&srv, "events", "summary", NULL);
    char *text = mmr_json_dump_line(sum);
    cr_log_info("events summary: %s", text);
    free(text);
    json_decref(sum);
    for (int i = 0; i < 3; i++) {
        fleet_agent_stop(&agents[i]);
        reported_free(&sent[i]);
    }
}

/* kill -9 of the agent at random points of enqueue and upload. */
Test(delivery, agent_killed_50_times)
{
    char *token = fleet_token_create(&srv, "City", "laptops", 1, NULL);
    struct fleet_agent *a = &agents[0];
    char id[64];
    agent_enrolled(a, "agent", token, id);
    free(token);

    /* Under valgrind an agent start costs seconds: fewer rounds, same path. */
    int rounds = proc_wrapped() ? 8 : 50;
    struct reported rep = {0};
    const struct seqset *reported = &rep.seqs;
    int during_selftest = 0, selftest_lost = 0, during_upload = 0, backlog_at_start = 0;
    uint64_t t0 = mmr_time_mono_ms();
    for (int r = 0; r < rounds; r++) {
        if (!a->proc)
            fleet_agent_start(a);
        /* What was reported stored before the last kill is still there. */
        json_t *st = status(a);
        long long last = fleet_json_int(st, "queue.last_seq");
        backlog_at_start += r > 0 && fleet_json_int(st, "queue.depth") > 0;
        json_decref(st);
        cr_assert_geq(last, (long long)reported->max,
                      "round %d: the queue's last seq %lld is below a reported seq %llu", r, last,
                      (unsigned long long)reported->max);
        int mode = rng_between(0, 2);
        if (mode >= 1) {
            /* Stored and reported; its upload starts at once. */
            int n = rng_between(100, 1500);
            struct stored s = selftest(a, n, rng_between(0, 2));
            add_range(&rep, &s);
            during_upload++;
        }
        struct proc *pending = NULL, *syncp = NULL;
        int n = rng_between(50, 3000);
        if (mode != 1) {
            pending = selftest_start(a, n, rng_between(0, 2));
            const char *argv[] = {MMR_CTL_BIN, "--data-dir", a->dir, "sync", NULL};
            syncp = proc_start(argv, NULL);
        }
        /* Under valgrind mamorictl alone takes a second to start. */
        sleep_ms(rng_between(0, proc_wrapped() ? 3000 : 300));
        fleet_agent_kill9(a);
        if (pending) {
            struct stored s;
            if (selftest_finish(pending, n, &s)) {
                add_range(&rep, &s);
            } else {
                selftest_lost++;
            }
            during_selftest++;
            struct proc_result res;
            proc_wait(syncp, fleet_ms(30000), &res);
            proc_result_free(&res);
        }
    }
    cr_log_info("%d kills in %llu ms: %d with a selftest running (%d of them cut short), "
                "%d after a fresh selftest (upload running); %d restarts found events "
                "still queued; %llu events reported stored",
                rounds, (unsigned long long)(mmr_time_mono_ms() - t0), during_selftest,
                selftest_lost, during_upload, backlog_at_start,
                (unsigned long long)reported->count);

    fleet_agent_start(a);
    drain(a, 120000);
    long long last = status_int(a, "queue.last_seq");
    cr_assert_geq(last, (long long)reported->max);

    /* Every reported event is there; the server holds each seq once, and no
     * seq the queue never issued. */
    struct seqset got = {0};
    long long rows = server_seqs(id, NULL, -1, &got);
    long long missing = 0;
    for (uint64_t q = 1; q <= reported->max; q++)
        missing += seqset_has(reported, q) && !seqset_has(&got, q);
    cr_expect_eq(missing, 0, "%lld of %llu reported events are not on the server", missing,
                 (unsigned long long)reported->count);
    cr_expect_eq(rows, (long long)got.count);
    cr_expect_leq((long long)got.max, last, "the server holds seq %llu, the queue issued %lld",
                  (unsigned long long)got.max, last);
    long long extra = rows - (long long)reported->count + missing;
    cr_log_info("server holds %lld events: %llu reported, %lld stored but cut off before "
                "the reply",
                rows, (unsigned long long)reported->count, extra);
    cr_expect_eq(adm_count(id, SELFTEST, -1), rows, "counters disagree with the rows");
    cr_expect_eq(adm_count(id, NULL, -1), rows);
    cr_expect_eq(adm_event_ack(id), last, "the server's ack is not the agent's last seq");
    expect_reported_data(id, &rep);
    seqset_free(&got);
    reported_free(&rep);
    fleet_agent_stop(a);
}

static bool has_failures(void *ud)
{
    json_t *st = fleet_agent_status(ud);
    bool yes = st && fleet_json_int(st, "checkin.failures") > 0;
    json_decref(st);
    return yes;
}

Test(delivery, server_down_for_a_while)
{
    char *token = fleet_token_create(&srv, "City", "laptops", 1, NULL);
    struct fleet_agent *a = &agents[0];
    char id[64];
    agent_enrolled(a, "agent", token, id);
    free(token);
    drain(a, 30000);

    fleet_server_stop(&srv);
    struct reported sent = {0};
    /* Every severity, Critical included: those try to leave at once. */
    static const int per_sev[4] = {700, 300, 150, 7};
    long long total = 0;
    for (int round = 0; round < 2; round++) {
        for (int sev = 0; sev < 4; sev++) {
            struct stored s = selftest(a, per_sev[sev], sev);
            add_range(&sent, &s);
            total += per_sev[sev];
        }
        sync_now(a);
        cr_assert(fleet_wait_for(has_failures, a, 20000), "check-in failures not counted");
    }
    json_t *st = status(a);
    cr_expect_eq(fleet_json_int(st, "queue.depth"), total, "queue depth while the server is down");
    static const char *const names[4] = {"low", "medium", "high", "critical"};
    for (int sev = 0; sev < 4; sev++) {
        char path[64];
        snprintf(path, sizeof(path), "queue.by_severity.%s", names[sev]);
        cr_expect_eq(fleet_json_int(st, path), 2 * per_sev[sev], "%s", path);
    }
    cr_expect_gt(fleet_json_int(st, "checkin.failures"), 0);
    cr_expect_eq(fleet_json_int(st, "queue.dropped.low"), 0);
    json_decref(st);
    struct seqset none = {0};
    cr_expect_eq(server_seqs(id, NULL, -1, &none), 0, "events arrived at a stopped server");
    seqset_free(&none);

    fleet_server_start(&srv);
    drain(a, 60000);
    st = status(a);
    cr_expect_eq(fleet_json_int(st, "checkin.failures"), 0);
    long long last = fleet_json_int(st, "queue.last_seq");
    json_decref(st);
    expect_exactly(id, &sent, last);
    for (int sev = 0; sev < 4; sev++)
        cr_expect_eq(adm_count(id, SELFTEST, sev), 2 * per_sev[sev], "severity %d", sev);
    reported_free(&sent);
    fleet_agent_stop(a);
}

struct policy_wait {
    const struct fleet_agent *a;
    long long version;
};

static bool policy_applied(void *ud)
{
    struct policy_wait *w = ud;
    json_t *st = fleet_agent_status(w->a);
    bool yes = st && fleet_json_int(st, "policy.version") == w->version &&
               fleet_json_int(st, "queue.max_events") == 100;
    json_decref(st);
    return yes;
}

Test(delivery, tiny_queue_cap_drops_exactly)
{
    char *token = fleet_token_create(&srv, "City", "tiny", 1, NULL);
    struct fleet_agent *a = &agents[0];
    char id[64];
    agent_enrolled(a, "agent", token, id);
    free(token);

    char *pol = mmr_path_join(fl.root, "tiny.json");
    fleet_write_file(pol, "{\"profile\":\"carried-out\",\"telemetry\":{\"queue_max_events\":100}}");
    struct proc_result res;
    int rc = fleet_adm(&srv, &res, "policy", "publish", "--group", "tiny", pol, NULL);
    cr_assert_eq(rc, 0, "policy publish: exit %d: %s", rc, res.err);
    struct policy_wait w = {a, 0};
    cr_assert_eq(sscanf(res.out, "published version %lld", &w.version), 1, "%s", res.out);
    proc_result_free(&res);
    free(pol);
    sync_now(a);
    cr_assert(fleet_wait_for(policy_applied, &w, 20000), "policy %lld not applied", w.version);
    drain(a, 30000);

    fleet_server_stop(&srv);
    struct stored low = selftest(a, 150, 0);
    struct stored crit = selftest(a, 5, 3);
    /* 100 rows: 5 Critical, one agent.gap (Medium), and the newest Low. */
    const long long kept_low = 100 - 5 - 1, dropped_low = 150 - kept_low;
    json_t *st = status(a);
    cr_expect_eq(fleet_json_int(st, "queue.depth"), 100);
    cr_expect_eq(fleet_json_int(st, "queue.dropped.low"), dropped_low, "dropped.low");
    cr_expect_eq(fleet_json_int(st, "queue.dropped.medium"), 0);
    cr_expect_eq(fleet_json_int(st, "queue.dropped.high"), 0);
    cr_expect_eq(fleet_json_int(st, "queue.by_severity.low"), kept_low);
    cr_expect_eq(fleet_json_int(st, "queue.by_severity.medium"), 1, "one agent.gap event");
    cr_expect_eq(fleet_json_int(st, "queue.by_severity.critical"), 5);
    json_decref(st);

    fleet_server_start(&srv);
    drain(a, 30000);

    /* Exactly one gap event, saying how many were dropped. */
    json_t *gaps = server_events(id, "agent.gap");
    char *text = mmr_json_dump_line(gaps);
    cr_log_info("agent.gap on the server: %s", text);
    cr_assert_eq(json_array_size(gaps), 1, "agent.gap events on the server: %s", text);
    json_t *g = json_array_get(gaps, 0);
    long long gap_seq = fleet_json_int(g, "seq");
    cr_expect_eq(fleet_json_int(g, "data.dropped.low"), dropped_low, "%s", text);
    cr_expect_eq(fleet_json_int(g, "data.dropped.medium"), 0);
    cr_expect_eq(fleet_json_int(g, "data.dropped.high"), 0);
    cr_expect_str_eq(fleet_json_str(g, "data.reason"), "queue full");
    free(text);
    json_decref(gaps);

    /* The Critical events all; of the Low ones the newest kept_low. */
    struct seqset crit_got = {0}, low_got = {0}, low_want = {0};
    cr_expect_eq(server_seqs(id, SELFTEST, 3, &crit_got), 5);
    for (long long q = crit.first; q <= crit.last; q++)
        cr_expect(seqset_has(&crit_got, (uint64_t)q), "Critical seq %lld is missing", q);
    long long low_seqs = 0;
    for (long long q = low.last; q >= low.first; q--) {
        if (q == gap_seq)
            continue;
        low_seqs++;
        if (low_seqs <= kept_low)
            seqset_add(&low_want, (uint64_t)q);
    }
    cr_expect_eq(low_seqs, 150, "the Low selftest's range %lld..%lld", low.first, low.last);
    cr_expect_eq(server_seqs(id, SELFTEST, 0, &low_got), kept_low);
    long long wrong = 0;
    for (uint64_t q = 1; q <= low_got.max; q++)
        wrong += seqset_has(&low_got, q) != seqset_has(&low_want, q);
    cr_expect_eq(wrong, 0, "the server's Low events are not the newest %lld", kept_low);
    cr_expect_eq(adm_count(id, SELFTEST, 0), kept_low);
    cr_expect_eq(adm_count(id, SELFTEST, 3), 5);
    cr_expect_eq(adm_count(id, "agent.gap", -1), 1);
    seqset_free(&crit_got);
    seqset_free(&low_got);
    seqset_free(&low_want);
    fleet_agent_stop(a);
}

struct progress {
    const struct fleet_agent *a;
    long long depth_below;
};

static bool draining(void *ud)
{
    struct progress *p = ud;
    json_t *st = fleet_agent_status(p->a);
    bool yes = st && fleet_json_int(st, "queue.depth") < p->depth_below;
    json_decref(st);
    return yes;
}

Test(delivery, server_killed_during_uploads)
{
    char *token = fleet_token_create(&srv, "City", "laptops", 1, NULL);
    struct fleet_agent *a = &agents[0];
    char id[64];
    agent_enrolled(a, "agent", token, id);
    free(token);
    drain(a, 30000);

    /* A backlog built while the server is away, drained by the token bucket
     * (5,000 events/s by default): several seconds of uploads to cut. */
    fleet_server_stop(&srv);
    /* Under valgrind everything is ~20 times slower, the drain included. */
    int total = proc_wrapped() ? 6000 : 20000, chunk = total / 2;
    struct reported sent = {0};
    for (int i = 0; i < 2; i++) {
        struct stored s = selftest(a, chunk, 0);
        add_range(&sent, &s);
    }
    fleet_server_start(&srv);
    sync_now(a);

    int kills = 0, cut = 0;
    uint64_t t0 = mmr_time_mono_ms();
    for (int k = 0; k < 5; k++) {
        /* Wait until the drain is visibly under way, then cut it. */
        long long depth = status_int(a, "queue.depth");
        if (depth == 0)
            break;
        struct progress p = {a, depth};
        bool moving = fleet_wait_for(draining, &p, 20000);
        sleep_ms(rng_between(0, 400));
        long long before = status_int(a, "queue.depth");
        fleet_server_kill9(&srv);
        kills++;
        cut += moving && before > 0;
        cr_log_info("kill %d: server killed with %lld events still queued", k + 1, before);
        sleep_ms(rng_between(100, 500));
        fleet_server_start(&srv);
        sync_now(a);
    }
    cr_expect_geq(cut, 3, "only %d of %d kills hit a running drain", cut, kills);
    drain(a, 120000);
    cr_log_info("%d events drained across %d server kills in %llu ms", total, kills,
                (unsigned long long)(mmr_time_mono_ms() - t0));
    server_db_intact();
    expect_exactly(id, &sent, status_int(a, "queue.last_seq"));
    reported_free(&sent);
    fleet_agent_stop(a);
}
