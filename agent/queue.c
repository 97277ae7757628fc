/* The telemetry queue: events in agent.db, written by one writer thread that
 * commits what producers handed it in group-committed batches, bounded by the
 * drop rule, read in batches for upload and deleted on the server's ack.
 *
 * Design notes (departures from the starting design are marked):
 * - seq is assigned by the writer, not by AUTOINCREMENT: the highest seq ever
 *   assigned is stored in queue_meta in the same transaction as the rows, so
 *   a seq is never reused, even after every row was acknowledged and deleted.
 *   One UPDATE per batch instead of one sqlite_sequence write per row.
 * - A batch whose commit failed burns its seqs: after a failed fsync the
 *   frames may still be in the WAL and come back after a crash, so giving
 *   their seqs to other events could make two events share a seq.
 * - Seqs therefore have holes (failed batches, dropped events). A batch from
 *   mmr_queue_read holds every stored event in (after, last_seq], which is
 *   what the "after" of POST /v1/events claims, so the server's ack passes
 *   over holes that will never fill. mmr_queue_read_critical picks a
 *   Critical event out of a backlog with the after that makes it a valid
 *   batch of one (the stored seq just before it).
 * - The drop rule runs inside the transaction that made the queue exceed a
 *   bound: it deletes the oldest events of the lowest severity first (newly
 *   pushed ones included: they may be the lowest), never Critical, and
 *   never an agent.gap event. One agent.gap event (Medium) per drop episode:
 *   it is created at the first drop and updated in place with running counts
 *   until an uploader has read it (or it was acknowledged, or the agent
 *   restarts); later drops then open a new episode. Days offline give one
 *   gap event, not thousands. A gap row is accounted at a fixed size so that
 *   rewriting it never changes the byte total.
 * - Events to drop are found by a scan in seq order from a cursor per
 *   severity (amortized O(1) per event), not through an index on (severity,
 *   seq): that index cost a third of the enqueue rate. Only Critical events
 *   have a (partial) index, to send them ahead of a backlog.
 * - Bytes are "accounted bytes": type + data + 64 per event, about the size of
 *   the event in the upload JSON; not SQLite's page usage.
 * - Data is checked on push (and again when read back) to be what the
 *   server's parser accepts; a scanner that allocates nothing vouches for
 *   ordinary documents and jansson decides the rest (see data_ok).
 * - Events with severity, type and data out of shape are refused at push;
 *   a transaction that fails (full disk, I/O error) fails all of its events,
 *   each told so, and the writer goes on with the next batch.
 * - Counters by severity are computed at open (bounded by the byte cap) and
 *   then kept in memory by the only writer; the dropped counters and the
 *   last seq are persisted in queue_meta.
 * - Threads: producers append to a pending list under `mu` (never touching
 *   the disk); the writer thread owns the connection under `dbmu` and takes
 *   `mu` only to take a batch and hand results back (lock order: dbmu, then
 *   mu). Readers (upload, ack, tail) take `dbmu` on their own thread, so
 *   they never need the loop thread. Results reach the loop thread through a
 *   uv_async_t; stats are a copy under `mu`, so status never waits for disk.
 * - Back-pressure: at most max_pending events (and bytes) wait for the disk,
 *   plus one batch in flight; beyond that mmr_queue_push says MMR_EBUSY and
 *   mmr_queue_push_wait waits, so memory is bounded whatever the disk does. */
#include "agent/queue.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/db.h"
#include "shared/err.h"
#include "shared/json.h"
#include "shared/log.h"
#include "shared/mem.h"
#include "shared/platform.h"

#define MOD "queue"

#define DEFAULT_MAX_PENDING       65536
#define DEFAULT_MAX_PENDING_BYTES (16u * 1024 * 1024)
#define DEFAULT_MAX_BATCH         4096
/* A transaction's events stay within SQLite's default page cache (2 MiB):
 * a larger one spills pages to the WAL before its commit, which is slower. */
#define MAX_BATCH_BYTES (1024 * 1024)
/* Accounted bytes of an event beyond its type and data: the seq, time and
 * severity and the JSON punctuation around them in an upload. */
#define EVENT_OVERHEAD MMR_QUEUE_EVENT_OVERHEAD
/* A gap event's data never exceeds this; its row is accounted at GAP_SIZE. */
#define GAP_DATA_MAX MMR_QUEUE_GAP_DATA_MAX
#define GAP_SIZE     MMR_QUEUE_GAP_SIZE
_Static_assert(MMR_QUEUE_GAP_SIZE == EVENT_OVERHEAD + sizeof(MMR_QUEUE_GAP_TYPE) - 1 + GAP_DATA_MAX,
               "the gap event's accounted size");
/* Rows fetched per step when choosing events to drop. */
#define DROP_CHUNK 512
/* Longest error message handed back with a failed event. */
#define ERRMSG_MAX 512

const char mmr_queue_schema_sql[] =
    "CREATE TABLE IF NOT EXISTS queue_events ("
    "  seq INTEGER PRIMARY KEY,"
    "  time_ms INTEGER NOT NULL,"
    "  severity INTEGER NOT NULL CHECK (severity BETWEEN 0 AND 3),"
    "  type TEXT NOT NULL,"
    "  data TEXT NOT NULL,"
    "  size INTEGER NOT NULL"
    ");"
    /* Critical events, to send them ahead of a backlog. */
    "CREATE INDEX IF NOT EXISTS queue_events_critical ON queue_events(seq)"
    "  WHERE severity = 3;"
    "CREATE TABLE IF NOT EXISTS queue_meta ("
    "  key TEXT PRIMARY KEY,"
    "  value INTEGER NOT NULL"
    ") WITHOUT ROWID;";

static const char SQL_INSERT[] =
    "INSERT INTO queue_events(seq, time_ms, severity, type, data, size) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
static const char SQL_META_PUT[] = "INSERT INTO queue_meta(key, value) VALUES (?1, ?2) "
                                   "ON CONFLICT(key) DO UPDATE SET value = excluded.value";
/* Drop candidates are found by scanning in seq order from a per-severity
 * cursor rather than through an index on (severity, seq): such an index cost
 * a third of the enqueue rate, and the cursors make the scans amortized
 * O(1) per event (each row is passed over at most once per severity). */
static const char SQL_DROP_SCAN[] =
    "SELECT seq, size FROM queue_events "
    "WHERE seq >= ?2 AND severity = ?1 AND type <> 'agent.gap' ORDER BY seq LIMIT ?3";
static const char SQL_DROP_DELETE[] =
    "DELETE FROM queue_events "
    "WHERE seq >= ?2 AND seq <= ?3 AND severity = ?1 AND type <> 'agent.gap'";
