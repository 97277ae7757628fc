/* Integration: enrollment against a real mamori-server (silent and CLI, and
 * every refusal), re-enrollment, device revocation, an expired device
 * certificate, policy publish/rollback, and curl against both APIs. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fleet.h"
#include "mamori_version.h"
#include "shared/base64.h"
#include "shared/err.h"
#include "shared/json.h"
#include "shared/mem.h"
#include "shared/pki.h"
#include "shared/platform.h"
#include "shared/token.h"

#define MAX_AGENTS 4

static struct fleet fl;
static struct fleet_server srv;
static struct fleet_agent agents[MAX_AGENTS];
static int nagents;

static void setup(void)
{
    nagents = 0;
    fleet_init(&fl);
    fleet_server_init(&fl, &srv, NULL);
    fleet_server_start(&srv);
}

static void teardown(void)
{
    for (int i = 0; i < nagents; i++)
        fleet_agent_stop(&agents[i]);
    fleet_server_stop(&srv);
    fleet_cleanup(&fl);
}

TestSuite(enroll, .init = setup, .fini = teardown, .timeout = 240);

/* ---- helpers ----------------------------------------------------------------- */

static struct fleet_agent *new_agent(const char *name, const char *hw, const char *token)
{
    cr_assert(nagents < MAX_AGENTS);
    struct fleet_agent *a = &agents[nagents++];
    fleet_agent_init(&fl, a, name, &srv, hw, token, NULL);
    return a;
}

/* "2026-11-22T01:05:51.114Z" to ms since the epoch; -1 when malformed. */
static int64_t parse_time(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    int ms = 0;
    if (!s || sscanf(s, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                     &tm.tm_min, &tm.tm_sec, &ms) != 7)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t)timegm(&tm) * 1000 + ms;
}

struct status_wait {
    const struct fleet_agent *a;
    bool (*pred)(const json_t *st, const void *arg);
    const void *arg;
    json_t *last; /* the last status read */
};

static bool status_cb(void *ud)
{
    struct status_wait *w = ud;
    json_decref(w->last);
    w->last = fleet_agent_status(w->a);
    return w->last && w->pred(w->last, w->arg);
}

/* Waits until pred holds on the agent's status; returns the status (owned)
 * or fails the test showing the last status and the agent's log. */
static json_t *wait_status(const struct fleet_agent *a, bool (*pred)(const json_t *, const void *),
                           const void *arg, int timeout_ms, const char *what)
{
    struct status_wait w = {.a = a, .pred = pred, .arg = arg};
    if (fleet_wait_for(status_cb, &w, timeout_ms))
        return w.last;
    char *text = w.last ? mmr_json_dump_pretty(w.last) : mmr_strdup("(no answer)");
    size_t len = 0;
    char *err = fleet_read_file(a->stderr_path, &len);
    cr_log_error("agent log (end):\n%s", err ? err + (len > 4000 ? len - 4000 : 0) : "");
    free(err);
    cr_assert_fail("timed out waiting for %s; last status:\n%s", what, text);
    return NULL;
}

static bool checked_in_ok(const json_t *st, const void *arg)
{
    const char *since = arg; /* a previous checkin.last, or NULL */
    const char *last = fleet_json_str(st, "checkin.last");
    const char *result = fleet_json_str(st, "checkin.result");
    return last && result && strcmp(result, "ok") == 0 && (!since || strcmp(last, since) != 0);
}

static bool result_contains(const json_t *st, const void *arg)
{
    const char *result = fleet_json_str(st, "checkin.result");
    return result && strstr(result, arg);
}

struct policy_expect {
    long long version, max_events;
};

static bool policy_is(const json_t *st, const void *arg)
{
    const struct policy_expect *e = arg;
    return fleet_json_int(st, "policy.version") == e->version &&
           fleet_json_int(st, "queue.max_events") == e->max_events;
}

/* Runs `mamorictl sync` (asserts success). */
static void sync_agent(const struct fleet_agent *a)
{
    struct proc_result res;
    int rc = fleet_ctl(a, &res, "sync", NULL);
    cr_assert_eq(rc, 0, "mamorictl sync: exit %d: %s", rc, res.err);
    proc_result_free(&res);
}

/* `mamori-agent enroll TOKEN` expecting success; returns the device id. */
static char *cli_enroll_ok(const struct fleet_agent *a, const char *token)
{
    struct proc_result res;
    int rc = fleet_agent_enroll(a, token, &res);
    cr_assert_eq(rc, 0, "enroll: exit %d\nstdout: %s\nstderr: %s", rc, res.out, res.err);
    const char *p = strstr(res.out, "Enrolled as device ");
    cr_assert(p, "stdout: %s", res.out);
    p += strlen("Enrolled as device ");
    char *id = mmr_strndup(p, strcspn(p, ". \n"));
    proc_result_free(&res);
    return id;
}

/* `mamori-agent enroll TOKEN` expecting a refusal: checks the exit code and
 * that stderr says `why`. */
