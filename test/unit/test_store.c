/* Tests for server/store_sqlite.c: tokens, enrollment and re-enrollment,
 * certificates, check-ins, event dedupe and acks, policies, the audit log,
 * concurrency, damaged files, injected I/O faults, and a micro-benchmark. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "server/store.h"
#include "shared/db_fault.h"
#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "testutil.h"

#define T0     1700000000000LL /* the test clock starts here */
#define DAY_MS (24LL * 3600 * 1000)

static char dir[512];
static char path[700];
static int64_t fake_now;

static int64_t test_clock(void *ctx)
{
    return *(const int64_t *)ctx;
}

static void setup(void)
{
    mmr_test_mkdtemp("mmr-store", dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/server.db", dir);
    fake_now = T0;
}

static void teardown(void)
{
    mmr_db_fault_disarm();
    mmr_test_rmtree(dir);
}

TestSuite(store, .init = setup, .fini = teardown, .timeout = 60);

static struct mmr_store *open_with(int readers, const char *vfs)
{
    struct mmr_store_opts o = {
        .readers = readers, .now_ms = test_clock, .clock_ctx = &fake_now, .vfs = vfs};
    struct mmr_store *s = NULL;
    int rc = mmr_store_open(path, &o, &s);
    cr_assert_eq(rc, 0, "mmr_store_open: %d %s", rc, mmr_err_msg());
    cr_assert_not_null(s);
    return s;
}

static struct mmr_store *open_store(void)
{
    return open_with(0, NULL);
}

struct tok {
    char id[MMR_STORE_TOKEN_ID_SIZE];
    char secret[MMR_STORE_SECRET_SIZE];
};

static struct tok make_token(struct mmr_store *s, const char *group, int64_t uses)
{
    struct mmr_store_token_new in = {.org = "acme",
                                     .group = group,
                                     .uses = uses,
                                     .expires_at = fake_now + 7 * DAY_MS,
                                     .created_by = "admin"};
    struct tok t;
    int rc = mmr_store_token_create(s, &in, t.id, t.secret);
    cr_assert_eq(rc, 0, "token create: %s", mmr_err_msg());
    return t;
}

/* Enrolls hardware hw with serial (hex) through the two steps the
 * enrollment handler takes. Returns the code; *dev is filled on success. */
static int enroll_as(struct mmr_store *s, const struct tok *t, const char *hw, const char *serial,
                     struct mmr_store_device *dev, enum mmr_store_refusal *why)
{
    char id[MMR_STORE_ID_SIZE];
    int rc = mmr_store_device_id_for_hardware(s, hw, id);
    if (rc < 0)
        return rc;
    struct mmr_store_enroll in = {.token_id = t->id,
                                  .token_secret = t->secret,
                                  .device_id = id,
                                  .hardware_id = hw,
                                  .hostname = "laptop-1",
                                  .os = "Debian GNU/Linux 12",
                                  .agent_version = "0.1.0",
                                  .cert_serial = serial,
                                  .cert_not_after = fake_now + 90 * DAY_MS};
    return mmr_store_device_enroll(s, &in, dev, why);
}

static void enroll_ok(struct mmr_store *s, const struct tok *t, const char *hw, const char *serial,
                      struct mmr_store_device *dev)
{
    enum mmr_store_refusal why = MMR_STORE_TOKEN_UNKNOWN;
    int rc = enroll_as(s, t, hw, serial, dev, &why);
    cr_assert_eq(rc, 0, "enroll %s: %d %s", hw, rc, mmr_err_msg());
    cr_assert_eq(why, MMR_STORE_ACCEPTED);
}

static int64_t token_uses(struct mmr_store *s, const char *id)
{
    struct mmr_store_token *t;
    size_t n;
    cr_assert_eq(mmr_store_token_list(s, false, &t, &n), 0, "%s", mmr_err_msg());
    int64_t uses = -1;
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].id, id) == 0)
            uses = t[i].uses;
    mmr_store_token_free(t, n);
    return uses;
}

static int64_t count_devices(struct mmr_store *s)
{
    int64_t n = -1;
    cr_assert_eq(mmr_store_device_count(s, NULL, &n), 0, "%s", mmr_err_msg());
    return n;
}

static enum mmr_store_cert_state serial_state(struct mmr_store *s, const char *serial)
{
    enum mmr_store_cert_state st = MMR_STORE_CERT_UNKNOWN;
    struct mmr_store_device d;
    int rc = mmr_store_device_by_serial(s, serial, &d, &st);
    if (rc == 0) {
        cr_expect_eq(st, MMR_STORE_CERT_CURRENT);
        mmr_store_device_clear(&d);
    } else {
        cr_expect(rc == MMR_EPERM || rc == MMR_ENOENT, "rc %d: %s", rc, mmr_err_msg());
        cr_expect_neq(st, MMR_STORE_CERT_CURRENT);
    }
    return st;
}

/* n events seq first.., all of type and severity. */
static struct mmr_store_event_in *make_events(int64_t first, size_t n, const char *type, int sev)
{
    struct mmr_store_event_in *ev = mmr_calloc(n ? n : 1, sizeof(*ev));
    for (size_t i = 0; i < n; i++) {
        ev[i].seq = first + (int64_t)i;
        ev[i].type = type;
        ev[i].severity = sev;
        ev[i].time = T0 + (int64_t)i;
        ev[i].data = "{\"path\":\"/home/user/Downloads/invoice.pdf.exe\",\"rule\":\"Test\"}";
    }
    return ev;
}

static struct mmr_store_events_result insert_range(struct mmr_store *s, const char *dev,
                                                   int64_t after, int64_t first, int64_t last)
{
    size_t n = (size_t)(last - first + 1);
    struct mmr_store_event_in *ev = make_events(first, n, "scan.detection", 2);
    struct mmr_store_events_result res;
    int rc = mmr_store_events_insert(s, dev, after, ev, n, &res);
    free(ev);
    cr_assert_eq(rc, 0, "insert %lld..%lld: %s", (long long)first, (long long)last, mmr_err_msg());
    return res;
}

static int64_t count_events(struct mmr_store *s, const char *dev, const char *type, int sev)
{
    struct mmr_store_event_filter f = {.device_id = dev, .type = type, .severity = sev};
    int64_t n = -1;
    int rc = mmr_store_events_count(s, &f, &n);
    cr_assert_eq(rc, 0, "count: %s", mmr_err_msg());
    return n;
}

static void write_file(const char *p, const void *data, size_t len)
{
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    fclose(f);
}

/* ---- opening -------------------------------------------------------------- */

Test(store, open_creates_and_reopens)
{
    struct mmr_store *s = open_store();
    struct tok t = make_token(s, "default", 1);
    mmr_store_close(s);
    s = open_store();
    cr_expect_eq(token_uses(s, t.id), 0);
    char buf[128];
    cr_expect_eq(mmr_store_check(s, true, buf, sizeof(buf)), 0, "%s", buf);
    cr_expect_str_eq(buf, "ok");
    mmr_store_close(s);
    bool priv = false;
    cr_assert_eq(mmr_file_is_private(path, &priv), 0, "%s", mmr_err_msg());
    cr_expect(priv, "the database is owner-only");
    mmr_store_close(NULL);
}

Test(store, open_refuses_bad_arguments)
{
    struct mmr_store *s = (struct mmr_store *)1;
    cr_expect_eq(mmr_store_open("", NULL, &s), MMR_EINVAL);
    cr_expect_null(s);
    cr_expect_eq(mmr_store_open(NULL, NULL, &s), MMR_EINVAL);
    snprintf(path, sizeof(path), "%s/missing/dir/server.db", dir);
    cr_expect_lt(mmr_store_open(path, NULL, &s), 0);
    cr_expect_null(s);
}

Test(store, corrupt_file_is_reported)
{
    char junk[16384];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char)(i * 31 + 7);
    write_file(path, junk, sizeof(junk));
    struct mmr_store *s = (struct mmr_store *)1;
    int rc = mmr_store_open(path, NULL, &s);
    cr_expect_eq(rc, MMR_ECORRUPT, "rc %d: %s", rc, mmr_err_msg());
    cr_expect_null(s);
    cr_expect(strstr(mmr_err_msg(), path) != NULL, "%s", mmr_err_msg());
    cr_expect(strstr(mmr_err_msg(), "server database") != NULL, "%s", mmr_err_msg());
}

/* Damage inside a sound-looking file: calls fail with MMR_ECORRUPT (or
 * report nothing wrong when they never touch the damage), never crash. */
Test(store, damaged_pages_are_reported)
{
    struct mmr_store *s = open_store();
    struct tok t = make_token(s, "default", 1);
    struct mmr_store_device d;
    enroll_ok(s, &t, "hw-1", "01", &d);
    for (int64_t b = 0; b < 20; b++)
        insert_range(s, d.id, -1, b * 100 + 1, b * 100 + 100);
    mmr_store_close(s);

    FILE *f = fopen(path, "r+b");
    cr_assert_not_null(f);
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    long size = ftell(f);
    cr_assert_gt(size, 64 * 1024);
    char junk[4096];
    memset(junk, 0x5a, sizeof(junk));
    for (long off = 4 * 4096; off + 4096 < size; off += 3 * 4096) {
        cr_assert_eq(fseek(f, off, SEEK_SET), 0);
        cr_assert_eq(fwrite(junk, 1, sizeof(junk), f), sizeof(junk));
    }
    fclose(f);

    struct mmr_store *s2 = NULL;
    int rc = mmr_store_open(path, NULL, &s2);
    if (rc < 0) {
        cr_expect_eq(rc, MMR_ECORRUPT, "%d %s", rc, mmr_err_msg());
    } else {
        char buf[512];
        rc = mmr_store_check(s2, true, buf, sizeof(buf));
        cr_expect_eq(rc, MMR_ECORRUPT, "check: %d %s", rc, buf);
        cr_expect(strstr(mmr_err_msg(), "move it aside") != NULL, "%s", mmr_err_msg());
        struct mmr_store_event *e = NULL;
        size_t n = 0;
        rc = mmr_store_events_recent(s2, d.id, 1000, &e, &n);
        cr_expect(rc == 0 || rc == MMR_ECORRUPT, "recent: %d %s", rc, mmr_err_msg());
        mmr_store_event_free(e, n);
        mmr_store_close(s2);
    }
    mmr_store_device_clear(&d);
}

Test(store, newer_schema_is_refused)
{
    sqlite3 *h;
    cr_assert_eq(sqlite3_open(path, &h), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(h, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);
    struct mmr_store *s = NULL;
    cr_expect_eq(mmr_store_open(path, NULL, &s), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "newer") != NULL, "%s", mmr_err_msg());
}

/* ---- tokens ----------------------------------------------------------------- */

Test(store, token_create_list_and_audit)
{
    struct mmr_store *s = open_store();
    struct tok t = make_token(s, "laptops", 3);
    cr_expect_eq(strlen(t.id), MMR_STORE_TOKEN_ID_SIZE - 1);
    cr_expect_eq(strlen(t.secret), MMR_STORE_SECRET_SIZE - 1);
    cr_expect_eq(strspn(t.secret, "0123456789abcdef"), strlen(t.secret));
    struct tok t2 = make_token(s, "laptops", 1);
    cr_expect_str_neq(t.id, t2.id);
    cr_expect_str_neq(t.secret, t2.secret);

    struct mmr_store_token *list;
    size_t n;
    cr_assert_eq(mmr_store_token_list(s, false, &list, &n), 0);
    cr_assert_eq(n, 2);
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i].id, t.id) != 0)
            continue;
        found = true;
        cr_expect_str_eq(list[i].org, "acme");
        cr_expect_str_eq(list[i].group, "laptops");
        cr_expect_eq(list[i].uses_allowed, 3);
        cr_expect_eq(list[i].uses, 0);
        cr_expect_eq(list[i].expires_at, T0 + 7 * DAY_MS);
        cr_expect_eq(list[i].created_at, T0);
        cr_expect_eq(list[i].revoked_at, 0);
        cr_expect_str_eq(list[i].created_by, "admin");
    }
    cr_expect(found);
    mmr_store_token_free(list, n);

    struct mmr_store_audit *a;
    cr_assert_eq(mmr_store_audit_list(s, 0, 0, &a, &n), 0);
    cr_assert_eq(n, 2);
    cr_expect_str_eq(a[1].action, "token.create");
    cr_expect_str_eq(a[1].target, t.id);
    cr_expect_str_eq(a[1].actor, "admin");
    cr_expect(strstr(a[1].detail, "group=laptops") != NULL, "%s", a[1].detail);
    cr_expect(strstr(a[1].detail, t.secret) == NULL, "no secret in the audit log");
    mmr_store_audit_free(a, n);
    mmr_store_close(s);
}

Test(store, token_create_refusals)
{
    struct mmr_store *s = open_store();
    char id[MMR_STORE_TOKEN_ID_SIZE], secret[MMR_STORE_SECRET_SIZE];
    struct mmr_store_token_new in = {
        .org = "acme", .group = "g", .uses = 1, .expires_at = T0 + 1000, .created_by = "admin"};
    in.uses = 0;
    cr_expect_eq(mmr_store_token_create(s, &in, id, secret), MMR_EINVAL);
    in.uses = 1;
    in.expires_at = T0;
    cr_expect_eq(mmr_store_token_create(s, &in, id, secret), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "future") != NULL, "%s", mmr_err_msg());
    in.expires_at = T0 + 1000;
    in.org = "";
    cr_expect_eq(mmr_store_token_create(s, &in, id, secret), MMR_EINVAL);
    in.org = "acme";
    in.group = NULL;
    cr_expect_eq(mmr_store_token_create(s, &in, id, secret), MMR_EINVAL);
    char big[MMR_STORE_NAME_MAX + 2];
    memset(big, 'g', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    in.group = big;
    cr_expect_eq(mmr_store_token_create(s, &in, id, secret), MMR_ETOOBIG);
    in.group = "g";
    in.created_by = NULL;
    cr_expect_eq(mmr_store_token_create(s, &in, id, secret), MMR_EINVAL);
    cr_expect_str_eq(id, "");
    cr_expect_str_eq(secret, "");

    struct mmr_store_token *list;
    size_t n;
    cr_assert_eq(mmr_store_token_list(s, false, &list, &n), 0);
    cr_expect_eq(n, 0);
    mmr_store_token_free(list, n);
    mmr_store_close(s);
}

