/* The management server's storage on SQLite (server/store.h): one writer
 * connection behind a mutex, a pool of read-only connections, and group
 * commit for event batches. All of the store's SQL lives in this file. */
#include "server/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/sha256.h>
#include <mbedtls/version.h>

#include "shared/db.h"
#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"

/* Threads. SQLite runs one write transaction at a time whatever we do, so
 * writes share one connection behind a mutex: a second writer connection
 * would only trade our queue for SQLite's busy-wait. Reads get a small pool
 * of read-only connections instead of a connection per thread: libuv's pool
 * threads live forever, but a per-thread scheme would leak connections for
 * every other thread that calls in (tests, a bigger pool) and has no place
 * to close them. In WAL mode a reader never waits for the writer, so the
 * per-handshake certificate check and the console's lists and counts do not
 * queue behind an fsync. Every statement is reset before a connection goes
 * back (quiesce), so no read transaction outlives a call: a reader always
 * sees what was committed before the call began.
 *
 * Durability. WAL with synchronous=NORMAL survives a crash of the server
 * (kill -9) but not a power cut: the last commits before one may roll back
 * (the database stays consistent). That is fine for check-ins, which are
 * repeated every minute, and is what lets one writer do thousands of them a
 * second. Everything else commits with synchronous=FULL (an fsync of the WAL
 * per commit, which also makes every earlier NORMAL commit durable): an event
 * batch is acknowledged to an agent that then deletes it, a token use or a
 * revocation must not come back. An fsync costs milliseconds, so concurrent
 * event batches share one (group commit, see ev_submit). */

#define DEFAULT_READERS 4
#define DEFAULT_PAGE    100
#define NO_SLOT         ((size_t)-1)
#define TOKEN_ID_LEN    (MMR_STORE_TOKEN_ID_SIZE - 1)
#define SECRET_BYTES    ((MMR_STORE_SECRET_SIZE - 1) / 2)
#define SHA256_LEN      32
#define REQ_MSG_MAX     512

static const struct mmr_db_migration migrations[] = {
    {1, "CREATE TABLE devices ("
        "  id INTEGER PRIMARY KEY,"
        "  uuid TEXT NOT NULL UNIQUE,"
        "  hardware_id TEXT NOT NULL UNIQUE,"
        "  hostname TEXT NOT NULL,"
        "  os TEXT NOT NULL,"
        "  agent_version TEXT NOT NULL,"
        "  org TEXT NOT NULL,"
        "  grp TEXT NOT NULL,"
        "  cert_serial TEXT NOT NULL,"
        "  cert_not_after INTEGER NOT NULL,"
        "  cert_pending TEXT,"
        "  token_id TEXT NOT NULL,"
        "  first_enrolled_at INTEGER NOT NULL,"
        "  enrolled_at INTEGER NOT NULL,"
        "  enrollments INTEGER NOT NULL," /* also the generation of the event stream */
        "  last_checkin_at INTEGER,"
        "  posture TEXT,"
        "  queue_depth INTEGER,"
        "  policy_version INTEGER,"
        "  revoked_at INTEGER,"
        "  revoked_by TEXT,"
        "  event_ack INTEGER" /* NULL until the generation's first batch */
        ");"
        "CREATE INDEX devices_org_grp ON devices(org, grp);"
        "CREATE INDEX devices_grp ON devices(grp);"
        "CREATE TABLE certs ("
        "  serial TEXT PRIMARY KEY,"
        "  device INTEGER NOT NULL REFERENCES devices(id),"
        "  issued_at INTEGER NOT NULL,"
        "  not_after INTEGER NOT NULL,"
        "  retired_at INTEGER"
        ") WITHOUT ROWID;"
        "CREATE INDEX certs_device ON certs(device);"
        "CREATE TABLE tokens ("
        "  id TEXT PRIMARY KEY,"
        "  secret_sha256 BLOB NOT NULL,"
        "  org TEXT NOT NULL,"
        "  grp TEXT NOT NULL,"
        "  uses_allowed INTEGER NOT NULL,"
        "  uses INTEGER NOT NULL,"
        "  expires_at INTEGER NOT NULL,"
        "  revoked_at INTEGER,"
        "  created_at INTEGER NOT NULL,"
        "  created_by TEXT NOT NULL"
        ") WITHOUT ROWID;"
        /* Rows are appended in rowid order; the unique index is the dedupe. */
        "CREATE TABLE events ("
        "  id INTEGER PRIMARY KEY,"
        "  device INTEGER NOT NULL REFERENCES devices(id),"
        "  gen INTEGER NOT NULL,"
        "  seq INTEGER NOT NULL,"
        "  type TEXT NOT NULL,"
        "  severity INTEGER NOT NULL,"
        "  time INTEGER NOT NULL,"
        "  data TEXT NOT NULL,"
        "  received_at INTEGER NOT NULL,"
        "  UNIQUE (device, gen, seq)"
        ");"
        /* Counters kept in the insert transaction: counts never scan events. */
        "CREATE TABLE event_counts ("
        "  device INTEGER NOT NULL REFERENCES devices(id),"
        "  type TEXT NOT NULL,"
        "  severity INTEGER NOT NULL,"
        "  n INTEGER NOT NULL,"
        "  PRIMARY KEY (device, type, severity)"
        ") WITHOUT ROWID;"
        "CREATE TABLE event_totals ("
        "  type TEXT NOT NULL,"
        "  severity INTEGER NOT NULL,"
        "  n INTEGER NOT NULL,"
        "  PRIMARY KEY (type, severity)"
        ") WITHOUT ROWID;"
        "CREATE TABLE policies ("
        "  id INTEGER PRIMARY KEY,"
        "  grp TEXT NOT NULL,"
        "  version INTEGER NOT NULL,"
        "  document TEXT NOT NULL,"
        "  signature TEXT NOT NULL,"
        "  published_by TEXT NOT NULL,"
        "  published_at INTEGER NOT NULL,"
        "  UNIQUE (grp, version)"
        ");"
        "CREATE TABLE policy_active ("
        "  grp TEXT PRIMARY KEY,"
        "  version INTEGER NOT NULL"
        ") WITHOUT ROWID;"
        "CREATE TABLE policy_history ("
        "  id INTEGER PRIMARY KEY,"
        "  grp TEXT NOT NULL,"
        "  action TEXT NOT NULL,"
        "  version INTEGER NOT NULL,"
        "  previous INTEGER NOT NULL,"
        "  actor TEXT NOT NULL,"
        "  at INTEGER NOT NULL"
        ");"
        "CREATE INDEX policy_history_grp ON policy_history(grp, id);"
        "CREATE TABLE audit ("
        "  id INTEGER PRIMARY KEY,"
        "  at INTEGER NOT NULL,"
        "  actor TEXT NOT NULL,"
        "  action TEXT NOT NULL,"
        "  target TEXT NOT NULL,"
        "  detail TEXT"
        ");"},
};

struct reader {
    struct mmr_db *db;
    bool busy;
};

/* One event batch waiting for, or taking part in, a group commit. */
struct ev_req {
    const char *device_id;
    int64_t after;
    const struct mmr_store_event_in *ev;
    size_t n;
    struct mmr_store_events_result res;
    int rc;
    char msg[REQ_MSG_MAX];
    bool done;
    struct ev_req *next;
};

struct mmr_store {
    struct mmr_db *w; /* the writer */
    uv_mutex_t wlock;
    bool w_full; /* synchronous=FULL is set on w */

    struct reader *readers;
    size_t nreaders;
    size_t nfree;
    uv_mutex_t rlock;
    uv_cond_t rcond;

    uv_mutex_t glock; /* the group-commit queue */
    uv_cond_t gcond;
    struct ev_req *ghead;
    struct ev_req **gtail;
    bool committing;

    int64_t (*now_ms)(void *ctx);
    void *clock_ctx;
};

/* ---- small helpers -------------------------------------------------------- */

static int64_t now(const struct mmr_store *s)
{
    return s->now_ms ? s->now_ms(s->clock_ctx) : mmr_time_now_ms();
}

/* strlen that stops looking past max (strnlen is POSIX, not C11). */
static size_t bounded_len(const char *v, size_t max)
{
    size_t n = 0;
    while (n <= max && v[n])
        n++;
    return n;
}

/* A required string of 1..max bytes. */
static int need(const char *what, const char *v, size_t max)
{
    if (!v || !v[0])
        return mmr_err_set(MMR_EINVAL, "%s is missing", what);
    if (bounded_len(v, max) > max)
        return mmr_err_set(MMR_ETOOBIG, "%s is longer than %zu bytes", what, max);
    return 0;
}

/* An optional one: NULL is fine, an empty string is not. */
static int maybe(const char *what, const char *v, size_t max)
{
    return v ? need(what, v, max) : 0;
}

/* Certificate serials: hex digits, stored lower-case so any spelling finds
 * the row. out holds MMR_STORE_SERIAL_MAX + 1 bytes. */
static int norm_serial(const char *what, const char *in, char *out)
{
    int rc = need(what, in, MMR_STORE_SERIAL_MAX);
    if (rc < 0)
        return rc;
    size_t i = 0;
    for (; in[i]; i++) {
        char c = in[i];
        if (c >= 'A' && c <= 'F')
            c = (char)(c - 'A' + 'a');
        else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return mmr_err_set(MMR_EINVAL, "%s is not hexadecimal (character %zu)", what, i + 1);
        out[i] = c;
    }
    out[i] = '\0';
    return 0;
}

/* Event types name what happened ("scan.detection"): letters, digits, '.',
 * '_' and '-', so that they print and filter without quoting. */
static int check_type(const char *type)
{
    int rc = need("event type", type, MMR_STORE_NAME_MAX);
    if (rc < 0)
        return rc;
    for (const char *p = type; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return mmr_err_set(MMR_EINVAL,
                               "event type '%s' has a character other than "
                               "letters, digits, '.', '_' and '-'",
                               type);
    }
    return 0;
}

static void sha256(const char *text, unsigned char out[SHA256_LEN])
{
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    mbedtls_sha256((const unsigned char *)text, strlen(text), out, 0);
#else
    mbedtls_sha256_ret((const unsigned char *)text, strlen(text), out, 0);
#endif
}

/* Compares without an early exit, so the time taken says nothing about how
 * much of a guessed secret was right. */