static const char SQL_GAP_UPDATE[] = "UPDATE queue_events SET data = ?2 WHERE seq = ?1";
static const char SQL_OLDEST[] = "SELECT time_ms FROM queue_events ORDER BY seq LIMIT 1";
static const char SQL_READ[] = "SELECT seq, time_ms, severity, type, data FROM queue_events "
                               "WHERE seq > ?1 ORDER BY seq LIMIT ?2";
static const char SQL_CRITICAL[] =
    "SELECT seq, time_ms, severity, type, data FROM queue_events INDEXED BY queue_events_critical "
    "WHERE severity = 3 AND seq > ?1 ORDER BY seq LIMIT 1";
static const char SQL_BEFORE[] = "SELECT max(seq) FROM queue_events WHERE seq < ?1";
static const char SQL_TAIL[] = "SELECT seq, time_ms, severity, type, data FROM queue_events "
                               "ORDER BY seq DESC LIMIT ?1";
static const char SQL_ACK_COUNT[] = "SELECT severity, count(*), total(size) FROM queue_events "
                                    "WHERE seq <= ?1 GROUP BY severity";
static const char SQL_ACK_DELETE[] = "DELETE FROM queue_events WHERE seq <= ?1";

static const char *const meta_dropped_keys[MMR_SEV_COUNT - 1] = {
    "dropped_low",
    "dropped_medium",
    "dropped_high",
};

/* Someone waiting in mmr_queue_push_sync, on that caller's stack. */
struct waiter {
    bool done;
    int rc;
    uint64_t seq;
    char msg[ERRMSG_MAX];
};

/* One pushed event, from the push to its completion. */
struct item {
    struct item *next;
    mmr_queue_cb cb;
    void *arg;
    struct waiter *waiter;
    int64_t time_ms;
    uint64_t seq;
    int severity;
    int rc;
    char *errmsg; /* when rc < 0 */
    size_t type_len;
    size_t data_len;
    char text[]; /* type, NUL, data, NUL */
};

/* What the database holds, as the writer knows it. A transaction works on a
 * copy and it replaces this one only once the commit succeeded. */
struct dbstate {
    uint64_t next_seq;
    uint64_t depth[MMR_SEV_COUNT];
    uint64_t bytes;
    uint64_t dropped[MMR_SEV_COUNT];
    /* Every row below drop_cursor[sev] is known not to be a droppable event
     * of severity sev: scans for events to drop start there. */
    uint64_t drop_cursor[MMR_SEV_COUNT - 1];
    /* The open drop episode: its agent.gap row (0: none) and running counts. */
    uint64_t gap_seq;
    uint64_t gap_dropped[MMR_SEV_COUNT - 1];
    bool gap_critical_kept;
};

struct mmr_queue {
    /* Limits of the pending list; fixed at open. */
    size_t max_pending;
    size_t max_pending_bytes;
    size_t max_batch;
    void (*on_critical)(void *arg);
    void *cb_arg;

    /* Under dbmu: the connection and what it holds. */
    uv_mutex_t dbmu;
    struct mmr_db *db;
    struct dbstate s;
    uint64_t max_rows;
    uint64_t max_bytes;
    int64_t oldest_ms;
    bool failing; /* the last transaction failed: log the recovery */

    /* Under mu: the pending list, hand-over counters and published stats. */
    uv_mutex_t mu;
    uv_cond_t work_cv; /* the writer waits for work */
    uv_cond_t done_cv; /* push_sync and flush wait for results */
    uv_cond_t room_cv; /* push_wait waits for room */
    struct item *head;
    struct item **tailp;
    size_t npending;
    size_t pending_bytes;
    size_t inflight;
    bool writer_idle;
    bool stopping;
    uint64_t pushed;  /* events accepted since open */
    uint64_t handled; /* of those, committed or failed (FIFO) */
    uint64_t limits_gen;
    uint64_t limits_done;
    uint64_t want_rows;
    uint64_t want_bytes;
    struct mmr_queue_stats st;

    /* Results for the loop thread (under mu). */
    uv_loop_t *loop;
    uv_async_t *async;
    struct item *done_head;
    struct item **done_tailp;
    bool critical_signal;

    uv_thread_t thread;
};

const char *mmr_severity_name(int severity)
{
    static const char *const names[MMR_SEV_COUNT] = {"low", "medium", "high", "critical"};
    return severity >= 0 && severity < MMR_SEV_COUNT ? names[severity] : NULL;
}

static uint64_t total_rows(const struct dbstate *s)
{
    uint64_t n = 0;
    for (int i = 0; i < MMR_SEV_COUNT; i++)
        n += s->depth[i];
    return n;
}

/* Counters follow the rows; a file altered behind the queue's back must not
 * make them wrap around. */
static uint64_t sub_floor(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

static size_t item_size(const struct item *it)
{
    return EVENT_OVERHEAD + it->type_len + it->data_len;
}

static void item_free(struct item *it)
{
    free(it->errmsg);
    free(it);
}

/* ---- database helpers (under dbmu) ----------------------------------------- */

static int meta_put(struct mmr_queue *q, const char *key, uint64_t value)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(q->db, SQL_META_PUT, &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)value);
    if (sqlite3_step(st) != SQLITE_DONE)
        return mmr_db_error(q->db, "storing queue counters");
    return 0;
}

static int refresh_oldest(struct mmr_queue *q)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(q->db, SQL_OLDEST, &st);
    if (rc < 0)
        return rc;
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        q->oldest_ms = sqlite3_column_int64(st, 0);
    else if (step == SQLITE_DONE)
        q->oldest_ms = 0;
    else
        rc = mmr_db_error(q->db, "reading the oldest event");
    /* A statement left on a row would keep a read snapshot open. */
    sqlite3_reset(st);
    return rc;
}

/* Copies what the writer knows into the stats that readers see. */
static void publish(struct mmr_queue *q)
{
    uv_mutex_lock(&q->mu);
    memcpy(q->st.depth, q->s.depth, sizeof(q->st.depth));
    q->st.events = total_rows(&q->s);
    q->st.bytes = q->s.bytes;
    memcpy(q->st.dropped, q->s.dropped, sizeof(q->st.dropped));
    q->st.last_seq = q->s.next_seq - 1;
    q->st.oldest_ms = q->oldest_ms;
    q->st.max_rows = q->max_rows;
    q->st.max_bytes = q->max_bytes;
    uv_mutex_unlock(&q->mu);
}

/* ---- the drop rule ----------------------------------------------------------- */

static void gap_data(const struct dbstate *s, char *buf, size_t len)
{
    snprintf(buf, len,
             "{\"dropped\":{\"low\":%" PRIu64 ",\"medium\":%" PRIu64 ",\"high\":%" PRIu64
             "},\"reason\":\"queue full\"%s}",
             s->gap_dropped[0], s->gap_dropped[1], s->gap_dropped[2],
             s->gap_critical_kept ? ",\"critical_kept\":true" : "");
}

