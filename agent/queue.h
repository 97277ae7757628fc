/* The agent's telemetry queue: the only writer of events. Durable enqueue from
 * any thread (group commit on a writer thread), bounded by rows and bytes with
 * the drop rule of the design, batches for upload, deletion on the server's ack. */
#ifndef MMR_QUEUE_H
#define MMR_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

enum mmr_severity {
    MMR_SEV_LOW = 0,
    MMR_SEV_MEDIUM = 1,
    MMR_SEV_HIGH = 2,
    MMR_SEV_CRITICAL = 3,
};
#define MMR_SEV_COUNT 4

#define MMR_QUEUE_DEFAULT_MAX_ROWS  1000000u
#define MMR_QUEUE_DEFAULT_MAX_BYTES (64u * 1024 * 1024)
/* Largest type and data accepted by a push (MMR_ETOOBIG beyond). */
#define MMR_QUEUE_MAX_TYPE 64
#define MMR_QUEUE_MAX_DATA (64 * 1024)
/* The type of the events the queue itself records when it drops events. */
#define MMR_QUEUE_GAP_TYPE "agent.gap"
/* The byte bound counts MMR_QUEUE_EVENT_OVERHEAD + strlen(type) + strlen(data)
 * per event (about its size in an upload); an agent.gap event, rewritten in
 * place as its counts grow, always counts MMR_QUEUE_GAP_SIZE. */
#define MMR_QUEUE_EVENT_OVERHEAD 64
#define MMR_QUEUE_GAP_DATA_MAX   192
#define MMR_QUEUE_GAP_SIZE       (MMR_QUEUE_EVENT_OVERHEAD + 9 + MMR_QUEUE_GAP_DATA_MAX)

/* The queue's tables, as idempotent SQL (CREATE ... IF NOT EXISTS). agent.db's
 * migration list includes it as one migration; the queue also runs it at
 * open, so that it works on a file of its own (tests, tools) too. */
extern const char mmr_queue_schema_sql[];

/* One event. On push: seq is ignored (the queue assigns it), time_ms 0 means
 * now, data is a JSON object as text (NULL means {}); the queue copies what it
 * needs. Returned by mmr_queue_tail: everything is filled and owned by the
 * array (free it with mmr_queue_events_free). */
struct mmr_event {
    uint64_t seq;
    int64_t time_ms; /* UTC, ms since the epoch */
    int severity;    /* enum mmr_severity */
    const char *type;
    const char *data;
};

/* Called once per pushed event after its transaction ended: rc 0 and its seq
 * when it is durably stored, or a negative MMR_E* code (MMR_ENOSPC on a full
 * disk) with the explanation in mmr_err_msg(). Runs on the loop thread given
 * to mmr_queue_open, or on the writer thread when that loop is NULL (then it
 * must not wait on the queue: no push_sync, push_wait or flush). */
typedef void (*mmr_queue_cb)(void *arg, int rc, uint64_t seq);

struct mmr_queue_opts {
    uint64_t max_rows;        /* 0: MMR_QUEUE_DEFAULT_MAX_ROWS */
    uint64_t max_bytes;       /* 0: MMR_QUEUE_DEFAULT_MAX_BYTES */
    size_t max_pending;       /* events accepted but not yet committed; 0: 65536 */
    size_t max_pending_bytes; /* their bytes; 0: 16 MiB */
    size_t max_batch;         /* events per transaction (and at most 1 MiB); 0: 4096 */
    const char *vfs;          /* SQLite VFS (tests: MMR_DB_FAULT_VFS); NULL: default */
    /* Called (on the loop thread, or the writer thread without a loop) after
     * a transaction stored at least one Critical event, so that the check-in
     * loop can send it at once. */
    void (*on_critical)(void *arg);
    void *arg;
};

struct mmr_queue_stats {
    uint64_t depth[MMR_SEV_COUNT];   /* events stored, by severity */
    uint64_t events;                 /* their sum */
    uint64_t bytes;                  /* accounted bytes (see queue.c) */
    int64_t oldest_ms;               /* time of the oldest stored event; 0 when empty */
    uint64_t last_seq;               /* highest seq ever committed (0: none) */
    uint64_t dropped[MMR_SEV_COUNT]; /* by the drop rule, ever (persisted); Critical stays 0 */
    uint64_t pending;                /* accepted, not yet committed */
    uint64_t refused;                /* pushes refused since open: writer too far behind */
    uint64_t failed;                 /* events whose transaction failed since open */
    uint64_t committed;              /* events committed since open */
    uint64_t batches;                /* transactions that committed events since open */
    uint64_t max_rows;
    uint64_t max_bytes;
};