static bool same_digest(const unsigned char *a, const unsigned char *b)
{
    volatile unsigned char diff = 0;
    for (size_t i = 0; i < SHA256_LEN; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

static int random_uuid(char out[MMR_STORE_ID_SIZE])
{
    unsigned char b[16];
    int rc = mmr_random_bytes(b, sizeof(b));
    if (rc < 0)
        return rc;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, MMR_STORE_ID_SIZE,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return 0;
}

static char *col_str(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? mmr_strdup((const char *)t) : NULL;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : "";
}

/* An INTEGER column, or dflt when it is NULL. */
static int64_t col_i64(sqlite3_stmt *st, int i, int64_t dflt)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? dflt : sqlite3_column_int64(st, i);
}

/* Strings are bound SQLITE_STATIC: every statement is stepped and reset
 * before the caller's strings can go away. NULL binds SQL NULL. */
static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static size_t page_limit(size_t limit)
{
    if (limit == 0)
        return DEFAULT_PAGE;
    return limit > MMR_STORE_LIST_MAX ? MMR_STORE_LIST_MAX : limit;
}

/* Steps a statement that returns no rows. */
static int step_done(struct mmr_db *db, sqlite3_stmt *st, const char *what)
{
    int step = sqlite3_step(st);
    int rc = step == SQLITE_DONE ? 0 : mmr_db_error(db, what);
    sqlite3_reset(st);
    return rc;
}

/* Resets every statement still stepping, so that no read transaction stays
 * open on the connection, and ends an explicit transaction left open by an
 * error. */
static void reset_all(struct mmr_db *db)
{
    sqlite3 *h = mmr_db_handle(db);
    for (sqlite3_stmt *st = sqlite3_next_stmt(h, NULL); st; st = sqlite3_next_stmt(h, st)) {
        if (sqlite3_stmt_busy(st))
            sqlite3_reset(st);
    }
}

static void quiesce(struct mmr_db *db)
{
    reset_all(db);
    mmr_db_rollback(db);
}

/* ---- connections ------------------------------------------------------------ */

static void w_lock(struct mmr_store *s)
{
    uv_mutex_lock(&s->wlock);
}

static void w_unlock(struct mmr_store *s)
{
    quiesce(s->w);
    uv_mutex_unlock(&s->wlock);
}

static int w_sync(struct mmr_store *s, bool full)
{
    if (s->w_full == full)
        return 0;
    sqlite3_stmt *st;
    int rc =
        mmr_db_stmt(s->w, full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL", &st);
    if (rc < 0)
        return rc;
    rc = step_done(s->w, st, "setting synchronous");
    if (rc == 0)
        s->w_full = full;
    return rc;
}

/* Takes the writer and begins a transaction; a durable one commits with an
 * fsync. On failure the writer is released. */
static int w_begin(struct mmr_store *s, bool durable)
{
    w_lock(s);
    int rc = w_sync(s, durable);
    if (rc == 0)
        rc = mmr_db_begin(s->w);
    if (rc < 0)
        w_unlock(s);
    return rc;
}

/* Commits when rc is 0 and rolls back otherwise, then releases the writer.
 * Returns rc, or the commit's error. */
static int w_end(struct mmr_store *s, int rc)
{
    reset_all(s->w);
    if (rc == 0)
        rc = mmr_db_commit(s->w);
    else
        mmr_db_rollback(s->w);
    w_unlock(s);
    return rc;
}

/* A connection for reading: a free reader, or the writer when there are
 * none. Give it back with r_put. */
static struct mmr_db *r_get(struct mmr_store *s, size_t *slot)
{
    if (s->nreaders == 0) {
        w_lock(s);
        *slot = NO_SLOT;
        return s->w;
    }
    uv_mutex_lock(&s->rlock);
    while (s->nfree == 0)
        uv_cond_wait(&s->rcond, &s->rlock);
    size_t i = 0;
    while (s->readers[i].busy)
        i++;
    s->readers[i].busy = true;
    s->nfree--;
    uv_mutex_unlock(&s->rlock);
    *slot = i;
    return s->readers[i].db;
}

static void r_put(struct mmr_store *s, size_t slot)
{
    if (slot == NO_SLOT) {
        w_unlock(s);
        return;
    }
    quiesce(s->readers[slot].db);
    uv_mutex_lock(&s->rlock);
    s->readers[slot].busy = false;
    s->nfree++;
    uv_cond_signal(&s->rcond);
    uv_mutex_unlock(&s->rlock);
}

/* ---- open and close ------------------------------------------------------------ */

int mmr_store_open(const char *path, const struct mmr_store_opts *opts, struct mmr_store **out)
{
    static const struct mmr_store_opts defaults;
    const size_t nmig = sizeof(migrations) / sizeof(migrations[0]);
    *out = NULL;
    if (!opts)
        opts = &defaults;
    if (!path || !path[0])
        return mmr_err_set(MMR_EINVAL, "opening the server database: the path is empty");

    struct mmr_store *s = mmr_calloc(1, sizeof(*s));
    s->now_ms = opts->now_ms;
    s->clock_ctx = opts->clock_ctx;
    s->gtail = &s->ghead;
    uv_mutex_init(&s->wlock);
    uv_mutex_init(&s->rlock);
    uv_cond_init(&s->rcond);
    uv_mutex_init(&s->glock);
    uv_cond_init(&s->gcond);

    struct mmr_db_opts wopts = {.busy_timeout_ms = opts->busy_timeout_ms, .vfs = opts->vfs};
    int rc = mmr_db_open(path, &wopts, migrations, nmig, &s->w);
    if (rc < 0)
        goto fail;
    bool memory = strcmp(path, ":memory:") == 0;
    size_t nreaders = opts->readers == 0 ? DEFAULT_READERS : (size_t)opts->readers;
    if (opts->readers < 0 || memory)
        nreaders = 0;
    s->readers = mmr_calloc(nreaders ? nreaders : 1, sizeof(*s->readers));
    struct mmr_db_opts ropts = {
        .read_only = true, .busy_timeout_ms = opts->busy_timeout_ms, .vfs = opts->vfs};
    for (; s->nreaders < nreaders; s->nreaders++) {
        rc = mmr_db_open(path, &ropts, migrations, nmig, &s->readers[s->nreaders].db);
        if (rc < 0)
            goto fail;
    }
    s->nfree = s->nreaders;
    *out = s;
    return 0;
fail:
    mmr_err_wrap(rc, "opening the server database");
    mmr_store_close(s);
    return rc;
}

void mmr_store_close(struct mmr_store *s)
{
    if (!s)
        return;
    /* Readers first: the writer's close then checkpoints and removes the WAL. */
    for (size_t i = 0; i < s->nreaders; i++)
        mmr_db_close(s->readers[i].db);
    free(s->readers);
    mmr_db_close(s->w);
    uv_cond_destroy(&s->gcond);
    uv_mutex_destroy(&s->glock);
    uv_cond_destroy(&s->rcond);
    uv_mutex_destroy(&s->rlock);
    uv_mutex_destroy(&s->wlock);
    free(s);
}

int mmr_store_check(struct mmr_store *s, bool full, char *buf, size_t buflen)
{
    size_t slot;
    struct mmr_db *db = r_get(s, &slot);
    int rc = mmr_db_check(db, full, buf, buflen);
    r_put(s, slot);
    return rc;
}

/* ---- audit log --------------------------------------------------------------------- */

/* Inside the writer's transaction. */
static int audit_write(struct mmr_store *s, const char *actor, const char *action,
                       const char *target, const char *detail)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(s->w,
                         "INSERT INTO audit(at, actor, action, target, detail) "
                         "VALUES (?1, ?2, ?3, ?4, ?5)",
                         &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, now(s));
    bind_text(st, 2, actor);
    bind_text(st, 3, action);
    bind_text(st, 4, target);
    bind_text(st, 5, detail);
    return step_done(s->w, st, "recording an audit entry");
}

int mmr_store_audit_add(struct mmr_store *s, const char *actor, const char *action,
                        const char *target, const char *detail)
{
    int rc = need("actor", actor, MMR_STORE_TEXT_MAX);
    if (rc == 0)
        rc = need("audit action", action, MMR_STORE_NAME_MAX);
    if (rc == 0)
        rc = need("audit target", target, MMR_STORE_TEXT_MAX);
    if (rc == 0)
        rc = maybe("audit detail", detail, MMR_STORE_POSTURE_MAX);
    if (rc < 0)
        return rc;
    rc = w_begin(s, true);
    if (rc < 0)
        return rc;
    return w_end(s, audit_write(s, actor, action, target, detail));
}

int mmr_store_audit_list(struct mmr_store *s, int64_t before_id, size_t limit,
                         struct mmr_store_audit **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    size_t slot;
    struct mmr_db *db = r_get(s, &slot);
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(db,
                         before_id > 0 ? "SELECT id, at, actor, action, target, detail FROM audit "
                                         "WHERE id < ?1 ORDER BY id DESC LIMIT ?2"
                                       : "SELECT id, at, actor, action, target, detail FROM audit "
                                         "ORDER BY id DESC LIMIT ?2",
                         &st);
    if (rc < 0)
        goto out;
    limit = page_limit(limit);
    sqlite3_bind_int64(st, 1, before_id);
    sqlite3_bind_int64(st, 2, (int64_t)limit);
    struct mmr_store_audit *a = mmr_calloc(limit, sizeof(*a));
    size_t k = 0;
    int step = SQLITE_DONE;
    while (k < limit && (step = sqlite3_step(st)) == SQLITE_ROW) {
        a[k].id = sqlite3_column_int64(st, 0);
        a[k].at = sqlite3_column_int64(st, 1);
        a[k].actor = col_str(st, 2);
        a[k].action = col_str(st, 3);
        a[k].target = col_str(st, 4);
        a[k].detail = col_str(st, 5);
        k++;
    }
    if (step != SQLITE_DONE && step != SQLITE_ROW) {
        rc = mmr_db_error(db, "listing the audit log");
        mmr_store_audit_free(a, k);
        goto out;
    }
    *out = a;
    *n = k;
out:
    r_put(s, slot);
    return rc;
}

void mmr_store_audit_free(struct mmr_store_audit *a, size_t n)
{
    if (!a)
        return;
    for (size_t i = 0; i < n; i++) {
        free(a[i].actor);
        free(a[i].action);
        free(a[i].target);
        free(a[i].detail);
    }
    free(a);
}

/* ---- tokens --------------------------------------------------------------------------- */

const char *mmr_store_refusal_name(enum mmr_store_refusal r)
{
    switch (r) {
    case MMR_STORE_ACCEPTED:
        return "accepted";
    case MMR_STORE_TOKEN_UNKNOWN:
        return "token_unknown";
    case MMR_STORE_TOKEN_REVOKED:
        return "token_revoked";
    case MMR_STORE_TOKEN_EXPIRED:
        return "token_expired";
    case MMR_STORE_TOKEN_USED_UP:
        return "token_used_up";
    case MMR_STORE_DEVICE_REVOKED:
        return "device_revoked";
    }
    return "unknown";
}

/* What enrollment needs of a token row. */
struct token_row {
    unsigned char digest[SHA256_LEN];
    char org[MMR_STORE_NAME_MAX + 1];
    char group[MMR_STORE_NAME_MAX + 1];
    int64_t uses_allowed;
    int64_t uses;
    int64_t expires_at;
    bool revoked;
};

/* Loads a token: 0, MMR_ENOENT when there is none, or a database error. */
static int token_load(struct mmr_db *db, const char *id, struct token_row *t)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(db,
                         "SELECT secret_sha256, org, grp, uses_allowed, uses, expires_at, "
                         "revoked_at IS NOT NULL FROM tokens WHERE id = ?1",
                         &st);
    if (rc < 0)
        return rc;
    bind_text(st, 1, id);
    int step = sqlite3_step(st);
    if (step == SQLITE_DONE) {
        sqlite3_reset(st);
        return MMR_ENOENT;
    }
    if (step != SQLITE_ROW)
        return mmr_db_error(db, "reading a token");
    memset(t, 0, sizeof(*t));
    if (sqlite3_column_bytes(st, 0) == SHA256_LEN)
        memcpy(t->digest, sqlite3_column_blob(st, 0), SHA256_LEN);
    snprintf(t->org, sizeof(t->org), "%s", col_text(st, 1));
    snprintf(t->group, sizeof(t->group), "%s", col_text(st, 2));
    t->uses_allowed = sqlite3_column_int64(st, 3);
    t->uses = sqlite3_column_int64(st, 4);
    t->expires_at = sqlite3_column_int64(st, 5);
    t->revoked = sqlite3_column_int(st, 6) != 0;
    sqlite3_reset(st);
    return 0;
}

/* The verdict on (id, secret): MMR_EPERM with *why and a message when the
 * token cannot enroll now, 0 when it can. Checked in the order an admin can
 * act on: a wrong secret looks like an unknown token (no oracle for
 * guessing), then revoked, expired, used up. */