static int insert_row(struct mmr_queue *q, uint64_t seq, int64_t time_ms, int severity,
                      const char *type, size_t type_len, const char *data, size_t data_len,
                      size_t size)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(q->db, SQL_INSERT, &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)seq);
    sqlite3_bind_int64(st, 2, time_ms);
    sqlite3_bind_int(st, 3, severity);
    sqlite3_bind_text(st, 4, type, (int)type_len, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, data, (int)data_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)size);
    if (sqlite3_step(st) != SQLITE_DONE)
        return mmr_db_error(q->db, "storing an event");
    return 0;
}

/* Deletes the oldest droppable events of one severity until the needs are
 * met or none are left; counts what went into *nrows and *nbytes. */
static int drop_severity(struct mmr_queue *q, struct dbstate *s, int sev, uint64_t need_rows,
                         uint64_t need_bytes, uint64_t *nrows, uint64_t *nbytes)
{
    uint64_t rows = 0, bytes = 0, first = s->drop_cursor[sev], last = 0;
    uint64_t cursor = first;
    bool more = true;
    *nrows = *nbytes = 0;
    while (more && (rows < need_rows || bytes < need_bytes)) {
        sqlite3_stmt *st;
        int rc = mmr_db_stmt(q->db, SQL_DROP_SCAN, &st);
        if (rc < 0)
            return rc;
        sqlite3_bind_int(st, 1, sev);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)cursor);
        sqlite3_bind_int(st, 3, DROP_CHUNK);
        int step = SQLITE_DONE, seen = 0;
        while ((rows < need_rows || bytes < need_bytes) &&
               (step = sqlite3_step(st)) == SQLITE_ROW) {
            last = (uint64_t)sqlite3_column_int64(st, 0);
            bytes += (uint64_t)sqlite3_column_int64(st, 1);
            rows++;
            seen++;
            cursor = last + 1;
        }
        if (rows < need_rows || bytes < need_bytes) {
            if (step != SQLITE_DONE) {
                rc = mmr_db_error(q->db, "choosing events to drop");
                sqlite3_reset(st);
                return rc;
            }
            more = seen == DROP_CHUNK;
            if (!more)
                cursor = s->next_seq; /* none left below the next event */
        }
        sqlite3_reset(st);
    }
    s->drop_cursor[sev] = cursor;
    if (rows == 0)
        return 0;
    sqlite3_stmt *del;
    int rc = mmr_db_stmt(q->db, SQL_DROP_DELETE, &del);
    if (rc < 0)
        return rc;
    sqlite3_bind_int(del, 1, sev);
    sqlite3_bind_int64(del, 2, (sqlite3_int64)first);
    sqlite3_bind_int64(del, 3, (sqlite3_int64)last);
    if (sqlite3_step(del) != SQLITE_DONE)
        return mmr_db_error(q->db, "dropping events");
    if ((uint64_t)sqlite3_changes(mmr_db_handle(q->db)) != rows)
        return mmr_err_set(MMR_EDB, "%s: dropping events: deleted %d rows instead of %" PRIu64,
                           mmr_db_path(q->db), sqlite3_changes(mmr_db_handle(q->db)), rows);
    *nrows = rows;
    *nbytes = bytes;
    return 0;
}

/* Brings s back within the bounds, inside the open transaction: drops the
 * oldest events of the lowest severity first and records the episode in its
 * agent.gap event. */
static int enforce_limits(struct mmr_queue *q, struct dbstate *s)
{
    if (total_rows(s) <= q->max_rows && s->bytes <= q->max_bytes)
        return 0;
    char data[GAP_DATA_MAX + 1];
    int rc;
    bool created = false;
    if (!s->gap_seq) {
        s->gap_seq = s->next_seq++;
        memset(s->gap_dropped, 0, sizeof(s->gap_dropped));
        s->gap_critical_kept = false;
        gap_data(s, data, sizeof(data));
        rc = insert_row(q, s->gap_seq, mmr_time_now_ms(), MMR_SEV_MEDIUM, MMR_QUEUE_GAP_TYPE,
                        strlen(MMR_QUEUE_GAP_TYPE), data, strlen(data), GAP_SIZE);
        if (rc < 0)
            return rc;
        s->depth[MMR_SEV_MEDIUM]++;
        s->bytes += GAP_SIZE;
        created = true;
    }
    bool changed = false;
    for (int sev = MMR_SEV_LOW; sev < MMR_SEV_CRITICAL; sev++) {
        uint64_t rows = total_rows(s), need_rows = rows > q->max_rows ? rows - q->max_rows : 0;
        uint64_t need_bytes = s->bytes > q->max_bytes ? s->bytes - q->max_bytes : 0;
        if (!need_rows && !need_bytes)
            break;
        uint64_t nrows, nbytes;
        rc = drop_severity(q, s, sev, need_rows, need_bytes, &nrows, &nbytes);
        if (rc < 0)
            return rc;
        s->depth[sev] = sub_floor(s->depth[sev], nrows);
        s->bytes = sub_floor(s->bytes, nbytes);
        s->dropped[sev] += nrows;
        s->gap_dropped[sev] += nrows;
        if (nrows) {
            changed = true;
            rc = meta_put(q, meta_dropped_keys[sev], s->dropped[sev]);
            if (rc < 0)
                return rc;
        }
    }
    if (!s->gap_critical_kept && (total_rows(s) > q->max_rows || s->bytes > q->max_bytes)) {
        /* Only Critical events (and gap records) are left: they stay. */
        s->gap_critical_kept = true;
        changed = true;
    }
    if (!changed && !created)
        return 0;
    gap_data(s, data, sizeof(data));
    sqlite3_stmt *st;
    rc = mmr_db_stmt(q->db, SQL_GAP_UPDATE, &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)s->gap_seq);
    sqlite3_bind_text(st, 2, data, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
        return mmr_db_error(q->db, "recording dropped events");
    return 0;
}

/* ---- the writer ----------------------------------------------------------------- */

/* One transaction: the batch (n may be 0 when only the limits changed), the
 * drop rule, the last seq. On failure the state stays as it was, except that
 * the seqs handed out are burned (see the top of the file). */