Test(store, token_check_gives_each_reason)
{
    struct mmr_store *s = open_store();
    struct tok t = make_token(s, "g", 1);
    enum mmr_store_refusal why = MMR_STORE_TOKEN_EXPIRED;

    cr_expect_eq(mmr_store_token_check(s, t.id, t.secret, &why), 0, "%s", mmr_err_msg());
    cr_expect_eq(why, MMR_STORE_ACCEPTED);
    cr_expect_eq(mmr_store_token_check(s, t.id, t.secret, NULL), 0);

    cr_expect_eq(mmr_store_token_check(s, "nosuchtok0", t.secret, &why), MMR_EPERM);
    cr_expect_eq(why, MMR_STORE_TOKEN_UNKNOWN);
    char wrong[MMR_STORE_SECRET_SIZE];
    memcpy(wrong, t.secret, sizeof(wrong));
    wrong[5] = wrong[5] == 'a' ? 'b' : 'a';
    cr_expect_eq(mmr_store_token_check(s, t.id, wrong, &why), MMR_EPERM);
    cr_expect_eq(why, MMR_STORE_TOKEN_UNKNOWN);
    cr_expect(strstr(mmr_err_msg(), wrong) == NULL, "no secret in messages");
    cr_expect_eq(mmr_store_token_check(s, t.id, "", &why), MMR_EINVAL);
    cr_expect_eq(mmr_store_token_check(s, NULL, t.secret, &why), MMR_EINVAL);

    /* Used up. */
    struct mmr_store_device d;
    enroll_ok(s, &t, "hw-1", "0a", &d);
    mmr_store_device_clear(&d);
    cr_expect_eq(mmr_store_token_check(s, t.id, t.secret, &why), MMR_EPERM);
    cr_expect_eq(why, MMR_STORE_TOKEN_USED_UP);
    cr_expect(strstr(mmr_err_msg(), "used up") != NULL, "%s", mmr_err_msg());

    /* Expired: one millisecond past expires_at. */
    struct tok t2 = make_token(s, "g", 5);
    fake_now = T0 + 7 * DAY_MS;
    cr_expect_eq(mmr_store_token_check(s, t2.id, t2.secret, &why), MMR_EPERM);
    cr_expect_eq(why, MMR_STORE_TOKEN_EXPIRED);
    cr_expect(strstr(mmr_err_msg(), "expired") != NULL, "%s", mmr_err_msg());
    fake_now = T0;

    /* Revoked comes before expired and used up. */
    cr_expect_eq(mmr_store_token_revoke(s, t.id, "admin"), 0);
    cr_expect_eq(mmr_store_token_check(s, t.id, t.secret, &why), MMR_EPERM);
    cr_expect_eq(why, MMR_STORE_TOKEN_REVOKED);
    cr_expect(strstr(mmr_err_msg(), "revoked") != NULL, "%s", mmr_err_msg());
    fake_now = T0 + 8 * DAY_MS;
    cr_expect_eq(mmr_store_token_check(s, t.id, t.secret, &why), MMR_EPERM);
    cr_expect_eq(why, MMR_STORE_TOKEN_REVOKED);

    cr_expect_str_eq(mmr_store_refusal_name(MMR_STORE_ACCEPTED), "accepted");
    cr_expect_str_eq(mmr_store_refusal_name(MMR_STORE_TOKEN_UNKNOWN), "token_unknown");
    cr_expect_str_eq(mmr_store_refusal_name(MMR_STORE_TOKEN_REVOKED), "token_revoked");
    cr_expect_str_eq(mmr_store_refusal_name(MMR_STORE_TOKEN_EXPIRED), "token_expired");
    cr_expect_str_eq(mmr_store_refusal_name(MMR_STORE_TOKEN_USED_UP), "token_used_up");
    cr_expect_str_eq(mmr_store_refusal_name(MMR_STORE_DEVICE_REVOKED), "device_revoked");
    cr_expect_str_eq(mmr_store_refusal_name((enum mmr_store_refusal)99), "unknown");
    mmr_store_close(s);
}

Test(store, token_revoke_and_active_list)
{
    struct mmr_store *s = open_store();
    struct tok a = make_token(s, "g", 1);
    struct tok b = make_token(s, "g", 1);
    struct tok c = make_token(s, "g", 1);
    cr_expect_eq(mmr_store_token_revoke(s, "nosuchtok0", "admin"), MMR_ENOENT);
    cr_expect_eq(mmr_store_token_revoke(s, a.id, NULL), MMR_EINVAL);
    cr_expect_eq(mmr_store_token_revoke(s, a.id, "admin"), 0);
    cr_expect_eq(mmr_store_token_revoke(s, a.id, "admin"), 0, "revoking again is a no-op");
    struct mmr_store_device d;
    enroll_ok(s, &b, "hw-b", "0b", &d);
    mmr_store_device_clear(&d);

    struct mmr_store_token *list;
    size_t n;
    cr_assert_eq(mmr_store_token_list(s, true, &list, &n), 0);
    cr_assert_eq(n, 1, "only c is active");
    cr_expect_str_eq(list[0].id, c.id);
    mmr_store_token_free(list, n);
    cr_assert_eq(mmr_store_token_list(s, false, &list, &n), 0);
    cr_expect_eq(n, 3);
    for (size_t i = 0; i < n; i++)
        if (strcmp(list[i].id, a.id) == 0)
            cr_expect_eq(list[i].revoked_at, T0);
    mmr_store_token_free(list, n);
    fake_now = T0 + 8 * DAY_MS;
    cr_assert_eq(mmr_store_token_list(s, true, &list, &n), 0);
    cr_expect_eq(n, 0, "c expired");
    mmr_store_token_free(list, n);

    struct mmr_store_audit *au;
    cr_assert_eq(mmr_store_audit_list(s, 0, 0, &au, &n), 0);
    size_t revokes = 0;
    for (size_t i = 0; i < n; i++)
        revokes += strcmp(au[i].action, "token.revoke") == 0;
    cr_expect_eq(revokes, 1, "one audit entry for the one real revocation");
    mmr_store_audit_free(au, n);
    mmr_store_close(s);
}

/* ---- enrollment ---------------------------------------------------------------- */

Test(store, enroll_new_device)
{
    struct mmr_store *s = open_store();
    struct tok t = make_token(s, "laptops", 2);
    char id[MMR_STORE_ID_SIZE];
    cr_assert_eq(mmr_store_device_id_for_hardware(s, "hw-1", id), 0);
    cr_expect_eq(strlen(id), 36);
    cr_expect_eq(id[14], '4', "a version 4 UUID: %s", id);
    char id2[MMR_STORE_ID_SIZE];
    cr_assert_eq(mmr_store_device_id_for_hardware(s, "hw-1", id2), 0);
    cr_expect_str_neq(id, id2, "nothing is reserved before the enrollment");

    struct mmr_store_device d;
    enroll_ok(s, &t, "hw-1", "00AbCdEf", &d);
    cr_expect_eq(strlen(d.id), 36);
    cr_expect_str_eq(d.hardware_id, "hw-1");
    cr_expect_str_eq(d.hostname, "laptop-1");
    cr_expect_str_eq(d.os, "Debian GNU/Linux 12");
    cr_expect_str_eq(d.agent_version, "0.1.0");
    cr_expect_str_eq(d.org, "acme");
    cr_expect_str_eq(d.group, "laptops");
    cr_expect_str_eq(d.cert_serial, "00abcdef", "serials are stored lower-case");
    cr_expect_eq(d.cert_not_after, T0 + 90 * DAY_MS);
    cr_expect_null(d.cert_pending);
    cr_expect_str_eq(d.token_id, t.id);
    cr_expect_eq(d.first_enrolled_at, T0);
    cr_expect_eq(d.enrolled_at, T0);
    cr_expect_eq(d.enrollments, 1);
    cr_expect_eq(d.last_checkin_at, 0);
    cr_expect_null(d.posture);
    cr_expect_eq(d.queue_depth, -1);
    cr_expect_eq(d.policy_version, -1);
    cr_expect_eq(d.revoked_at, 0);
    cr_expect_eq(d.event_ack, -1);

    cr_assert_eq(mmr_store_device_id_for_hardware(s, "hw-1", id), 0);
    cr_expect_str_eq(id, d.id, "the hardware now has its id");
    struct mmr_store_device g;
    cr_assert_eq(mmr_store_device_get(s, d.id, &g), 0);
    cr_expect_str_eq(g.hardware_id, "hw-1");
    mmr_store_device_clear(&g);
    cr_expect_eq(mmr_store_device_get(s, "00000000-0000-4000-8000-000000000000", &g), MMR_ENOENT);
    cr_expect_eq(mmr_store_device_get(s, "", &g), MMR_EINVAL);
    cr_expect_eq(token_uses(s, t.id), 1);

    struct mmr_store_audit *a;
    size_t n;
    cr_assert_eq(mmr_store_audit_list(s, 0, 1, &a, &n), 0);
    cr_assert_eq(n, 1);
    cr_expect_str_eq(a[0].action, "device.enroll");
    cr_expect_str_eq(a[0].target, d.id);
    char actor[64];
    snprintf(actor, sizeof(actor), "token:%s", t.id);
    cr_expect_str_eq(a[0].actor, actor);
    mmr_store_audit_free(a, n);
    mmr_store_device_clear(&d);
    mmr_store_close(s);
}

/* Every refusal and every error leaves the token's uses and the device table
 * as they were. */
Test(store, enroll_refusals_consume_nothing)
{
    struct mmr_store *s = open_store();
    struct tok t = make_token(s, "g", 2);
    struct mmr_store_device d;
    enum mmr_store_refusal why;

    struct tok bad = t;
    bad.secret[0] = bad.secret[0] == '0' ? '1' : '0';
    cr_expect_eq(enroll_as(s, &bad, "hw-1", "01", &d, &why), MMR_EPERM);
    cr_expect_eq(why, MMR_STORE_TOKEN_UNKNOWN);
    cr_expect_null(d.hardware_id, "out is cleared on failure");
    struct tok unknown = t;
    snprintf(unknown.id, sizeof(unknown.id), "zzzzzzzzzz");
    cr_expect_eq(enroll_as(s, &unknown, "hw-1", "01", &d, &why), MMR_EPERM);
    cr_expect_eq(why, MMR_STORE_TOKEN_UNKNOWN);

    /* Malformed input. */
    cr_expect_eq(enroll_as(s, &t, "hw-1", "xyz", &d, &why), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "hexadecimal") != NULL, "%s", mmr_err_msg());
    cr_expect_eq(enroll_as(s, &t, "hw-1", "", &d, &why), MMR_EINVAL);
    char long_serial[MMR_STORE_SERIAL_MAX + 2];
    memset(long_serial, 'a', sizeof(long_serial) - 1);
    long_serial[sizeof(long_serial) - 1] = '\0';
    cr_expect_eq(enroll_as(s, &t, "hw-1", long_serial, &d, &why), MMR_ETOOBIG);
    cr_expect_eq(enroll_as(s, &t, "", "01", &d, &why), MMR_EINVAL);
    char id[MMR_STORE_ID_SIZE];
    cr_assert_eq(mmr_store_device_id_for_hardware(s, "hw-1", id), 0);
    struct mmr_store_enroll in = {.token_id = t.id,
                                  .token_secret = t.secret,
                                  .device_id = id,
                                  .hardware_id = "hw-1",
                                  .hostname = "h",
                                  .os = "o",
                                  .agent_version = "v",
                                  .cert_serial = "01",
                                  .cert_not_after = T0};
    cr_expect_eq(mmr_store_device_enroll(s, &in, NULL, NULL), MMR_EINVAL, "expired cert");
    in.cert_not_after = T0 + DAY_MS;
    in.hostname = NULL;
    cr_expect_eq(mmr_store_device_enroll(s, &in, NULL, NULL), MMR_EINVAL);
    in.hostname = "h";
    in.device_id = NULL;
    cr_expect_eq(mmr_store_device_enroll(s, &in, NULL, NULL), MMR_EINVAL);
    in.device_id = id;
    cr_expect_eq(token_uses(s, t.id), 0);
    cr_expect_eq(count_devices(s), 0);

    /* A serial issued before. */
    enroll_ok(s, &t, "hw-1", "01", &d);
    mmr_store_device_clear(&d);
    cr_expect_eq(enroll_as(s, &t, "hw-2", "01", &d, &why), MMR_EEXIST);
    cr_expect_eq(token_uses(s, t.id), 1);
    cr_expect_eq(count_devices(s), 1);

    /* Expired, then used up. */
    fake_now = T0 + 7 * DAY_MS + 1;
    cr_expect_eq(enroll_as(s, &t, "hw-2", "02", &d, &why), MMR_EPERM);
    cr_expect_eq(why, MMR_STORE_TOKEN_EXPIRED);
    fake_now = T0;
    enroll_ok(s, &t, "hw-2", "02", &d);
    mmr_store_device_clear(&d);
    cr_expect_eq(enroll_as(s, &t, "hw-3", "03", &d, &why), MMR_EPERM);
    cr_expect_eq(why, MMR_STORE_TOKEN_USED_UP);
    cr_expect_eq(token_uses(s, t.id), 2);

    /* Revoked. */
    struct tok r = make_token(s, "g", 5);
    cr_assert_eq(mmr_store_token_revoke(s, r.id, "admin"), 0);
    cr_expect_eq(enroll_as(s, &r, "hw-3", "03", &d, &why), MMR_EPERM);
    cr_expect_eq(why, MMR_STORE_TOKEN_REVOKED);
    cr_expect_eq(token_uses(s, r.id), 0);
    cr_expect_eq(count_devices(s), 2);
    mmr_store_close(s);
}