static int token_judge(struct mmr_store *s, struct mmr_db *db, const char *id, const char *secret,
                       struct token_row *t, enum mmr_store_refusal *why)
{
    unsigned char digest[SHA256_LEN];
    *why = MMR_STORE_ACCEPTED;
    sha256(secret, digest);
    int rc = token_load(db, id, t);
    if (rc == MMR_ENOENT || (rc == 0 && !same_digest(digest, t->digest))) {
        *why = MMR_STORE_TOKEN_UNKNOWN;
        return mmr_err_set(MMR_EPERM, "enrollment token %s is unknown or its secret is wrong", id);
    }
    if (rc < 0)
        return rc;
    if (t->revoked) {
        *why = MMR_STORE_TOKEN_REVOKED;
        return mmr_err_set(MMR_EPERM, "enrollment token %s was revoked", id);
    }
    if (t->expires_at <= now(s)) {
        char when[32];
        mmr_time_format(t->expires_at, when);
        *why = MMR_STORE_TOKEN_EXPIRED;
        return mmr_err_set(MMR_EPERM, "enrollment token %s expired at %s", id, when);
    }
    if (t->uses >= t->uses_allowed) {
        *why = MMR_STORE_TOKEN_USED_UP;
        return mmr_err_set(MMR_EPERM, "enrollment token %s is used up (%lld of %lld uses)", id,
                           (long long)t->uses, (long long)t->uses_allowed);
    }
    return 0;
}

static int check_token_args(const char *id, const char *secret)
{
    int rc = need("token id", id, MMR_STORE_TEXT_MAX);
    return rc < 0 ? rc : need("token secret", secret, MMR_STORE_TEXT_MAX);
}

int mmr_store_token_check(struct mmr_store *s, const char *id, const char *secret,
                          enum mmr_store_refusal *why)
{
    enum mmr_store_refusal dummy;
    if (!why)
        why = &dummy;
    *why = MMR_STORE_ACCEPTED;
    int rc = check_token_args(id, secret);
    if (rc < 0)
        return rc;
    struct token_row t;
    size_t slot;
    struct mmr_db *db = r_get(s, &slot);
    rc = token_judge(s, db, id, secret, &t, why);
    r_put(s, slot);
    return rc;
}

static const char token_alphabet[] = "abcdefghijkmnpqrstuvwxyz23456789"; /* 32, unambiguous */

static int token_draw(char id[MMR_STORE_TOKEN_ID_SIZE], char secret[MMR_STORE_SECRET_SIZE])
{
    unsigned char r[TOKEN_ID_LEN + SECRET_BYTES];
    int rc = mmr_random_bytes(r, sizeof(r));
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < TOKEN_ID_LEN; i++)
        id[i] = token_alphabet[r[i] & 31];
    id[TOKEN_ID_LEN] = '\0';
    for (size_t i = 0; i < SECRET_BYTES; i++)
        snprintf(secret + 2 * i, 3, "%02x", r[TOKEN_ID_LEN + i]);
    return 0;
}

static int token_insert(struct mmr_store *s, const struct mmr_store_token_new *in, const char *id,
                        const char *secret)
{
    unsigned char digest[SHA256_LEN];
    sha256(secret, digest);
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(s->w,
                         "INSERT INTO tokens(id, secret_sha256, org, grp, uses_allowed, uses, "
                         "expires_at, created_at, created_by) "
                         "VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8)",
                         &st);
    if (rc < 0)
        return rc;
    bind_text(st, 1, id);
    sqlite3_bind_blob(st, 2, digest, SHA256_LEN, SQLITE_TRANSIENT);
    bind_text(st, 3, in->org);
    bind_text(st, 4, in->group);
    sqlite3_bind_int64(st, 5, in->uses);
    sqlite3_bind_int64(st, 6, in->expires_at);
    sqlite3_bind_int64(st, 7, now(s));
    bind_text(st, 8, in->created_by);
    rc = step_done(s->w, st, "creating a token");
    if (rc < 0)
        return rc;
    char detail[3 * MMR_STORE_NAME_MAX];
    snprintf(detail, sizeof(detail), "org=%s group=%s uses=%lld", in->org, in->group,
             (long long)in->uses);
    return audit_write(s, in->created_by, "token.create", id, detail);
}

int mmr_store_token_create(struct mmr_store *s, const struct mmr_store_token_new *in,
                           char id[MMR_STORE_TOKEN_ID_SIZE], char secret[MMR_STORE_SECRET_SIZE])
{
    id[0] = secret[0] = '\0';
    int rc = need("org", in->org, MMR_STORE_NAME_MAX);
    if (rc == 0)
        rc = need("group", in->group, MMR_STORE_NAME_MAX);
    if (rc == 0)
        rc = need("actor", in->created_by, MMR_STORE_TEXT_MAX);
    if (rc < 0)
        return rc;
    if (in->uses < 1)
        return mmr_err_set(MMR_EINVAL, "a token needs at least one use (got %lld)",
                           (long long)in->uses);
    if (in->expires_at <= now(s))
        return mmr_err_set(MMR_EINVAL, "the token's expiry time is not in the future");
    /* 50 random bits: a clash of ids is so unlikely that it is just an
     * error (MMR_EEXIST) the admin can retry. */
    rc = token_draw(id, secret);
    if (rc == 0)
        rc = w_begin(s, true);
    if (rc == 0)
        rc = w_end(s, token_insert(s, in, id, secret));
    if (rc < 0) {
        memset(secret, 0, MMR_STORE_SECRET_SIZE);
        id[0] = '\0';
    }
    return rc;
}

int mmr_store_token_list(struct mmr_store *s, bool active_only, struct mmr_store_token **out,
                         size_t *n)
{
    *out = NULL;
    *n = 0;
    size_t slot;
    struct mmr_db *db = r_get(s, &slot);
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(db,
                         "SELECT id, org, grp, uses_allowed, uses, expires_at, revoked_at, "
                         "created_at, created_by FROM tokens WHERE NOT ?1 OR "
                         "(revoked_at IS NULL AND expires_at > ?2 AND uses < uses_allowed) "
                         "ORDER BY created_at DESC, id",
                         &st);
    if (rc < 0)
        goto out;
    sqlite3_bind_int(st, 1, active_only);
    sqlite3_bind_int64(st, 2, now(s));
    struct mmr_store_token *t = NULL;
    size_t k = 0, cap = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (k == cap) {
            cap = cap ? 2 * cap : 16;
            t = mmr_realloc(t, cap * sizeof(*t));
        }
        struct mmr_store_token *x = &t[k++];
        memset(x, 0, sizeof(*x));
        snprintf(x->id, sizeof(x->id), "%s", col_text(st, 0));
        x->org = col_str(st, 1);
        x->group = col_str(st, 2);
        x->uses_allowed = sqlite3_column_int64(st, 3);
        x->uses = sqlite3_column_int64(st, 4);
        x->expires_at = sqlite3_column_int64(st, 5);
        x->revoked_at = col_i64(st, 6, 0);
        x->created_at = sqlite3_column_int64(st, 7);
        x->created_by = col_str(st, 8);
    }
    if (step != SQLITE_DONE) {
        rc = mmr_db_error(db, "listing tokens");
        mmr_store_token_free(t, k);
        goto out;
    }
    *out = t;
    *n = k;
out:
    r_put(s, slot);
    return rc;
}

void mmr_store_token_free(struct mmr_store_token *t, size_t n)
{
    if (!t)
        return;
    for (size_t i = 0; i < n; i++) {
        free(t[i].org);
        free(t[i].group);
        free(t[i].created_by);
    }
    free(t);
}

static int token_revoke_tx(struct mmr_store *s, const char *id, const char *actor)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(s->w, "SELECT revoked_at IS NOT NULL FROM tokens WHERE id = ?1", &st);
    if (rc < 0)
        return rc;
    bind_text(st, 1, id);
    int step = sqlite3_step(st);
    if (step == SQLITE_DONE)
        return mmr_err_set(MMR_ENOENT, "no enrollment token %s", id);
    if (step != SQLITE_ROW)
        return mmr_db_error(s->w, "reading a token");
    bool revoked = sqlite3_column_int(st, 0) != 0;
    sqlite3_reset(st);
    if (revoked)
        return 0;
    rc = mmr_db_stmt(s->w, "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1", &st);
    if (rc < 0)
        return rc;
    bind_text(st, 1, id);
    sqlite3_bind_int64(st, 2, now(s));
    rc = step_done(s->w, st, "revoking a token");
    return rc < 0 ? rc : audit_write(s, actor, "token.revoke", id, NULL);
}

int mmr_store_token_revoke(struct mmr_store *s, const char *id, const char *actor)
{
    int rc = need("token id", id, MMR_STORE_TEXT_MAX);
    if (rc == 0)
        rc = need("actor", actor, MMR_STORE_TEXT_MAX);
    if (rc < 0)
        return rc;
    rc = w_begin(s, true);
    if (rc < 0)
        return rc;
    return w_end(s, token_revoke_tx(s, id, actor));
}

/* ---- devices ------------------------------------------------------------------------- */

#define DEVICE_COLS                                                                                \
    "d.uuid, d.hardware_id, d.hostname, d.os, d.agent_version, d.org, d.grp, d.cert_serial, "      \
    "d.cert_not_after, d.cert_pending, d.token_id, d.first_enrolled_at, d.enrolled_at, "           \
    "d.enrollments, d.last_checkin_at, d.posture, d.queue_depth, d.policy_version, "               \
    "d.revoked_at, d.revoked_by, d.event_ack"
#define DEVICE_NCOLS 21

static void device_from_row(sqlite3_stmt *st, struct mmr_store_device *d)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->id, sizeof(d->id), "%s", col_text(st, 0));
    d->hardware_id = col_str(st, 1);
    d->hostname = col_str(st, 2);
    d->os = col_str(st, 3);
    d->agent_version = col_str(st, 4);
    d->org = col_str(st, 5);
    d->group = col_str(st, 6);
    d->cert_serial = col_str(st, 7);
    d->cert_not_after = sqlite3_column_int64(st, 8);
    d->cert_pending = col_str(st, 9);
    d->token_id = col_str(st, 10);
    d->first_enrolled_at = sqlite3_column_int64(st, 11);
    d->enrolled_at = sqlite3_column_int64(st, 12);
    d->enrollments = sqlite3_column_int64(st, 13);
    d->last_checkin_at = col_i64(st, 14, 0);
    d->posture = col_str(st, 15);
    d->queue_depth = col_i64(st, 16, -1);
    d->policy_version = col_i64(st, 17, -1);
    d->revoked_at = col_i64(st, 18, 0);
    d->revoked_by = col_str(st, 19);
    d->event_ack = col_i64(st, 20, -1);
}

void mmr_store_device_clear(struct mmr_store_device *d)
{
    if (!d)
        return;
    free(d->hardware_id);
    free(d->hostname);
    free(d->os);
    free(d->agent_version);
    free(d->org);
    free(d->group);
    free(d->cert_serial);
    free(d->cert_pending);
    free(d->token_id);
    free(d->posture);
    free(d->revoked_by);
    memset(d, 0, sizeof(*d));
}

void mmr_store_device_free(struct mmr_store_device *d, size_t n)
{
    if (!d)
        return;
    for (size_t i = 0; i < n; i++)
        mmr_store_device_clear(&d[i]);
    free(d);
}

/* Loads one device by its UUID; MMR_ENOENT with a message when unknown. */
static int device_load(struct mmr_db *db, const char *id, struct mmr_store_device *out)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(db, "SELECT " DEVICE_COLS " FROM devices d WHERE d.uuid = ?1", &st);
    if (rc < 0)
        return rc;
    bind_text(st, 1, id);
    int step = sqlite3_step(st);
    if (step == SQLITE_DONE)
        return mmr_err_set(MMR_ENOENT, "no device %s", id);
    if (step != SQLITE_ROW)
        return mmr_db_error(db, "reading a device");
    device_from_row(st, out);
    sqlite3_reset(st);
    return 0;
}