static int commit_batch(struct mmr_queue *q, struct item *batch, size_t n, bool *critical)
{
    struct dbstate s = q->s;
    int rc = mmr_db_begin(q->db);
    if (rc < 0)
        return rc;
    *critical = false;
    for (struct item *it = batch; n && it; it = it->next) {
        it->seq = s.next_seq++;
        size_t size = item_size(it);
        rc = insert_row(q, it->seq, it->time_ms, it->severity, it->text, it->type_len,
                        it->text + it->type_len + 1, it->data_len, size);
        if (rc < 0)
            goto fail;
        s.depth[it->severity]++;
        s.bytes += size;
        if (it->severity == MMR_SEV_CRITICAL)
            *critical = true;
    }
    rc = enforce_limits(q, &s);
    if (rc < 0)
        goto fail;
    if (s.next_seq != q->s.next_seq) {
        rc = meta_put(q, "last_seq", s.next_seq - 1);
        if (rc < 0)
            goto fail;
    }
    rc = mmr_db_commit(q->db);
    if (rc < 0) {
        q->s.next_seq = s.next_seq;
        return rc;
    }
    q->s = s;
    if (refresh_oldest(q) < 0)
        mmr_warn(MOD, "cannot read the oldest event", "err=\"%s\"", mmr_err_msg());
    return 0;
fail:
    mmr_db_rollback(q->db);
    q->s.next_seq = s.next_seq;
    return rc;
}

/* Hands the results of a transaction back: callbacks run here when there is
 * no loop (before the event counts as handled, so that a flush sees them
 * done), waiters wake, other callbacks go to the loop thread. Called without
 * any lock held. */
static void finish_batch(struct mmr_queue *q, struct item *batch, size_t n, int rc, bool critical,
                         uint64_t gen)
{
    struct item *it = batch;
    for (size_t i = 0; i < n; i++, it = it->next) {
        it->rc = rc;
        if (rc < 0)
            it->errmsg = mmr_strdup(mmr_err_msg());
        if (it->cb && !q->async) {
            if (rc < 0)
                mmr_err_set(rc, "%s", it->errmsg);
            it->cb(it->arg, rc, rc < 0 ? 0 : it->seq);
        }
    }
    if (critical && rc == 0 && q->on_critical && !q->async)
        q->on_critical(q->cb_arg);

    bool wake_loop = false;
    uv_mutex_lock(&q->mu);
    it = batch;
    for (size_t i = 0; i < n; i++) {
        struct item *next = it->next;
        it->next = NULL;
        if (it->waiter) {
            it->waiter->rc = rc;
            it->waiter->seq = rc < 0 ? 0 : it->seq;
            snprintf(it->waiter->msg, sizeof(it->waiter->msg), "%s", rc < 0 ? it->errmsg : "");
            it->waiter->done = true;
            item_free(it);
        } else if (it->cb && q->async) {
            *q->done_tailp = it;
            q->done_tailp = &it->next;
            wake_loop = true;
        } else {
            item_free(it);
        }
        it = next;
    }
    q->handled += n;
    q->inflight -= n;
    q->limits_done = gen;
    if (rc < 0) {
        q->st.failed += n;
    } else if (n) {
        q->st.committed += n;
        q->st.batches++;
    }
    if (critical && rc == 0 && q->on_critical && q->async) {
        q->critical_signal = true;
        wake_loop = true;
    }
    uv_cond_broadcast(&q->done_cv);
    uv_mutex_unlock(&q->mu);
    if (wake_loop)
        uv_async_send(q->async);
}

static void log_outcome(struct mmr_queue *q, int rc, size_t n)
{
    if (rc < 0 && !q->failing)
        mmr_warn(MOD, "storing events failed", "events=%zu code=%s err=\"%s\"", n, mmr_err_name(rc),
                 mmr_err_msg());
    else if (rc == 0 && q->failing)
        mmr_info(MOD, "storing events works again", "events=%zu", n);
    q->failing = rc < 0;
}

static void writer_main(void *arg)
{
    struct mmr_queue *q = arg;
    uv_mutex_lock(&q->mu);
    for (;;) {
        while (!q->head && q->limits_done == q->limits_gen && !q->stopping) {
            q->writer_idle = true;
            uv_cond_wait(&q->work_cv, &q->mu);
            q->writer_idle = false;
        }
        if (!q->head && q->limits_done == q->limits_gen)
            break; /* stopping, and everything is done */

        struct item *batch = q->head, *last = NULL;
        size_t n = 0, bytes = 0;
        for (struct item *it = batch; it && n < q->max_batch; it = it->next) {
            if (n && bytes + item_size(it) > MAX_BATCH_BYTES)
                break;
            last = it;
            bytes += item_size(it);
            n++;
        }
        if (last) {
            q->head = last->next;
            last->next = NULL;
            if (!q->head)
                q->tailp = &q->head;
        }
        q->npending -= n;
        q->pending_bytes -= bytes;
        q->inflight += n;
        uint64_t gen = q->limits_gen, want_rows = q->want_rows, want_bytes = q->want_bytes;
        uv_cond_broadcast(&q->room_cv);
        uv_mutex_unlock(&q->mu);

        uv_mutex_lock(&q->dbmu);
        bool limits = q->max_rows != want_rows || q->max_bytes != want_bytes;
        q->max_rows = want_rows;
        q->max_bytes = want_bytes;
        bool critical = false;
        int rc = 0;
        if (n || limits) {
            rc = commit_batch(q, batch, n, &critical);
            log_outcome(q, rc, n);
        }
        publish(q);
        uv_mutex_unlock(&q->dbmu);

        finish_batch(q, batch, n, rc, critical, gen);
        uv_mutex_lock(&q->mu);
    }
    uv_mutex_unlock(&q->mu);
}

/* ---- results on the loop thread ------------------------------------------------ */

static void deliver(struct mmr_queue *q)
{
    uv_mutex_lock(&q->mu);
    struct item *list = q->done_head;
    q->done_head = NULL;
    q->done_tailp = &q->done_head;
    bool critical = q->critical_signal;
    q->critical_signal = false;
    uv_mutex_unlock(&q->mu);
    while (list) {
        struct item *next = list->next;
        if (list->rc < 0)
            mmr_err_set(list->rc, "%s", list->errmsg);
        list->cb(list->arg, list->rc, list->rc < 0 ? 0 : list->seq);
        item_free(list);
        list = next;
    }
    if (critical)
        q->on_critical(q->cb_arg);
}

static void on_async(uv_async_t *handle)
{
    deliver(handle->data);
}

static void free_handle(uv_handle_t *handle)
{
    free(handle);
}

/* ---- open and close ----------------------------------------------------------- */

static int load_meta(struct mmr_queue *q, uint64_t *last_seq)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(q->db, "SELECT key, value FROM queue_meta", &st);
    if (rc < 0)
        return rc;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *key = (const char *)sqlite3_column_text(st, 0);
        uint64_t value = (uint64_t)sqlite3_column_int64(st, 1);
        if (!key)
            continue;
        if (strcmp(key, "last_seq") == 0)
            *last_seq = value;
        for (int i = 0; i < MMR_SEV_COUNT - 1; i++)
            if (strcmp(key, meta_dropped_keys[i]) == 0)
                q->s.dropped[i] = value;
    }
    if (step != SQLITE_DONE)
        return mmr_db_error(q->db, "reading queue counters");
    return 0;
}