/* A batch for upload: stored events as the JSON array of POST /v1/events
 * ("events"). The queue holds no event in (after,
 * last_seq] other than those in the batch: seqs missing from that range were
 * dropped (an agent.gap event says how many), acknowledged, or never
 * committed, and will never appear. That is the "after" of the request
 * body, which lets the server's ack pass over the holes. */
struct mmr_queue_batch {
    size_t count; /* 0: nothing after the given seq */
    uint64_t after;
    uint64_t first_seq;
    uint64_t last_seq;
    int max_severity;
    char *json; /* [{"seq":..,"time":..,"type":..,"severity":..,"data":{..}},..] */
    size_t json_len;
};

struct mmr_queue;

/* Opens (creating its tables if needed) the queue in the SQLite file at path,
 * on a connection of its own, and starts the writer thread. loop, when not
 * NULL, is where callbacks run: call open and close on that loop's thread. */
int mmr_queue_open(const char *path, uv_loop_t *loop, const struct mmr_queue_opts *opts,
                   struct mmr_queue **out);

/* Commits everything pushed so far, stops the writer and closes. Callbacks of
 * events still in flight run before it returns. With a loop, a handle is left
 * closing: run the loop once more (uv_run with UV_RUN_NOWAIT) to release it.
 * No other call may be running or start on q. NULL is ignored. */
void mmr_queue_close(struct mmr_queue *q);

/* Hands an event to the writer and returns at once, from any thread: 0 when
 * accepted (cb, which may be NULL, tells the outcome later), MMR_EINVAL for a
 * malformed event (data must be a JSON object; the type "agent.gap" is the
 * queue's own), MMR_ETOOBIG beyond the size limits, MMR_EBUSY when
 * max_pending events already wait for the disk: back-pressure that never
 * blocks a loop thread. */
int mmr_queue_push(struct mmr_queue *q, const struct mmr_event *ev, mmr_queue_cb cb, void *arg);

/* As mmr_queue_push, but waits for room instead of MMR_EBUSY: for worker
 * threads only, never a loop thread. */
int mmr_queue_push_wait(struct mmr_queue *q, const struct mmr_event *ev, mmr_queue_cb cb,
                        void *arg);

/* Pushes and waits until the event is committed: 0 and *seq (may be NULL)
 * once it is durable, or the transaction's error. Blocks: not on a loop
 * thread (tests, selftest workers). */
int mmr_queue_push_sync(struct mmr_queue *q, const struct mmr_event *ev, uint64_t *seq);

/* Waits until every event pushed and every limit set before the call has been
 * dealt with: committed or failed and, without a loop, its callback run (with
 * a loop, callbacks run when the loop gets to them). Blocks. */
void mmr_queue_flush(struct mmr_queue *q);

/* Changes the bounds (0 keeps the current value) from any thread without
 * blocking; the writer applies them, dropping events if needed, in its next
 * transaction (mmr_queue_flush waits for it). */
void mmr_queue_set_limits(struct mmr_queue *q, uint64_t max_rows, uint64_t max_bytes);

/* From memory, never touching the disk: safe on the loop thread. */
void mmr_queue_stats(struct mmr_queue *q, struct mmr_queue_stats *out);

/* The oldest stored events with seq > after_seq: at most max_events of them
 * and, past the first, at most max_bytes of JSON. Blocks on the disk: call it
 * off the loop thread. The batch is owned by the caller. */
int mmr_queue_read(struct mmr_queue *q, uint64_t after_seq, size_t max_events, size_t max_bytes,
                   struct mmr_queue_batch *out);
void mmr_queue_batch_free(struct mmr_queue_batch *b);

/* The oldest stored Critical event with seq > after_seq, as a batch of one
 * to send ahead of a backlog; its after is the seq of the stored event just
 * before it (0 when there is none). count 0 when there is no such event.
 * Blocks on the disk. */
int mmr_queue_read_critical(struct mmr_queue *q, uint64_t after_seq, struct mmr_queue_batch *out);

/* Deletes the events with seq <= upto_seq, once the server acknowledged them.
 * upto_seq beyond the last committed seq is refused (MMR_EINVAL): it cannot
 * be an acknowledgement of anything sent. Blocks on the disk. */
int mmr_queue_ack(struct mmr_queue *q, uint64_t upto_seq);

/* The most recent n stored events, oldest first, in *out (count in *count).
 * Blocks on the disk. */
int mmr_queue_tail(struct mmr_queue *q, size_t n, struct mmr_event **out, size_t *count);
void mmr_queue_events_free(struct mmr_event *events, size_t count);

/* "low", "medium", "high", "critical"; NULL out of range. */
const char *mmr_severity_name(int severity);

#endif