static void cli_enroll_refused(const struct fleet_agent *a, const char *token, int code,
                               const char *why)
{
    struct proc_result res;
    int rc = fleet_agent_enroll(a, token, &res);
    cr_expect_eq(rc, code, "enroll: exit %d, expected %d\nstderr: %s", rc, code, res.err);
    cr_expect(strstr(res.err, why), "stderr does not say '%s': %s", why, res.err);
    cr_expect(!strchr(res.err, '\n') || strchr(res.err, '\n') == res.err + strlen(res.err) - 1,
              "the refusal is more than one line: %s", res.err);
    char *crt = fleet_agent_path(a, "device.crt");
    cr_expect(!mmr_path_exists(crt), "a refused enrollment left a certificate behind");
    free(crt);
    cr_log_info("refused (exit %d): %s", rc, res.err);
    proc_result_free(&res);
}

static json_t *device_list(void)
{
    return fleet_adm_json(&srv, "device", "list", NULL);
}

static long long device_total(void)
{
    json_t *d = device_list();
    long long n = fleet_json_int(d, "total");
    json_decref(d);
    return n;
}

/* The token's record in `token list --json`, by id (owned). */
static json_t *token_record(const char *id)
{
    json_t *list = fleet_adm_json(&srv, "token", "list", NULL);
    json_t *found = NULL;
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(list, "tokens"), i, t)
    {
        if (strcmp(json_string_value(json_object_get(t, "id")), id) == 0)
            found = json_incref(t);
    }
    json_decref(list);
    cr_assert(found, "token %s not listed", id);
    return found;
}

/* Creates a token with --json; *id_out gets its id. */
static char *token_create_json(int uses, char **id_out)
{
    char uses_s[16];
    snprintf(uses_s, sizeof(uses_s), "%d", uses);
    json_t *r = fleet_adm_json(&srv, "token", "create", "--org", "City", "--group", "desktops",
                               "--uses", uses_s, NULL);
    char *token = mmr_strdup(fleet_json_str(r, "token"));
    *id_out = mmr_strdup(fleet_json_str(r, "id"));
    json_decref(r);
    return token;
}

/* Runs curl (never under the valgrind wrapper) and splits off the status
 * that -w appends on the last line. */