static int load_state(struct mmr_queue *q)
{
    uint64_t last_seq = 0;
    int rc = load_meta(q, &last_seq);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st;
    rc = mmr_db_stmt(q->db, "SELECT max(seq) FROM queue_events", &st);
    if (rc < 0)
        return rc;
    if (sqlite3_step(st) != SQLITE_ROW)
        return mmr_db_error(q->db, "reading the last event");
    uint64_t max_seq = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    q->s.next_seq = (max_seq > last_seq ? max_seq : last_seq) + 1;

    rc = mmr_db_stmt(
        q->db, "SELECT severity, count(*), total(size) FROM queue_events GROUP BY severity", &st);
    if (rc < 0)
        return rc;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        int sev = sqlite3_column_int(st, 0);
        if (sev < 0 || sev >= MMR_SEV_COUNT)
            continue; /* the CHECK constraint keeps them out */
        q->s.depth[sev] = (uint64_t)sqlite3_column_int64(st, 1);
        q->s.bytes += (uint64_t)sqlite3_column_double(st, 2);
    }
    if (step != SQLITE_DONE)
        return mmr_db_error(q->db, "counting events");
    return refresh_oldest(q);
}

static int open_db(struct mmr_queue *q, const char *path, const char *vfs)
{
    /* No migrations here: agent.db's list (agent_db.c) owns the schema
     * version; the queue's tables are created idempotently below. */
    struct mmr_db_opts dbo = {.sync_full = true, .vfs = vfs};
    int rc = mmr_db_open(path, &dbo, NULL, 0, &q->db);
    if (rc < 0)
        return rc;
    rc = mmr_db_begin(q->db);
    if (rc < 0)
        return rc;
    rc = mmr_db_exec(q->db, mmr_queue_schema_sql);
    if (rc < 0) {
        mmr_db_rollback(q->db);
        return rc;
    }
    rc = mmr_db_commit(q->db);
    if (rc < 0)
        return rc;
    return load_state(q);
}

static void destroy(struct mmr_queue *q)
{
    mmr_db_close(q->db);
    uv_cond_destroy(&q->room_cv);
    uv_cond_destroy(&q->done_cv);
    uv_cond_destroy(&q->work_cv);
    uv_mutex_destroy(&q->mu);
    uv_mutex_destroy(&q->dbmu);
    free(q);
}

static int init_sync(struct mmr_queue *q)
{
    if (uv_mutex_init(&q->dbmu) != 0)
        return mmr_err_set(MMR_ENOMEM, "queue: cannot create a mutex");
    if (uv_mutex_init(&q->mu) != 0) {
        uv_mutex_destroy(&q->dbmu);
        return mmr_err_set(MMR_ENOMEM, "queue: cannot create a mutex");
    }
    uv_cond_t *conds[] = {&q->work_cv, &q->done_cv, &q->room_cv};
    for (size_t i = 0; i < 3; i++) {
        if (uv_cond_init(conds[i]) != 0) {
            while (i-- > 0)
                uv_cond_destroy(conds[i]);
            uv_mutex_destroy(&q->mu);
            uv_mutex_destroy(&q->dbmu);
            return mmr_err_set(MMR_ENOMEM, "queue: cannot create a condition variable");
        }
    }
    return 0;
}

int mmr_queue_open(const char *path, uv_loop_t *loop, const struct mmr_queue_opts *opts,
                   struct mmr_queue **out)
{
    static const struct mmr_queue_opts defaults;
    *out = NULL;
    if (!opts)
        opts = &defaults;
    struct mmr_queue *q = mmr_calloc(1, sizeof(*q));
    q->max_pending = opts->max_pending ? opts->max_pending : DEFAULT_MAX_PENDING;
    q->max_pending_bytes =
        opts->max_pending_bytes ? opts->max_pending_bytes : DEFAULT_MAX_PENDING_BYTES;
    q->max_batch = opts->max_batch ? opts->max_batch : DEFAULT_MAX_BATCH;
    q->max_rows = q->want_rows = opts->max_rows ? opts->max_rows : MMR_QUEUE_DEFAULT_MAX_ROWS;
    q->max_bytes = q->want_bytes = opts->max_bytes ? opts->max_bytes : MMR_QUEUE_DEFAULT_MAX_BYTES;
    q->on_critical = opts->on_critical;
    q->cb_arg = opts->arg;
    q->tailp = &q->head;
    q->done_tailp = &q->done_head;
    q->loop = loop;
    int rc = init_sync(q);
    if (rc < 0) {
        free(q);
        return rc;
    }
    rc = open_db(q, path, opts->vfs);
    if (rc < 0) {
        mmr_err_wrap(rc, "opening the event queue");
        destroy(q);
        return rc;
    }
    publish(q);
    if (loop) {
        q->async = mmr_malloc(sizeof(*q->async));
        if (uv_async_init(loop, q->async, on_async) != 0) {
            free(q->async);
            destroy(q);
            return mmr_err_set(MMR_EIO, "opening the event queue: cannot create a loop handle");
        }
        q->async->data = q;
        /* The loop must be able to end while the queue is open (a caller may
         * close the queue after uv_run returns, which delivers what is left). */
        uv_unref((uv_handle_t *)q->async);
    }
    if (uv_thread_create(&q->thread, writer_main, q) != 0) {
        if (q->async)
            uv_close((uv_handle_t *)q->async, free_handle);
        destroy(q);
        return mmr_err_set(MMR_ENOMEM, "opening the event queue: cannot start the writer thread");
    }
    mmr_debug(MOD, "queue open", "events=%" PRIu64 " last_seq=%" PRIu64, total_rows(&q->s),
              q->s.next_seq - 1);
    *out = q;
    return 0;
}

void mmr_queue_close(struct mmr_queue *q)
{
    if (!q)
        return;
    uv_mutex_lock(&q->mu);
    q->stopping = true;
    uv_cond_signal(&q->work_cv);
    uv_cond_broadcast(&q->room_cv);
    uv_mutex_unlock(&q->mu);
    uv_thread_join(&q->thread);
    if (q->async) {
        deliver(q);
        uv_close((uv_handle_t *)q->async, free_handle);
    }
    destroy(q);
}

/* ---- producers ----------------------------------------------------------------- */