int mmr_store_device_get(struct mmr_store *s, const char *id, struct mmr_store_device *out)
{
    memset(out, 0, sizeof(*out));
    int rc = need("device id", id, MMR_STORE_ID_SIZE - 1);
    if (rc < 0)
        return rc;
    size_t slot;
    struct mmr_db *db = r_get(s, &slot);
    rc = device_load(db, id, out);
    r_put(s, slot);
    return rc;
}

/* The internal row id, revocation and event state of a device. */
struct device_key {
    int64_t rowid;
    int64_t gen;
    int64_t ack; /* -1: none yet */
    bool revoked;
    char serial[MMR_STORE_SERIAL_MAX + 1];
    char pending[MMR_STORE_SERIAL_MAX + 1];
};

/* MMR_ENOENT (with a message) when there is no such device. */
static int device_key(struct mmr_db *db, const char *col, const char *value, struct device_key *k)
{
    /* col is one of two constants: the statement text stays fixed. */
    const char *sql = strcmp(col, "uuid") == 0
                          ? "SELECT id, enrollments, event_ack, revoked_at IS NOT NULL, "
                            "cert_serial, cert_pending FROM devices WHERE uuid = ?1"
                          : "SELECT id, enrollments, event_ack, revoked_at IS NOT NULL, "
                            "cert_serial, cert_pending FROM devices WHERE hardware_id = ?1";
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(db, sql, &st);
    if (rc < 0)
        return rc;
    bind_text(st, 1, value);
    int step = sqlite3_step(st);
    if (step == SQLITE_DONE)
        return mmr_err_set(MMR_ENOENT, "no device %s", value);
    if (step != SQLITE_ROW)
        return mmr_db_error(db, "reading a device");
    k->rowid = sqlite3_column_int64(st, 0);
    k->gen = sqlite3_column_int64(st, 1);
    k->ack = col_i64(st, 2, -1);
    k->revoked = sqlite3_column_int(st, 3) != 0;
    snprintf(k->serial, sizeof(k->serial), "%s", col_text(st, 4));
    snprintf(k->pending, sizeof(k->pending), "%s", col_text(st, 5));
    sqlite3_reset(st);
    return 0;
}

int mmr_store_device_id_for_hardware(struct mmr_store *s, const char *hardware_id,
                                     char id[MMR_STORE_ID_SIZE])
{
    id[0] = '\0';
    int rc = need("hardware id", hardware_id, MMR_STORE_TEXT_MAX);
    if (rc < 0)
        return rc;
    size_t slot;
    struct mmr_db *db = r_get(s, &slot);
    sqlite3_stmt *st;
    rc = mmr_db_stmt(db, "SELECT uuid FROM devices WHERE hardware_id = ?1", &st);
    if (rc == 0) {
        bind_text(st, 1, hardware_id);
        int step = sqlite3_step(st);
        if (step == SQLITE_ROW)
            snprintf(id, MMR_STORE_ID_SIZE, "%s", col_text(st, 0));
        else if (step != SQLITE_DONE)
            rc = mmr_db_error(db, "looking up a hardware id");
    }
    r_put(s, slot);
    if (rc == 0 && !id[0])
        rc = random_uuid(id);
    return rc;
}

static int check_enroll(const struct mmr_store_enroll *in, char *serial)
{
    int rc = check_token_args(in->token_id, in->token_secret);
    if (rc == 0)
        rc = need("device id", in->device_id, MMR_STORE_ID_SIZE - 1);
    if (rc == 0)
        rc = need("hardware id", in->hardware_id, MMR_STORE_TEXT_MAX);
    if (rc == 0)
        rc = need("hostname", in->hostname, MMR_STORE_TEXT_MAX);
    if (rc == 0)
        rc = need("os", in->os, MMR_STORE_TEXT_MAX);
    if (rc == 0)
        rc = need("agent version", in->agent_version, MMR_STORE_NAME_MAX);
    if (rc == 0)
        rc = norm_serial("certificate serial", in->cert_serial, serial);
    return rc;
}

static int check_not_after(struct mmr_store *s, int64_t not_after)
{
    if (not_after <= now(s))
        return mmr_err_set(MMR_EINVAL, "the certificate's not_after is not in the future");
    return 0;
}

/* MMR_EEXIST when a certificate with this serial was ever recorded. */
static int serial_unused(struct mmr_store *s, const char *serial)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(s->w, "SELECT 1 FROM certs WHERE serial = ?1", &st);
    if (rc < 0)
        return rc;
    bind_text(st, 1, serial);
    int step = sqlite3_step(st);
    sqlite3_reset(st);
    if (step == SQLITE_ROW)
        return mmr_err_set(MMR_EEXIST, "certificate serial %s was issued before", serial);
    return step == SQLITE_DONE ? 0 : mmr_db_error(s->w, "looking up a serial");
}

static int cert_insert(struct mmr_store *s, int64_t device, const char *serial, int64_t not_after)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(s->w,
                         "INSERT INTO certs(serial, device, issued_at, not_after) "
                         "VALUES (?1, ?2, ?3, ?4)",
                         &st);
    if (rc < 0)
        return rc;
    bind_text(st, 1, serial);
    sqlite3_bind_int64(st, 2, device);
    sqlite3_bind_int64(st, 3, now(s));
    sqlite3_bind_int64(st, 4, not_after);
    return step_done(s->w, st, "recording a certificate");
}

/* Retires every certificate of a device that is still valid or pending. */
static int certs_retire(struct mmr_store *s, int64_t device)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(
        s->w, "UPDATE certs SET retired_at = ?2 WHERE device = ?1 AND retired_at IS NULL", &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, device);
    sqlite3_bind_int64(st, 2, now(s));
    return step_done(s->w, st, "retiring certificates");
}

/* The device row of an enrollment: a new one, or the replacement of the row
 * this hardware had. Sets *rowid. */
static int device_write(struct mmr_store *s, const struct mmr_store_enroll *in, const char *serial,
                        const struct token_row *t, int64_t *rowid, bool replace)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(
        s->w,
        replace ? "UPDATE devices SET hostname = ?3, os = ?4, agent_version = ?5, org = ?6, "
                  "grp = ?7, cert_serial = ?8, cert_not_after = ?9, cert_pending = NULL, "
                  "token_id = ?10, enrolled_at = ?11, enrollments = enrollments + 1, "
                  "posture = NULL, queue_depth = NULL, policy_version = NULL, event_ack = NULL "
                  "WHERE uuid = ?1 AND hardware_id = ?2"
                : "INSERT INTO devices(uuid, hardware_id, hostname, os, agent_version, org, grp, "
                  "cert_serial, cert_not_after, token_id, first_enrolled_at, enrolled_at, "
                  "enrollments) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, 1)",
        &st);
    if (rc < 0)
        return rc;
    bind_text(st, 1, in->device_id);
    bind_text(st, 2, in->hardware_id);
    bind_text(st, 3, in->hostname);
    bind_text(st, 4, in->os);
    bind_text(st, 5, in->agent_version);
    bind_text(st, 6, t->org);
    bind_text(st, 7, t->group);
    bind_text(st, 8, serial);
    sqlite3_bind_int64(st, 9, in->cert_not_after);
    bind_text(st, 10, in->token_id);
    sqlite3_bind_int64(st, 11, now(s));
    rc = step_done(s->w, st, "writing a device");
    if (rc == MMR_EEXIST)
        return mmr_err_set(MMR_EEXIST, "device id %s belongs to other hardware", in->device_id);
    if (rc == 0 && !replace)
        *rowid = sqlite3_last_insert_rowid(mmr_db_handle(s->w));
    return rc;
}

static int token_use(struct mmr_store *s, const char *id)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(s->w, "UPDATE tokens SET uses = uses + 1 WHERE id = ?1", &st);
    if (rc < 0)
        return rc;
    bind_text(st, 1, id);
    return step_done(s->w, st, "using a token");
}

static int enroll_tx(struct mmr_store *s, const struct mmr_store_enroll *in, const char *serial,
                     struct mmr_store_device *out, enum mmr_store_refusal *why)
{
    struct token_row t;
    int rc = token_judge(s, s->w, in->token_id, in->token_secret, &t, why);
    if (rc < 0)
        return rc;
    struct device_key k;
    rc = device_key(s->w, "hardware_id", in->hardware_id, &k);
    bool replace = rc == 0;
    if (rc < 0 && rc != MMR_ENOENT)
        return rc;
    if (replace && k.revoked) {
        *why = MMR_STORE_DEVICE_REVOKED;
        return mmr_err_set(MMR_EPERM,
                           "hardware %s belongs to revoked device %s; an administrator must "
                           "unrevoke it before it can enroll again",
                           in->hardware_id, in->device_id);
    }
    rc = serial_unused(s, serial);
    if (rc == 0)
        rc = token_use(s, in->token_id);
    if (rc == 0 && replace)
        rc = certs_retire(s, k.rowid);
    if (rc == 0)
        rc = device_write(s, in, serial, &t, &k.rowid, replace);
    if (rc == 0 && replace && sqlite3_changes(mmr_db_handle(s->w)) == 0)
        rc = mmr_err_set(MMR_EBUSY,
                         "hardware %s enrolled meanwhile as another device than %s; start the "
                         "enrollment over",
                         in->hardware_id, in->device_id);
    if (rc == 0)
        rc = cert_insert(s, k.rowid, serial, in->cert_not_after);
    if (rc < 0)
        return rc;
    char actor[MMR_STORE_TEXT_MAX + 8];
    char detail[MMR_STORE_TEXT_MAX + 64];
    snprintf(actor, sizeof(actor), "token:%s", in->token_id);
    snprintf(detail, sizeof(detail), "hostname=%s serial=%s%s", in->hostname, serial,
             replace ? " replaced=1" : "");
    rc = audit_write(s, actor, "device.enroll", in->device_id, detail);
    if (rc == 0 && out)
        rc = device_load(s->w, in->device_id, out);
    return rc;
}

int mmr_store_device_enroll(struct mmr_store *s, const struct mmr_store_enroll *in,
                            struct mmr_store_device *out, enum mmr_store_refusal *why)
{
    enum mmr_store_refusal dummy;
    if (!why)
        why = &dummy;
    *why = MMR_STORE_ACCEPTED;
    if (out)
        memset(out, 0, sizeof(*out));
    char serial[MMR_STORE_SERIAL_MAX + 1];
    int rc = check_enroll(in, serial);
    if (rc == 0)
        rc = check_not_after(s, in->cert_not_after);
    if (rc < 0)
        return rc;
    rc = w_begin(s, true);
    if (rc < 0)
        return rc;
    rc = w_end(s, enroll_tx(s, in, serial, out, why));
    if (rc < 0 && out)
        mmr_store_device_clear(out);
    return rc;
}

const char *mmr_store_cert_state_name(enum mmr_store_cert_state st)
{
    switch (st) {
    case MMR_STORE_CERT_UNKNOWN:
        return "unknown";
    case MMR_STORE_CERT_CURRENT:
        return "current";
    case MMR_STORE_CERT_REPLACED:
        return "replaced";
    case MMR_STORE_CERT_EXPIRED:
        return "expired";
    case MMR_STORE_CERT_REVOKED:
        return "revoked";
    }
    return "unknown";
}

/* A certificate seen at a handshake. */
struct cert_seen {
    enum mmr_store_cert_state state;
    bool pending; /* the device's pending certificate: to be promoted */
    int64_t rowid;
    int64_t not_after;
    char device[MMR_STORE_ID_SIZE];
};

/* Judges a serial on db; fills out (may be NULL) for a current certificate
 * that needs no promotion. */