Test(store, reenroll_replaces_and_keeps_the_id)
{
    struct mmr_store *s = open_store();
    struct tok t1 = make_token(s, "laptops", 1);
    struct tok t2 = make_token(s, "servers", 1);
    struct mmr_store_device d1, d2;
    enroll_ok(s, &t1, "hw-1", "a1", &d1);
    struct mmr_store_checkin c = {
        .posture = "{\"disk\":\"encrypted\"}", .queue_depth = 7, .policy_version = 3};
    cr_assert_eq(mmr_store_device_checkin(s, d1.id, &c), 0, "%s", mmr_err_msg());
    insert_range(s, d1.id, 0, 1, 10);

    fake_now = T0 + DAY_MS;
    enroll_ok(s, &t2, "hw-1", "a2", &d2);
    cr_expect_str_eq(d2.id, d1.id, "same hardware, same device id");
    cr_expect_str_eq(d2.group, "servers", "org and group come from the new token");
    cr_expect_str_eq(d2.cert_serial, "a2");
    cr_expect_eq(d2.enrollments, 2);
    cr_expect_eq(d2.first_enrolled_at, T0);
    cr_expect_eq(d2.enrolled_at, T0 + DAY_MS);
    cr_expect_str_eq(d2.token_id, t2.id);
    cr_expect_null(d2.posture, "the check-in summary described the old installation");
    cr_expect_eq(d2.queue_depth, -1);
    cr_expect_eq(d2.policy_version, -1);
    cr_expect_eq(d2.last_checkin_at, T0, "the last check-in time is history");
    cr_expect_eq(d2.event_ack, -1, "the new installation's seqs start again");
    cr_expect_eq(count_devices(s), 1);

    cr_expect_eq(serial_state(s, "a1"), MMR_STORE_CERT_REPLACED);
    cr_expect_eq(serial_state(s, "A2"), MMR_STORE_CERT_CURRENT);

    /* The reinstalled agent's seq 1..5 are new events, not duplicates. */
    struct mmr_store_events_result r = insert_range(s, d2.id, 0, 1, 5);
    cr_expect_eq(r.inserted, 5);
    cr_expect_eq(r.duplicates, 0);
    cr_expect_eq(r.ack, 5);
    cr_expect_eq(count_events(s, d2.id, NULL, -1), 15, "history is kept");

    struct mmr_store_cert *certs;
    size_t n;
    cr_assert_eq(mmr_store_device_certs(s, d2.id, &certs, &n), 0);
    cr_assert_eq(n, 2);
    cr_expect_str_eq(certs[0].serial, "a2");
    cr_expect_eq(certs[0].retired_at, 0);
    cr_expect_str_eq(certs[1].serial, "a1");
    cr_expect_eq(certs[1].retired_at, T0 + DAY_MS);
    mmr_store_cert_free(certs, n);
    mmr_store_device_clear(&d1);
    mmr_store_device_clear(&d2);
    mmr_store_close(s);
}

/* Two enrollments of the same new hardware race: the second finds its
 * device id no longer matches and must start over; it consumes nothing. */
Test(store, enroll_race_on_new_hardware)
{
    struct mmr_store *s = open_store();
    struct tok t = make_token(s, "g", 5);
    char id1[MMR_STORE_ID_SIZE], id2[MMR_STORE_ID_SIZE];
    cr_assert_eq(mmr_store_device_id_for_hardware(s, "hw-1", id1), 0);
    cr_assert_eq(mmr_store_device_id_for_hardware(s, "hw-1", id2), 0);
    struct mmr_store_enroll in = {.token_id = t.id,
                                  .token_secret = t.secret,
                                  .device_id = id1,
                                  .hardware_id = "hw-1",
                                  .hostname = "h",
                                  .os = "o",
                                  .agent_version = "v",
                                  .cert_serial = "01",
                                  .cert_not_after = T0 + DAY_MS};
    cr_assert_eq(mmr_store_device_enroll(s, &in, NULL, NULL), 0, "%s", mmr_err_msg());
    in.device_id = id2;
    in.cert_serial = "02";
    cr_expect_eq(mmr_store_device_enroll(s, &in, NULL, NULL), MMR_EBUSY);
    cr_expect(strstr(mmr_err_msg(), "start the enrollment over") != NULL, "%s", mmr_err_msg());
    cr_expect_eq(token_uses(s, t.id), 1);
    cr_expect_eq(serial_state(s, "02"), MMR_STORE_CERT_UNKNOWN);

    /* A device id of other hardware cannot be taken over. */
    in.hardware_id = "hw-2";
    in.device_id = id1;
    cr_expect_eq(mmr_store_device_enroll(s, &in, NULL, NULL), MMR_EEXIST);
    cr_expect_eq(token_uses(s, t.id), 1);
    mmr_store_close(s);
}

Test(store, revoked_device_cannot_reenroll_until_unrevoked)
{
    struct mmr_store *s = open_store();
    struct tok t = make_token(s, "g", 5);
    struct mmr_store_device d;
    enroll_ok(s, &t, "hw-1", "01", &d);
    cr_expect_eq(mmr_store_device_unrevoke(s, d.id, "admin"), MMR_EINVAL, "not revoked");
    fake_now = T0 + 10;
    cr_assert_eq(mmr_store_device_revoke(s, d.id, "alice"), 0);
    cr_assert_eq(mmr_store_device_revoke(s, d.id, "bob"), 0, "again: a no-op");
    cr_expect_eq(mmr_store_device_revoke(s, "nope", "alice"), MMR_ENOENT);
    cr_expect_eq(mmr_store_device_revoke(s, d.id, ""), MMR_EINVAL);

    struct mmr_store_device g;
    cr_assert_eq(mmr_store_device_get(s, d.id, &g), 0);
    cr_expect_eq(g.revoked_at, T0 + 10);
    cr_expect_str_eq(g.revoked_by, "alice", "the second revoke changed nothing");
    mmr_store_device_clear(&g);
    cr_expect_eq(serial_state(s, "01"), MMR_STORE_CERT_REVOKED);

    enum mmr_store_refusal why;
    struct mmr_store_device x;
    cr_expect_eq(enroll_as(s, &t, "hw-1", "02", &x, &why), MMR_EPERM);
    cr_expect_eq(why, MMR_STORE_DEVICE_REVOKED);
    cr_expect_eq(token_uses(s, t.id), 1);

    cr_assert_eq(mmr_store_device_unrevoke(s, d.id, "alice"), 0);
    cr_expect_eq(serial_state(s, "01"), MMR_STORE_CERT_REPLACED,
                 "the certificate held when revoked stays refused");
    enroll_ok(s, &t, "hw-1", "02", &x);
    cr_expect_str_eq(x.id, d.id);
    cr_expect_eq(x.revoked_at, 0);
    cr_expect_eq(serial_state(s, "02"), MMR_STORE_CERT_CURRENT);
    cr_expect_eq(serial_state(s, "01"), MMR_STORE_CERT_REPLACED);

    struct mmr_store_audit *a;
    size_t n;
    cr_assert_eq(mmr_store_audit_list(s, 0, 0, &a, &n), 0);
    const char *want[] = {"device.enroll", "device.unrevoke", "device.revoke", "device.enroll",
                          "token.create"};
    cr_assert_eq(n, 5);
    for (size_t i = 0; i < n; i++)
        cr_expect_str_eq(a[i].action, want[i]);
    mmr_store_audit_free(a, n);
    mmr_store_device_clear(&x);
    mmr_store_device_clear(&d);
    mmr_store_close(s);
}

/* Exactly `uses` of many concurrent enrollments with one token succeed. */
struct race_arg {
    struct mmr_store *s;
    const struct tok *t;
    int index;
    int rc;
    enum mmr_store_refusal why;
};

static void race_main(void *p)
{
    struct race_arg *a = p;
    char hw[32], serial[32];
    snprintf(hw, sizeof(hw), "hw-race-%d", a->index);
    snprintf(serial, sizeof(serial), "%04x", a->index + 1);
    struct mmr_store_device d;
    a->rc = enroll_as(a->s, a->t, hw, serial, &d, &a->why);
    if (a->rc == 0)
        mmr_store_device_clear(&d);
}

Test(store, token_consumption_race)
{
    struct mmr_store *s = open_store();
    struct tok t = make_token(s, "g", 5);
    enum { N = 16 };
    struct race_arg args[N];
    uv_thread_t th[N];
    for (int i = 0; i < N; i++) {
        args[i] = (struct race_arg){.s = s, .t = &t, .index = i};
        cr_assert_eq(uv_thread_create(&th[i], race_main, &args[i]), 0);
    }
    int ok = 0, used_up = 0;
    for (int i = 0; i < N; i++) {
        uv_thread_join(&th[i]);
        if (args[i].rc == 0)
            ok++;
        else if (args[i].rc == MMR_EPERM && args[i].why == MMR_STORE_TOKEN_USED_UP)
            used_up++;
    }
    cr_expect_eq(ok, 5);
    cr_expect_eq(used_up, N - 5);
    cr_expect_eq(token_uses(s, t.id), 5);
    cr_expect_eq(count_devices(s), 5);
    mmr_store_close(s);
}

/* ---- certificates at the handshake, renewal ------------------------------------------ */

Test(store, by_serial_states)
{
    struct mmr_store *s = open_store();
    struct tok t = make_token(s, "g", 5);
    struct mmr_store_device d;
    enroll_ok(s, &t, "hw-1", "0F", &d);
    enum mmr_store_cert_state st;
    struct mmr_store_device got;
    cr_assert_eq(mmr_store_device_by_serial(s, "0f", &got, &st), 0, "%s", mmr_err_msg());
    cr_expect_eq(st, MMR_STORE_CERT_CURRENT);
    cr_expect_str_eq(got.id, d.id);
    cr_expect_str_eq(got.group, "g");
    mmr_store_device_clear(&got);
    cr_expect_eq(mmr_store_device_by_serial(s, "0F", NULL, NULL), 0);

    cr_expect_eq(mmr_store_device_by_serial(s, "ff", &got, &st), MMR_ENOENT);
    cr_expect_eq(st, MMR_STORE_CERT_UNKNOWN);
    cr_expect_null(got.hardware_id);
    cr_expect_eq(mmr_store_device_by_serial(s, "0g", &got, &st), MMR_EINVAL);
    cr_expect_eq(mmr_store_device_by_serial(s, "01:02", &got, &st), MMR_EINVAL);
    cr_expect_eq(mmr_store_device_by_serial(s, NULL, &got, &st), MMR_EINVAL);

    fake_now = T0 + 90 * DAY_MS;
    cr_expect_eq(mmr_store_device_by_serial(s, "0f", &got, &st), MMR_EPERM);
    cr_expect_eq(st, MMR_STORE_CERT_EXPIRED);
    cr_expect(strstr(mmr_err_msg(), "expired") != NULL, "%s", mmr_err_msg());
    fake_now = T0;

    cr_assert_eq(mmr_store_device_revoke(s, d.id, "admin"), 0);
    cr_expect_eq(mmr_store_device_by_serial(s, "0f", &got, &st), MMR_EPERM);
    cr_expect_eq(st, MMR_STORE_CERT_REVOKED);
    cr_expect(strstr(mmr_err_msg(), "revoked") != NULL, "%s", mmr_err_msg());

    cr_expect_str_eq(mmr_store_cert_state_name(MMR_STORE_CERT_UNKNOWN), "unknown");
    cr_expect_str_eq(mmr_store_cert_state_name(MMR_STORE_CERT_CURRENT), "current");
    cr_expect_str_eq(mmr_store_cert_state_name(MMR_STORE_CERT_REPLACED), "replaced");
    cr_expect_str_eq(mmr_store_cert_state_name(MMR_STORE_CERT_EXPIRED), "expired");
    cr_expect_str_eq(mmr_store_cert_state_name(MMR_STORE_CERT_REVOKED), "revoked");
    cr_expect_str_eq(mmr_store_cert_state_name((enum mmr_store_cert_state)42), "unknown");
    mmr_store_device_clear(&d);
    mmr_store_close(s);
}

Test(store, renew_keeps_the_old_cert_until_the_new_one_is_used)
{
    struct mmr_store *s = open_store();
    struct tok t = make_token(s, "g", 5);
    struct mmr_store_device d;
    enroll_ok(s, &t, "hw-1", "10", &d);
    int64_t na = T0 + 180 * DAY_MS;

    cr_assert_eq(mmr_store_device_renew(s, d.id, "10", "11", na), 0, "%s", mmr_err_msg());
    struct mmr_store_device g;
    cr_assert_eq(mmr_store_device_get(s, d.id, &g), 0);
    cr_expect_str_eq(g.cert_serial, "10");
    cr_expect_str_eq(g.cert_pending, "11");
    mmr_store_device_clear(&g);
    cr_expect_eq(serial_state(s, "10"), MMR_STORE_CERT_CURRENT, "reply lost: still usable");

    /* The reply was lost; the agent renews again with its old certificate. */
    cr_assert_eq(mmr_store_device_renew(s, d.id, "10", "12", na), 0, "%s", mmr_err_msg());
    cr_expect_eq(serial_state(s, "11"), MMR_STORE_CERT_REPLACED, "never delivered: retired");
    cr_expect_eq(serial_state(s, "10"), MMR_STORE_CERT_CURRENT);

    /* First handshake with the new certificate promotes it. */
    enum mmr_store_cert_state st;
    cr_assert_eq(mmr_store_device_by_serial(s, "12", &g, &st), 0, "%s", mmr_err_msg());
    cr_expect_eq(st, MMR_STORE_CERT_CURRENT);
    cr_expect_str_eq(g.cert_serial, "12");
    cr_expect_null(g.cert_pending);
    cr_expect_eq(g.cert_not_after, na);
    mmr_store_device_clear(&g);
    cr_expect_eq(serial_state(s, "12"), MMR_STORE_CERT_CURRENT);
    cr_expect_eq(serial_state(s, "10"), MMR_STORE_CERT_REPLACED, "the old one is refused now");

    /* Refusals. */
    cr_expect_eq(mmr_store_device_renew(s, d.id, "10", "13", na), MMR_EPERM);
    cr_expect(strstr(mmr_err_msg(), "not the current") != NULL, "%s", mmr_err_msg());
    cr_expect_eq(mmr_store_device_renew(s, d.id, "12", "10", na), MMR_EEXIST, "serial reuse");
    cr_expect_eq(mmr_store_device_renew(s, d.id, "12", "13", T0), MMR_EINVAL, "expired");
    cr_expect_eq(mmr_store_device_renew(s, d.id, "12", "zz", na), MMR_EINVAL);
    cr_expect_eq(mmr_store_device_renew(s, "nope", "12", "13", na), MMR_ENOENT);
    cr_assert_eq(mmr_store_device_revoke(s, d.id, "admin"), 0);
    cr_expect_eq(mmr_store_device_renew(s, d.id, "12", "13", na), MMR_EPERM);
    cr_expect(strstr(mmr_err_msg(), "revoked") != NULL, "%s", mmr_err_msg());

    struct mmr_store_cert *certs;
    size_t n;
    cr_assert_eq(mmr_store_device_certs(s, d.id, &certs, &n), 0);
    cr_expect_eq(n, 3);
    mmr_store_cert_free(certs, n);
    cr_expect_eq(mmr_store_device_certs(s, "nope", &certs, &n), MMR_ENOENT);
    mmr_store_device_clear(&d);
    mmr_store_close(s);
}