static bool type_ok(const char *type, size_t len)
{
    if (len == 0 || len > MMR_QUEUE_MAX_TYPE)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = type[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* ---- data validation ------------------------------------------------------ */

/* Event data must be what the server's parser accepts (shared/json: a JSON
 * object, valid UTF-8, no duplicate keys, bounded depth). Parsing every event
 * with jansson took a third of the CPU of an enqueue, so a scanner that
 * allocates nothing vouches for the common case, and anything it is not sure
 * of (escapes in keys, \u escapes, exponents, long numbers, many keys, deep
 * nesting, any error) goes to jansson, which decides and explains. The
 * scanner may only say "valid" for input jansson accepts. */
#define SCAN_KEYS 16

struct scan {
    const unsigned char *p;
    const unsigned char *end;
};

static void scan_ws(struct scan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

/* One UTF-8 sequence starting at s->p (a byte >= 0x80): well-formed, no
 * overlong form, no surrogate, at most U+10FFFF. */
static bool scan_utf8(struct scan *s)
{
    const unsigned char *p = s->p;
    size_t left = (size_t)(s->end - p);
    unsigned c = p[0];
    size_t n;
    unsigned min, cp;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2, min = 0x80, cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3, min = 0x800, cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4, min = 0x10000, cp = c & 0x07;
    } else {
        return false;
    }
    if (left < n)
        return false;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return false;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return false;
    s->p += n;
    return true;
}

/* A string after its opening quote; *plain tells whether it held no escape. */
static bool scan_string(struct scan *s, bool *plain)
{
    *plain = true;
    while (s->p < s->end) {
        unsigned char c = *s->p;
        if (c == '"') {
            s->p++;
            return true;
        }
        if (c < 0x20)
            return false;
        if (c == '\\') {
            if (s->end - s->p < 2 || !strchr("\"\\/bfnrt", s->p[1]) || !s->p[1])
                return false; /* \u (NUL, surrogates) is left to jansson */
            *plain = false;
            s->p += 2;
        } else if (c >= 0x80) {
            if (!scan_utf8(s))
                return false;
        } else {
            s->p++;
        }
    }
    return false;
}

/* A number short enough that jansson cannot find it out of range. */
static bool scan_number(struct scan *s)
{
    const unsigned char *start = s->p;
    if (*s->p == '-')
        s->p++;
    if (s->p >= s->end || *s->p < '0' || *s->p > '9')
        return false;
    if (*s->p == '0')
        s->p++;
    else
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
            s->p++;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        const unsigned char *frac = s->p;
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
            s->p++;
        if (s->p == frac)
            return false;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E'))
        return false;
    return s->p - start <= 15;
}

static bool scan_literal(struct scan *s, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return false;
    s->p += n;
    return true;
}

static bool scan_value(struct scan *s, int depth);

static bool scan_object(struct scan *s, int depth)
{
    const unsigned char *keys[SCAN_KEYS];
    size_t lens[SCAN_KEYS];
    size_t nkeys = 0;
    s->p++; /* { */
    scan_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return true;
    }
    for (;;) {
        if (s->p >= s->end || *s->p != '"' || nkeys == SCAN_KEYS)
            return false;
        const unsigned char *key = ++s->p;
        bool plain;
        if (!scan_string(s, &plain) || !plain)
            return false;
        size_t len = (size_t)(s->p - 1 - key);
        for (size_t i = 0; i < nkeys; i++)
            if (lens[i] == len && memcmp(keys[i], key, len) == 0)
                return false;
        keys[nkeys] = key;
        lens[nkeys++] = len;
        scan_ws(s);
        if (s->p >= s->end || *s->p != ':')
            return false;
        s->p++;
        if (!scan_value(s, depth))
            return false;
        scan_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            scan_ws(s);
            continue;
        }
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            return true;
        }
        return false;
    }
}

static bool scan_array(struct scan *s, int depth)
{
    s->p++; /* [ */
    scan_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return true;
    }
    for (;;) {
        if (!scan_value(s, depth))
            return false;
        scan_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            return true;
        }
        return false;
    }
}

static bool scan_value(struct scan *s, int depth)
{
    scan_ws(s);
    if (s->p >= s->end)
        return false;
    bool plain;
    switch (*s->p) {
    case '{':
        return depth < MMR_JSON_MAX_DEPTH && scan_object(s, depth + 1);
    case '[':
        return depth < MMR_JSON_MAX_DEPTH && scan_array(s, depth + 1);
    case '"':
        s->p++;
        return scan_string(s, &plain);
    case 't':
        return scan_literal(s, "true");
    case 'f':
        return scan_literal(s, "false");
    case 'n':
        return scan_literal(s, "null");
    default:
        return scan_number(s);
    }
}

static bool data_ok(const char *data, size_t len)
{
    struct scan s = {(const unsigned char *)data, (const unsigned char *)data + len};
    scan_ws(&s);
    if (s.p < s.end && *s.p == '{' && scan_value(&s, 0)) {
        scan_ws(&s);
        if (s.p == s.end)
            return true;
    }
    json_t *obj = NULL;
    if (mmr_json_parse_object(data, len, MMR_JSON_MAX_DEPTH, &obj) < 0)
        return false;
    json_decref(obj);
    return true;
}

static int make_item(const struct mmr_event *ev, struct item **out)
{
    if (!ev || !ev->type)
        return mmr_err_set(MMR_EINVAL, "queueing an event: no type");
    size_t type_len = strlen(ev->type);
    if (type_len > MMR_QUEUE_MAX_TYPE)
        return mmr_err_set(MMR_ETOOBIG, "queueing an event: type longer than %d bytes",
                           MMR_QUEUE_MAX_TYPE);
    if (!type_ok(ev->type, type_len))
        return mmr_err_set(MMR_EINVAL,
                           "queueing an event: type '%s' is not made of letters, digits, "
                           "'.', '_' and '-'",
                           ev->type);
    if (strcmp(ev->type, MMR_QUEUE_GAP_TYPE) == 0)
        return mmr_err_set(MMR_EINVAL, "queueing an event: '%s' events are the queue's own",
                           MMR_QUEUE_GAP_TYPE);
    if (ev->severity < MMR_SEV_LOW || ev->severity > MMR_SEV_CRITICAL)
        return mmr_err_set(MMR_EINVAL, "queueing a %s event: severity %d is not 0 to 3", ev->type,
                           ev->severity);
    if (ev->time_ms < 0)
        return mmr_err_set(MMR_EINVAL, "queueing a %s event: negative time", ev->type);
    const char *data = ev->data ? ev->data : "{}";
    size_t data_len = strlen(data);
    if (data_len > MMR_QUEUE_MAX_DATA)
        return mmr_err_set(MMR_ETOOBIG, "queueing a %s event: data of %zu bytes (limit %d)",
                           ev->type, data_len, MMR_QUEUE_MAX_DATA);
    if (!data_ok(data, data_len))
        return mmr_err_wrap(MMR_EINVAL, "queueing a %s event: data is not a JSON object", ev->type);
    struct item *it = mmr_malloc(sizeof(*it) + type_len + data_len + 2);
    memset(it, 0, sizeof(*it));
    it->time_ms = ev->time_ms ? ev->time_ms : mmr_time_now_ms();
    it->severity = ev->severity;
    it->type_len = type_len;
    it->data_len = data_len;
    memcpy(it->text, ev->type, type_len + 1);
    memcpy(it->text + type_len + 1, data, data_len + 1);
    *out = it;
    return 0;
}