static int cert_lookup(struct mmr_store *s, struct mmr_db *db, const char *serial,
                       struct cert_seen *c, struct mmr_store_device *out)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(db,
                         "SELECT " DEVICE_COLS ", k.not_after, k.retired_at IS NOT NULL, d.id "
                         "FROM certs k JOIN devices d ON d.id = k.device WHERE k.serial = ?1",
                         &st);
    if (rc < 0)
        return rc;
    bind_text(st, 1, serial);
    int step = sqlite3_step(st);
    memset(c, 0, sizeof(*c));
    if (step == SQLITE_DONE)
        return mmr_err_set(MMR_ENOENT, "certificate serial %s was never issued here", serial);
    if (step != SQLITE_ROW)
        return mmr_db_error(db, "looking up a certificate");
    struct mmr_store_device d;
    device_from_row(st, &d);
    c->not_after = sqlite3_column_int64(st, DEVICE_NCOLS);
    bool retired = sqlite3_column_int(st, DEVICE_NCOLS + 1) != 0;
    c->rowid = sqlite3_column_int64(st, DEVICE_NCOLS + 2);
    sqlite3_reset(st);
    snprintf(c->device, sizeof(c->device), "%s", d.id);
    bool current = !retired && strcmp(serial, d.cert_serial) == 0;
    c->pending = !retired && d.cert_pending && strcmp(serial, d.cert_pending) == 0;
    /* Every certificate but the current and the pending one is retired. */
    if (d.revoked_at)
        c->state = MMR_STORE_CERT_REVOKED;
    else if (!current && !c->pending)
        c->state = MMR_STORE_CERT_REPLACED;
    else if (c->not_after <= now(s))
        c->state = MMR_STORE_CERT_EXPIRED;
    else
        c->state = MMR_STORE_CERT_CURRENT;
    if (c->state != MMR_STORE_CERT_CURRENT)
        c->pending = false;
    if (out && c->state == MMR_STORE_CERT_CURRENT && !c->pending)
        *out = d;
    else
        mmr_store_device_clear(&d);
    if (c->state == MMR_STORE_CERT_CURRENT)
        return 0;
    return mmr_err_set(MMR_EPERM, "certificate %s of device %s is refused: %s", serial, c->device,
                       mmr_store_cert_state_name(c->state));
}

/* The pending certificate was used: it becomes the current one, and the one
 * it replaces is retired. Looked up again under the writer, so that a
 * revocation or renewal that came meanwhile wins. */
static int cert_promote(struct mmr_store *s, const char *serial, struct cert_seen *c,
                        struct mmr_store_device *out)
{
    int rc = cert_lookup(s, s->w, serial, c, out);
    if (rc < 0 || !c->pending)
        return rc;
    sqlite3_stmt *st;
    rc = mmr_db_stmt(s->w,
                     "UPDATE certs SET retired_at = ?3 WHERE device = ?1 AND serial <> ?2 "
                     "AND retired_at IS NULL",
                     &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, c->rowid);
    bind_text(st, 2, serial);
    sqlite3_bind_int64(st, 3, now(s));
    rc = step_done(s->w, st, "retiring a certificate");
    if (rc < 0)
        return rc;
    rc = mmr_db_stmt(s->w,
                     "UPDATE devices SET cert_serial = ?2, cert_not_after = ?3, "
                     "cert_pending = NULL WHERE id = ?1",
                     &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, c->rowid);
    bind_text(st, 2, serial);
    sqlite3_bind_int64(st, 3, c->not_after);
    rc = step_done(s->w, st, "promoting a certificate");
    if (rc == 0 && out)
        rc = device_load(s->w, c->device, out);
    return rc;
}

int mmr_store_device_by_serial(struct mmr_store *s, const char *serial_in,
                               struct mmr_store_device *out, enum mmr_store_cert_state *state)
{
    enum mmr_store_cert_state dummy;
    if (!state)
        state = &dummy;
    *state = MMR_STORE_CERT_UNKNOWN;
    if (out)
        memset(out, 0, sizeof(*out));
    char serial[MMR_STORE_SERIAL_MAX + 1];
    int rc = norm_serial("certificate serial", serial_in, serial);
    if (rc < 0)
        return rc;
    struct cert_seen c;
    size_t slot;
    struct mmr_db *db = r_get(s, &slot);
    rc = cert_lookup(s, db, serial, &c, out);
    r_put(s, slot);
    if (rc == 0 && c.pending) {
        /* Durable: the agent may throw its previous certificate away as soon
         * as the new one works. */
        rc = w_begin(s, true);
        if (rc == 0)
            rc = w_end(s, cert_promote(s, serial, &c, out));
        if (rc < 0 && out)
            mmr_store_device_clear(out); /* filled before a failed commit */
    }
    *state = c.state;
    return rc;
}

static int check_checkin(const char *id, const struct mmr_store_checkin *c)
{
    int rc = need("device id", id, MMR_STORE_ID_SIZE - 1);
    if (rc == 0)
        rc = maybe("posture", c->posture, MMR_STORE_POSTURE_MAX);
    if (rc == 0)
        rc = maybe("hostname", c->hostname, MMR_STORE_TEXT_MAX);
    if (rc == 0)
        rc = maybe("os", c->os, MMR_STORE_TEXT_MAX);
    if (rc == 0)
        rc = maybe("agent version", c->agent_version, MMR_STORE_NAME_MAX);
    return rc;
}

/* Why an UPDATE of a device that is not revoked changed nothing. */
static int device_missing(struct mmr_db *db, const char *id)
{
    struct device_key k;
    int rc = device_key(db, "uuid", id, &k);
    if (rc < 0)
        return rc;
    /* It exists, so the UPDATE's other condition failed. */
    return mmr_err_set(MMR_EPERM, "device %s is revoked", id);
}

int mmr_store_device_checkin(struct mmr_store *s, const char *id, const struct mmr_store_checkin *c)
{
    int rc = check_checkin(id, c);
    if (rc < 0)
        return rc;
    w_lock(s);
    sqlite3_stmt *st;
    rc = w_sync(s, false);
    if (rc == 0)
        rc = mmr_db_stmt(s->w,
                         "UPDATE devices SET last_checkin_at = ?2, "
                         "posture = coalesce(?3, posture), "
                         "queue_depth = coalesce(?4, queue_depth), "
                         "policy_version = coalesce(?5, policy_version), "
                         "hostname = coalesce(?6, hostname), os = coalesce(?7, os), "
                         "agent_version = coalesce(?8, agent_version) "
                         "WHERE uuid = ?1 AND revoked_at IS NULL",
                         &st);
    if (rc == 0) {
        bind_text(st, 1, id);
        sqlite3_bind_int64(st, 2, now(s));
        bind_text(st, 3, c->posture);
        if (c->queue_depth >= 0)
            sqlite3_bind_int64(st, 4, c->queue_depth);
        if (c->policy_version >= 0)
            sqlite3_bind_int64(st, 5, c->policy_version);
        bind_text(st, 6, c->hostname);
        bind_text(st, 7, c->os);
        bind_text(st, 8, c->agent_version);
        rc = step_done(s->w, st, "recording a check-in");
    }
    if (rc == 0 && sqlite3_changes(mmr_db_handle(s->w)) == 0)
        rc = device_missing(s->w, id);
    w_unlock(s);
    return rc;
}

static int renew_tx(struct mmr_store *s, const char *id, const char *presented, const char *serial,
                    int64_t not_after)
{
    struct device_key k;
    int rc = device_key(s->w, "uuid", id, &k);
    if (rc < 0)
        return rc;
    if (k.revoked)
        return mmr_err_set(MMR_EPERM, "device %s is revoked", id);
    if (strcmp(k.serial, presented) != 0)
        return mmr_err_set(MMR_EPERM,
                           "certificate %s is not the current one of device %s; renew with "
                           "the current certificate",
                           presented, id);
    rc = serial_unused(s, serial);
    if (rc < 0)
        return rc;
    sqlite3_stmt *st;
    if (k.pending[0]) {
        /* The reply of an earlier renewal was lost: that certificate never
         * reached the device, and is retired unused. */
        rc = mmr_db_stmt(s->w, "UPDATE certs SET retired_at = ?2 WHERE serial = ?1", &st);
        if (rc < 0)
            return rc;
        bind_text(st, 1, k.pending);
        sqlite3_bind_int64(st, 2, now(s));
        rc = step_done(s->w, st, "retiring a pending certificate");
        if (rc < 0)
            return rc;
    }
    rc = cert_insert(s, k.rowid, serial, not_after);
    if (rc < 0)
        return rc;
    rc = mmr_db_stmt(s->w, "UPDATE devices SET cert_pending = ?2 WHERE id = ?1", &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, k.rowid);
    bind_text(st, 2, serial);
    return step_done(s->w, st, "recording a renewal");
}

int mmr_store_device_renew(struct mmr_store *s, const char *id, const char *presented_serial,
                           const char *new_serial, int64_t new_not_after)
{
    char presented[MMR_STORE_SERIAL_MAX + 1];
    char serial[MMR_STORE_SERIAL_MAX + 1];
    int rc = need("device id", id, MMR_STORE_ID_SIZE - 1);
    if (rc == 0)
        rc = norm_serial("presented certificate serial", presented_serial, presented);
    if (rc == 0)
        rc = norm_serial("new certificate serial", new_serial, serial);
    if (rc == 0)
        rc = check_not_after(s, new_not_after);
    if (rc < 0)
        return rc;
    rc = w_begin(s, true);
    if (rc < 0)
        return rc;
    return w_end(s, renew_tx(s, id, presented, serial, new_not_after));
}

static int revoke_tx(struct mmr_store *s, const char *id, const char *actor, bool revoke)
{
    struct device_key k;
    int rc = device_key(s->w, "uuid", id, &k);
    if (rc < 0)
        return rc;
    if (revoke && k.revoked)
        return 0;
    if (!revoke && !k.revoked)
        return mmr_err_set(MMR_EINVAL, "device %s is not revoked", id);
    /* Unrevoking retires the certificates: whoever held them when the device
     * was revoked must not get back in without a token. */
    if (!revoke) {
        rc = certs_retire(s, k.rowid);
        if (rc < 0)
            return rc;
    }
    sqlite3_stmt *st;
    rc = mmr_db_stmt(s->w,
                     revoke ? "UPDATE devices SET revoked_at = ?2, revoked_by = ?3 WHERE id = ?1"
                            : "UPDATE devices SET revoked_at = NULL, revoked_by = NULL, "
                              "cert_pending = NULL WHERE id = ?1",
                     &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, k.rowid);
    if (revoke) {
        sqlite3_bind_int64(st, 2, now(s));
        bind_text(st, 3, actor);
    }
    rc = step_done(s->w, st, revoke ? "revoking a device" : "unrevoking a device");
    if (rc < 0)
        return rc;
    return audit_write(s, actor, revoke ? "device.revoke" : "device.unrevoke", id, NULL);
}

static int set_revoked(struct mmr_store *s, const char *id, const char *actor, bool on)
{
    int rc = need("device id", id, MMR_STORE_ID_SIZE - 1);
    if (rc == 0)
        rc = need("actor", actor, MMR_STORE_TEXT_MAX);
    if (rc < 0)
        return rc;
    rc = w_begin(s, true);
    if (rc < 0)
        return rc;
    return w_end(s, revoke_tx(s, id, actor, on));
}

int mmr_store_device_revoke(struct mmr_store *s, const char *id, const char *actor)
{
    return set_revoked(s, id, actor, true);
}

int mmr_store_device_unrevoke(struct mmr_store *s, const char *id, const char *actor)
{
    return set_revoked(s, id, actor, false);
}

/* The WHERE clause of a device query, from fixed fragments (no caller text
 * enters the SQL): ?1 org, ?2 group, ?3 seen_since. */
static void device_where(const struct mmr_store_device_query *q, char *buf, size_t len)
{
    snprintf(buf, len, "WHERE 1%s%s%s%s", q->org ? " AND d.org = ?1" : "",
             q->group ? " AND d.grp = ?2" : "",
             q->revoked == MMR_STORE_REVOKED_EXCLUDE ? " AND d.revoked_at IS NULL"
             : q->revoked == MMR_STORE_REVOKED_ONLY  ? " AND d.revoked_at IS NOT NULL"
                                                     : "",
             q->seen_since > 0 ? " AND d.last_checkin_at >= ?3" : "");
}