/* A pending certificate used after the device was revoked is not promoted. */
Test(store, pending_cert_of_a_revoked_device)
{
    struct mmr_store *s = open_store();
    struct tok t = make_token(s, "g", 5);
    struct mmr_store_device d;
    enroll_ok(s, &t, "hw-1", "20", &d);
    cr_assert_eq(mmr_store_device_renew(s, d.id, "20", "21", T0 + DAY_MS), 0);
    cr_assert_eq(mmr_store_device_revoke(s, d.id, "admin"), 0);
    cr_expect_eq(serial_state(s, "21"), MMR_STORE_CERT_REVOKED);
    cr_assert_eq(mmr_store_device_unrevoke(s, d.id, "admin"), 0);
    cr_expect_eq(serial_state(s, "21"), MMR_STORE_CERT_REPLACED);
    cr_expect_eq(serial_state(s, "20"), MMR_STORE_CERT_REPLACED);
    mmr_store_device_clear(&d);
    mmr_store_close(s);
}

/* ---- check-ins and device lists ---------------------------------------------------- */

Test(store, checkin_updates_and_keeps)
{
    struct mmr_store *s = open_store();
    struct tok t = make_token(s, "g", 5);
    struct mmr_store_device d, g;
    enroll_ok(s, &t, "hw-1", "01", &d);
    fake_now = T0 + 60000;
    struct mmr_store_checkin c = {.posture = "{\"fw\":true}",
                                  .queue_depth = 12,
                                  .policy_version = 2,
                                  .agent_version = "0.2.0"};
    cr_assert_eq(mmr_store_device_checkin(s, d.id, &c), 0, "%s", mmr_err_msg());
    cr_assert_eq(mmr_store_device_get(s, d.id, &g), 0);
    cr_expect_eq(g.last_checkin_at, T0 + 60000);
    cr_expect_str_eq(g.posture, "{\"fw\":true}");
    cr_expect_eq(g.queue_depth, 12);
    cr_expect_eq(g.policy_version, 2);
    cr_expect_str_eq(g.agent_version, "0.2.0");
    cr_expect_str_eq(g.hostname, "laptop-1");
    mmr_store_device_clear(&g);

    /* Absent fields keep their values; zero is a value. */
    fake_now = T0 + 120000;
    struct mmr_store_checkin c2 = {.queue_depth = 0, .policy_version = -1, .hostname = "renamed"};
    cr_assert_eq(mmr_store_device_checkin(s, d.id, &c2), 0, "%s", mmr_err_msg());
    cr_assert_eq(mmr_store_device_get(s, d.id, &g), 0);
    cr_expect_eq(g.last_checkin_at, T0 + 120000);
    cr_expect_str_eq(g.posture, "{\"fw\":true}");
    cr_expect_eq(g.queue_depth, 0);
    cr_expect_eq(g.policy_version, 2);
    cr_expect_str_eq(g.hostname, "renamed");
    mmr_store_device_clear(&g);

    struct mmr_store_checkin none = {.queue_depth = -1, .policy_version = -1};
    cr_expect_eq(mmr_store_device_checkin(s, "nope", &none), MMR_ENOENT);
    cr_expect_eq(mmr_store_device_checkin(s, "", &none), MMR_EINVAL);
    char *big = mmr_malloc(MMR_STORE_POSTURE_MAX + 2);
    memset(big, ' ', MMR_STORE_POSTURE_MAX + 1);
    big[MMR_STORE_POSTURE_MAX + 1] = '\0';
    struct mmr_store_checkin huge = {.posture = big, .queue_depth = -1, .policy_version = -1};
    cr_expect_eq(mmr_store_device_checkin(s, d.id, &huge), MMR_ETOOBIG);
    free(big);
    cr_assert_eq(mmr_store_device_revoke(s, d.id, "admin"), 0);
    cr_expect_eq(mmr_store_device_checkin(s, d.id, &none), MMR_EPERM);
    mmr_store_device_clear(&d);
    mmr_store_close(s);
}

Test(store, device_list_filters_pages_and_counts)
{
    struct mmr_store *s = open_store();
    struct tok ta = make_token(s, "alpha", 100);
    struct tok tb = make_token(s, "beta", 100);
    char hw[32], serial[32], first_alpha[MMR_STORE_ID_SIZE] = "";
    for (int i = 0; i < 25; i++) {
        struct mmr_store_device d;
        snprintf(hw, sizeof(hw), "hw-%d", i);
        snprintf(serial, sizeof(serial), "%x", 0x100 + i);
        enroll_ok(s, i % 5 == 0 ? &tb : &ta, hw, serial, &d);
        if (i == 1)
            snprintf(first_alpha, sizeof(first_alpha), "%s", d.id);
        if (i % 2 == 0) {
            struct mmr_store_checkin c = {.queue_depth = i, .policy_version = -1};
            cr_assert_eq(mmr_store_device_checkin(s, d.id, &c), 0);
        }
        if (i == 3 || i == 10)
            cr_assert_eq(mmr_store_device_revoke(s, d.id, "admin"), 0);
        mmr_store_device_clear(&d);
        fake_now += 1000;
    }
    cr_expect_eq(count_devices(s), 25);

    struct mmr_store_device_query q = {.group = "alpha", .limit = 7};
    struct mmr_store_device *list;
    size_t n;
    int64_t total;
    cr_assert_eq(mmr_store_device_list(s, &q, &list, &n, &total), 0, "%s", mmr_err_msg());
    cr_expect_eq(total, 20);
    cr_assert_eq(n, 7);
    cr_expect_str_eq(list[0].id, first_alpha, "enrollment order");
    for (size_t i = 0; i < n; i++)
        cr_expect_str_eq(list[i].group, "alpha");
    mmr_store_device_free(list, n);
    q.offset = 14;
    cr_assert_eq(mmr_store_device_list(s, &q, &list, &n, NULL), 0);
    cr_expect_eq(n, 6, "the last page");
    mmr_store_device_free(list, n);
    q.offset = 100;
    cr_assert_eq(mmr_store_device_list(s, &q, &list, &n, &total), 0);
    cr_expect_eq(n, 0);
    cr_expect_eq(total, 20);
    mmr_store_device_free(list, n);

    int64_t cnt;
    struct mmr_store_device_query r = {.revoked = MMR_STORE_REVOKED_ONLY};
    cr_assert_eq(mmr_store_device_count(s, &r, &cnt), 0);
    cr_expect_eq(cnt, 2);
    r.revoked = MMR_STORE_REVOKED_EXCLUDE;
    r.group = "beta";
    cr_assert_eq(mmr_store_device_count(s, &r, &cnt), 0);
    cr_expect_eq(cnt, 4, "beta: 0 5 15 20 (10 is revoked)");
    struct mmr_store_device_query seen = {.seen_since = T0, .org = "acme"};
    cr_assert_eq(mmr_store_device_count(s, &seen, &cnt), 0);
    cr_expect_eq(cnt, 13, "the even ones checked in");
    struct mmr_store_device_query none = {.org = "other"};
    cr_assert_eq(mmr_store_device_count(s, &none, &cnt), 0);
    cr_expect_eq(cnt, 0);

    cr_assert_eq(mmr_store_device_list(s, NULL, &list, &n, &total), 0);
    cr_expect_eq(n, 25);
    cr_expect_eq(total, 25);
    mmr_store_device_free(list, n);
    struct mmr_store_device_query bad = {.group = ""};
    cr_expect_eq(mmr_store_device_list(s, &bad, &list, &n, &total), MMR_EINVAL);
    cr_expect_null(list);
    cr_expect_eq(mmr_store_device_count(s, &bad, &cnt), MMR_EINVAL);
    mmr_store_close(s);
}

/* ---- events ------------------------------------------------------------------------------ */

static void enroll_one(struct mmr_store *s, const char *hw, const char *serial,
                       struct mmr_store_device *d)
{
    struct tok t = make_token(s, "g", 1);
    enroll_ok(s, &t, hw, serial, d);
}

/* The brief's sequence, with no claim from the agent (after < 0). */
Test(store, events_dedupe_and_contiguous_ack)
{
    struct mmr_store *s = open_store();
    struct mmr_store_device d;
    enroll_one(s, "hw-1", "01", &d);
    struct mmr_store_events_result r = insert_range(s, d.id, -1, 1, 5);
    cr_expect_eq(r.ack, 5);
    cr_expect_eq(r.inserted, 5);
    cr_expect_eq(r.duplicates, 0);
    r = insert_range(s, d.id, -1, 4, 8);
    cr_expect_eq(r.ack, 8);
    cr_expect_eq(r.inserted, 3);
    cr_expect_eq(r.duplicates, 2);
    r = insert_range(s, d.id, -1, 10, 12);
    cr_expect_eq(r.ack, 8, "9 is missing");
    cr_expect_eq(r.inserted, 3);
    r = insert_range(s, d.id, -1, 10, 12);
    cr_expect_eq(r.ack, 8);
    cr_expect_eq(r.inserted, 0);
    cr_expect_eq(r.duplicates, 3, "stored above the ack: still found as duplicates");
    r = insert_range(s, d.id, -1, 9, 9);
    cr_expect_eq(r.ack, 12, "the gap filled, the ack moves over 10..12");
    cr_expect_eq(r.inserted, 1);
    cr_expect_eq(count_events(s, d.id, NULL, -1), 12, "exactly once");
    cr_expect_eq(count_events(s, NULL, NULL, -1), 12);

    /* Duplicates inside one batch, out of order. */
    struct mmr_store_event_in *ev = make_events(13, 4, "agent.health", 0);
    ev[1].seq = 16;
    ev[2].seq = 13;
    ev[3].seq = 14; /* 13, 16, 13, 14 */
    cr_assert_eq(mmr_store_events_insert(s, d.id, -1, ev, 4, &r), 0, "%s", mmr_err_msg());
    cr_expect_eq(r.inserted, 3);
    cr_expect_eq(r.duplicates, 1);
    cr_expect_eq(r.ack, 14);
    free(ev);

    /* An empty batch reports the ack. */
    cr_assert_eq(mmr_store_events_insert(s, d.id, -1, NULL, 0, &r), 0);
    cr_expect_eq(r.ack, 14);
    cr_expect_eq(r.inserted, 0);
    struct mmr_store_device g;
    cr_assert_eq(mmr_store_device_get(s, d.id, &g), 0);
    cr_expect_eq(g.event_ack, 14);
    mmr_store_device_clear(&g);
    mmr_store_device_clear(&d);
    mmr_store_close(s);
}

/* The agent's claim `after`: it holds nothing else in (after, last]. */
Test(store, events_after_settles_dropped_seqs)
{
    struct mmr_store *s = open_store();
    struct mmr_store_device d;
    enroll_one(s, "hw-1", "01", &d);
    struct mmr_store_events_result r;

    /* Nothing before the first batch, with no claim: starts at its lowest. */
    struct mmr_store_device d2;
    enroll_one(s, "hw-2", "02", &d2);
    r = insert_range(s, d2.id, -1, 5, 7);
    cr_expect_eq(r.ack, 7, "the first seq seen - 1 starts the ack");
    mmr_store_device_clear(&d2);

    /* The queue dropped 1..4 before the first upload: after = 0 says so. */
    r = insert_range(s, d.id, 0, 5, 7);
    cr_expect_eq(r.ack, 7);

    /* Holes in the middle (Low events dropped among kept High ones). */
    struct mmr_store_event_in *ev = make_events(8, 4, "scan.detection", 2);
    ev[1].seq = 10;
    ev[2].seq = 13;
    ev[3].seq = 14; /* 8, 10, 13, 14: 9, 11, 12 are gone */
    cr_assert_eq(mmr_store_events_insert(s, d.id, 7, ev, 4, &r), 0, "%s", mmr_err_msg());
    cr_expect_eq(r.ack, 14);
    free(ev);

    /* A Critical event sent ahead of the queue: 15..19 are still queued. */
    ev = make_events(20, 1, "scan.detection", 3);
    cr_assert_eq(mmr_store_events_insert(s, d.id, 19, ev, 1, &r), 0, "%s", mmr_err_msg());
    cr_expect_eq(r.ack, 14, "15..19 are still to come");
    free(ev);
    r = insert_range(s, d.id, 14, 15, 17);
    cr_expect_eq(r.ack, 17);
    /* 18 was dropped meanwhile; the next head-of-queue batch says so. */
    r = insert_range(s, d.id, 17, 19, 19);
    cr_expect_eq(r.ack, 20, "19 settled, then 20 was stored already");

    /* A stale resend of an old batch changes nothing. */
    r = insert_range(s, d.id, 0, 5, 7);
    cr_expect_eq(r.ack, 20);
    cr_expect_eq(r.duplicates, 3);
    cr_expect_eq(r.inserted, 0);
    cr_expect_eq(count_events(s, d.id, NULL, -1), 3 + 4 + 1 + 3 + 1);

    /* A claim that contradicts the batch is malformed. */
    ev = make_events(21, 2, "scan.detection", 1);
    cr_expect_eq(mmr_store_events_insert(s, d.id, 21, ev, 2, &r), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "after") != NULL, "%s", mmr_err_msg());
    free(ev);
    mmr_store_device_clear(&d);
    mmr_store_close(s);
}