static bool full(const struct mmr_queue *q, size_t size)
{
    return q->npending > 0 &&
           (q->npending >= q->max_pending || q->pending_bytes + size > q->max_pending_bytes);
}

static int enqueue(struct mmr_queue *q, struct item *it, bool wait)
{
    size_t size = item_size(it);
    uv_mutex_lock(&q->mu);
    while (!q->stopping && full(q, size)) {
        if (!wait) {
            q->st.refused++;
            uv_mutex_unlock(&q->mu);
            item_free(it);
            return mmr_err_set(MMR_EBUSY,
                               "queueing an event: %zu events are waiting for the disk already",
                               q->max_pending);
        }
        uv_cond_wait(&q->room_cv, &q->mu);
    }
    if (q->stopping) {
        uv_mutex_unlock(&q->mu);
        item_free(it);
        return mmr_err_set(MMR_EINVAL, "queueing an event: the queue is closing");
    }
    *q->tailp = it;
    q->tailp = &it->next;
    q->npending++;
    q->pending_bytes += size;
    q->pushed++;
    /* Producers wake the writer only when it sleeps: while it commits, they
     * fill the next batch (group commit). */
    if (q->writer_idle)
        uv_cond_signal(&q->work_cv);
    uv_mutex_unlock(&q->mu);
    return 0;
}

static int push(struct mmr_queue *q, const struct mmr_event *ev, mmr_queue_cb cb, void *arg,
                bool wait)
{
    struct item *it;
    int rc = make_item(ev, &it);
    if (rc < 0)
        return rc;
    it->cb = cb;
    it->arg = arg;
    return enqueue(q, it, wait);
}

int mmr_queue_push(struct mmr_queue *q, const struct mmr_event *ev, mmr_queue_cb cb, void *arg)
{
    return push(q, ev, cb, arg, false);
}

int mmr_queue_push_wait(struct mmr_queue *q, const struct mmr_event *ev, mmr_queue_cb cb, void *arg)
{
    return push(q, ev, cb, arg, true);
}

int mmr_queue_push_sync(struct mmr_queue *q, const struct mmr_event *ev, uint64_t *seq)
{
    struct item *it;
    struct waiter w = {0};
    if (seq)
        *seq = 0;
    int rc = make_item(ev, &it);
    if (rc < 0)
        return rc;
    it->waiter = &w;
    rc = enqueue(q, it, true);
    if (rc < 0)
        return rc;
    uv_mutex_lock(&q->mu);
    while (!w.done)
        uv_cond_wait(&q->done_cv, &q->mu);
    uv_mutex_unlock(&q->mu);
    if (w.rc < 0)
        return mmr_err_set(w.rc, "%s", w.msg);
    if (seq)
        *seq = w.seq;
    return 0;
}

void mmr_queue_flush(struct mmr_queue *q)
{
    uv_mutex_lock(&q->mu);
    uint64_t target = q->pushed, gen = q->limits_gen;
    while (q->handled < target || q->limits_done < gen)
        uv_cond_wait(&q->done_cv, &q->mu);
    uv_mutex_unlock(&q->mu);
}

void mmr_queue_set_limits(struct mmr_queue *q, uint64_t max_rows, uint64_t max_bytes)
{
    uv_mutex_lock(&q->mu);
    if (max_rows)
        q->want_rows = max_rows;
    if (max_bytes)
        q->want_bytes = max_bytes;
    q->limits_gen++;
    if (q->writer_idle)
        uv_cond_signal(&q->work_cv);
    uv_mutex_unlock(&q->mu);
}

void mmr_queue_stats(struct mmr_queue *q, struct mmr_queue_stats *out)
{
    uv_mutex_lock(&q->mu);
    *out = q->st;
    out->pending = q->npending + q->inflight;
    uv_mutex_unlock(&q->mu);
}

/* ---- readers ------------------------------------------------------------------- */

/* A stored row (columns seq, time_ms, severity, type, data) is re-checked
 * before it goes out: one damaged row must not make every later batch
 * unacceptable to the server, nor break a reader of the tail. */
static void row_text(sqlite3_stmt *st, const char **type, size_t *type_len, const char **data,
                     size_t *data_len)
{
    *type = (const char *)sqlite3_column_text(st, 3);
    *type_len = (size_t)sqlite3_column_bytes(st, 3);
    *data = (const char *)sqlite3_column_text(st, 4);
    *data_len = (size_t)sqlite3_column_bytes(st, 4);
    if (!*type || !type_ok(*type, *type_len)) {
        *type = "agent.unreadable";
        *type_len = strlen(*type);
    }
    if (!*data || !data_ok(*data, *data_len)) {
        *data = "{\"unreadable\":true}";
        *data_len = strlen(*data);
    }
}

static void append_event(struct mmr_buf *b, sqlite3_stmt *st)
{
    const char *type, *data;
    size_t type_len, data_len;
    row_text(st, &type, &type_len, &data, &data_len);
    mmr_buf_appendf(b, "%s{\"seq\":%" PRId64 ",\"time\":%" PRId64 ",\"type\":\"",
                    b->len > 1 ? "," : "", (int64_t)sqlite3_column_int64(st, 0),
                    (int64_t)sqlite3_column_int64(st, 1));
    mmr_buf_append(b, type, type_len);
    mmr_buf_appendf(b, "\",\"severity\":%d,\"data\":", sqlite3_column_int(st, 2));
    mmr_buf_append(b, data, data_len);
    mmr_buf_append(b, "}", 1);
}

void mmr_queue_batch_free(struct mmr_queue_batch *b)
{
    if (!b)
        return;
    free(b->json);
    memset(b, 0, sizeof(*b));
}

static int read_rows(struct mmr_queue *q, sqlite3_stmt *st, size_t max_bytes,
                     struct mmr_queue_batch *out, struct mmr_buf *b)
{
    int rc = 0, step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        size_t before = b->len;
        append_event(b, st);
        if (out->count > 0 && b->len + 1 > max_bytes) {
            b->len = before; /* the batch is full without this one */
            b->data[b->len] = '\0';
            break;
        }
        uint64_t seq = (uint64_t)sqlite3_column_int64(st, 0);
        int sev = sqlite3_column_int(st, 2);
        if (out->count == 0)
            out->first_seq = seq;
        out->last_seq = seq;
        if (sev > out->max_severity)
            out->max_severity = sev;
        out->count++;
    }
    if (step != SQLITE_ROW && step != SQLITE_DONE)
        rc = mmr_db_error(q->db, "reading events for upload");
    sqlite3_reset(st);
    return rc;
}

/* Closes the JSON array. (Compression is the uploader's: it wraps the
 * array in the request body first.) */
static int finish_read(struct mmr_queue_batch *out, struct mmr_buf *b)
{
    mmr_buf_append(b, "]", 1);
    out->json = b->data;
    out->json_len = b->len;
    return 0;
}

