/* The management server's storage: devices and their certificates, enrollment
 * tokens, events, policies and the admin audit log. No SQL above this header:
 * store_sqlite.c is the embedded default, a PostgreSQL one can follow. */
#ifndef MMR_STORE_H
#define MMR_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Every function but mmr_store_close is safe to call from any thread at the
 * same time (the server calls the store from libuv's thread pool). Functions return 0 or a
 * negative MMR_E* code with the message in mmr_err_msg(). Times are UTC
 * milliseconds since the Unix epoch; 0 means "never" in every *_at field.
 * Strings in results are allocated and released by the matching *_clear or
 * *_free function. Outputs are overwritten (never freed) on entry and left
 * empty (zero, NULL) when a call fails. */
struct mmr_store;

/* ---- limits (MMR_EINVAL or MMR_ETOOBIG beyond them, naming the field) ---- */

#define MMR_STORE_ID_SIZE        37  /* device UUID "xxxxxxxx-xxxx-...", with its NUL */
#define MMR_STORE_TOKEN_ID_SIZE  11  /* public token id, 10 characters and a NUL */
#define MMR_STORE_SECRET_SIZE    33  /* token secret, 32 hex digits and a NUL */
#define MMR_STORE_NAME_MAX       64  /* org, group, event type, agent version */
#define MMR_STORE_TEXT_MAX       255 /* hostname, os, hardware id, actor, audit target */
#define MMR_STORE_SERIAL_MAX     64  /* certificate serial, hex digits */
#define MMR_STORE_POSTURE_MAX    (64 * 1024)
#define MMR_STORE_EVENT_DATA_MAX (64 * 1024)
#define MMR_STORE_POLICY_MAX     (1024 * 1024)
#define MMR_STORE_SIGNATURE_MAX  4096
#define MMR_STORE_EVENTS_MAX     10000 /* events in one insert */
#define MMR_STORE_LIST_MAX       1000  /* rows in one page of any list */
#define MMR_STORE_SEVERITIES     4     /* 0 Low, 1 Medium, 2 High, 3 Critical */

/* ---- opening --------------------------------------------------------------- */

struct mmr_store_opts {
    /* Read-only connections beside the one writer, so that reads (the
     * per-handshake certificate check, lists, counts) never wait behind a
     * commit. 0: 4 (libuv's default thread pool size); negative: none, reads
     * share the writer (forced for ":memory:"). */
    int readers;
    /* The clock; NULL: mmr_time_now_ms. Tests move time with it. */
    int64_t (*now_ms)(void *ctx);
    void *clock_ctx;
    /* How long a write waits for another process holding the database
     * (mamoriadm offline tools, a backup) before MMR_EBUSY; 0: 5000 ms. */
    int busy_timeout_ms;
    /* SQLite VFS name; NULL: the default (tests: MMR_DB_FAULT_VFS). */
    const char *vfs;
};

/* Opens (creating and migrating) the database at path. opts may be NULL.
 * A damaged or foreign file gives MMR_ECORRUPT naming the file; one written
 * by a newer server MMR_EINVAL. */
int mmr_store_open(const char *path, const struct mmr_store_opts *opts, struct mmr_store **out);
void mmr_store_close(struct mmr_store *s);

/* Integrity check (quick, or full), as mmr_db_check: 0 when sound,
 * MMR_ECORRUPT with the first problems in buf (may be NULL) when not. */
int mmr_store_check(struct mmr_store *s, bool full, char *buf, size_t buflen);

/* ---- enrollment tokens ------------------------------------------------------ */

/* Why an enrollment was refused. Each refusal returns MMR_EPERM with a message
 * saying which; the enum lets callers answer without parsing it. */
enum mmr_store_refusal {
    MMR_STORE_ACCEPTED = 0,
    MMR_STORE_TOKEN_UNKNOWN, /* no such token, or the secret does not match */
    MMR_STORE_TOKEN_REVOKED,
    MMR_STORE_TOKEN_EXPIRED,
    MMR_STORE_TOKEN_USED_UP,
    MMR_STORE_DEVICE_REVOKED, /* the hardware belongs to a revoked device */
};

/* "accepted", "token_unknown", "token_revoked", "token_expired",
 * "token_used_up", "device_revoked": stable, for JSON replies and logs. */
const char *mmr_store_refusal_name(enum mmr_store_refusal r);

struct mmr_store_token_new {
    const char *org;
    const char *group;
    int64_t uses;       /* enrollments allowed, >= 1 */
    int64_t expires_at; /* must be in the future */
    const char *created_by;
};

/* Creates a token. The store draws the public id and the secret; only a
 * SHA-256 of the secret is kept, so the secret is returned this once. Should
 * the drawn id exist already (50 random bits: next to never), MMR_EEXIST. */
int mmr_store_token_create(struct mmr_store *s, const struct mmr_store_token_new *in,
                           char id[MMR_STORE_TOKEN_ID_SIZE], char secret[MMR_STORE_SECRET_SIZE]);

struct mmr_store_token {
    char id[MMR_STORE_TOKEN_ID_SIZE];
    char *org;
    char *group;
    int64_t uses_allowed;
    int64_t uses;
    int64_t expires_at;
    int64_t revoked_at;
    int64_t created_at;
    char *created_by;
};

/* All tokens, newest first; with active_only, only those that could still
 * enroll a device (not revoked, expired or used up). */
int mmr_store_token_list(struct mmr_store *s, bool active_only, struct mmr_store_token **out,
                         size_t *n);
void mmr_store_token_free(struct mmr_store_token *t, size_t n);

/* Revokes a token (MMR_ENOENT when unknown); revoking it again is a no-op. */
int mmr_store_token_revoke(struct mmr_store *s, const char *id, const char *actor);

/* Would this token enroll a device now? Consumes nothing: the enrollment
 * handler calls it before spending a signature on a CSR. 0, or MMR_EPERM with
 * *why set (why may be NULL). The secret is compared in constant time. */
int mmr_store_token_check(struct mmr_store *s, const char *id, const char *secret,
                          enum mmr_store_refusal *why);

/* ---- devices ---------------------------------------------------------------- */

struct mmr_store_device {
    char id[MMR_STORE_ID_SIZE];
    char *hardware_id;
    char *hostname;
    char *os;
    char *agent_version;
    char *org;
    char *group;
    char *cert_serial; /* the current certificate, lower-case hex */
    int64_t cert_not_after;
    char *cert_pending; /* issued by a renewal and not used yet, or NULL */
    char *token_id;     /* the token of the latest enrollment */
    int64_t first_enrolled_at;
    int64_t enrolled_at; /* latest enrollment */
    int64_t enrollments; /* how many times this hardware enrolled */
    int64_t last_checkin_at;
    char *posture;          /* JSON text from the last check-in, or NULL */
    int64_t queue_depth;    /* -1: not reported since the enrollment */
    int64_t policy_version; /* applied on the device; -1: not reported */
    int64_t revoked_at;
    char *revoked_by;
    int64_t event_ack; /* events acknowledged (see events below); -1: none yet */
};

void mmr_store_device_clear(struct mmr_store_device *d);
void mmr_store_device_free(struct mmr_store_device *d, size_t n);

/* The device id for a hardware id: the existing device's when this hardware
 * enrolled before (re-enrollment keeps the id), else a fresh random UUID that
 * is not stored yet. The enrollment handler puts it in the certificate before
 * calling mmr_store_device_enroll. */
int mmr_store_device_id_for_hardware(struct mmr_store *s, const char *hardware_id,
                                     char id[MMR_STORE_ID_SIZE]);

struct mmr_store_enroll {
    const char *token_id;
    const char *token_secret;
    const char *device_id; /* from mmr_store_device_id_for_hardware */
    const char *hardware_id;
    const char *hostname;
    const char *os;
    const char *agent_version;
    /* The serial's bytes as in the certificate (mbedtls_x509_crt.serial),
     * in hex without separators, any case: stored lower-case. Spell it the
     * same way everywhere: "01" and "1" are different serials here. */
    const char *cert_serial;
    int64_t cert_not_after;
};

/* Enrolls a device, consuming one use of the token in the same transaction:
 * a refusal (MMR_EPERM, *why set) or any error consumes nothing.
 * Org and group come from the token. The same hardware enrolling again
 * REPLACES its record and keeps its device id: the new certificate becomes
 * the only valid one (every older serial is refused from now on), hostname,
 * os, version, org and group are taken from this enrollment, the check-in
 * summary is reset, and the device's events stay, while the acknowledgement
 * starts again from the new installation's sequence numbers. A revoked device
 * cannot enroll again until mmr_store_device_unrevoke. If another enrollment
 * of the same new hardware won a race, device_id no longer matches it:
 * MMR_EBUSY, and the caller starts over from mmr_store_device_id_for_hardware.
 * out (may be NULL) receives the stored device; why may be NULL. */
int mmr_store_device_enroll(struct mmr_store *s, const struct mmr_store_enroll *in,
                            struct mmr_store_device *out, enum mmr_store_refusal *why);

int mmr_store_device_get(struct mmr_store *s, const char *id, struct mmr_store_device *out);

/* What a certificate serial is worth at a TLS handshake. */
enum mmr_store_cert_state {
    MMR_STORE_CERT_UNKNOWN = 0, /* never issued to a device */
    MMR_STORE_CERT_CURRENT,     /* the device's current certificate */
    MMR_STORE_CERT_REPLACED,    /* renewed or re-enrolled since: refused */
    MMR_STORE_CERT_EXPIRED,     /* past its not_after */
    MMR_STORE_CERT_REVOKED,     /* the device is revoked */
};

const char *mmr_store_cert_state_name(enum mmr_store_cert_state st);

/* The per-handshake check. Returns 0 only for a current certificate of a
 * device that is not revoked, filling out (may be NULL); otherwise MMR_ENOENT
 * (unknown serial) or MMR_EPERM (replaced, expired, revoked), with *state
 * saying which (state may be NULL). The first use of a certificate from a
 * renewal makes it the current one and retires the previous certificate. */
int mmr_store_device_by_serial(struct mmr_store *s, const char *serial,
                               struct mmr_store_device *out, enum mmr_store_cert_state *state);

/* What a check-in reports. Strings NULL and numbers negative leave the stored
 * value as it is. */
struct mmr_store_checkin {
    const char *posture; /* JSON text */
    int64_t queue_depth;
    int64_t policy_version;
    const char *hostname;
    const char *os;
    const char *agent_version;
};

/* Records a check-in at the current time: one cheap UPDATE, without an fsync
 * (a check-in lost to a power cut is repeated a minute later). MMR_ENOENT for
 * an unknown device, MMR_EPERM for a revoked one. */
int mmr_store_device_checkin(struct mmr_store *s, const char *id,
                             const struct mmr_store_checkin *c);

/* Records a renewal: new_serial becomes the device's pending certificate.
 * The current one stays valid until the pending one is first seen at a
 * handshake (mmr_store_device_by_serial), so a renewal whose reply was lost
 * does not lock the device out; renewing again replaces the pending one.
 * presented_serial is the certificate the request came with: it must be the
 * current one (else MMR_EPERM). A revoked device gets MMR_EPERM. */
int mmr_store_device_renew(struct mmr_store *s, const char *id, const char *presented_serial,
                           const char *new_serial, int64_t new_not_after);

/* Revokes a device: every certificate it holds is refused from the next
 * handshake on. Revoking it again is a no-op. */
int mmr_store_device_revoke(struct mmr_store *s, const char *id, const char *actor);

/* Lets a revoked device enroll again. Its certificates stay refused: it has
 * to enroll with a token. MMR_EINVAL when it is not revoked. */
int mmr_store_device_unrevoke(struct mmr_store *s, const char *id, const char *actor);

enum mmr_store_revoked_filter {
    MMR_STORE_REVOKED_ANY = 0,
    MMR_STORE_REVOKED_EXCLUDE,
    MMR_STORE_REVOKED_ONLY,
};

struct mmr_store_device_query {
    const char *org;   /* NULL: any */
    const char *group; /* NULL: any */
    enum mmr_store_revoked_filter revoked;
    int64_t seen_since; /* > 0: last check-in at or after this time */
    size_t offset;
    size_t limit; /* 0: 100; at most MMR_STORE_LIST_MAX */
};

/* One page of devices in enrollment order, and (total may be NULL) how many
 * match the query over all pages, from the same snapshot. q may be NULL. */
int mmr_store_device_list(struct mmr_store *s, const struct mmr_store_device_query *q,
                          struct mmr_store_device **out, size_t *n, int64_t *total);
int mmr_store_device_count(struct mmr_store *s, const struct mmr_store_device_query *q,
                           int64_t *out);

struct mmr_store_cert {
    char *serial;
    int64_t issued_at;
    int64_t not_after;
    int64_t retired_at; /* 0: current or pending */
};

/* Every certificate a device was issued, newest first. */
int mmr_store_device_certs(struct mmr_store *s, const char *id, struct mmr_store_cert **out,
                           size_t *n);
void mmr_store_cert_free(struct mmr_store_cert *c, size_t n);

/* ---- events ------------------------------------------------------------------ */

struct mmr_store_event_in {
    int64_t seq; /* >= 1, per device, from the agent's queue */
    const char *type;
    int severity;     /* 0..3 */
    int64_t time;     /* when it happened, on the device */
    const char *data; /* JSON text */
};

struct mmr_store_events_result {
    int64_t ack; /* every seq up to this one is settled (0: none yet) */
    size_t inserted;
    size_t duplicates;
};

/* Stores a batch of events of one device, deduplicated by (device, seq):
 * delivery is at-least-once, storage exactly-once. Batches from several
 * threads share one durable commit (group commit, synchronous=FULL), and
 * this returns only after it, so the ack it gives has reached the disk; when
 * storing or the commit fails, every batch of that group fails (and is sent
 * again by its agent).
 *
 * The ack is the device's highest contiguous sequence number: every seq up
 * to it is stored or known never to come. "Known never to come" is what
 * `after` says. An agent's queue drops events when it is full (and holds
 * none from before its first batch), so a stream of stored seqs may have
 * holes that will never fill. A batch therefore states after: the agent
 * holds no events in (after, last seq of the batch] other than those in the
 * batch. For a batch taken from the head of the agent's queue, after is the
 * last ack the agent received (0 at first); for a Critical event sent ahead
 * of the queue, the seq of the queued event just before it. The rule:
 *   - the first batch of an enrollment starts the ack at after (or, when
 *     after < 0, at the batch's lowest seq - 1);
 *   - when after <= ack, the ack moves to the batch's highest seq;
 *   - then it moves on over every seq stored contiguously beyond it.
 * after < 0 claims nothing: plain contiguity. Events at or below the ack are
 * duplicates by definition and are not looked at again. Seqs restart with
 * each enrollment (a reinstalled agent starts at 1), so they are kept per
 * enrollment. MMR_ENOENT for an unknown device, MMR_EPERM for a revoked one,
 * MMR_EINVAL for a malformed event (nothing of the batch is stored). */
int mmr_store_events_insert(struct mmr_store *s, const char *device_id, int64_t after,
                            const struct mmr_store_event_in *ev, size_t n,
                            struct mmr_store_events_result *res);

struct mmr_store_event {
    int64_t seq;
    char *type;
    int severity;
    int64_t time;
    char *data;
    int64_t received_at;
};

/* The device's latest events (all enrollments, newest first), at most limit
 * (0: 100; at most MMR_STORE_LIST_MAX). */
int mmr_store_events_recent(struct mmr_store *s, const char *device_id, size_t limit,
                            struct mmr_store_event **out, size_t *n);
void mmr_store_event_free(struct mmr_store_event *e, size_t n);

struct mmr_store_event_filter {
    const char *device_id; /* NULL: every device */
    const char *type;      /* NULL: every type */
    int severity;          /* negative: every severity */
};

/* Events stored that match (f may be NULL: all of them). Served from counters
 * kept in the insert transaction: no scan of the events. */
int mmr_store_events_count(struct mmr_store *s, const struct mmr_store_event_filter *f,
                           int64_t *out);
/* Counts by severity, for one device or (device_id NULL) all of them. */
int mmr_store_events_count_by_severity(struct mmr_store *s, const char *device_id,
                                       int64_t out[MMR_STORE_SEVERITIES]);

struct mmr_store_type_count {
    char *type;
    int64_t count;
};

/* Counts by type, most frequent first, for one device or all of them. */
int mmr_store_events_count_by_type(struct mmr_store *s, const char *device_id,
                                   struct mmr_store_type_count **out, size_t *n);
void mmr_store_type_count_free(struct mmr_store_type_count *c, size_t n);

/* ---- policies ---------------------------------------------------------------- */

struct mmr_store_policy {
    char *group;
    int64_t version;
    char *document;  /* JSON text */
    char *signature; /* as the publisher gave it (base64) */
    char *published_by;
    int64_t published_at;
    bool active;
};

void mmr_store_policy_clear(struct mmr_store_policy *p);

/* Publishes a new version for group and makes it active. Versions are 1, 2,
 * ... per group and never reused. *version in: 0 to take the next one, or the
 * number the document was signed for, which must be the next one (else
 * MMR_EBUSY: someone published meanwhile; MMR_EINVAL when it skips ahead);
 * out: the version stored. */
int mmr_store_policy_publish(struct mmr_store *s, const char *group, int64_t *version,
                             const char *document, const char *signature, const char *actor);

/* Makes an older (or any existing) version active again; recorded in the
 * history. MMR_ENOENT for a version that does not exist; a no-op when it is
 * already active. */
int mmr_store_policy_rollback(struct mmr_store *s, const char *group, int64_t version,
                              const char *actor);

/* The active version with its document; MMR_ENOENT when the group has none. */
int mmr_store_policy_active(struct mmr_store *s, const char *group, struct mmr_store_policy *out);
/* Just the active version number (the ETag), 0 when the group has none. */
int mmr_store_policy_active_version(struct mmr_store *s, const char *group, int64_t *version);
/* The highest version published for group, 0 when none. */
int mmr_store_policy_latest_version(struct mmr_store *s, const char *group, int64_t *version);
int mmr_store_policy_get(struct mmr_store *s, const char *group, int64_t version,
                         struct mmr_store_policy *out);

struct mmr_store_policy_change {
    char *action;     /* "publish" or "rollback" */
    int64_t version;  /* active after the change */
    int64_t previous; /* active before it, 0: none */
    char *actor;
    int64_t at;
};

/* Every change of the group's active version, oldest first. */
int mmr_store_policy_history(struct mmr_store *s, const char *group,
                             struct mmr_store_policy_change **out, size_t *n);
void mmr_store_policy_change_free(struct mmr_store_policy_change *c, size_t n);

/* ---- admin audit log ---------------------------------------------------------- */

/* The store records its own admin actions in the same transaction as the
 * action: token.create, token.revoke, device.enroll (actor "token:<id>"),
 * device.revoke, device.unrevoke, policy.publish, policy.rollback. */
struct mmr_store_audit {
    int64_t id;
    int64_t at;
    char *actor;
    char *action;
    char *target;
    char *detail; /* may be NULL */
};

/* Records an action done outside the store (detail may be NULL). */
int mmr_store_audit_add(struct mmr_store *s, const char *actor, const char *action,
                        const char *target, const char *detail);

/* Newest first, entries with id < before_id (0: from the newest), at most
 * limit (0: 100; at most MMR_STORE_LIST_MAX). */
int mmr_store_audit_list(struct mmr_store *s, int64_t before_id, size_t limit,
                         struct mmr_store_audit **out, size_t *n);
void mmr_store_audit_free(struct mmr_store_audit *a, size_t n);

#endif