Test(store, events_refusals_store_nothing)
{
    struct mmr_store *s = open_store();
    struct mmr_store_device d;
    enroll_one(s, "hw-1", "01", &d);
    struct mmr_store_events_result r;
    struct mmr_store_event_in *ev = make_events(1, 3, "scan.detection", 1);

    ev[2].severity = 4;
    cr_expect_eq(mmr_store_events_insert(s, d.id, -1, ev, 3, &r), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "severity") != NULL, "%s", mmr_err_msg());
    ev[2].severity = -1;
    cr_expect_eq(mmr_store_events_insert(s, d.id, -1, ev, 3, &r), MMR_EINVAL);
    ev[2].severity = 1;
    ev[1].type = "bad type";
    cr_expect_eq(mmr_store_events_insert(s, d.id, -1, ev, 3, &r), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "event 1") != NULL, "%s", mmr_err_msg());
    ev[1].type = "";
    cr_expect_eq(mmr_store_events_insert(s, d.id, -1, ev, 3, &r), MMR_EINVAL);
    ev[1].type = "scan.detection";
    ev[0].seq = 0;
    cr_expect_eq(mmr_store_events_insert(s, d.id, -1, ev, 3, &r), MMR_EINVAL);
    ev[0].seq = INT64_MAX;
    cr_expect_eq(mmr_store_events_insert(s, d.id, -1, ev, 3, &r), MMR_EINVAL);
    ev[0].seq = 1;
    ev[0].data = NULL;
    cr_expect_eq(mmr_store_events_insert(s, d.id, -1, ev, 3, &r), MMR_EINVAL);
    ev[0].data = "{}";
    cr_expect_eq(mmr_store_events_insert(s, d.id, -1, ev, MMR_STORE_EVENTS_MAX + 1, &r),
                 MMR_ETOOBIG);
    cr_expect_eq(mmr_store_events_insert(s, "nope", -1, ev, 3, &r), MMR_ENOENT);
    cr_expect_eq(mmr_store_events_insert(s, "nope", -1, ev, 0, &r), MMR_ENOENT);
    cr_expect_eq(mmr_store_events_insert(s, NULL, -1, ev, 3, &r), MMR_EINVAL);
    cr_expect_eq(count_events(s, NULL, NULL, -1), 0);

    cr_assert_eq(mmr_store_events_insert(s, d.id, -1, ev, 3, &r), 0, "%s", mmr_err_msg());
    cr_expect_eq(r.ack, 3);
    cr_assert_eq(mmr_store_device_revoke(s, d.id, "admin"), 0);
    ev[0].seq = 4;
    cr_expect_eq(mmr_store_events_insert(s, d.id, -1, ev, 1, &r), MMR_EPERM);
    cr_expect_eq(mmr_store_events_insert(s, d.id, -1, ev, 0, &r), MMR_EPERM);
    cr_expect_eq(count_events(s, NULL, NULL, -1), 3);
    free(ev);
    mmr_store_device_clear(&d);
    mmr_store_close(s);
}

Test(store, events_recent_and_counts)
{
    struct mmr_store *s = open_store();
    struct mmr_store_device a, b;
    enroll_one(s, "hw-a", "0a", &a);
    enroll_one(s, "hw-b", "0b", &b);
    struct mmr_store_event_in ev[6] = {
        {1, "agent.selftest", 0, T0 + 1, "{\"n\":1}"}, {2, "agent.selftest", 0, T0 + 2, "{}"},
        {3, "scan.detection", 3, T0 + 3, "{}"},        {4, "agent.selftest", 1, T0 + 4, "{}"},
        {5, "devctl.decision", 2, T0 + 5, "{}"},       {6, "agent.selftest", 0, T0 + 6, "{}"},
    };
    struct mmr_store_events_result r;
    cr_assert_eq(mmr_store_events_insert(s, a.id, 0, ev, 6, &r), 0, "%s", mmr_err_msg());
    cr_assert_eq(mmr_store_events_insert(s, b.id, 0, ev, 3, &r), 0, "%s", mmr_err_msg());

    cr_expect_eq(count_events(s, a.id, "agent.selftest", -1), 4);
    cr_expect_eq(count_events(s, b.id, "agent.selftest", -1), 2);
    cr_expect_eq(count_events(s, NULL, "agent.selftest", -1), 6);
    cr_expect_eq(count_events(s, a.id, "agent.selftest", 0), 3);
    cr_expect_eq(count_events(s, NULL, NULL, 3), 2);
    cr_expect_eq(count_events(s, a.id, "no.such", -1), 0);
    cr_expect_eq(mmr_store_events_count(s, NULL, &r.ack), 0);
    cr_expect_eq(r.ack, 9);
    int64_t n64;
    struct mmr_store_event_filter bad = {.device_id = "nope", .severity = -1};
    cr_expect_eq(mmr_store_events_count(s, &bad, &n64), MMR_ENOENT);
    bad = (struct mmr_store_event_filter){.severity = 4};
    cr_expect_eq(mmr_store_events_count(s, &bad, &n64), MMR_EINVAL);

    int64_t sev[MMR_STORE_SEVERITIES];
    cr_assert_eq(mmr_store_events_count_by_severity(s, NULL, sev), 0);
    cr_expect_eq(sev[0], 5);
    cr_expect_eq(sev[1], 1);
    cr_expect_eq(sev[2], 1);
    cr_expect_eq(sev[3], 2);
    cr_assert_eq(mmr_store_events_count_by_severity(s, b.id, sev), 0);
    cr_expect_eq(sev[0], 2);
    cr_expect_eq(sev[1], 0);
    cr_expect_eq(sev[3], 1);
    cr_expect_eq(mmr_store_events_count_by_severity(s, "nope", sev), MMR_ENOENT);

    struct mmr_store_type_count *tc;
    size_t n;
    cr_assert_eq(mmr_store_events_count_by_type(s, a.id, &tc, &n), 0);
    cr_assert_eq(n, 3);
    cr_expect_str_eq(tc[0].type, "agent.selftest");
    cr_expect_eq(tc[0].count, 4);
    cr_expect_str_eq(tc[1].type, "devctl.decision");
    cr_expect_str_eq(tc[2].type, "scan.detection");
    mmr_store_type_count_free(tc, n);
    cr_assert_eq(mmr_store_events_count_by_type(s, NULL, &tc, &n), 0);
    cr_expect_eq(n, 3);
    cr_expect_eq(tc[0].count, 6);
    mmr_store_type_count_free(tc, n);

    struct mmr_store_event *e;
    cr_assert_eq(mmr_store_events_recent(s, a.id, 4, &e, &n), 0, "%s", mmr_err_msg());
    cr_assert_eq(n, 4);
    cr_expect_eq(e[0].seq, 6);
    cr_expect_eq(e[3].seq, 3);
    cr_expect_str_eq(e[3].type, "scan.detection");
    cr_expect_eq(e[3].severity, 3);
    cr_expect_eq(e[3].time, T0 + 3);
    cr_expect_str_eq(e[3].data, "{}");
    cr_expect_eq(e[3].received_at, T0);
    mmr_store_event_free(e, n);
    cr_assert_eq(mmr_store_events_recent(s, a.id, 0, &e, &n), 0);
    cr_expect_eq(n, 6);
    cr_expect_str_eq(e[5].data, "{\"n\":1}");
    mmr_store_event_free(e, n);
    cr_expect_eq(mmr_store_events_recent(s, "nope", 0, &e, &n), MMR_ENOENT);
    cr_expect_null(e);
    mmr_store_device_clear(&a);
    mmr_store_device_clear(&b);
    mmr_store_close(s);
}

/* Batches from several threads for different devices, with resends: every
 * event stored once, every ack exact, the group commit shared. */
struct ev_thread {
    struct mmr_store *s;
    char device[MMR_STORE_ID_SIZE];
    int batches;
    int per_batch;
    int failures;
    int64_t last_ack;
    char msg[256];
};

static void ev_thread_main(void *p)
{
    struct ev_thread *t = p;
    int64_t next = 1;
    for (int b = 0; b < t->batches; b++) {
        /* Every third batch resends the previous one's tail first. */
        int64_t first = b % 3 == 2 ? next - 5 : next;
        size_t n = (size_t)(next + t->per_batch - first);
        struct mmr_store_event_in *ev = make_events(first, n, b % 2 ? "agent.health" : "x", b % 4);
        struct mmr_store_events_result r;
        int rc = mmr_store_events_insert(t->s, t->device, first - 1, ev, n, &r);
        free(ev);
        if (rc < 0) {
            t->failures++;
            snprintf(t->msg, sizeof(t->msg), "%s", mmr_err_msg());
            continue;
        }
        next += t->per_batch;
        t->last_ack = r.ack;
    }
}

static void concurrent_inserts(int readers)
{
    struct mmr_store *s = open_with(readers, NULL);
    enum { N = 4, BATCHES = 30, PER = 50 };
    struct ev_thread t[N];
    uv_thread_t th[N];
    for (int i = 0; i < N; i++) {
        char hw[16], serial[16];
        snprintf(hw, sizeof(hw), "hw-%d", i);
        snprintf(serial, sizeof(serial), "%x", i + 1);
        struct mmr_store_device d;
        enroll_one(s, hw, serial, &d);
        t[i] = (struct ev_thread){.s = s, .batches = BATCHES, .per_batch = PER};
        snprintf(t[i].device, sizeof(t[i].device), "%s", d.id);
        mmr_store_device_clear(&d);
    }
    for (int i = 0; i < N; i++)
        cr_assert_eq(uv_thread_create(&th[i], ev_thread_main, &t[i]), 0);
    /* Readers at the same time: counts only ever grow. */
    int64_t prev = 0;
    for (int k = 0; k < 50; k++) {
        int64_t c = count_events(s, NULL, NULL, -1);
        cr_expect_geq(c, prev);
        prev = c;
    }
    for (int i = 0; i < N; i++)
        uv_thread_join(&th[i]);
    for (int i = 0; i < N; i++) {
        cr_expect_eq(t[i].failures, 0, "%s", t[i].msg);
        cr_expect_eq(t[i].last_ack, BATCHES * PER);
        cr_expect_eq(count_events(s, t[i].device, NULL, -1), BATCHES * PER);
    }
    cr_expect_eq(count_events(s, NULL, NULL, -1), N * BATCHES * PER);
    int64_t sev[MMR_STORE_SEVERITIES];
    cr_assert_eq(mmr_store_events_count_by_severity(s, NULL, sev), 0);
    cr_expect_eq(sev[0] + sev[1] + sev[2] + sev[3], N * BATCHES * PER);
    char buf[64];
    cr_expect_eq(mmr_store_check(s, true, buf, sizeof(buf)), 0, "%s", buf);
    mmr_store_close(s);
}

Test(store, concurrent_event_batches)
{
    concurrent_inserts(0);
}

Test(store, concurrent_event_batches_single_connection)
{
    concurrent_inserts(-1);
}

/* In one group commit, a batch that fails (unknown device) is undone alone. */
struct one_insert {
    struct mmr_store *s;
    const char *device;
    int64_t first;
    int rc;
};

static void one_insert_main(void *p)
{
    struct one_insert *o = p;
    struct mmr_store_event_in *ev = make_events(o->first, 200, "x", 1);
    struct mmr_store_events_result r;
    for (int i = 0; i < 20; i++) {
        int rc = mmr_store_events_insert(o->s, o->device, -1, ev, 200, &r);
        if (rc < 0)
            o->rc = rc;
        for (int k = 0; k < 200; k++)
            ev[k].seq += 200;
    }
    free(ev);
}

Test(store, group_commit_isolates_failures)
{
    struct mmr_store *s = open_store();
    struct mmr_store_device d;
    enroll_one(s, "hw-1", "01", &d);
    struct one_insert good = {.s = s, .device = d.id, .first = 1};
    struct one_insert bad = {.s = s, .device = "no-such-device", .first = 1};
    uv_thread_t a, b;
    cr_assert_eq(uv_thread_create(&a, one_insert_main, &good), 0);
    cr_assert_eq(uv_thread_create(&b, one_insert_main, &bad), 0);
    uv_thread_join(&a);
    uv_thread_join(&b);
    cr_expect_eq(good.rc, 0);
    cr_expect_eq(bad.rc, MMR_ENOENT);
    cr_expect_eq(count_events(s, d.id, NULL, -1), 4000);
    mmr_store_device_clear(&d);
    mmr_store_close(s);
}

/* Handshake checks race revocations: after revoke returns, every check
 * refuses. */
struct checker {
    struct mmr_store *s;
    volatile int stop;
    int errors;
    volatile long checks;
};

/* Until every checker has run at least once, so that they truly race. */
static void checkers_started(struct checker *c, int n)
{
    for (int i = 0; i < n; i++)
        while (c[i].checks == 0)
            uv_sleep(1);
}

static void checker_main(void *p)
{
    struct checker *c = p;
    while (!c->stop) {
        enum mmr_store_cert_state st;
        int rc = mmr_store_device_by_serial(c->s, "0100", NULL, &st);
        if (rc < 0 && rc != MMR_EPERM)
            c->errors++;
        c->checks++;
    }
}