static int curl(const char *const *args, char **body_out)
{
    const char *argv[32] = {"curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}"};
    size_t n = 6;
    for (size_t i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    struct proc_opts o = {.no_wrapper = true};
    struct proc_result res;
    proc_run(argv, &o, fleet_ms(30000), &res);
    cr_assert_eq(res.exit_code, 0, "curl failed (exit %d): %s", res.exit_code, res.err);
    char *nl = strrchr(res.out, '\n');
    cr_assert(nl, "curl output: %s", res.out);
    int status = atoi(nl + 1);
    *nl = '\0';
    *body_out = mmr_strdup(res.out);
    proc_result_free(&res);
    return status;
}

static json_t *parse_json(const char *text)
{
    json_t *doc = NULL;
    cr_assert_eq(mmr_json_parse(text, strlen(text), MMR_JSON_MAX_DEPTH, &doc), 0, "not JSON: %s",
                 text);
    return doc;
}

/* ---- the private key never leaves the device ----------------------------------- */

/* The 32-byte private scalar of a SEC1 or PKCS#8 P-256 PEM key. */
static void key_scalar(const char *pem, uint8_t out[32])
{
    struct mmr_buf b64 = {0};
    for (const char *line = pem; *line;) {
        size_t len = strcspn(line, "\n");
        if (len > 0 && line[0] != '-')
            mmr_buf_append(&b64, line, len);
        line += len + (line[len] == '\n');
    }
    unsigned char *der = NULL;
    size_t der_len = 0;
    cr_assert_eq(mmr_base64_decode(b64.data, b64.len, &der, &der_len), 0, "%s", mmr_err_msg());
    mmr_buf_free(&b64);
    /* ECPrivateKey ::= SEQUENCE { version 1, privateKey OCTET STRING (32) ... } */
    static const uint8_t marker[] = {0x02, 0x01, 0x01, 0x04, 0x20};
    bool found = false;
    for (size_t i = 0; i + sizeof(marker) + 32 <= der_len && !found; i++) {
        if (memcmp(der + i, marker, sizeof(marker)) == 0) {
            memcpy(out, der + i + sizeof(marker), 32);
            found = true;
        }
    }
    memset(der, 0, der_len);
    free(der);
    cr_assert(found, "no private scalar in the device key");
}

/* Every file under the server directory, plus its captured stderr. */
static char **server_files(size_t *count)
{
    const char *argv[] = {"find", srv.dir, "-type", "f", NULL};
    struct proc_opts o = {.no_wrapper = true};
    struct proc_result res;
    proc_run(argv, &o, 10000, &res);
    cr_assert_eq(res.exit_code, 0);
    size_t n = 0, cap = 16;
    char **files = mmr_malloc(cap * sizeof(char *));
    files[n++] = mmr_strdup(srv.stderr_path);
    for (char *save = NULL, *l = strtok_r(res.out, "\n", &save); l;
         l = strtok_r(NULL, "\n", &save)) {
        if (n + 1 >= cap)
            files = mmr_realloc(files, (cap *= 2) * sizeof(char *));
        files[n++] = mmr_strdup(l);
    }
    proc_result_free(&res);
    *count = n;
    return files;
}

static void expect_key_never_sent(const struct fleet_agent *a, const char *device_id)
{
    char *key_path = fleet_agent_path(a, "device.key");
    char *pem = fleet_read_file(key_path, NULL);
    cr_assert(pem);
    uint8_t scalar[32];
    key_scalar(pem, scalar);
    char scalar_hex[65];
    mmr_hex_encode(scalar, sizeof(scalar), scalar_hex);
    /* The first base64 line of the PEM body holds the scalar's first bytes. */
    const char *body = strchr(pem, '\n') + 1;
    char *line = mmr_strndup(body, strcspn(body, "\n"));
    size_t n;
    char **files = server_files(&n);
    bool id_seen = false;
    for (size_t i = 0; i < n; i++) {
        cr_expect(!fleet_file_contains(files[i], scalar, sizeof(scalar)),
                  "%s holds the device's private key bytes", files[i]);
        cr_expect(!fleet_file_contains(files[i], scalar_hex, 64),
                  "%s holds the device's private key in hex", files[i]);
        cr_expect(!fleet_file_contains(files[i], line, strlen(line)),
                  "%s holds the device's private key PEM", files[i]);
        id_seen |= fleet_file_contains(files[i], device_id, strlen(device_id));
        free(files[i]);
    }
    /* The search itself works: the device id is in the database and log. */
    cr_expect(id_seen, "the search found not even the device id: it proves nothing");
    cr_log_info("private key searched for in %zu server files: absent", n);
    free(files);
    free(line);
    memset(pem, 0, strlen(pem));
    free(pem);
    free(key_path);
}

/* ---- enrollment ------------------------------------------------------------------- */

Test(enroll, silent_enrollment_happy_path)
{
    char *token = fleet_token_create(&srv, "City", "desktops", 5, NULL);
    struct fleet_agent *a = new_agent("laptop1", NULL, token);
    uint64_t t0 = mmr_time_mono_ms();
    fleet_agent_start_enrolled(a);
    json_t *st = wait_status(a, checked_in_ok, NULL, 20000, "the first check-in");
    cr_log_info("enrolled and checked in %llu ms after start",
                (unsigned long long)(mmr_time_mono_ms() - t0));
    json_decref(st);

    /* mamorictl status --json, through the real binary. */
    st = fleet_ctl_status(a);
    cr_expect(json_is_true(fleet_json_path(st, "enrollment.enrolled")));
    cr_expect(json_is_false(fleet_json_path(st, "enrollment.revoked")));
    const char *device_id = fleet_json_str(st, "enrollment.device_id");
    cr_assert(device_id && strlen(device_id) >= 32, "device id: %s", device_id);
    cr_expect_str_eq(fleet_json_str(st, "enrollment.group"), "desktops");
    cr_expect_str_eq(fleet_json_str(st, "enrollment.server"), srv.url);
    int64_t expires = parse_time(fleet_json_str(st, "enrollment.certificate_expires"));
    int64_t days90 = 90LL * 86400 * 1000;
    cr_expect(llabs(expires - (mmr_time_now_ms() + days90)) < 86400 * 1000,
              "certificate expires %s, not in ~90 days",
              fleet_json_str(st, "enrollment.certificate_expires"));

    /* mamoriadm device list --json shows it. */
    json_t *list = device_list();
    cr_assert_eq(fleet_json_int(list, "total"), 1);
    json_t *d = json_array_get(json_object_get(list, "devices"), 0);
    cr_expect_str_eq(fleet_json_str(d, "id"), device_id);
    char host[256] = "";
    gethostname(host, sizeof(host));
    cr_expect_str_eq(fleet_json_str(d, "hostname"), host);
    cr_expect_str_eq(fleet_json_str(d, "agent_version"), MMR_VERSION);
    cr_expect_str_eq(fleet_json_str(d, "hardware_id"), a->hardware_id);
    cr_expect_str_eq(fleet_json_str(d, "org"), "City");
    cr_expect_str_eq(fleet_json_str(d, "group"), "desktops");
    cr_expect(parse_time(fleet_json_str(d, "last_checkin")) > mmr_time_now_ms() - 60000,
              "last_checkin: %s", fleet_json_str(d, "last_checkin"));
    cr_expect(json_is_false(json_object_get(d, "revoked")));

    /* The table form says the same. */
    struct proc_result res;
    cr_expect_eq(fleet_adm(&srv, &res, "device", "list", NULL), 0);
    cr_expect(strstr(res.out, device_id) && strstr(res.out, "1 device(s)"), "%s", res.out);
    proc_result_free(&res);

    /* The key: generated here, owner-only, never sent. */
    char *key_path = fleet_agent_path(a, "device.key");
    struct stat sb;
    cr_assert_eq(stat(key_path, &sb), 0);
    cr_expect_eq(sb.st_mode & 0777, 0600, "device.key mode %o", sb.st_mode & 0777);
    free(key_path);
    expect_key_never_sent(a, device_id);

    json_decref(list);
    json_decref(st);
    free(token);
}

Test(enroll, cli_enroll_then_start)
{
    char *token = fleet_token_create(&srv, "City", "desktops", 1, NULL);
    struct fleet_agent *a = new_agent("laptop1", NULL, NULL);
    char *id = cli_enroll_ok(a, token);
    cr_expect_eq(device_total(), 1);

    /* The agent starts enrolled, with no token in its configuration. */
    fleet_agent_start(a);
    json_t *st = wait_status(a, checked_in_ok, NULL, 20000, "the first check-in");
    cr_expect_str_eq(fleet_json_str(st, "enrollment.device_id"), id);
    json_decref(st);

    /* Enrolling while the agent runs is refused with exit 3. */
    struct proc_result res;
    cr_expect_eq(fleet_agent_enroll(a, token, &res), 3, "stderr: %s", res.err);
    cr_expect(strstr(res.err, "stop it first"), "%s", res.err);
    proc_result_free(&res);
    free(id);
    free(token);
}

Test(enroll, refused_bad_token_text)
{
    struct fleet_agent *a = new_agent("laptop1", NULL, NULL);
    cli_enroll_refused(a, "hello-this-is-not-a-token", 5, "token");
    cli_enroll_refused(a, "mmr1.eyJub3QiOiJhIHRva2VuIn0", 5, "token");
    cli_enroll_refused(a, "mmr1.!!!!", 5, "token");
    cr_expect_eq(device_total(), 0);
}

Test(enroll, refused_expired_token)
{
    /* The admin API's shortest lifetime is 60 s: shorter is refused. */
    struct proc_result res;
    cr_expect_eq(fleet_adm(&srv, &res, "token", "create", "--org", "City", "--group", "g",
                           "--expires", "30s", NULL),
                 4, "stderr: %s", res.err);
    cr_expect(strstr(res.err, "expires_in_s"), "%s", res.err);
    proc_result_free(&res);

    /* Rather than wait a minute, age the token in the server's database (the
     * server reads it on every enrollment). */
    char *id;
    char *token = token_create_json(5, &id);
    char *db = mmr_path_join(srv.dir, "server.db");
    char *sql = mmr_asprintf("UPDATE tokens SET expires_at = %lld WHERE id = '%s';",
                             (long long)(mmr_time_now_ms() - 1000), id);
    const char *argv[] = {"sqlite3", "-cmd", ".timeout 10000", db, sql, NULL};
    struct proc_opts o = {.no_wrapper = true};
    proc_run(argv, &o, 20000, &res);
    cr_assert_eq(res.exit_code, 0, "sqlite3: %s", res.err);
    proc_result_free(&res);

    json_t *t = token_record(id);
    cr_expect_str_eq(fleet_json_str(t, "state"), "expired");
    json_decref(t);

    struct fleet_agent *a = new_agent("laptop1", NULL, NULL);
    cli_enroll_refused(a, token, 5, "expired");
    cr_expect_eq(device_total(), 0);
    free(sql);
    free(db);
    free(id);
    free(token);
}

Test(enroll, refused_used_up_token)
{
    char *id;
    char *token = token_create_json(1, &id);
    struct fleet_agent *a = new_agent("laptop1", NULL, NULL);
    struct fleet_agent *b = new_agent("laptop2", NULL, NULL);
    char *dev = cli_enroll_ok(a, token);
    cli_enroll_refused(b, token, 5, "used as often as allowed");
    json_t *t = token_record(id);
    cr_expect_str_eq(fleet_json_str(t, "state"), "used_up");
    cr_expect_eq(fleet_json_int(t, "uses"), 1);
    json_decref(t);
    cr_expect_eq(device_total(), 1);
    free(dev);
    free(id);
    free(token);
}

Test(enroll, refused_revoked_token)
{
    char *id;
    char *token = token_create_json(5, &id);
    struct proc_result res;
    cr_assert_eq(fleet_adm(&srv, &res, "token", "revoke", id, NULL), 0, "%s", res.err);
    proc_result_free(&res);
    json_t *t = token_record(id);
    cr_expect_str_eq(fleet_json_str(t, "state"), "revoked");
    json_decref(t);
    struct fleet_agent *a = new_agent("laptop1", NULL, NULL);
    cli_enroll_refused(a, token, 5, "revoked");
    cr_expect_eq(device_total(), 0);
    free(id);
    free(token);
}

/* The token with its pin or URL replaced (decoded, edited, encoded again). */
static char *edit_token(const char *token, const char *pin, const char *url)
{
    struct mmr_token t;
    cr_assert_eq(mmr_token_decode(token, &t), 0, "%s", mmr_err_msg());
    if (pin) {
        free(t.pin);
        t.pin = mmr_strdup(pin);
    }
    if (url) {
        free(t.url);
        t.url = mmr_strdup(url);
    }
    char *out = mmr_token_encode(&t);
    mmr_token_free(&t);
    return out;
}

Test(enroll, refused_wrong_ca_pin)
{
    char *id;
    char *token = token_create_json(5, &id);
    /* A pin of another CA: the SHA-256 of something else. */
    char other[MMR_SHA256_HEX_SIZE];
    mmr_sha256_hex("another CA", 10, other);
    char *bad = edit_token(token, other, NULL);

    struct fleet_agent *a = new_agent("laptop1", NULL, NULL);
    cli_enroll_refused(a, bad, 5, "pinned");

    /* Refused during the TLS handshake: the server saw no request at all. */
    json_t *t = token_record(id);
    cr_expect_eq(fleet_json_int(t, "uses"), 0);
    json_decref(t);
    cr_expect_eq(device_total(), 0);
    char *log = mmr_path_join(srv.dir, "logs/server.log");
    cr_expect(!fleet_file_contains(log, "enrollment refused", 18), "the server saw a request");
    cr_expect(!fleet_file_contains(log, "device enrolled", 15));
    free(log);

    /* The genuine token still works afterwards. */
    char *dev = cli_enroll_ok(a, token);
    free(dev);
    free(bad);
    free(id);
    free(token);
}

Test(enroll, server_unreachable)
{
    char *token = fleet_token_create(&srv, "City", "desktops", 5, NULL);
    char url[64];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d", fleet_free_port());
    char *moved = edit_token(token, NULL, url);
    struct fleet_agent *a = new_agent("laptop1", NULL, NULL);
    cli_enroll_refused(a, moved, 6, "127.0.0.1");

    /* And with the server itself stopped. */
    fleet_server_stop(&srv);
    cli_enroll_refused(a, token, 6, "cannot reach");
    fleet_server_start(&srv);
    free(moved);
    free(token);
}

/* ---- re-enrollment, revocation, expiry --------------------------------------------- */

Test(enroll, reenroll_same_hardware_replaces_record)
{
    char *token = fleet_token_create(&srv, "City", "desktops", 5, NULL);
    struct fleet_agent *first = new_agent("install1", "test-hw-aaaaaaaaaaaa", NULL);
    struct fleet_agent *second = new_agent("install2", "test-hw-aaaaaaaaaaaa", NULL);
    char *id1 = cli_enroll_ok(first, token);
    char *id2 = cli_enroll_ok(second, token);
    cr_expect_str_eq(id1, id2, "re-enrollment made a new device");

    json_t *list = device_list();
    cr_expect_eq(fleet_json_int(list, "total"), 1);
    json_t *d = json_array_get(json_object_get(list, "devices"), 0);
    cr_expect_eq(fleet_json_int(d, "enrollments"), 2);
    json_decref(list);

    /* The first installation's certificate is retired; the new one works. */
    struct fleet_client old_c, new_c;
    fleet_client_open_device(&old_c, &srv, first);
    fleet_client_open_device(&new_c, &srv, second);
    json_t *reply = NULL;
    cr_expect_eq(fleet_client_call(&old_c, "POST", "/v1/checkin", "{}", 2, &reply), 403);
    cr_expect_str_eq(mmr_https_error_reason(reply), "cert_replaced");
    json_decref(reply);
    cr_expect_eq(fleet_client_call(&new_c, "POST", "/v1/checkin", "{}", 2, NULL), 200);
    fleet_client_close(&old_c);
    fleet_client_close(&new_c);
    free(id1);
    free(id2);
    free(token);
}

Test(enroll, revoked_device_is_refused)
{
    char *token = fleet_token_create(&srv, "City", "desktops", 5, NULL);
    struct fleet_agent *a = new_agent("laptop1", NULL, token);
    fleet_agent_start_enrolled(a);
    json_t *st = wait_status(a, checked_in_ok, NULL, 20000, "the first check-in");
    char *id = mmr_strdup(fleet_json_str(st, "enrollment.device_id"));
    json_decref(st);

    struct proc_result res;
    cr_assert_eq(fleet_adm(&srv, &res, "device", "revoke", id, NULL), 0, "%s", res.err);
    proc_result_free(&res);

    /* The agent's next check-in (on a kept-alive connection) is refused. */
    sync_agent(a);
    st = wait_status(a, result_contains, "revoked", 20000, "a refused check-in");
    cr_expect(json_is_true(fleet_json_path(st, "enrollment.revoked")), "status: revoked flag");
    cr_log_info("check-in result: %s", fleet_json_str(st, "checkin.result"));
    json_decref(st);

    /* curl with the device's certificate: 403. */
    char *crt = fleet_agent_path(a, "device.crt");
    char *key = fleet_agent_path(a, "device.key");
    char *ca = fleet_agent_path(a, "ca.crt");
    char *url = mmr_asprintf("%s/v1/checkin", srv.url);
    const char *args[] = {"--cert", crt, "--key", key, "--cacert", ca, url, "-d", "{}", NULL};
    char *body;
    cr_expect_eq(curl(args, &body), 403, "body: %s", body);
    json_t *doc = parse_json(body);
    cr_expect_str_eq(mmr_https_error_reason(doc), "cert_revoked");
    json_decref(doc);
    free(body);

    json_t *list = device_list();
    cr_expect(json_is_true(
        fleet_json_path(json_array_get(json_object_get(list, "devices"), 0), "revoked")));
    json_decref(list);

    /* The same computer cannot come back with a token either. */
    fleet_agent_stop(a);
    struct fleet_agent *again = new_agent("reinstall", a->hardware_id, NULL);
    cli_enroll_refused(again, token, 5, "revoked");
    free(url);
    free(ca);
    free(key);
    free(crt);
    free(id);
    free(token);
}

Test(enroll, expired_device_certificate_is_refused)
{
    char *token = fleet_token_create(&srv, "City", "desktops", 5, NULL);
    struct fleet_agent *a = new_agent("laptop1", NULL, NULL);
    char *id = cli_enroll_ok(a, token);

    /* Re-issue the device's certificate, same key and serial, expired
     * yesterday, with the server's own issuing CA. */
    char *crt_path = fleet_agent_path(a, "device.crt");
    char *crt = fleet_read_file(crt_path, NULL);
    struct mmr_cert_info info;
    cr_assert_eq(mmr_cert_read_info(crt, &info), 0);
    uint8_t serial[MMR_CERT_SERIAL_MAX];
    size_t serial_len = strlen(info.serial_hex) / 2;
    cr_assert_eq(mmr_hex_decode(info.serial_hex, serial, serial_len), 0);
    char *ikey_path = mmr_path_join(srv.dir, "pki/issuing.key");
    char *icrt_path = mmr_path_join(srv.dir, "pki/issuing.crt");
    char *dkey_path = fleet_agent_path(a, "device.key");
    struct mmr_key *issuer = NULL, *dkey = NULL;
    cr_assert_eq(mmr_key_load(ikey_path, &issuer), 0, "%s", mmr_err_msg());
    cr_assert_eq(mmr_key_load(dkey_path, &dkey), 0, "%s", mmr_err_msg());
    char *icrt = fleet_read_file(icrt_path, NULL);
    int64_t now = mmr_time_now_ms();
    struct mmr_cert_spec spec = {.kind = MMR_CERT_CLIENT,
                                 .cn = id,
                                 .org = info.org,
                                 .serial = serial,
                                 .serial_len = serial_len,
                                 .not_before_ms = now - 3 * 86400000LL,
                                 .not_after_ms = now - 86400000LL};
    char *expired = NULL;
    cr_assert_eq(mmr_cert_issue(&spec, dkey, issuer, icrt, &expired), 0, "%s", mmr_err_msg());
    fleet_write_file(crt_path, expired);

    /* The agent is refused, and says why. */
    fleet_agent_start(a);
    json_t *st = wait_status(a, result_contains, "expired", 20000,
                             "a check-in refused for the expired certificate");
    cr_log_info("check-in result: %s", fleet_json_str(st, "checkin.result"));
    json_decref(st);

    /* So is anyone presenting it. */
    struct fleet_client c;
    char *key_pem = fleet_read_file(dkey_path, NULL);
    fleet_client_open(&c, &srv, expired, key_pem);
    json_t *reply = NULL;
    int status = fleet_client_call(&c, "POST", "/v1/checkin", "{}", 2, &reply);
    cr_expect_eq(status, 403, "status %d", status);
    cr_expect_str_eq(mmr_https_error_reason(reply), "cert_expired");
    cr_expect(strstr(mmr_https_error_message(reply, ""), "expired"), "reply says: %s",
              mmr_https_error_message(reply, "(nothing)"));
    json_decref(reply);
    fleet_client_close(&c);

    free(key_pem);
    free(expired);
    free(icrt);
    mmr_key_free(issuer);
    mmr_key_free(dkey);
    free(dkey_path);
    free(icrt_path);
    free(ikey_path);
    free(crt);
    free(crt_path);
    free(id);
    free(token);
}

/* ---- policy --------------------------------------------------------------------------- */

static char *policy_file(const char *name, const char *text)
{
    char *path = mmr_path_join(fl.root, name);
    fleet_write_file(path, text);
    return path;
}

static void publish_ok(const char *path, long long version)
{
    struct proc_result res;
    int rc = fleet_adm(&srv, &res, "policy", "publish", "--group", "desktops", path, NULL);
    cr_assert_eq(rc, 0, "publish: exit %d: %s", rc, res.err);
    char expect[64];
    snprintf(expect, sizeof(expect), "published version %lld", version);
    cr_expect(strstr(res.out, expect), "%s", res.out);
    proc_result_free(&res);
}

Test(enroll, policy_publish_refuse_rollback)
{
    char *token = fleet_token_create(&srv, "City", "desktops", 5, NULL);
    struct fleet_agent *a = new_agent("laptop1", NULL, token);
    fleet_agent_start_enrolled(a);
    json_decref(wait_status(a, checked_in_ok, NULL, 20000, "the first check-in"));

    char *v1 = policy_file("v1.json", "{\"profile\":\"office-internet\","
                                      "\"checkin\":{\"interval\":\"10s\"},"
                                      "\"telemetry\":{\"queue_max_events\":500}}");
    char *v2 = policy_file("v2.json", "{\"profile\":\"carried-out\","
                                      "\"checkin\":{\"interval\":\"30s\"},"
                                      "\"telemetry\":{\"queue_max_events\":800},"
                                      "\"future_section\":{\"kept\":true}}");
    char *bad = policy_file("bad.json", "{\"profile\":\"office-internet\","
                                        "\"telemetry\":{\"queue_max_events\":5}}");

    publish_ok(v1, 1);
    sync_agent(a);
    struct policy_expect e1 = {1, 500};
    json_t *st = wait_status(a, policy_is, &e1, 20000, "policy version 1");
    /* The next check-in is 10 s +-20 % away. */
    int64_t gap = parse_time(fleet_json_str(st, "checkin.next")) -
                  parse_time(fleet_json_str(st, "checkin.last"));
    cr_expect(gap >= 7000 && gap <= 13000, "next check-in %lld ms after the last", (long long)gap);
    json_decref(st);

    /* A malformed policy is refused at publish time, naming the JSON path;
     * offline validation says the same. */
    struct proc_result res;
    cr_expect_eq(fleet_adm(&srv, &res, "policy", "publish", "--group", "desktops", bad, NULL), 4);
    cr_expect(strstr(res.err, "$.telemetry.queue_max_events"), "stderr: %s", res.err);
    cr_log_info("publish refused: %s", res.err);
    proc_result_free(&res);
    const char *validate[] = {MMR_ADM_BIN, "policy", "validate", bad, NULL};
    proc_run(validate, NULL, fleet_ms(10000), &res);
    cr_expect_eq(res.exit_code, 4);
    cr_expect(strstr(res.err, "$.telemetry.queue_max_events"), "stderr: %s", res.err);
    proc_result_free(&res);

    publish_ok(v2, 2);
    sync_agent(a);
    struct policy_expect e2 = {2, 800};
    json_decref(wait_status(a, policy_is, &e2, 20000, "policy version 2"));

    /* The unknown section is kept as published. */
    json_t *shown = fleet_adm_json(&srv, "policy", "show", "--group", "desktops", NULL);
    cr_expect(json_is_true(fleet_json_path(shown, "document.future_section.kept")));
    json_decref(shown);

    cr_assert_eq(
        fleet_adm(&srv, &res, "policy", "rollback", "--group", "desktops", "--to", "1", NULL), 0,
        "rollback: %s", res.err);
    proc_result_free(&res);
    sync_agent(a);
    json_decref(wait_status(a, policy_is, &e1, 20000, "the rollback to version 1"));

    json_t *h = fleet_adm_json(&srv, "policy", "history", "--group", "desktops", NULL);
    json_t *hist = json_object_get(h, "history");
    cr_assert_eq(json_array_size(hist), 3, "history: %zu entries", json_array_size(hist));
    static const char *const actions[] = {"publish", "publish", "rollback"};
    static const long long versions[] = {1, 2, 1};
    /* Listed oldest or newest first: find the order from the first entry. */
    bool newest_first = strcmp(fleet_json_str(json_array_get(hist, 0), "action"), "rollback") == 0;
    for (size_t i = 0; i < 3; i++) {
        json_t *c = json_array_get(hist, newest_first ? 2 - i : i);
        cr_expect_str_eq(fleet_json_str(c, "action"), actions[i]);
        cr_expect_eq(fleet_json_int(c, "version"), versions[i]);
        const char *by = fleet_json_str(c, "by");
        cr_expect(by && by[0], "entry %zu has no 'by'", i);
        cr_expect(parse_time(fleet_json_str(c, "at")) > 0);
    }
    json_decref(h);
    free(bad);
    free(v2);
    free(v1);
    free(token);
}

/* ---- standard tools ----------------------------------------------------------------- */

Test(enroll, curl_against_agent_and_admin_api)
{
    char *token = fleet_token_create(&srv, "City", "desktops", 5, NULL);
    struct fleet_agent *a = new_agent("laptop1", NULL, NULL);
    char *id = cli_enroll_ok(a, token);
    char *crt = fleet_agent_path(a, "device.crt");
    char *key = fleet_agent_path(a, "device.key");
    char *ca = fleet_agent_path(a, "ca.crt");
    char *body;

    /* The device's own certificate and key: the agent API. */
    char *url = mmr_asprintf("%s/v1/checkin", srv.url);
    const char *checkin[] = {
        "--cert", crt, "--key", key, "--cacert", ca, url, "-d", "{\"queue_depth\":0}", NULL};
    cr_expect_eq(curl(checkin, &body), 200, "body: %s", body);
    json_t *doc = parse_json(body);
    cr_expect(json_is_integer(json_object_get(doc, "checkin_interval_s")), "%s", body);
    json_decref(doc);
    free(body);
    free(url);

    url = mmr_asprintf("%s/v1/events", srv.url);
    char *batch = mmr_asprintf("{\"after\":0,\"events\":[{\"seq\":1,\"time\":%lld,\"type\":"
                               "\"test.curl\",\"severity\":1,\"data\":{\"via\":\"curl\"}}]}",
                               (long long)mmr_time_now_ms());
    const char *events[] = {
        "--cert", crt,   "--key", key, "--cacert", ca, url, "-H", "Content-Type: application/json",
        "-d",     batch, NULL};
    cr_expect_eq(curl(events, &body), 200, "body: %s", body);
    doc = parse_json(body);
    cr_expect_eq(fleet_json_int(doc, "ack"), 1, "%s", body);
    json_decref(doc);
    free(body);
    free(url);
    free(batch);

    /* No certificate: refused. */
    url = mmr_asprintf("%s/v1/checkin", srv.url);
    const char *anon[] = {"--cacert", ca, url, "-d", "{}", NULL};
    cr_expect_eq(curl(anon, &body), 401, "body: %s", body);
    free(body);
    free(url);

    /* The admin API with the bearer token from the server directory. */
    char *tok_path = mmr_path_join(srv.dir, "admin.token");
    char *admin_tok = fleet_read_file(tok_path, NULL);
    char *auth = mmr_asprintf("Authorization: Bearer %s", admin_tok);
    char *root = mmr_path_join(srv.dir, "pki/root.crt");
    url = mmr_asprintf("%s/admin/v1/devices", srv.url);
    const char *admin[] = {"--cacert", root, "-H", auth, url, NULL};
    cr_expect_eq(curl(admin, &body), 200, "body: %s", body);
    doc = parse_json(body);
    cr_expect_eq(fleet_json_int(doc, "total"), 1);
    json_t *d = json_array_get(json_object_get(doc, "devices"), 0);
    cr_expect_str_eq(fleet_json_str(d, "id"), id);
    cr_expect(fleet_json_str(d, "last_checkin"), "curl's check-in was not recorded");
    json_decref(doc);
    free(body);
    free(url);

    url = mmr_asprintf("%s/admin/v1/events/count?device=%s&type=test.curl", srv.url, id);
    const char *count[] = {"--cacert", root, "-H", auth, url, NULL};
    cr_expect_eq(curl(count, &body), 200, "body: %s", body);
    doc = parse_json(body);
    cr_expect_eq(fleet_json_int(doc, "count"), 1, "%s", body);
    json_decref(doc);
    free(body);

    const char *no_auth[] = {"--cacert", root, url, NULL};
    cr_expect_eq(curl(no_auth, &body), 401, "body: %s", body);
    free(body);
    free(url);

    /* A token made with curl, as docs/protocol.md shows. */
    url = mmr_asprintf("%s/admin/v1/tokens", srv.url);
    const char *mint[] = {"--cacert", root,
                          "-H",       auth,
                          "-d",       "{\"org\":\"Takamatsu\",\"group\":\"staff\",\"uses\":10}",
                          url,        NULL};
    cr_expect_eq(curl(mint, &body), 201, "body: %s", body);
    doc = parse_json(body);
    cr_expect(fleet_json_str(doc, "token") &&
                  strncmp(fleet_json_str(doc, "token"), "mmr1.", 5) == 0,
              "%s", body);
    json_decref(doc);
    free(body);
    free(url);

    /* The signed policy, once one is published for the device's group. */
    url = mmr_asprintf("%s/v1/policy", srv.url);
    const char *policy[] = {"--cert", crt, "--key", key, "--cacert", ca, url, NULL};
    cr_expect_eq(curl(policy, &body), 404, "body: %s", body);
    free(body);
    char *pfile = mmr_path_join(fl.root, "p.json");
    fleet_write_file(pfile, "{\"profile\":\"office-internet\"}");
    struct proc_result res;
    cr_assert_eq(fleet_adm(&srv, &res, "policy", "publish", "--group", "desktops", pfile, NULL), 0,
                 "%s", res.err);
    proc_result_free(&res);
    cr_expect_eq(curl(policy, &body), 200, "body: %s", body);
    doc = parse_json(body);
    cr_expect(fleet_json_str(doc, "payload") && fleet_json_str(doc, "signature"), "%s", body);
    json_decref(doc);
    free(body);
    free(pfile);
    free(url);

    free(root);
    free(auth);
    free(admin_tok);
    free(tok_path);
    free(ca);
    free(key);
    free(crt);
    free(id);
    free(token);
}
