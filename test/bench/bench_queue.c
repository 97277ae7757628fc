/* Benchmark: durable enqueue through the telemetry queue (two producer threads,
 * everything committed at the end) against the raw SQLite limit on the same
 * disk (a plain batched INSERT loop, WAL, synchronous=FULL, same rows). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "agent/queue.h"
#include "shared/db.h"
#include "shared/err.h"
#include "shared/platform.h"

#define PRODUCERS      2
#define DEFAULT_EVENTS 200000
#define ROUNDS         3

static size_t per_producer;

/* About 200 bytes of JSON, as a scan detection carries. */
static void make_data(char *buf, size_t len, int id, size_t i)
{
    snprintf(
        buf, len,
        "{\"path\":\"/home/user/Downloads/installer-%06zu.exe\",\"rule\":\"Trojan_Generic_%d\","
        "\"sha256\":\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\","
        "\"action\":\"quarantine\",\"size\":%zu}",
        i, id, 1000 + i);
}

static double now_s(void)
{
    return (double)uv_hrtime() / 1e9;
}

struct producer {
    struct mmr_queue *q;
    int id;
    int failures;
};

static void produce(void *arg)
{
    struct producer *p = arg;
    char data[256];
    for (size_t i = 0; i < per_producer; i++) {
        make_data(data, sizeof(data), p->id, i);
        struct mmr_event ev = {.type = "scan.detection", .severity = (int)(i % 3), .data = data};
        if (mmr_queue_push_wait(p->q, &ev, NULL, NULL) < 0)
            p->failures++;
    }
}

static int bench_enqueue(const char *path, double *rate, double *avg_batch)
{
    /* Bounds out of the way: this measures storing, not the drop rule. */
    struct mmr_queue_opts opts = {.max_rows = UINT64_MAX, .max_bytes = UINT64_MAX};
    struct mmr_queue *q;
    int rc = mmr_queue_open(path, NULL, &opts, &q);
    if (rc < 0) {
        fprintf(stderr, "bench_queue: %s\n", mmr_err_msg());
        return rc;
    }
    struct producer p[PRODUCERS];
    uv_thread_t t[PRODUCERS];
    double start = now_s();
    for (int i = 0; i < PRODUCERS; i++) {
        p[i] = (struct producer){q, i, 0};
        if (uv_thread_create(&t[i], produce, &p[i]) != 0) {
            fprintf(stderr, "bench_queue: cannot start a thread\n");
            exit(1);
        }
    }
    for (int i = 0; i < PRODUCERS; i++)
        uv_thread_join(&t[i]);
    mmr_queue_flush(q);
    double elapsed = now_s() - start;
    struct mmr_queue_stats st;
    mmr_queue_stats(q, &st);
    mmr_queue_close(q);
    int failures = 0;
    for (int i = 0; i < PRODUCERS; i++)
        failures += p[i].failures;
    if (failures || st.failed || st.committed != per_producer * PRODUCERS) {
        fprintf(stderr, "bench_queue: %d pushes and %" PRIu64 " commits failed\n", failures,
                st.failed);
        return MMR_EIO;
    }
    *rate = (double)st.committed / elapsed;
    *avg_batch = st.batches ? (double)st.committed / (double)st.batches : 1;
    return 0;
}

static int bench_raw(const char *path, size_t total, size_t batch, double *rate)
{
    static const struct mmr_db_migration schema[] = {
        {1, "CREATE TABLE events (seq INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL,"
            " severity INTEGER NOT NULL, type TEXT NOT NULL, data TEXT NOT NULL);"},
    };
    struct mmr_db_opts opts = {.sync_full = true};
    struct mmr_db *db;
    int rc = mmr_db_open(path, &opts, schema, 1, &db);
    if (rc < 0)
        goto fail;
    char data[256];
    double start = now_s();
    for (size_t done = 0; done < total;) {
        rc = mmr_db_begin(db);
        if (rc < 0)
            goto fail;
        for (size_t i = 0; i < batch && done < total; i++, done++) {
            sqlite3_stmt *st;
            rc = mmr_db_stmt(db,
                             "INSERT INTO events(seq, time_ms, severity, type, data) "
                             "VALUES (?1, ?2, ?3, ?4, ?5)",
                             &st);
            if (rc < 0)
                goto fail;
            make_data(data, sizeof(data), (int)(done & 1), done / 2);
            sqlite3_bind_int64(st, 1, (sqlite3_int64)done + 1);
            sqlite3_bind_int64(st, 2, mmr_time_now_ms());
            sqlite3_bind_int(st, 3, (int)(done % 3));
            sqlite3_bind_text(st, 4, "scan.detection", -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 5, data, -1, SQLITE_STATIC);
            if (sqlite3_step(st) != SQLITE_DONE) {
                rc = mmr_db_error(db, "inserting");
                goto fail;
            }
        }
        rc = mmr_db_commit(db);
        if (rc < 0)
            goto fail;
    }
    *rate = (double)total / (now_s() - start);
    mmr_db_close(db);
    return 0;
fail:
    fprintf(stderr, "bench_queue: raw SQLite: %s\n", mmr_err_msg());
    mmr_db_close(db);
    return rc;
}

static void remove_db(const char *path)
{
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        char p[96];
        snprintf(p, sizeof(p), "%s%s", path, suffixes[i]);
        unlink(p);
    }
}

int main(int argc, char **argv)
{
    size_t total = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : DEFAULT_EVENTS;
    if (total < PRODUCERS)
        total = DEFAULT_EVENTS;
    per_producer = total / PRODUCERS;
    total = per_producer * PRODUCERS;

    char dir[] = "/tmp/mmr-bench-queue-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("bench_queue: mkdtemp");
        return 1;
    }
    char qpath[64], rpath[64];
    snprintf(qpath, sizeof(qpath), "%s/queue.db", dir);
    snprintf(rpath, sizeof(rpath), "%s/raw.db", dir);

    /* Rounds alternate the two, each on a fresh file, and the best of each
     * is kept: fsync latency on a shared machine is noisy. In every round the
     * queue goes first and the raw loop then uses the batch size it achieved. */
    double best_enq = 0, best_raw = 0, batch_sum = 0;
    int rc = 0;
    for (int round = 0; round < ROUNDS && rc == 0; round++) {
        double enq = 0, avg_batch = 1, raw = 0;
        rc = bench_enqueue(qpath, &enq, &avg_batch);
        if (rc == 0)
            rc = bench_raw(rpath, total, (size_t)(avg_batch + 0.5), &raw);
        remove_db(qpath);
        remove_db(rpath);
        best_enq = enq > best_enq ? enq : best_enq;
        best_raw = raw > best_raw ? raw : best_raw;
        batch_sum += avg_batch;
    }
    rmdir(dir);
    if (rc < 0)
        return 1;

    printf("queue.events: %zu events\n", total);
    printf("queue.batch_size: %.0f events\n", batch_sum / ROUNDS);
    printf("queue.raw_sqlite_insert: %.0f events/s\n", best_raw);
    printf("queue.enqueue: %.0f events/s\n", best_enq);
    printf("queue.enqueue_vs_raw: %.2f ratio\n", best_raw > 0 ? best_enq / best_raw : 0);
    return 0;
}