Test(store, revoke_is_seen_by_every_reader)
{
    struct mmr_store *s = open_store();
    struct mmr_store_device d;
    enroll_one(s, "hw-1", "0100", &d);
    struct checker c[3] = {{.s = s}, {.s = s}, {.s = s}};
    uv_thread_t th[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(uv_thread_create(&th[i], checker_main, &c[i]), 0);
    checkers_started(c, 3);
    struct mmr_store_checkin ci = {.queue_depth = 1, .policy_version = 1};
    for (int i = 0; i < 200; i++)
        cr_assert_eq(mmr_store_device_checkin(s, d.id, &ci), 0, "%s", mmr_err_msg());
    cr_assert_eq(mmr_store_device_revoke(s, d.id, "admin"), 0);
    /* Every reader connection, each in turn. */
    for (int i = 0; i < 50; i++) {
        enum mmr_store_cert_state st;
        cr_expect_eq(mmr_store_device_by_serial(s, "0100", NULL, &st), MMR_EPERM);
        cr_expect_eq(st, MMR_STORE_CERT_REVOKED);
    }
    for (int i = 0; i < 3; i++) {
        c[i].stop = 1;
        uv_thread_join(&th[i]);
        cr_expect_eq(c[i].errors, 0);
        cr_expect_gt(c[i].checks, 0);
    }
    mmr_store_device_clear(&d);
    mmr_store_close(s);
}

/* ---- policies --------------------------------------------------------------------------- */

Test(store, policy_publish_history_and_rollback)
{
    struct mmr_store *s = open_store();
    int64_t v = -1;
    struct mmr_store_policy p;
    cr_expect_eq(mmr_store_policy_active(s, "laptops", &p), MMR_ENOENT);
    cr_expect_null(p.document);
    cr_assert_eq(mmr_store_policy_active_version(s, "laptops", &v), 0);
    cr_expect_eq(v, 0);
    cr_assert_eq(mmr_store_policy_latest_version(s, "laptops", &v), 0);
    cr_expect_eq(v, 0);

    v = 0;
    cr_assert_eq(mmr_store_policy_publish(s, "laptops", &v, "{\"v\":1}", "c2lnMQ==", "alice"), 0,
                 "%s", mmr_err_msg());
    cr_expect_eq(v, 1);
    fake_now = T0 + 1000;
    v = 2; /* signed for version 2 */
    cr_assert_eq(mmr_store_policy_publish(s, "laptops", &v, "{\"v\":2}", "c2lnMg==", "bob"), 0,
                 "%s", mmr_err_msg());
    cr_expect_eq(v, 2);
    v = 0;
    cr_assert_eq(mmr_store_policy_publish(s, "servers", &v, "{\"s\":1}", "c2lnUw==", "bob"), 0);
    cr_expect_eq(v, 1, "versions are per group");

    /* Someone else published meanwhile / a version from the future. */
    v = 2;
    cr_expect_eq(mmr_store_policy_publish(s, "laptops", &v, "{}", "c2ln", "carol"), MMR_EBUSY);
    cr_expect_eq(v, 2, "unchanged on failure");
    v = 9;
    cr_expect_eq(mmr_store_policy_publish(s, "laptops", &v, "{}", "c2ln", "carol"), MMR_EINVAL);
    v = -3;
    cr_expect_eq(mmr_store_policy_publish(s, "laptops", &v, "{}", "c2ln", "carol"), MMR_EINVAL);
    v = 0;
    cr_expect_eq(mmr_store_policy_publish(s, "laptops", &v, "", "c2ln", "carol"), MMR_EINVAL);
    cr_expect_eq(mmr_store_policy_publish(s, "laptops", &v, "{}", NULL, "carol"), MMR_EINVAL);
    cr_expect_eq(mmr_store_policy_publish(s, "", &v, "{}", "c2ln", "carol"), MMR_EINVAL);

    cr_assert_eq(mmr_store_policy_active(s, "laptops", &p), 0);
    cr_expect_eq(p.version, 2);
    cr_expect_str_eq(p.group, "laptops");
    cr_expect_str_eq(p.document, "{\"v\":2}");
    cr_expect_str_eq(p.signature, "c2lnMg==");
    cr_expect_str_eq(p.published_by, "bob");
    cr_expect_eq(p.published_at, T0 + 1000);
    cr_expect(p.active);
    mmr_store_policy_clear(&p);

    fake_now = T0 + 2000;
    cr_assert_eq(mmr_store_policy_rollback(s, "laptops", 1, "carol"), 0, "%s", mmr_err_msg());
    cr_assert_eq(mmr_store_policy_active_version(s, "laptops", &v), 0);
    cr_expect_eq(v, 1);
    cr_assert_eq(mmr_store_policy_active(s, "laptops", &p), 0);
    cr_expect_str_eq(p.document, "{\"v\":1}");
    cr_expect_str_eq(p.published_by, "alice");
    mmr_store_policy_clear(&p);
    cr_assert_eq(mmr_store_policy_get(s, "laptops", 2, &p), 0);
    cr_expect_not(p.active);
    cr_expect_str_eq(p.document, "{\"v\":2}");
    mmr_store_policy_clear(&p);
    cr_expect_eq(mmr_store_policy_get(s, "laptops", 3, &p), MMR_ENOENT);
    cr_expect_eq(mmr_store_policy_get(s, "laptops", 0, &p), MMR_EINVAL);
    cr_expect_eq(mmr_store_policy_rollback(s, "laptops", 7, "carol"), MMR_ENOENT);
    cr_expect_eq(mmr_store_policy_rollback(s, "laptops", 0, "carol"), MMR_ENOENT);
    cr_expect_eq(mmr_store_policy_rollback(s, "nogroup", 1, "carol"), MMR_ENOENT);
    cr_expect_eq(mmr_store_policy_rollback(s, "laptops", 1, NULL), MMR_EINVAL);
    cr_assert_eq(mmr_store_policy_rollback(s, "laptops", 1, "dave"), 0, "already active: no-op");

    /* Publishing after a rollback takes the next unused number. */
    v = 0;
    cr_assert_eq(mmr_store_policy_publish(s, "laptops", &v, "{\"v\":3}", "c2lnMw==", "erin"), 0);
    cr_expect_eq(v, 3);
    cr_assert_eq(mmr_store_policy_latest_version(s, "laptops", &v), 0);
    cr_expect_eq(v, 3);

    struct mmr_store_policy_change *h;
    size_t n;
    cr_assert_eq(mmr_store_policy_history(s, "laptops", &h, &n), 0);
    cr_assert_eq(n, 4);
    cr_expect_str_eq(h[0].action, "publish");
    cr_expect_eq(h[0].version, 1);
    cr_expect_eq(h[0].previous, 0);
    cr_expect_str_eq(h[0].actor, "alice");
    cr_expect_str_eq(h[1].action, "publish");
    cr_expect_eq(h[1].previous, 1);
    cr_expect_str_eq(h[2].action, "rollback");
    cr_expect_eq(h[2].version, 1);
    cr_expect_eq(h[2].previous, 2);
    cr_expect_str_eq(h[2].actor, "carol");
    cr_expect_eq(h[2].at, T0 + 2000);
    cr_expect_str_eq(h[3].action, "publish");
    cr_expect_eq(h[3].version, 3);
    mmr_store_policy_change_free(h, n);
    cr_assert_eq(mmr_store_policy_history(s, "nogroup", &h, &n), 0);
    cr_expect_eq(n, 0);
    mmr_store_policy_change_free(h, n);

    struct mmr_store_audit *a;
    cr_assert_eq(mmr_store_audit_list(s, 0, 0, &a, &n), 0);
    cr_assert_eq(n, 5);
    cr_expect_str_eq(a[0].action, "policy.publish");
    cr_expect_str_eq(a[1].action, "policy.rollback");
    cr_expect_str_eq(a[1].target, "laptops");
    cr_expect_str_eq(a[1].detail, "version=1 previous=2");
    mmr_store_audit_free(a, n);
    mmr_store_close(s);
}

/* ---- audit log ----------------------------------------------------------------------------- */

Test(store, audit_add_and_page)
{
    struct mmr_store *s = open_store();
    for (int i = 0; i < 30; i++) {
        char target[16];
        snprintf(target, sizeof(target), "t%d", i);
        cr_assert_eq(mmr_store_audit_add(s, "admin", "admin.login", target, i ? NULL : "x"), 0);
    }
    cr_expect_eq(mmr_store_audit_add(s, "", "a", "t", NULL), MMR_EINVAL);
    cr_expect_eq(mmr_store_audit_add(s, "admin", NULL, "t", NULL), MMR_EINVAL);
    cr_expect_eq(mmr_store_audit_add(s, "admin", "a", NULL, NULL), MMR_EINVAL);
    cr_expect_eq(mmr_store_audit_add(s, "admin", "a", "t", ""), MMR_EINVAL);

    struct mmr_store_audit *a;
    size_t n;
    cr_assert_eq(mmr_store_audit_list(s, 0, 20, &a, &n), 0);
    cr_assert_eq(n, 20);
    cr_expect_str_eq(a[0].target, "t29");
    int64_t before = a[19].id;
    mmr_store_audit_free(a, n);
    cr_assert_eq(mmr_store_audit_list(s, before, 20, &a, &n), 0);
    cr_assert_eq(n, 10);
    cr_expect_str_eq(a[9].target, "t0");
    cr_expect_str_eq(a[9].detail, "x");
    cr_expect_null(a[8].detail);
    cr_expect_eq(a[9].at, T0);
    mmr_store_audit_free(a, n);
    mmr_store_close(s);
}

/* ---- other configurations ------------------------------------------------------------------ */

Test(store, in_memory_database)
{
    struct mmr_store_opts o = {.readers = 4, .now_ms = test_clock, .clock_ctx = &fake_now};
    struct mmr_store *s;
    cr_assert_eq(mmr_store_open(":memory:", &o, &s), 0, "%s", mmr_err_msg());
    struct mmr_store_device d;
    enroll_one(s, "hw-1", "01", &d);
    struct mmr_store_events_result r = insert_range(s, d.id, 0, 1, 10);
    cr_expect_eq(r.ack, 10);
    cr_expect_eq(serial_state(s, "01"), MMR_STORE_CERT_CURRENT);
    mmr_store_device_clear(&d);
    mmr_store_close(s);
}

/* ---- injected I/O faults --------------------------------------------------------------- */

/* A failed commit acknowledges nothing and stores nothing; the store works
 * again once the disk does. */
static void event_fault(enum mmr_db_fault_op op, int err, int want)
{
    cr_assert_eq(mmr_db_fault_install(), 0);
    struct mmr_store *s = open_with(0, MMR_DB_FAULT_VFS);
    struct mmr_store_device d;
    enroll_one(s, "hw-1", "01", &d);
    insert_range(s, d.id, 0, 1, 10);

    struct mmr_store_event_in *ev = make_events(11, 100, "x", 1);
    struct mmr_store_events_result r;
    mmr_db_fault_arm(op, 1, err);
    int rc = mmr_store_events_insert(s, d.id, 10, ev, 100, &r);
    cr_expect_eq(rc, want, "rc %d: %s", rc, mmr_err_msg());
    cr_expect_gt(mmr_db_fault_failed(op), 0);
    cr_expect_eq(r.ack, 0, "no ack on failure");
    mmr_db_fault_disarm();

    cr_expect_eq(count_events(s, d.id, NULL, -1), 10);
    struct mmr_store_device g;
    cr_assert_eq(mmr_store_device_get(s, d.id, &g), 0);
    cr_expect_eq(g.event_ack, 10);
    mmr_store_device_clear(&g);

    rc = mmr_store_events_insert(s, d.id, 10, ev, 100, &r);
    cr_expect_eq(rc, 0, "after the fault: %s", mmr_err_msg());
    cr_expect_eq(r.ack, 110);
    cr_expect_eq(r.inserted, 100);
    cr_expect_eq(count_events(s, d.id, NULL, -1), 110);
    free(ev);
    mmr_store_device_clear(&d);
    mmr_store_close(s);
}

Test(store, fault_event_write_disk_full)
{
    event_fault(MMR_FAULT_WRITE, SQLITE_FULL, MMR_ENOSPC);
}

Test(store, fault_event_fsync)
{
    event_fault(MMR_FAULT_SYNC, SQLITE_IOERR_FSYNC, MMR_EIO);
}

/* Every write path fails cleanly on a full disk and leaves no trace. */
Test(store, fault_every_write_operation)
{
    cr_assert_eq(mmr_db_fault_install(), 0);
    struct mmr_store *s = open_with(0, MMR_DB_FAULT_VFS);
    struct tok t = make_token(s, "g", 5);
    struct mmr_store_device d;
    enroll_ok(s, &t, "hw-1", "01", &d);

    mmr_db_fault_arm(MMR_FAULT_WRITE, 1, SQLITE_FULL);
    struct tok t2;
    struct mmr_store_token_new tn = {
        .org = "o", .group = "g", .uses = 1, .expires_at = T0 + 1, .created_by = "a"};
    cr_expect_eq(mmr_store_token_create(s, &tn, t2.id, t2.secret), MMR_ENOSPC);
    cr_expect_str_eq(t2.id, "");
    cr_expect_eq(mmr_store_token_revoke(s, t.id, "a"), MMR_ENOSPC);
    enum mmr_store_refusal why;
    struct mmr_store_device x;
    cr_expect_eq(enroll_as(s, &t, "hw-2", "02", &x, &why), MMR_ENOSPC);
    cr_expect_eq(mmr_store_device_revoke(s, d.id, "a"), MMR_ENOSPC);
    cr_expect_eq(mmr_store_device_renew(s, d.id, "01", "03", T0 + DAY_MS), MMR_ENOSPC);
    int64_t v = 0;
    cr_expect_eq(mmr_store_policy_publish(s, "g", &v, "{}", "c2ln", "a"), MMR_ENOSPC);
    cr_expect_eq(mmr_store_audit_add(s, "a", "b", "c", NULL), MMR_ENOSPC);
    /* Check-ins commit without an fsync but still write the WAL. */
    struct mmr_store_checkin ci = {.queue_depth = 1, .policy_version = -1};
    for (int i = 0; i < 50; i++) {
        int rc = mmr_store_device_checkin(s, d.id, &ci);
        cr_expect(rc == 0 || rc == MMR_ENOSPC, "%d %s", rc, mmr_err_msg());
    }
    mmr_db_fault_disarm();

    cr_expect_eq(token_uses(s, t.id), 1);
    cr_expect_eq(count_devices(s), 1);
    cr_expect_eq(serial_state(s, "01"), MMR_STORE_CERT_CURRENT);
    cr_expect_eq(serial_state(s, "03"), MMR_STORE_CERT_UNKNOWN);
    cr_assert_eq(mmr_store_policy_latest_version(s, "g", &v), 0);
    cr_expect_eq(v, 0);
    cr_expect_eq(mmr_store_device_revoke(s, d.id, "a"), 0, "works again: %s", mmr_err_msg());
    char buf[64];
    cr_expect_eq(mmr_store_check(s, true, buf, sizeof(buf)), 0, "%s", buf);
    mmr_store_device_clear(&d);
    mmr_store_close(s);
}

/* ---- micro-benchmark ------------------------------------------------------------------- */

struct bench_thread {
    struct mmr_store *s;
    char device[MMR_STORE_ID_SIZE];
    int batches;
    int per_batch;
    int failures;
};

static void bench_events_main(void *p)
{
    struct bench_thread *t = p;
    struct mmr_store_event_in *ev = make_events(1, (size_t)t->per_batch, "scan.detection", 1);
    for (int b = 0; b < t->batches; b++) {
        struct mmr_store_events_result r;
        if (mmr_store_events_insert(t->s, t->device, ev[0].seq - 1, ev, (size_t)t->per_batch, &r) <
            0)
            t->failures++;
        for (int k = 0; k < t->per_batch; k++)
            ev[k].seq += t->per_batch;
    }
    free(ev);
}

static void bench_checkins_main(void *p)
{
    struct bench_thread *t = p;
    struct mmr_store_checkin c = {.posture = "{\"disk\":\"encrypted\",\"firewall\":true}",
                                  .queue_depth = 3,
                                  .policy_version = 7};
    for (int i = 0; i < t->batches; i++) {
        c.queue_depth = i;
        if (mmr_store_device_checkin(t->s, t->device, &c) < 0)
            t->failures++;
    }
}

/* Runs nthreads threads of fn, each on its own device; returns seconds. */
static double bench_run(struct mmr_store *s, struct mmr_store_device *devs, int nthreads,
                        void (*fn)(void *), int batches, int per_batch)
{
    struct bench_thread t[4];
    uv_thread_t th[4];
    uint64_t t0 = uv_hrtime();
    for (int i = 0; i < nthreads; i++) {
        t[i] = (struct bench_thread){.s = s, .batches = batches, .per_batch = per_batch};
        snprintf(t[i].device, sizeof(t[i].device), "%s", devs[i].id);
        cr_assert_eq(uv_thread_create(&th[i], fn, &t[i]), 0);
    }
    for (int i = 0; i < nthreads; i++) {
        uv_thread_join(&th[i]);
        cr_expect_eq(t[i].failures, 0);
    }
    return (double)(uv_hrtime() - t0) / 1e9;
}

Test(store, benchmark)
{
    struct mmr_store *s = NULL;
    cr_assert_eq(mmr_store_open(path, NULL, &s), 0, "%s", mmr_err_msg());
    struct mmr_store_token_new tn = {.org = "o",
                                     .group = "g",
                                     .uses = 100,
                                     .expires_at = mmr_time_now_ms() + DAY_MS,
                                     .created_by = "bench"};
    struct tok t;
    cr_assert_eq(mmr_store_token_create(s, &tn, t.id, t.secret), 0);
    enum { NDEV = 13 };
    struct mmr_store_device devs[NDEV];
    for (int i = 0; i < NDEV; i++) {
        char id[MMR_STORE_ID_SIZE], hw[16], serial[16];
        snprintf(hw, sizeof(hw), "hw-%d", i);
        snprintf(serial, sizeof(serial), "%x", i + 1);
        cr_assert_eq(mmr_store_device_id_for_hardware(s, hw, id), 0);
        struct mmr_store_enroll in = {.token_id = t.id,
                                      .token_secret = t.secret,
                                      .device_id = id,
                                      .hardware_id = hw,
                                      .hostname = "bench",
                                      .os = "linux",
                                      .agent_version = "0.1.0",
                                      .cert_serial = serial,
                                      .cert_not_after = mmr_time_now_ms() + DAY_MS};
        cr_assert_eq(mmr_store_device_enroll(s, &in, &devs[i], NULL), 0, "%s", mmr_err_msg());
    }

    double sec = bench_run(s, devs, 1, bench_checkins_main, 20000, 0);
    cr_log_info("store_checkin_1thread: %.0f checkins/s", 20000 / sec);
    sec = bench_run(s, devs, 4, bench_checkins_main, 5000, 0);
    cr_log_info("store_checkin_4threads: %.0f checkins/s", 20000 / sec);

    sec = bench_run(s, devs, 1, bench_events_main, 40, 1000);
    cr_log_info("store_events_batch1000_1thread: %.0f events/s (%.0f commits/s)", 40000 / sec,
                40 / sec);
    sec = bench_run(s, devs + 1, 4, bench_events_main, 10, 1000);
    cr_log_info("store_events_batch1000_4threads: %.0f events/s", 40000 / sec);
    sec = bench_run(s, devs + 5, 1, bench_events_main, 100, 10);
    cr_log_info("store_events_batch10_1thread: %.0f batches/s", 100 / sec);
    /* Four threads of small batches share fsyncs (group commit). */
    sec = bench_run(s, devs + 9, 4, bench_events_main, 100, 10);
    cr_log_info("store_events_batch10_4threads: %.0f batches/s", 400 / sec);

    /* Enrollments: one durable commit each. */
    cr_assert_eq(mmr_store_token_create(s, &tn, t.id, t.secret), 0);
    uint64_t e0 = uv_hrtime();
    for (int i = 0; i < 100; i++) {
        char id[MMR_STORE_ID_SIZE], hw[16], serial[16];
        snprintf(hw, sizeof(hw), "hw-e%d", i);
        snprintf(serial, sizeof(serial), "e%x", i + 1);
        cr_assert_eq(mmr_store_device_id_for_hardware(s, hw, id), 0);
        struct mmr_store_enroll in = {.token_id = t.id,
                                      .token_secret = t.secret,
                                      .device_id = id,
                                      .hardware_id = hw,
                                      .hostname = "bench",
                                      .os = "linux",
                                      .agent_version = "0.1.0",
                                      .cert_serial = serial,
                                      .cert_not_after = mmr_time_now_ms() + DAY_MS};
        cr_assert_eq(mmr_store_device_enroll(s, &in, NULL, NULL), 0, "%s", mmr_err_msg());
    }
    cr_log_info("store_enroll_1thread: %.0f enrollments/s",
                100 / ((double)(uv_hrtime() - e0) / 1e9));

    /* Handshake checks on the reader pool. */
    uint64_t t0 = uv_hrtime();
    for (int i = 0; i < 20000; i++)
        cr_assert_eq(mmr_store_device_by_serial(s, "1", NULL, NULL), 0);
    cr_log_info("store_by_serial_1thread: %.0f lookups/s",
                20000 / ((double)(uv_hrtime() - t0) / 1e9));
    for (int i = 0; i < NDEV; i++)
        mmr_store_device_clear(&devs[i]);
    mmr_store_close(s);
}

/* ---- damage behind the store's back ---------------------------------------------------- */

static void raw_exec(const char *sql)
{
    sqlite3 *h;
    cr_assert_eq(sqlite3_open(path, &h), SQLITE_OK);
    sqlite3_busy_timeout(h, 5000);
    int rc = sqlite3_exec(h, sql, NULL, NULL, NULL);
    cr_assert_eq(rc, SQLITE_OK, "%s: %s", sql, sqlite3_errmsg(h));
    sqlite3_close(h);
}

static const char drop_all[] =
    "DROP TABLE audit; DROP TABLE policy_history; DROP TABLE policy_active; "
    "DROP TABLE policies; DROP TABLE event_totals; DROP TABLE event_counts; DROP TABLE events; "
    "DROP TABLE tokens; DROP TABLE certs; DROP TABLE devices;";

/* Every call fails cleanly, with nothing left in its outputs. */
static void expect_every_call_fails(struct mmr_store *s, const char *dev, const struct tok *t)
{
    char id[MMR_STORE_ID_SIZE], sec[MMR_STORE_SECRET_SIZE];
    struct mmr_store_token_new tn = {
        .org = "o", .group = "g", .uses = 1, .expires_at = T0 + 1, .created_by = "a"};
    cr_expect_eq(mmr_store_token_create(s, &tn, id, sec), MMR_EDB, "%s", mmr_err_msg());
    cr_expect(strstr(mmr_err_msg(), "no such table") != NULL, "%s", mmr_err_msg());
    cr_expect_str_eq(id, "");
    struct mmr_store_token *tl = (void *)1;
    size_t n = 9;
    cr_expect_eq(mmr_store_token_list(s, false, &tl, &n), MMR_EDB);
    cr_expect_null(tl);
    cr_expect_eq(n, 0);
    cr_expect_eq(mmr_store_token_check(s, t->id, t->secret, NULL), MMR_EDB);
    cr_expect_eq(mmr_store_token_revoke(s, t->id, "a"), MMR_EDB);

    struct mmr_store_device d;
    cr_expect_eq(mmr_store_device_get(s, dev, &d), MMR_EDB);
    cr_expect_eq(mmr_store_device_id_for_hardware(s, "hw-1", id), MMR_EDB);
    cr_expect_str_eq(id, "");
    enum mmr_store_refusal why;
    cr_expect_eq(enroll_as(s, t, "hw-9", "99", &d, &why), MMR_EDB);
    struct mmr_store_enroll in = {.token_id = t->id,
                                  .token_secret = t->secret,
                                  .device_id = dev,
                                  .hardware_id = "hw-9",
                                  .hostname = "h",
                                  .os = "o",
                                  .agent_version = "v",
                                  .cert_serial = "99",
                                  .cert_not_after = T0 + DAY_MS};
    cr_expect_eq(mmr_store_device_enroll(s, &in, &d, &why), MMR_EDB);
    cr_expect_null(d.hardware_id);
    enum mmr_store_cert_state st;
    cr_expect_eq(mmr_store_device_by_serial(s, "01", &d, &st), MMR_EDB);
    struct mmr_store_checkin ci = {.queue_depth = 1, .policy_version = 1};
    cr_expect_eq(mmr_store_device_checkin(s, dev, &ci), MMR_EDB);
    cr_expect_eq(mmr_store_device_renew(s, dev, "01", "02", T0 + DAY_MS), MMR_EDB);
    cr_expect_eq(mmr_store_device_revoke(s, dev, "a"), MMR_EDB);
    cr_expect_eq(mmr_store_device_unrevoke(s, dev, "a"), MMR_EDB);
    struct mmr_store_device *dl = (void *)1;
    int64_t total = 9, cnt = 9;
    cr_expect_eq(mmr_store_device_list(s, NULL, &dl, &n, &total), MMR_EDB);
    cr_expect_null(dl);
    cr_expect_eq(n, 0);
    cr_expect_eq(mmr_store_device_count(s, NULL, &cnt), MMR_EDB);
    struct mmr_store_cert *cl = (void *)1;
    cr_expect_eq(mmr_store_device_certs(s, dev, &cl, &n), MMR_EDB);
    cr_expect_null(cl);

    struct mmr_store_event_in *ev = make_events(100, 3, "x", 1);
    struct mmr_store_events_result r;
    cr_expect_eq(mmr_store_events_insert(s, dev, -1, ev, 3, &r), MMR_EDB);
    cr_expect_eq(mmr_store_events_insert(s, dev, -1, ev, 0, &r), MMR_EDB);
    free(ev);
    struct mmr_store_event *el = (void *)1;
    cr_expect_eq(mmr_store_events_recent(s, dev, 0, &el, &n), MMR_EDB);
    cr_expect_null(el);
    struct mmr_store_event_filter all = {.severity = -1};
    cr_expect_eq(mmr_store_events_count(s, &all, &cnt), MMR_EDB);
    int64_t sev[MMR_STORE_SEVERITIES];
    cr_expect_eq(mmr_store_events_count_by_severity(s, NULL, sev), MMR_EDB);
    struct mmr_store_type_count *tc = (void *)1;
    cr_expect_eq(mmr_store_events_count_by_type(s, NULL, &tc, &n), MMR_EDB);
    cr_expect_null(tc);

    int64_t v = 0;
    cr_expect_eq(mmr_store_policy_publish(s, "g", &v, "{}", "c2ln", "a"), MMR_EDB);
    cr_expect_eq(mmr_store_policy_rollback(s, "g", 1, "a"), MMR_EDB);
    struct mmr_store_policy p;
    cr_expect_eq(mmr_store_policy_active(s, "g", &p), MMR_EDB);
    cr_expect_null(p.document);
    cr_expect_eq(mmr_store_policy_get(s, "g", 1, &p), MMR_EDB);
    cr_expect_eq(mmr_store_policy_active_version(s, "g", &v), MMR_EDB);
    cr_expect_eq(mmr_store_policy_latest_version(s, "g", &v), MMR_EDB);
    struct mmr_store_policy_change *h = (void *)1;
    cr_expect_eq(mmr_store_policy_history(s, "g", &h, &n), MMR_EDB);
    cr_expect_null(h);
    cr_expect_eq(mmr_store_audit_add(s, "a", "b", "c", NULL), MMR_EDB);
    struct mmr_store_audit *a = (void *)1;
    cr_expect_eq(mmr_store_audit_list(s, 0, 0, &a, &n), MMR_EDB);
    cr_expect_null(a);
    cr_expect_eq(mmr_store_audit_list(s, 5, 0, &a, &n), MMR_EDB);
}

/* Fills the store with one of everything and reads all of it once, so that
 * every statement is prepared and cached. */
static void fill_and_read(struct mmr_store *s, struct tok *t, struct mmr_store_device *d)
{
    *t = make_token(s, "g", 5);
    enroll_ok(s, t, "hw-1", "01", d);
    insert_range(s, d->id, 0, 1, 10);
    int64_t v = 0;
    cr_assert_eq(mmr_store_policy_publish(s, "g", &v, "{}", "c2ln", "a"), 0);
    cr_assert_eq(mmr_store_policy_rollback(s, "g", 1, "a"), 0);
    struct mmr_store_policy p;
    cr_assert_eq(mmr_store_policy_active(s, "g", &p), 0);
    mmr_store_policy_clear(&p);
    cr_assert_eq(mmr_store_policy_get(s, "g", 1, &p), 0);
    mmr_store_policy_clear(&p);
    cr_assert_eq(mmr_store_policy_active_version(s, "g", &v), 0);
    cr_assert_eq(mmr_store_policy_latest_version(s, "g", &v), 0);
    struct mmr_store_policy_change *h;
    size_t n;
    cr_assert_eq(mmr_store_policy_history(s, "g", &h, &n), 0);
    mmr_store_policy_change_free(h, n);
    struct mmr_store_audit *a;
    cr_assert_eq(mmr_store_audit_list(s, 0, 0, &a, &n), 0);
    mmr_store_audit_free(a, n);
    cr_assert_eq(mmr_store_audit_list(s, 5, 0, &a, &n), 0);
    mmr_store_audit_free(a, n);
    struct mmr_store_token *tl;
    cr_assert_eq(mmr_store_token_list(s, false, &tl, &n), 0);
    mmr_store_token_free(tl, n);
    cr_assert_eq(mmr_store_token_check(s, t->id, t->secret, NULL), 0);
    struct mmr_store_device g, *dl;
    cr_assert_eq(mmr_store_device_get(s, d->id, &g), 0);
    mmr_store_device_clear(&g);
    char id[MMR_STORE_ID_SIZE];
    cr_assert_eq(mmr_store_device_id_for_hardware(s, "hw-1", id), 0);
    cr_assert_eq(mmr_store_device_by_serial(s, "01", NULL, NULL), 0);
    int64_t total;
    cr_assert_eq(mmr_store_device_list(s, NULL, &dl, &n, &total), 0);
    mmr_store_device_free(dl, n);
    cr_assert_eq(mmr_store_device_count(s, NULL, &total), 0);
    struct mmr_store_cert *cl;
    cr_assert_eq(mmr_store_device_certs(s, d->id, &cl, &n), 0);
    mmr_store_cert_free(cl, n);
    struct mmr_store_event *el;
    cr_assert_eq(mmr_store_events_recent(s, d->id, 0, &el, &n), 0);
    mmr_store_event_free(el, n);
    count_events(s, NULL, NULL, -1);
    int64_t sev[MMR_STORE_SEVERITIES];
    cr_assert_eq(mmr_store_events_count_by_severity(s, NULL, sev), 0);
    struct mmr_store_type_count *tc;
    cr_assert_eq(mmr_store_events_count_by_type(s, NULL, &tc, &n), 0);
    mmr_store_type_count_free(tc, n);
}

/* Statements prepared before the damage fail when stepped. */
Test(store, vanished_tables_with_cached_statements)
{
    struct mmr_store *s = open_with(1, NULL);
    struct tok t;
    struct mmr_store_device d;
    fill_and_read(s, &t, &d);
    raw_exec(drop_all);
    expect_every_call_fails(s, d.id, &t);
    mmr_store_device_clear(&d);
    mmr_store_close(s);
}

/* Statements prepared after it fail when prepared. */
Test(store, vanished_tables_on_open)
{
    struct mmr_store *s = open_store();
    struct tok t = make_token(s, "g", 5);
    struct mmr_store_device d;
    enroll_ok(s, &t, "hw-1", "01", &d);
    mmr_store_close(s);
    raw_exec(drop_all);
    s = open_store();
    expect_every_call_fails(s, d.id, &t);
    mmr_store_device_clear(&d);
    mmr_store_close(s);
}

/* A write that fails half-way through a group fails the whole group and
 * stores nothing of it. */
Test(store, storing_failure_fails_the_group)
{
    struct mmr_store *s = open_store();
    struct mmr_store_device d;
    enroll_one(s, "hw-1", "01", &d);
    insert_range(s, d.id, 0, 1, 10);
    raw_exec("DROP TABLE event_totals");
    struct mmr_store_event_in *ev = make_events(11, 5, "x", 1);
    struct mmr_store_events_result r;
    cr_expect_eq(mmr_store_events_insert(s, d.id, 10, ev, 5, &r), MMR_EDB);
    cr_expect(strstr(mmr_err_msg(), "counting events") != NULL, "%s", mmr_err_msg());
    cr_expect_eq(r.ack, 0);
    free(ev);
    struct mmr_store_event *el;
    size_t n;
    cr_assert_eq(mmr_store_events_recent(s, d.id, 0, &el, &n), 0, "%s", mmr_err_msg());
    cr_expect_eq(n, 10, "nothing of the failed batch is stored");
    mmr_store_event_free(el, n);
    struct mmr_store_device g;
    cr_assert_eq(mmr_store_device_get(s, d.id, &g), 0);
    cr_expect_eq(g.event_ack, 10);
    mmr_store_device_clear(&g);
    mmr_store_device_clear(&d);
    mmr_store_close(s);
}

/* Another process holds the write lock: writes give up with MMR_EBUSY after
 * the timeout, reads go on (WAL), and all works once it lets go. */
Test(store, busy_database)
{
    struct mmr_store_opts o = {.busy_timeout_ms = 50, .now_ms = test_clock, .clock_ctx = &fake_now};
    struct mmr_store *s;
    cr_assert_eq(mmr_store_open(path, &o, &s), 0, "%s", mmr_err_msg());
    struct tok t = make_token(s, "g", 5);
    struct mmr_store_device d;
    enroll_ok(s, &t, "hw-1", "01", &d);

    sqlite3 *h;
    cr_assert_eq(sqlite3_open(path, &h), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);

    struct mmr_store_event_in *ev = make_events(1, 5, "x", 1);
    struct mmr_store_events_result r;
    cr_expect_eq(mmr_store_events_insert(s, d.id, 0, ev, 5, &r), MMR_EBUSY, "%s", mmr_err_msg());
    struct mmr_store_checkin ci = {.queue_depth = 1, .policy_version = 1};
    cr_expect_eq(mmr_store_device_checkin(s, d.id, &ci), MMR_EBUSY, "%s", mmr_err_msg());
    cr_expect_eq(mmr_store_device_revoke(s, d.id, "a"), MMR_EBUSY);
    cr_expect_eq(mmr_store_token_revoke(s, t.id, "a"), MMR_EBUSY);
    cr_expect_eq(mmr_store_device_by_serial(s, "01", NULL, NULL), 0, "reads go on");
    cr_expect_eq(token_uses(s, t.id), 1);

    cr_assert_eq(sqlite3_exec(h, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);
    cr_expect_eq(mmr_store_events_insert(s, d.id, 0, ev, 5, &r), 0, "%s", mmr_err_msg());
    cr_expect_eq(r.ack, 5);
    cr_expect_eq(mmr_store_device_checkin(s, d.id, &ci), 0, "%s", mmr_err_msg());
    free(ev);
    mmr_store_device_clear(&d);
    mmr_store_close(s);
}

/* A promotion whose commit fails reports the error and fills nothing; the
 * next handshake promotes. */
Test(store, fault_during_promotion)
{
    cr_assert_eq(mmr_db_fault_install(), 0);
    struct mmr_store *s = open_with(0, MMR_DB_FAULT_VFS);
    struct tok t = make_token(s, "g", 5);
    struct mmr_store_device d, g;
    enroll_ok(s, &t, "hw-1", "01", &d);
    cr_assert_eq(mmr_store_device_renew(s, d.id, "01", "02", T0 + DAY_MS), 0);
    mmr_db_fault_arm(MMR_FAULT_SYNC, 1, SQLITE_IOERR_FSYNC);
    int rc = mmr_store_device_by_serial(s, "02", &g, NULL);
    cr_expect_eq(rc, MMR_EIO, "%d %s", rc, mmr_err_msg());
    cr_expect_null(g.cert_serial);
    mmr_db_fault_disarm();
    cr_expect_eq(serial_state(s, "01"), MMR_STORE_CERT_CURRENT);
    cr_expect_eq(serial_state(s, "02"), MMR_STORE_CERT_CURRENT);
    cr_expect_eq(serial_state(s, "01"), MMR_STORE_CERT_REPLACED);
    mmr_store_device_clear(&d);
    mmr_store_close(s);
}

Test(store, free_functions_take_null)
{
    mmr_store_device_clear(NULL);
    mmr_store_device_free(NULL, 3);
    mmr_store_token_free(NULL, 3);
    mmr_store_cert_free(NULL, 3);
    mmr_store_event_free(NULL, 3);
    mmr_store_type_count_free(NULL, 3);
    mmr_store_policy_clear(NULL);
    mmr_store_policy_change_free(NULL, 3);
    mmr_store_audit_free(NULL, 3);
}

/* More threads than reader connections: they wait their turn. */
Test(store, readers_are_shared)
{
    struct mmr_store *s = open_with(1, NULL);
    struct mmr_store_device d;
    enroll_one(s, "hw-1", "0100", &d);
    struct checker c[3] = {{.s = s}, {.s = s}, {.s = s}};
    uv_thread_t th[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(uv_thread_create(&th[i], checker_main, &c[i]), 0);
    checkers_started(c, 3);
    for (int i = 0; i < 500; i++)
        cr_assert_eq(mmr_store_device_by_serial(s, "0100", NULL, NULL), 0, "%s", mmr_err_msg());
    for (int i = 0; i < 3; i++) {
        c[i].stop = 1;
        uv_thread_join(&th[i]);
        cr_expect_eq(c[i].errors, 0);
    }
    mmr_store_device_clear(&d);
    mmr_store_close(s);
}

static int tally(int rc, int *failed)
{
    *failed += rc < 0;
    return rc;
}

/* Calls everything; each call either works or fails leaving its outputs
 * empty. Returns how many failed. */
static int call_everything(struct mmr_store *s, const char *dev, const struct tok *t)
{
    int failed = 0;
    size_t n;
#define TALLY(call) tally((call), &failed)
    char id[MMR_STORE_ID_SIZE], sec[MMR_STORE_SECRET_SIZE];
    struct mmr_store_token_new tn = {
        .org = "o", .group = "g", .uses = 1, .expires_at = T0 + 1, .created_by = "a"};
    TALLY(mmr_store_token_create(s, &tn, id, sec));
    struct mmr_store_token *tl;
    if (TALLY(mmr_store_token_list(s, false, &tl, &n)) == 0)
        mmr_store_token_free(tl, n);
    else
        cr_expect_null(tl);
    TALLY(mmr_store_token_check(s, t->id, t->secret, NULL));
    struct mmr_store_device d;
    if (TALLY(mmr_store_device_get(s, dev, &d)) == 0)
        mmr_store_device_clear(&d);
    else
        cr_expect_null(d.hardware_id);
    TALLY(mmr_store_device_id_for_hardware(s, "hw-1", id));
    enum mmr_store_refusal why;
    memset(&d, 0, sizeof(d));
    if (TALLY(enroll_as(s, t, "hw-9", "99", &d, &why)) == 0)
        mmr_store_device_clear(&d);
    else
        cr_expect_null(d.hardware_id);
    if (TALLY(mmr_store_device_by_serial(s, "01", &d, NULL)) == 0)
        mmr_store_device_clear(&d);
    else
        cr_expect_null(d.hardware_id);
    struct mmr_store_checkin ci = {.queue_depth = 1, .policy_version = 1};
    TALLY(mmr_store_device_checkin(s, dev, &ci));
    TALLY(mmr_store_device_renew(s, dev, "01", "02", T0 + DAY_MS));
    TALLY(mmr_store_device_by_serial(s, "02", NULL, NULL));
    struct mmr_store_device *dl;
    int64_t total;
    if (TALLY(mmr_store_device_list(s, NULL, &dl, &n, &total)) == 0)
        mmr_store_device_free(dl, n);
    else
        cr_expect_null(dl);
    TALLY(mmr_store_device_count(s, NULL, &total));
    struct mmr_store_cert *cl;
    if (TALLY(mmr_store_device_certs(s, dev, &cl, &n)) == 0)
        mmr_store_cert_free(cl, n);
    else
        cr_expect_null(cl);
    struct mmr_store_event_in *ev = make_events(11, 3, "x", 1);
    struct mmr_store_events_result r;
    TALLY(mmr_store_events_insert(s, dev, -1, ev, 3, &r));
    TALLY(mmr_store_events_insert(s, dev, -1, ev, 0, &r));
    free(ev);
    struct mmr_store_event *el;
    if (TALLY(mmr_store_events_recent(s, dev, 0, &el, &n)) == 0)
        mmr_store_event_free(el, n);
    else
        cr_expect_null(el);
    struct mmr_store_event_filter f = {.device_id = dev, .type = "x", .severity = 1};
    TALLY(mmr_store_events_count(s, &f, &total));
    int64_t sev[MMR_STORE_SEVERITIES];
    TALLY(mmr_store_events_count_by_severity(s, dev, sev));
    struct mmr_store_type_count *tc;
    if (TALLY(mmr_store_events_count_by_type(s, dev, &tc, &n)) == 0)
        mmr_store_type_count_free(tc, n);
    int64_t v = 0;
    TALLY(mmr_store_policy_publish(s, "g", &v, "{}", "c2ln", "a"));
    TALLY(mmr_store_policy_rollback(s, "g", 1, "a"));
    struct mmr_store_policy p;
    if (TALLY(mmr_store_policy_active(s, "g", &p)) == 0)
        mmr_store_policy_clear(&p);
    if (TALLY(mmr_store_policy_get(s, "g", 1, &p)) == 0)
        mmr_store_policy_clear(&p);
    TALLY(mmr_store_policy_active_version(s, "g", &v));
    struct mmr_store_policy_change *h;
    if (TALLY(mmr_store_policy_history(s, "g", &h, &n)) == 0)
        mmr_store_policy_change_free(h, n);
    TALLY(mmr_store_audit_add(s, "a", "b", "c", NULL));
    struct mmr_store_audit *a;
    if (TALLY(mmr_store_audit_list(s, 0, 0, &a, &n)) == 0)
        mmr_store_audit_free(a, n);
    TALLY(mmr_store_token_revoke(s, t->id, "a"));
    TALLY(mmr_store_device_revoke(s, dev, "a"));
    TALLY(mmr_store_device_unrevoke(s, dev, "a"));
#undef TALLY
    return failed;
}

/* One table at a time vanishes under cached statements: every call that
 * needs it fails cleanly, the others go on. */
Test(store, damage_sweep_one_table_at_a_time)
{
    static const char *const tables[] = {
        "audit",        "policy_history", "policy_active", "policies", "event_totals",
        "event_counts", "events",         "tokens",        "certs",    "devices"};
    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
        char sql[800];
        remove(path);
        snprintf(sql, sizeof(sql), "%s-wal", path);
        remove(sql);
        snprintf(sql, sizeof(sql), "%s-shm", path);
        remove(sql);
        struct mmr_store *s = open_with(1, NULL);
        struct tok t;
        struct mmr_store_device d;
        fill_and_read(s, &t, &d);
        snprintf(sql, sizeof(sql), "DROP TABLE %s", tables[i]);
        raw_exec(sql);
        int failed = call_everything(s, d.id, &t);
        cr_expect_gt(failed, 0, "%s", tables[i]);
        cr_log_info("without %s: %d calls failed", tables[i], failed);
        mmr_store_device_clear(&d);
        mmr_store_close(s);
    }
}