static void device_bind(sqlite3_stmt *st, const struct mmr_store_device_query *q)
{
    if (q->org)
        bind_text(st, 1, q->org);
    if (q->group)
        bind_text(st, 2, q->group);
    if (q->seen_since > 0)
        sqlite3_bind_int64(st, 3, q->seen_since);
}

static int check_query(const struct mmr_store_device_query *q)
{
    int rc = maybe("org", q->org, MMR_STORE_NAME_MAX);
    return rc < 0 ? rc : maybe("group", q->group, MMR_STORE_NAME_MAX);
}

static int device_count_on(struct mmr_db *db, const struct mmr_store_device_query *q, int64_t *out)
{
    char where[160];
    char sql[256];
    device_where(q, where, sizeof(where));
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM devices d %s", where);
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(db, sql, &st);
    if (rc < 0)
        return rc;
    device_bind(st, q);
    if (sqlite3_step(st) != SQLITE_ROW)
        return mmr_db_error(db, "counting devices");
    *out = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return 0;
}

int mmr_store_device_count(struct mmr_store *s, const struct mmr_store_device_query *q,
                           int64_t *out)
{
    static const struct mmr_store_device_query all;
    *out = 0;
    if (!q)
        q = &all;
    int rc = check_query(q);
    if (rc < 0)
        return rc;
    size_t slot;
    struct mmr_db *db = r_get(s, &slot);
    rc = device_count_on(db, q, out);
    r_put(s, slot);
    return rc;
}

static int device_page(struct mmr_db *db, const struct mmr_store_device_query *q,
                       struct mmr_store_device **out, size_t *n)
{
    char where[160];
    char sql[1024];
    device_where(q, where, sizeof(where));
    snprintf(sql, sizeof(sql),
             "SELECT " DEVICE_COLS " FROM devices d %s ORDER BY d.id "
             "LIMIT ?4 OFFSET ?5",
             where);
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(db, sql, &st);
    if (rc < 0)
        return rc;
    size_t limit = page_limit(q->limit);
    device_bind(st, q);
    sqlite3_bind_int64(st, 4, (int64_t)limit);
    sqlite3_bind_int64(st, 5, q->offset > INT64_MAX ? INT64_MAX : (int64_t)q->offset);
    struct mmr_store_device *d = mmr_calloc(limit, sizeof(*d));
    size_t k = 0;
    int step = SQLITE_DONE;
    while (k < limit && (step = sqlite3_step(st)) == SQLITE_ROW)
        device_from_row(st, &d[k++]);
    if (step != SQLITE_DONE && step != SQLITE_ROW) {
        rc = mmr_db_error(db, "listing devices");
        mmr_store_device_free(d, k);
        return rc;
    }
    sqlite3_reset(st);
    *out = d;
    *n = k;
    return 0;
}

int mmr_store_device_list(struct mmr_store *s, const struct mmr_store_device_query *q,
                          struct mmr_store_device **out, size_t *n, int64_t *total)
{
    static const struct mmr_store_device_query all;
    *out = NULL;
    *n = 0;
    if (total)
        *total = 0;
    if (!q)
        q = &all;
    int rc = check_query(q);
    if (rc < 0)
        return rc;
    size_t slot;
    struct mmr_db *db = r_get(s, &slot);
    /* One read transaction: the page and the total come from one snapshot. */
    if (slot != NO_SLOT)
        rc = mmr_db_exec(db, "BEGIN");
    if (rc == 0)
        rc = device_page(db, q, out, n);
    if (rc == 0 && total)
        rc = device_count_on(db, q, total);
    if (rc < 0) {
        mmr_store_device_free(*out, *n);
        *out = NULL;
        *n = 0;
    }
    r_put(s, slot); /* ends the read transaction */
    return rc;
}

int mmr_store_device_certs(struct mmr_store *s, const char *id, struct mmr_store_cert **out,
                           size_t *n)
{
    *out = NULL;
    *n = 0;
    int rc = need("device id", id, MMR_STORE_ID_SIZE - 1);
    if (rc < 0)
        return rc;
    size_t slot;
    struct mmr_db *db = r_get(s, &slot);
    struct device_key k;
    rc = device_key(db, "uuid", id, &k);
    sqlite3_stmt *st;
    if (rc == 0)
        rc = mmr_db_stmt(db,
                         "SELECT serial, issued_at, not_after, retired_at FROM certs "
                         "WHERE device = ?1 ORDER BY issued_at DESC, serial",
                         &st);
    if (rc < 0)
        goto out;
    sqlite3_bind_int64(st, 1, k.rowid);
    struct mmr_store_cert *c = NULL;
    size_t cnt = 0, cap = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (cnt == cap) {
            cap = cap ? 2 * cap : 8;
            c = mmr_realloc(c, cap * sizeof(*c));
        }
        c[cnt].serial = col_str(st, 0);
        c[cnt].issued_at = sqlite3_column_int64(st, 1);
        c[cnt].not_after = sqlite3_column_int64(st, 2);
        c[cnt].retired_at = col_i64(st, 3, 0);
        cnt++;
    }
    if (step != SQLITE_DONE) {
        rc = mmr_db_error(db, "listing certificates");
        mmr_store_cert_free(c, cnt);
        goto out;
    }
    *out = c;
    *n = cnt;
out:
    r_put(s, slot);
    return rc;
}

void mmr_store_cert_free(struct mmr_store_cert *c, size_t n)
{
    if (!c)
        return;
    for (size_t i = 0; i < n; i++)
        free(c[i].serial);
    free(c);
}

/* ---- events ------------------------------------------------------------------------------ */

static int check_events(int64_t after, const struct mmr_store_event_in *ev, size_t n)
{
    if (n > MMR_STORE_EVENTS_MAX)
        return mmr_err_set(MMR_ETOOBIG, "a batch of %zu events is over the limit of %d", n,
                           MMR_STORE_EVENTS_MAX);
    for (size_t i = 0; i < n; i++) {
        const struct mmr_store_event_in *e = &ev[i];
        int rc = check_type(e->type);
        if (rc == 0)
            rc = need("event data", e->data, MMR_STORE_EVENT_DATA_MAX);
        if (rc < 0)
            return mmr_err_wrap(rc, "event %zu (seq %lld)", i, (long long)e->seq);
        /* Below INT64_MAX so that ack + 1 never overflows. */
        if (e->seq < 1 || e->seq == INT64_MAX)
            return mmr_err_set(MMR_EINVAL, "event %zu: seq %lld is out of range", i,
                               (long long)e->seq);
        if (e->severity < 0 || e->severity >= MMR_STORE_SEVERITIES)
            return mmr_err_set(MMR_EINVAL, "event %zu (seq %lld): severity %d is not 0..3", i,
                               (long long)e->seq, e->severity);
        if (after >= 0 && e->seq <= after)
            return mmr_err_set(MMR_EINVAL,
                               "event %zu: seq %lld is not above the batch's 'after' (%lld)", i,
                               (long long)e->seq, (long long)after);
    }
    return 0;
}

static int cmp_event(const void *a, const void *b)
{
    const struct mmr_store_event_in *x = *(const struct mmr_store_event_in *const *)a;
    const struct mmr_store_event_in *y = *(const struct mmr_store_event_in *const *)b;
    int c = strcmp(x->type, y->type);
    return c ? c : x->severity - y->severity;
}

/* Adds the inserted events to the per-device and global counters, one upsert
 * per (type, severity) rather than per event. */
static int count_add(struct mmr_store *s, int64_t device, const struct mmr_store_event_in **ins,
                     size_t n)
{
    qsort(ins, n, sizeof(*ins), cmp_event);
    sqlite3_stmt *dev;
    sqlite3_stmt *tot;
    int rc = mmr_db_stmt(s->w,
                         "INSERT INTO event_counts(device, type, severity, n) "
                         "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (device, type, severity) "
                         "DO UPDATE SET n = n + excluded.n",
                         &dev);
    if (rc == 0)
        rc = mmr_db_stmt(s->w,
                         "INSERT INTO event_totals(type, severity, n) VALUES (?1, ?2, ?3) "
                         "ON CONFLICT (type, severity) DO UPDATE SET n = n + excluded.n",
                         &tot);
    for (size_t i = 0; rc == 0 && i < n;) {
        size_t j = i + 1;
        while (j < n && cmp_event(&ins[i], &ins[j]) == 0)
            j++;
        sqlite3_bind_int64(dev, 1, device);
        bind_text(dev, 2, ins[i]->type);
        sqlite3_bind_int(dev, 3, ins[i]->severity);
        sqlite3_bind_int64(dev, 4, (int64_t)(j - i));
        rc = step_done(s->w, dev, "counting events");
        if (rc == 0) {
            bind_text(tot, 1, ins[i]->type);
            sqlite3_bind_int(tot, 2, ins[i]->severity);
            sqlite3_bind_int64(tot, 3, (int64_t)(j - i));
            rc = step_done(s->w, tot, "counting events");
        }
        i = j;
    }
    return rc;
}

/* Moves the ack over every seq stored contiguously beyond it. Reads only the
 * rows it moves over, and one more. */
static int ack_advance(struct mmr_store *s, const struct device_key *k, int64_t *ack)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(s->w,
                         "SELECT seq FROM events WHERE device = ?1 AND gen = ?2 AND seq > ?3 "
                         "ORDER BY seq",
                         &st);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, k->rowid);
    sqlite3_bind_int64(st, 2, k->gen);
    sqlite3_bind_int64(st, 3, *ack);
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW && sqlite3_column_int64(st, 0) == *ack + 1)
        (*ack)++;
    if (step != SQLITE_ROW && step != SQLITE_DONE)
        return mmr_db_error(s->w, "reading event sequence numbers");
    sqlite3_reset(st);
    return 0;
}

static int events_write(struct mmr_store *s, const struct device_key *k, int64_t ack,
                        struct ev_req *r, const struct mmr_store_event_in **ins)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(s->w,
                         "INSERT INTO events(device, gen, seq, type, severity, time, data, "
                         "received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
                         "ON CONFLICT (device, gen, seq) DO NOTHING",
                         &st);
    if (rc < 0)
        return rc;
    sqlite3 *h = mmr_db_handle(s->w);
    int64_t received = now(s);
    size_t nins = 0;
    for (size_t i = 0; i < r->n; i++) {
        const struct mmr_store_event_in *e = &r->ev[i];
        if (e->seq <= ack) {
            r->res.duplicates++;
            continue;
        }
        sqlite3_bind_int64(st, 1, k->rowid);
        sqlite3_bind_int64(st, 2, k->gen);
        sqlite3_bind_int64(st, 3, e->seq);
        bind_text(st, 4, e->type);
        sqlite3_bind_int(st, 5, e->severity);
        sqlite3_bind_int64(st, 6, e->time);
        bind_text(st, 7, e->data);
        sqlite3_bind_int64(st, 8, received);
        rc = step_done(s->w, st, "storing an event");
        if (rc < 0)
            return rc;
        if (sqlite3_changes(h) > 0)
            ins[nins++] = e;
        else
            r->res.duplicates++;
    }
    r->res.inserted = nins;
    return nins ? count_add(s, k->rowid, ins, nins) : 0;
}

/* Whether a request can go into the group: its device exists and is not
 * revoked. Writes nothing, so a refusal concerns this request alone. */
static int ev_check(struct mmr_store *s, const struct ev_req *r, struct device_key *k)
{
    int rc = device_key(s->w, "uuid", r->device_id, k);
    if (rc < 0)
        return rc;
    if (k->revoked)
        return mmr_err_set(MMR_EPERM, "device %s is revoked", r->device_id);
    return 0;
}