int mmr_queue_read(struct mmr_queue *q, uint64_t after_seq, size_t max_events, size_t max_bytes,
                   struct mmr_queue_batch *out)
{
    memset(out, 0, sizeof(*out));
    if (max_events == 0)
        return mmr_err_set(MMR_EINVAL, "reading events for upload: a batch of 0 events");
    struct mmr_buf b = {0};
    mmr_buf_append(&b, "[", 1);
    out->after = after_seq;
    uv_mutex_lock(&q->dbmu);
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(q->db, SQL_READ, &st);
    if (rc == 0) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)after_seq);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)(max_events > INT64_MAX ? INT64_MAX : max_events));
        rc = read_rows(q, st, max_bytes, out, &b);
    }
    /* Once an uploader has the episode's gap event, later drops need a new
     * one: counts added to this one might never reach the server. */
    if (rc == 0 && q->s.gap_seq &&
        (q->s.gap_seq <= after_seq || (out->count && q->s.gap_seq <= out->last_seq)))
        q->s.gap_seq = 0;
    uv_mutex_unlock(&q->dbmu);
    if (rc < 0) {
        mmr_buf_free(&b);
        memset(out, 0, sizeof(*out));
        return rc;
    }
    return finish_read(out, &b);
}

int mmr_queue_read_critical(struct mmr_queue *q, uint64_t after_seq, struct mmr_queue_batch *out)
{
    memset(out, 0, sizeof(*out));
    struct mmr_buf b = {0};
    mmr_buf_append(&b, "[", 1);
    uv_mutex_lock(&q->dbmu);
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(q->db, SQL_CRITICAL, &st);
    if (rc == 0) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)after_seq);
        rc = read_rows(q, st, SIZE_MAX, out, &b);
    }
    if (rc == 0 && out->count) {
        rc = mmr_db_stmt(q->db, SQL_BEFORE, &st);
        if (rc == 0) {
            sqlite3_bind_int64(st, 1, (sqlite3_int64)out->first_seq);
            if (sqlite3_step(st) == SQLITE_ROW)
                out->after = (uint64_t)sqlite3_column_int64(st, 0); /* NULL: 0 */
            else
                rc = mmr_db_error(q->db, "reading events for upload");
            sqlite3_reset(st);
        }
    }
    uv_mutex_unlock(&q->dbmu);
    if (rc < 0) {
        mmr_buf_free(&b);
        memset(out, 0, sizeof(*out));
        return rc;
    }
    return finish_read(out, &b);
}

int mmr_queue_ack(struct mmr_queue *q, uint64_t upto_seq)
{
    uv_mutex_lock(&q->dbmu);
    struct dbstate s = q->s;
    sqlite3_stmt *st;
    int rc;
    if (upto_seq >= s.next_seq) {
        rc = mmr_err_set(MMR_EINVAL,
                         "acknowledging events up to %" PRIu64 ": the last event is %" PRIu64,
                         upto_seq, s.next_seq - 1);
        goto out;
    }
    rc = mmr_db_begin(q->db);
    if (rc < 0)
        goto out;
    rc = mmr_db_stmt(q->db, SQL_ACK_COUNT, &st);
    if (rc < 0)
        goto fail;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)upto_seq);
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        int sev = sqlite3_column_int(st, 0);
        if (sev < 0 || sev >= MMR_SEV_COUNT)
            continue;
        s.depth[sev] = sub_floor(s.depth[sev], (uint64_t)sqlite3_column_int64(st, 1));
        s.bytes = sub_floor(s.bytes, (uint64_t)sqlite3_column_double(st, 2));
    }
    sqlite3_reset(st);
    if (step != SQLITE_DONE) {
        rc = mmr_db_error(q->db, "acknowledging events");
        goto fail;
    }
    rc = mmr_db_stmt(q->db, SQL_ACK_DELETE, &st);
    if (rc < 0)
        goto fail;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)upto_seq);
    if (sqlite3_step(st) != SQLITE_DONE) {
        rc = mmr_db_error(q->db, "acknowledging events");
        goto fail;
    }
    rc = mmr_db_commit(q->db);
    if (rc < 0)
        goto out;
    if (s.gap_seq && s.gap_seq <= upto_seq)
        s.gap_seq = 0;
    q->s = s;
    if (refresh_oldest(q) < 0)
        mmr_warn(MOD, "cannot read the oldest event", "err=\"%s\"", mmr_err_msg());
    publish(q);
    goto out;
fail:
    mmr_db_rollback(q->db);
out:
    uv_mutex_unlock(&q->dbmu);
    return rc;
}

void mmr_queue_events_free(struct mmr_event *events, size_t count)
{
    if (!events)
        return;
    for (size_t i = 0; i < count; i++)
        free((char *)events[i].type); /* type and data share one block */
    free(events);
}

int mmr_queue_tail(struct mmr_queue *q, size_t n, struct mmr_event **out, size_t *count)
{
    *out = NULL;
    *count = 0;
    if (n == 0)
        return 0;
    struct mmr_event *ev = NULL;
    size_t got = 0, cap = 0;
    sqlite3_stmt *st;
    uv_mutex_lock(&q->dbmu);
    int rc = mmr_db_stmt(q->db, SQL_TAIL, &st);
    if (rc == 0) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)(n > INT64_MAX ? INT64_MAX : n));
        int step;
        while ((step = sqlite3_step(st)) == SQLITE_ROW) {
            const char *type, *data;
            size_t type_len, data_len;
            row_text(st, &type, &type_len, &data, &data_len);
            char *block = mmr_malloc(type_len + data_len + 2);
            memcpy(block, type, type_len);
            block[type_len] = '\0';
            memcpy(block + type_len + 1, data, data_len);
            block[type_len + 1 + data_len] = '\0';
            if (got == cap) {
                cap = cap ? cap * 2 : 64;
                ev = mmr_realloc(ev, cap * sizeof(*ev));
            }
            ev[got++] = (struct mmr_event){
                .seq = (uint64_t)sqlite3_column_int64(st, 0),
                .time_ms = sqlite3_column_int64(st, 1),
                .severity = sqlite3_column_int(st, 2),
                .type = block,
                .data = block + type_len + 1,
            };
        }
        if (step != SQLITE_DONE)
            rc = mmr_db_error(q->db, "reading recent events");
        sqlite3_reset(st);
    }
    uv_mutex_unlock(&q->dbmu);
    if (rc < 0) {
        mmr_queue_events_free(ev, got);
        return rc;
    }
    /* Newest first from SQLite; oldest first for the caller. */
    for (size_t i = 0; i < got / 2; i++) {
        struct mmr_event t = ev[i];
        ev[i] = ev[got - 1 - i];
        ev[got - 1 - i] = t;
    }
    *out = ev;
    *count = got;
    return 0;
}