/* One request's share of a group commit, inside the writer's transaction. */
static int ev_write(struct mmr_store *s, struct ev_req *r, const struct device_key *k)
{
    int64_t lo = INT64_MAX, hi = 0;
    for (size_t i = 0; i < r->n; i++) {
        lo = r->ev[i].seq < lo ? r->ev[i].seq : lo;
        hi = r->ev[i].seq > hi ? r->ev[i].seq : hi;
    }
    int64_t ack = k->ack;
    /* Nothing stored yet. A claim settles only (after, hi], not what lies
     * below it: a Critical event sent ahead of a backlog claims from the
     * event just before it, and the backlog is still to come. So a claim
     * starts from 0 (the rule below moves the ack when after is 0); without
     * a claim the first seq seen starts the ack. */
    if (ack < 0)
        ack = r->after >= 0 ? 0 : lo - 1;
    const struct mmr_store_event_in **ins = mmr_malloc(r->n * sizeof(*ins));
    int rc = events_write(s, k, ack, r, ins);
    free(ins);
    if (rc < 0)
        return rc;
    /* The agent holds nothing else in (after, hi]: if that range starts at or
     * below the ack, everything up to hi is settled. */
    if (r->after >= 0 && r->after <= ack && hi > ack)
        ack = hi;
    rc = ack_advance(s, k, &ack);
    if (rc < 0)
        return rc;
    if (ack != k->ack) {
        sqlite3_stmt *st;
        rc = mmr_db_stmt(s->w, "UPDATE devices SET event_ack = ?2 WHERE id = ?1", &st);
        if (rc < 0)
            return rc;
        sqlite3_bind_int64(st, 1, k->rowid);
        sqlite3_bind_int64(st, 2, ack);
        rc = step_done(s->w, st, "recording the event ack");
    }
    r->res.ack = ack;
    return rc;
}

static void req_fail(struct ev_req *r, int rc)
{
    r->rc = rc;
    snprintf(r->msg, sizeof(r->msg), "%s", mmr_err_msg());
    memset(&r->res, 0, sizeof(r->res));
}

/* Runs every request of a group in one transaction with one durable commit.
 * A request refused before it writes (unknown or revoked device) fails
 * alone; a failure while writing, or of the commit, fails the whole group,
 * since nothing of it is stored then (the agents send again). */
static void group_run(struct mmr_store *s, struct ev_req *list)
{
    int rc = w_begin(s, true);
    if (rc < 0) {
        for (struct ev_req *r = list; r; r = r->next)
            req_fail(r, rc);
        return;
    }
    bool any = false;
    int fatal = 0;
    for (struct ev_req *r = list; r && !fatal; r = r->next) {
        struct device_key k;
        rc = ev_check(s, r, &k);
        if (rc < 0) {
            req_fail(r, rc);
            /* An I/O error may have ended the transaction: the rest must not
             * go on writing outside one. */
            if (sqlite3_get_autocommit(mmr_db_handle(s->w)))
                fatal = rc;
            continue;
        }
        rc = ev_write(s, r, &k);
        if (rc < 0)
            fatal = rc;
        else
            any = true;
    }
    /* With nothing to keep, ending "with an error" is a rollback. */
    rc = w_end(s, fatal ? fatal : any ? 0 : MMR_EDB);
    if (fatal || (any && rc < 0)) {
        /* The message on this thread is still the one that ended it all. */
        for (struct ev_req *r = list; r; r = r->next)
            if (r->rc == 0)
                req_fail(r, fatal ? fatal : rc);
    }
}

/* Group commit: a request joins the queue; whoever finds no commit running
 * takes everything queued and commits it; the others wait for their result.
 * While one fsync is in flight the next group gathers. */
static int ev_submit(struct mmr_store *s, struct ev_req *r)
{
    uv_mutex_lock(&s->glock);
    *s->gtail = r;
    s->gtail = &r->next;
    while (!r->done) {
        if (s->committing) {
            uv_cond_wait(&s->gcond, &s->glock);
            continue;
        }
        struct ev_req *group = s->ghead;
        s->ghead = NULL;
        s->gtail = &s->ghead;
        s->committing = true;
        uv_mutex_unlock(&s->glock);
        group_run(s, group);
        uv_mutex_lock(&s->glock);
        for (struct ev_req *q = group; q;) {
            struct ev_req *next = q->next;
            q->done = true; /* q may belong to a waiter: touch it no more */
            q = next;
        }
        s->committing = false;
        uv_cond_broadcast(&s->gcond);
    }
    uv_mutex_unlock(&s->glock);
    if (r->rc < 0)
        return mmr_err_set(r->rc, "%s", r->msg);
    return 0;
}

/* An empty batch stores nothing: it reports the ack. */
static int events_ack(struct mmr_store *s, const char *device_id,
                      struct mmr_store_events_result *res)
{
    size_t slot;
    struct mmr_db *db = r_get(s, &slot);
    struct device_key k;
    int rc = device_key(db, "uuid", device_id, &k);
    r_put(s, slot);
    if (rc < 0)
        return rc;
    if (k.revoked)
        return mmr_err_set(MMR_EPERM, "device %s is revoked", device_id);
    res->ack = k.ack < 0 ? 0 : k.ack;
    return 0;
}

int mmr_store_events_insert(struct mmr_store *s, const char *device_id, int64_t after,
                            const struct mmr_store_event_in *ev, size_t n,
                            struct mmr_store_events_result *res)
{
    memset(res, 0, sizeof(*res));
    int rc = need("device id", device_id, MMR_STORE_ID_SIZE - 1);
    if (rc == 0)
        rc = check_events(after, ev, n);
    if (rc < 0)
        return rc;
    if (n == 0)
        return events_ack(s, device_id, res);
    struct ev_req r = {.device_id = device_id, .after = after < 0 ? -1 : after, .ev = ev, .n = n};
    rc = ev_submit(s, &r);
    if (rc == 0)
        *res = r.res;
    return rc;
}

int mmr_store_events_recent(struct mmr_store *s, const char *device_id, size_t limit,
                            struct mmr_store_event **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    int rc = need("device id", device_id, MMR_STORE_ID_SIZE - 1);
    if (rc < 0)
        return rc;
    limit = page_limit(limit);
    size_t slot;
    struct mmr_db *db = r_get(s, &slot);
    struct device_key k;
    rc = device_key(db, "uuid", device_id, &k);
    sqlite3_stmt *st;
    if (rc == 0)
        rc = mmr_db_stmt(db,
                         "SELECT seq, type, severity, time, data, received_at FROM events "
                         "WHERE device = ?1 ORDER BY gen DESC, seq DESC LIMIT ?2",
                         &st);
    if (rc < 0)
        goto out;
    sqlite3_bind_int64(st, 1, k.rowid);
    sqlite3_bind_int64(st, 2, (int64_t)limit);
    struct mmr_store_event *e = mmr_calloc(limit, sizeof(*e));
    size_t cnt = 0;
    int step = SQLITE_DONE;
    while (cnt < limit && (step = sqlite3_step(st)) == SQLITE_ROW) {
        e[cnt].seq = sqlite3_column_int64(st, 0);
        e[cnt].type = col_str(st, 1);
        e[cnt].severity = sqlite3_column_int(st, 2);
        e[cnt].time = sqlite3_column_int64(st, 3);
        e[cnt].data = col_str(st, 4);
        e[cnt].received_at = sqlite3_column_int64(st, 5);
        cnt++;
    }
    if (step != SQLITE_DONE && step != SQLITE_ROW) {
        rc = mmr_db_error(db, "reading events");
        mmr_store_event_free(e, cnt);
        goto out;
    }
    *out = e;
    *n = cnt;
out:
    r_put(s, slot);
    return rc;
}

void mmr_store_event_free(struct mmr_store_event *e, size_t n)
{
    if (!e)
        return;
    for (size_t i = 0; i < n; i++) {
        free(e[i].type);
        free(e[i].data);
    }
    free(e);
}

/* The counters' table and WHERE clause for a filter, from fixed fragments:
 * ?1 device row id, ?2 type, ?3 severity. */
static void count_sql(const struct mmr_store_event_filter *f, const char *select, const char *tail,
                      char *sql, size_t len)
{
    snprintf(sql, len, "SELECT %s FROM %s WHERE 1%s%s%s %s", select,
             f->device_id ? "event_counts" : "event_totals", f->device_id ? " AND device = ?1" : "",
             f->type ? " AND type = ?2" : "", f->severity >= 0 ? " AND severity = ?3" : "", tail);
}

/* Prepares a count query on db; *rowid resolves the device. */
static int count_prepare(struct mmr_db *db, const struct mmr_store_event_filter *f,
                         const char *select, const char *tail, sqlite3_stmt **st)
{
    int64_t rowid = 0;
    if (f->device_id) {
        struct device_key k;
        int rc = device_key(db, "uuid", f->device_id, &k);
        if (rc < 0)
            return rc;
        rowid = k.rowid;
    }
    char sql[256];
    count_sql(f, select, tail, sql, sizeof(sql));
    int rc = mmr_db_stmt(db, sql, st);
    if (rc < 0)
        return rc;
    if (f->device_id)
        sqlite3_bind_int64(*st, 1, rowid);
    if (f->type)
        bind_text(*st, 2, f->type);
    if (f->severity >= 0)
        sqlite3_bind_int(*st, 3, f->severity);
    return 0;
}

static int check_filter(const struct mmr_store_event_filter *f)
{
    int rc = maybe("device id", f->device_id, MMR_STORE_ID_SIZE - 1);
    if (rc == 0)
        rc = maybe("event type", f->type, MMR_STORE_NAME_MAX);
    if (rc == 0 && f->severity >= MMR_STORE_SEVERITIES)
        rc = mmr_err_set(MMR_EINVAL, "severity %d is not 0..3", f->severity);
    return rc;
}

int mmr_store_events_count(struct mmr_store *s, const struct mmr_store_event_filter *f,
                           int64_t *out)
{
    static const struct mmr_store_event_filter all = {.severity = -1};
    *out = 0;
    if (!f)
        f = &all;
    int rc = check_filter(f);
    if (rc < 0)
        return rc;
    size_t slot;
    struct mmr_db *db = r_get(s, &slot);
    sqlite3_stmt *st;
    rc = count_prepare(db, f, "coalesce(sum(n), 0)", "", &st);
    if (rc == 0) {
        if (sqlite3_step(st) == SQLITE_ROW)
            *out = sqlite3_column_int64(st, 0);
        else
            rc = mmr_db_error(db, "counting events");
    }
    r_put(s, slot);
    return rc;
}

int mmr_store_events_count_by_severity(struct mmr_store *s, const char *device_id,
                                       int64_t out[MMR_STORE_SEVERITIES])
{
    struct mmr_store_event_filter f = {.device_id = device_id, .severity = -1};
    memset(out, 0, MMR_STORE_SEVERITIES * sizeof(*out));
    int rc = check_filter(&f);
    if (rc < 0)
        return rc;
    size_t slot;
    struct mmr_db *db = r_get(s, &slot);
    sqlite3_stmt *st;
    rc = count_prepare(db, &f, "severity, sum(n)", "GROUP BY severity", &st);
    if (rc == 0) {
        int step;
        while ((step = sqlite3_step(st)) == SQLITE_ROW) {
            int sev = sqlite3_column_int(st, 0);
            if (sev >= 0 && sev < MMR_STORE_SEVERITIES)
                out[sev] = sqlite3_column_int64(st, 1);
        }
        if (step != SQLITE_DONE)
            rc = mmr_db_error(db, "counting events");
    }
    r_put(s, slot);
    return rc;
}

int mmr_store_events_count_by_type(struct mmr_store *s, const char *device_id,
                                   struct mmr_store_type_count **out, size_t *n)
{
    struct mmr_store_event_filter f = {.device_id = device_id, .severity = -1};
    *out = NULL;
    *n = 0;
    int rc = check_filter(&f);
    if (rc < 0)
        return rc;
    size_t slot;
    struct mmr_db *db = r_get(s, &slot);
    sqlite3_stmt *st;
    rc = count_prepare(db, &f, "type, sum(n) AS c", "GROUP BY type ORDER BY c DESC, type", &st);
    if (rc < 0)
        goto out;
    struct mmr_store_type_count *c = NULL;
    size_t cnt = 0, cap = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (cnt == cap) {
            cap = cap ? 2 * cap : 16;
            c = mmr_realloc(c, cap * sizeof(*c));
        }
        c[cnt].type = col_str(st, 0);
        c[cnt].count = sqlite3_column_int64(st, 1);
        cnt++;
    }
    if (step != SQLITE_DONE) {
        rc = mmr_db_error(db, "counting events");
        mmr_store_type_count_free(c, cnt);
        goto out;
    }
    *out = c;
    *n = cnt;
out:
    r_put(s, slot);
    return rc;
}

void mmr_store_type_count_free(struct mmr_store_type_count *c, size_t n)
{
    if (!c)
        return;
    for (size_t i = 0; i < n; i++)
        free(c[i].type);
    free(c);
}

/* ---- policies ------------------------------------------------------------------------- */

void mmr_store_policy_clear(struct mmr_store_policy *p)
{
    if (!p)
        return;
    free(p->group);
    free(p->document);
    free(p->signature);
    free(p->published_by);
    memset(p, 0, sizeof(*p));
}

/* A single integer from a one-row query about group (0 when no row). */
static int group_int(struct mmr_db *db, const char *sql, const char *group, int64_t *out)
{
    sqlite3_stmt *st;
    *out = 0;
    int rc = mmr_db_stmt(db, sql, &st);
    if (rc < 0)
        return rc;
    bind_text(st, 1, group);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        *out = col_i64(st, 0, 0);
    else if (step != SQLITE_DONE)
        rc = mmr_db_error(db, "reading policy versions");
    sqlite3_reset(st);
    return rc;
}

static const char sql_latest[] = "SELECT max(version) FROM policies WHERE grp = ?1";
static const char sql_active[] = "SELECT version FROM policy_active WHERE grp = ?1";

static int history_write(struct mmr_store *s, const char *group, const char *action,
                         int64_t version, int64_t previous, const char *actor)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(s->w,
                         "INSERT INTO policy_history(grp, action, version, previous, actor, at) "
                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                         &st);
    if (rc < 0)
        return rc;
    bind_text(st, 1, group);
    bind_text(st, 2, action);
    sqlite3_bind_int64(st, 3, version);
    sqlite3_bind_int64(st, 4, previous);
    bind_text(st, 5, actor);
    sqlite3_bind_int64(st, 6, now(s));
    rc = step_done(s->w, st, "recording policy history");
    if (rc < 0)
        return rc;
    rc = mmr_db_stmt(s->w,
                     "INSERT INTO policy_active(grp, version) VALUES (?1, ?2) "
                     "ON CONFLICT (grp) DO UPDATE SET version = excluded.version",
                     &st);
    if (rc < 0)
        return rc;
    bind_text(st, 1, group);
    sqlite3_bind_int64(st, 2, version);
    rc = step_done(s->w, st, "activating a policy");
    if (rc < 0)
        return rc;
    char detail[96];
    snprintf(detail, sizeof(detail), "version=%lld previous=%lld", (long long)version,
             (long long)previous);
    char audit_action[32];
    snprintf(audit_action, sizeof(audit_action), "policy.%s", action);
    return audit_write(s, actor, audit_action, group, detail);
}

static int publish_tx(struct mmr_store *s, const char *group, int64_t *version,
                      const char *document, const char *signature, const char *actor)
{
    int64_t latest, active;
    int rc = group_int(s->w, sql_latest, group, &latest);
    if (rc == 0)
        rc = group_int(s->w, sql_active, group, &active);
    if (rc < 0)
        return rc;
    int64_t next = latest + 1;
    if (*version != 0 && *version < next)
        return mmr_err_set(MMR_EBUSY,
                           "policy version %lld of group %s exists already (published "
                           "meanwhile?); the next one is %lld",
                           (long long)*version, group, (long long)next);
    if (*version != 0 && *version > next)
        return mmr_err_set(MMR_EINVAL, "policy version %lld of group %s skips ahead of %lld",
                           (long long)*version, group, (long long)next);
    sqlite3_stmt *st;
    rc = mmr_db_stmt(s->w,
                     "INSERT INTO policies(grp, version, document, signature, published_by, "
                     "published_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                     &st);
    if (rc < 0)
        return rc;
    bind_text(st, 1, group);
    sqlite3_bind_int64(st, 2, next);
    bind_text(st, 3, document);
    bind_text(st, 4, signature);
    bind_text(st, 5, actor);
    sqlite3_bind_int64(st, 6, now(s));
    rc = step_done(s->w, st, "storing a policy");
    if (rc == 0)
        rc = history_write(s, group, "publish", next, active, actor);
    if (rc == 0)
        *version = next;
    return rc;
}

int mmr_store_policy_publish(struct mmr_store *s, const char *group, int64_t *version,
                             const char *document, const char *signature, const char *actor)
{
    int rc = need("group", group, MMR_STORE_NAME_MAX);
    if (rc == 0)
        rc = need("policy document", document, MMR_STORE_POLICY_MAX);
    if (rc == 0)
        rc = need("policy signature", signature, MMR_STORE_SIGNATURE_MAX);
    if (rc == 0)
        rc = need("actor", actor, MMR_STORE_TEXT_MAX);
    if (rc == 0 && *version < 0)
        rc = mmr_err_set(MMR_EINVAL, "policy version %lld is negative", (long long)*version);
    if (rc < 0)
        return rc;
    int64_t want = *version;
    rc = w_begin(s, true);
    if (rc < 0)
        return rc;
    rc = w_end(s, publish_tx(s, group, version, document, signature, actor));
    if (rc < 0)
        *version = want;
    return rc;
}

static int rollback_tx(struct mmr_store *s, const char *group, int64_t version, const char *actor)
{
    int64_t latest, active;
    int rc = group_int(s->w, sql_latest, group, &latest);
    if (rc == 0)
        rc = group_int(s->w, sql_active, group, &active);
    if (rc < 0)
        return rc;
    if (version < 1 || version > latest)
        return mmr_err_set(MMR_ENOENT, "group %s has no policy version %lld (latest: %lld)", group,
                           (long long)version, (long long)latest);
    if (version == active)
        return 0;
    return history_write(s, group, "rollback", version, active, actor);
}

int mmr_store_policy_rollback(struct mmr_store *s, const char *group, int64_t version,
                              const char *actor)
{
    int rc = need("group", group, MMR_STORE_NAME_MAX);
    if (rc == 0)
        rc = need("actor", actor, MMR_STORE_TEXT_MAX);
    if (rc < 0)
        return rc;
    rc = w_begin(s, true);
    if (rc < 0)
        return rc;
    return w_end(s, rollback_tx(s, group, version, actor));
}

/* version 0: the active one. */
static int policy_load(struct mmr_db *db, const char *group, int64_t version,
                       struct mmr_store_policy *out)
{
    sqlite3_stmt *st;
    int rc = mmr_db_stmt(db,
                         "SELECT p.grp, p.version, p.document, p.signature, p.published_by, "
                         "p.published_at, p.version = a.version FROM policies p "
                         "LEFT JOIN policy_active a ON a.grp = p.grp "
                         "WHERE p.grp = ?1 AND p.version = "
                         "CASE WHEN ?2 > 0 THEN ?2 ELSE a.version END",
                         &st);
    if (rc < 0)
        return rc;
    bind_text(st, 1, group);
    sqlite3_bind_int64(st, 2, version);
    int step = sqlite3_step(st);
    if (step == SQLITE_DONE) {
        if (version > 0)
            return mmr_err_set(MMR_ENOENT, "group %s has no policy version %lld", group,
                               (long long)version);
        return mmr_err_set(MMR_ENOENT, "group %s has no policy", group);
    }
    if (step != SQLITE_ROW)
        return mmr_db_error(db, "reading a policy");
    out->group = col_str(st, 0);
    out->version = sqlite3_column_int64(st, 1);
    out->document = col_str(st, 2);
    out->signature = col_str(st, 3);
    out->published_by = col_str(st, 4);
    out->published_at = sqlite3_column_int64(st, 5);
    out->active = col_i64(st, 6, 0) != 0;
    sqlite3_reset(st);
    return 0;
}

static int policy_read(struct mmr_store *s, const char *group, int64_t version,
                       struct mmr_store_policy *out)
{
    memset(out, 0, sizeof(*out));
    int rc = need("group", group, MMR_STORE_NAME_MAX);
    if (rc < 0)
        return rc;
    size_t slot;
    struct mmr_db *db = r_get(s, &slot);
    rc = policy_load(db, group, version, out);
    r_put(s, slot);
    return rc;
}

int mmr_store_policy_active(struct mmr_store *s, const char *group, struct mmr_store_policy *out)
{
    return policy_read(s, group, 0, out);
}

int mmr_store_policy_get(struct mmr_store *s, const char *group, int64_t version,
                         struct mmr_store_policy *out)
{
    if (version < 1) {
        memset(out, 0, sizeof(*out));
        return mmr_err_set(MMR_EINVAL, "policy version %lld is not 1 or more", (long long)version);
    }
    return policy_read(s, group, version, out);
}

static int group_read(struct mmr_store *s, const char *sql, const char *group, int64_t *out)
{
    *out = 0;
    int rc = need("group", group, MMR_STORE_NAME_MAX);
    if (rc < 0)
        return rc;
    size_t slot;
    struct mmr_db *db = r_get(s, &slot);
    rc = group_int(db, sql, group, out);
    r_put(s, slot);
    return rc;
}

int mmr_store_policy_active_version(struct mmr_store *s, const char *group, int64_t *version)
{
    return group_read(s, sql_active, group, version);
}

int mmr_store_policy_latest_version(struct mmr_store *s, const char *group, int64_t *version)
{
    return group_read(s, sql_latest, group, version);
}

int mmr_store_policy_history(struct mmr_store *s, const char *group,
                             struct mmr_store_policy_change **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    int rc = need("group", group, MMR_STORE_NAME_MAX);
    if (rc < 0)
        return rc;
    size_t slot;
    struct mmr_db *db = r_get(s, &slot);
    sqlite3_stmt *st;
    rc = mmr_db_stmt(db,
                     "SELECT action, version, previous, actor, at FROM policy_history "
                     "WHERE grp = ?1 ORDER BY id",
                     &st);
    if (rc < 0)
        goto out;
    bind_text(st, 1, group);
    struct mmr_store_policy_change *c = NULL;
    size_t cnt = 0, cap = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (cnt == cap) {
            cap = cap ? 2 * cap : 16;
            c = mmr_realloc(c, cap * sizeof(*c));
        }
        c[cnt].action = col_str(st, 0);
        c[cnt].version = sqlite3_column_int64(st, 1);
        c[cnt].previous = sqlite3_column_int64(st, 2);
        c[cnt].actor = col_str(st, 3);
        c[cnt].at = sqlite3_column_int64(st, 4);
        cnt++;
    }
    if (step != SQLITE_DONE) {
        rc = mmr_db_error(db, "reading policy history");
        mmr_store_policy_change_free(c, cnt);
        goto out;
    }
    *out = c;
    *n = cnt;
out:
    r_put(s, slot);
    return rc;
}

void mmr_store_policy_change_free(struct mmr_store_policy_change *c, size_t n)
{
    if (!c)
        return;
    for (size_t i = 0; i < n; i++) {
        free(c[i].action);
        free(c[i].actor);
    }
    free(c);
}
