/* Integration-test fixture: temporary directories, a real mamori-server,
 * real agents, mamoriadm/mamorictl runs, polling with timeouts. */
#include "fleet.h"

#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shared/err.h"
#include "shared/https.h"
#include "shared/ipc.h"
#include "shared/json.h"
#include "shared/mem.h"
#include "shared/platform.h"

#define MAX_ARGS 48

int fleet_ms(int normal_ms)
{
    return proc_wrapped() ? normal_ms * 10 : normal_ms;
}

void fleet_init(struct fleet *f)
{
    snprintf(f->root, sizeof(f->root), "/tmp/mmr-fleet-XXXXXX");
    cr_assert(mkdtemp(f->root), "mkdtemp failed");
    /* Workers write to pipes and sockets that tests close early. */
    signal(SIGPIPE, SIG_IGN);
}

void fleet_cleanup(struct fleet *f)
{
    if (!f->root[0])
        return;
    char *cmd = mmr_asprintf("rm -rf '%s'", f->root);
    cr_expect_eq(system(cmd), 0, "cannot remove %s", f->root);
    free(cmd);
    f->root[0] = '\0';
}

int fleet_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t len = sizeof(sa);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

bool fleet_wait_for(bool (*cond)(void *ud), void *ud, int timeout_ms)
{
    uint64_t deadline = mmr_time_mono_ms() + (uint64_t)fleet_ms(timeout_ms);
    for (;;) {
        if (cond(ud))
            return true;
        if (mmr_time_mono_ms() >= deadline)
            return cond(ud);
        usleep(50 * 1000);
    }
}

void fleet_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

char *fleet_read_file(const char *path, size_t *len)
{
    char *data = NULL;
    size_t n = 0;
    /* mmr_file_read_all allocates its limit: size it to the file (which
     * may still grow a little: a log being written). */
    int64_t size = mmr_file_size(path);
    if (size < 0 || mmr_file_read_all(path, (size_t)size + (1u << 20), &data, &n) < 0)
        return NULL;
    if (len)
        *len = n;
    return data;
}

bool fleet_file_contains(const char *path, const void *needle, size_t len)
{
    size_t n;
    char *data = fleet_read_file(path, &n);
    bool found = data && len > 0 && memmem(data, n, needle, len) != NULL;
    free(data);
    return found;
}

void fleet_kill9(struct proc **p)
{
    if (!*p)
        return;
    proc_kill(*p, SIGKILL);
    struct proc_result res;
    proc_wait(*p, fleet_ms(5000), &res);
    proc_result_free(&res);
    *p = NULL;
}

/* Starts argv with its standard error appended to err_path (through sh), so
 * that a chatty long-running process never blocks on a full pipe. exec keeps
 * the pid, so signals reach the program itself. */
static struct proc *start_logged(const char *const argv[], const char *err_path)
{
    const char *args[MAX_ARGS];
    size_t n = 0;
    args[n++] = "/bin/sh";
    args[n++] = "-c";
    args[n++] = "exec \"$@\" 2>>\"$0\"";
    args[n++] = err_path;
    for (size_t i = 0; argv[i] && n < MAX_ARGS - 1; i++)
        args[n++] = argv[i];
    args[n] = NULL;
    return proc_start(args, NULL);
}

/* Sanitizer and valgrind reports in a captured stderr file. */
static bool has_report(const char *text)
{
    return text && (strstr(text, "Sanitizer") || strstr(text, "runtime error:") ||
                    (strstr(text, "ERROR SUMMARY:") && !strstr(text, "ERROR SUMMARY: 0 ")));
}

/* SIGTERM, wait, and check the exit and the stderr file. */
static void stop_logged(struct proc **p, const char *what, const char *err_path, int limit_ms)
{
    if (!*p)
        return;
    struct proc_result res;
    proc_kill(*p, SIGTERM);
    bool in_time = proc_wait(*p, fleet_ms(limit_ms), &res);
    *p = NULL;
    char *err = fleet_read_file(err_path, NULL);
    bool report = has_report(err);
    if (!in_time || res.exit_code != 0 || report) {
        /* ctest scans the output for sanitizer reports: show it. */
        fprintf(stderr, "---- %s stderr (%s) ----\n%s\n---- end ----\n", what, err_path,
                err ? err : "(none)");
    }
    cr_expect(in_time, "%s did not stop within %d ms of SIGTERM", what, fleet_ms(limit_ms));
    cr_expect_eq(res.exit_code, 0, "%s exit code %d (signal %d)", what, res.exit_code,
                 res.term_signal);
    cr_expect(!report, "%s printed a sanitizer or valgrind report", what);
    free(err);
    proc_result_free(&res);
}

/* ---- the server ------------------------------------------------------------ */

void fleet_server_init(struct fleet *f, struct fleet_server *s, const char *extra_conf)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->dir, sizeof(s->dir), "%s/server", f->root);
    snprintf(s->stderr_path, sizeof(s->stderr_path), "%s/server.stderr", f->root);
    s->port = fleet_free_port();
    snprintf(s->url, sizeof(s->url), "https://127.0.0.1:%d", s->port);
    char listen[32];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", s->port);
    const char *argv[] = {MMR_SERVER_BIN, "init", "--dir", s->dir, "--listen", listen, NULL};
    struct proc_result res;
    proc_run(argv, NULL, fleet_ms(30000), &res);
    cr_assert_eq(res.exit_code, 0, "mamori-server init: exit %d\n%s%s", res.exit_code, res.out,
                 res.err);
    proc_result_free(&res);
    if (extra_conf) {
        char *path = mmr_path_join(s->dir, "server.conf");
        FILE *cf = fopen(path, "a");
        cr_assert(cf, "cannot append to %s", path);
        fputs(extra_conf, cf);
        fclose(cf);
        free(path);
    }
}

static bool server_answers_cb(void *ud)
{
    return fleet_server_answers(ud);
}

void fleet_server_start(struct fleet_server *s)
{
    cr_assert(!s->proc, "server already running");
    char listen[32];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", s->port);
    const char *argv[] = {MMR_SERVER_BIN, "run", "--dir", s->dir, "--listen", listen, NULL};
    s->proc = start_logged(argv, s->stderr_path);
    if (fleet_wait_for(server_answers_cb, s, 15000))
        return;
    struct proc_result res;
    proc_kill(s->proc, SIGKILL);
    proc_wait(s->proc, fleet_ms(5000), &res);
    s->proc = NULL;
    char *err = fleet_read_file(s->stderr_path, NULL);
    proc_result_free(&res);
    cr_assert_fail("mamori-server did not answer on %s; stderr:\n%s", s->url, err ? err : "");
}

void fleet_server_stop(struct fleet_server *s)
{
    stop_logged(&s->proc, "mamori-server", s->stderr_path, 5000);
}

void fleet_server_kill9(struct fleet_server *s)
{
    fleet_kill9(&s->proc);
}

int fleet_admin_call(const struct fleet_server *s, const char *method, const char *target,
                     const json_t *body, json_t **reply)
{
    *reply = NULL;
    char *pki = mmr_path_join(s->dir, "pki");
    char *ca_path = mmr_path_join(pki, "root.crt");
    char *tok_path = mmr_path_join(s->dir, "admin.token");
    char *ca = fleet_read_file(ca_path, NULL);
    char *tok = fleet_read_file(tok_path, NULL);
    free(pki);
    free(ca_path);
    free(tok_path);
    struct mmr_tls_client *tls = NULL;
    struct mmr_https *https = NULL;
    int rc = ca && tok ? 0 : mmr_err_set(MMR_ENOENT, "no admin credentials in %s", s->dir);
    struct mmr_tls_client_opts topts = {.ca_pem = ca};
    if (rc == 0)
        rc = mmr_tls_client_new(&topts, &tls);
    struct mmr_https_opts hopts = {.url = s->url, .tls = tls, .timeout_ms = fleet_ms(5000)};
    if (rc == 0)
        rc = mmr_https_new(&hopts, &https);
    if (rc == 0) {
        tok[strcspn(tok, "\r\n")] = '\0';
        char *auth = mmr_asprintf("Bearer %s", tok);
        struct mmr_http_header h[2] = {{"Authorization", auth},
                                       {"Content-Type", "application/json"}};
        char *text = body ? mmr_json_dump_line(body) : NULL;
        struct mmr_http_message resp;
        rc = mmr_https_request(https, method, target, h, text ? 2 : 1, text,
                               text ? strlen(text) : 0, &resp);
        if (rc == 0) {
            rc = resp.status;
            mmr_json_parse(resp.body, resp.body_len, MMR_JSON_MAX_DEPTH, reply);
            mmr_http_message_free(&resp);
        }
        free(text);
        free(auth);
    }
    mmr_https_free(https);
    mmr_tls_client_free(tls);
    free(ca);
    free(tok);
    return rc;
}

bool fleet_server_answers(const struct fleet_server *s)
{
    json_t *reply = NULL;
    int status = fleet_admin_call(s, "GET", "/admin/v1/devices?limit=1", NULL, &reply);
    json_decref(reply);
    return status == 200;
}

/* Collects the NULL-terminated varargs after the fixed words into argv. */
static void collect_args(const char **argv, size_t *n, va_list ap)
{
    for (const char *a = va_arg(ap, const char *); a && *n < MAX_ARGS - 1;
         a = va_arg(ap, const char *))
        argv[(*n)++] = a;
    argv[*n] = NULL;
}

int fleet_adm(const struct fleet_server *s, struct proc_result *res, ...)
{
    const char *argv[MAX_ARGS] = {MMR_ADM_BIN, "--dir", s->dir};
    size_t n = 3;
    va_list ap;
    va_start(ap, res);
    collect_args(argv, &n, ap);
    va_end(ap);
    proc_run(argv, NULL, fleet_ms(30000), res);
    return res->exit_code;
}

json_t *fleet_adm_json(const struct fleet_server *s, ...)
{
    const char *argv[MAX_ARGS] = {MMR_ADM_BIN, "--dir", s->dir, "--json"};
    size_t n = 4;
    va_list ap;
    va_start(ap, s);
    collect_args(argv, &n, ap);
    va_end(ap);
    struct proc_result res;
    proc_run(argv, NULL, fleet_ms(30000), &res);
    cr_assert_eq(res.exit_code, 0, "mamoriadm %s %s: exit %d\n%s", argv[4], argv[5] ? argv[5] : "",
                 res.exit_code, res.err);
    json_t *doc = NULL;
    cr_assert_eq(mmr_json_parse(res.out, strlen(res.out), MMR_JSON_MAX_DEPTH, &doc), 0,
                 "mamoriadm printed no JSON: %s", res.out);
    proc_result_free(&res);
    return doc;
}

char *fleet_token_create(const struct fleet_server *s, const char *org, const char *group, int uses,
                         const char *expires)
{
    char uses_s[16];
    snprintf(uses_s, sizeof(uses_s), "%d", uses);
    struct proc_result res;
    int rc = expires ? fleet_adm(s, &res, "token", "create", "--org", org, "--group", group,
                                 "--uses", uses_s, "--expires", expires, NULL)
                     : fleet_adm(s, &res, "token", "create", "--org", org, "--group", group,
                                 "--uses", uses_s, NULL);
    cr_assert_eq(rc, 0, "token create: exit %d\n%s", rc, res.err);
    res.out[strcspn(res.out, "\r\n")] = '\0';
    cr_assert(res.out[0], "token create printed nothing");
    char *token = mmr_strdup(res.out);
    proc_result_free(&res);
    return token;
}

void fleet_client_open(struct fleet_client *c, const struct fleet_server *s, const char *cert_pem,
                       const char *key_pem)
{
    memset(c, 0, sizeof(*c));
    char *pki = mmr_path_join(s->dir, "pki");
    char *ca_path = mmr_path_join(pki, "root.crt");
    char *ca = fleet_read_file(ca_path, NULL);
    free(pki);
    free(ca_path);
    cr_assert(ca, "no root.crt in %s", s->dir);
    struct mmr_key *key = NULL;
    if (key_pem)
        cr_assert_eq(mmr_key_from_pem(key_pem, &key), 0, "%s", mmr_err_msg());
    struct mmr_tls_client_opts topts = {.ca_pem = ca, .cert_chain_pem = cert_pem, .key = key};
    int rc = mmr_tls_client_new(&topts, &c->tls);
    mmr_key_free(key);
    free(ca);
    cr_assert_eq(rc, 0, "%s", mmr_err_msg());
    struct mmr_https_opts hopts = {.url = s->url, .tls = c->tls, .timeout_ms = fleet_ms(10000)};
    cr_assert_eq(mmr_https_new(&hopts, &c->https), 0, "%s", mmr_err_msg());
}

void fleet_client_open_device(struct fleet_client *c, const struct fleet_server *s,
                              const struct fleet_agent *a)
{
    char *cert_path = fleet_agent_path(a, "device.crt");
    char *key_path = fleet_agent_path(a, "device.key");
    char *cert = fleet_read_file(cert_path, NULL);
    char *key = fleet_read_file(key_path, NULL);
    cr_assert(cert && key, "no device identity in %s", a->dir);
    fleet_client_open(c, s, cert, key);
    memset(key, 0, strlen(key));
    free(key);
    free(cert);
    free(cert_path);
    free(key_path);
}

void fleet_client_use_admin_token(struct fleet_client *c, const struct fleet_server *s)
{
    char *path = mmr_path_join(s->dir, "admin.token");
    char *tok = fleet_read_file(path, NULL);
    free(path);
    cr_assert(tok, "no admin.token in %s", s->dir);
    tok[strcspn(tok, "\r\n")] = '\0';
    free(c->auth);
    c->auth = mmr_asprintf("Bearer %s", tok);
    free(tok);
}

int fleet_client_call(struct fleet_client *c, const char *method, const char *target,
                      const char *body, size_t len, json_t **reply)
{
    if (reply)
        *reply = NULL;
    struct mmr_http_header h[2];
    size_t n = 0;
    if (c->auth)
        h[n++] = (struct mmr_http_header){"Authorization", c->auth};
    if (body)
        h[n++] = (struct mmr_http_header){"Content-Type", "application/json"};
    struct mmr_http_message resp;
    int rc = mmr_https_request(c->https, method, target, h, n, body, len, &resp);
    if (rc < 0)
        return rc;
    if (reply)
        mmr_json_parse(resp.body, resp.body_len, MMR_JSON_MAX_DEPTH, reply);
    rc = resp.status;
    mmr_http_message_free(&resp);
    return rc;
}

void fleet_client_close(struct fleet_client *c)
{
    mmr_https_free(c->https);
    mmr_tls_client_free(c->tls);
    free(c->auth);
    memset(c, 0, sizeof(*c));
}

/* ---- agents ----------------------------------------------------------------- */

void fleet_agent_init(struct fleet *f, struct fleet_agent *a, const char *name,
                      const struct fleet_server *s, const char *hardware_id, const char *token,
                      const char *extra_conf)
{
    memset(a, 0, sizeof(*a));
    snprintf(a->dir, sizeof(a->dir), "%s/%s", f->root, name);
    snprintf(a->stderr_path, sizeof(a->stderr_path), "%s/%s.stderr", f->root, name);
    if (hardware_id) {
        snprintf(a->hardware_id, sizeof(a->hardware_id), "%s", hardware_id);
    } else {
        /* A stable id from the name: "test-hw-" and 12 hex digits. */
        uint64_t h = 1469598103934665603ULL;
        for (const char *p = name; *p; p++)
            h = (h ^ (unsigned char)*p) * 1099511628211ULL;
        snprintf(a->hardware_id, sizeof(a->hardware_id), "test-hw-%012llx",
                 (unsigned long long)(h & 0xffffffffffffULL));
    }
    cr_assert_eq(mmr_mkdir_p(a->dir, true), 0, "%s", mmr_err_msg());
    struct mmr_buf conf = {0};
    mmr_buf_appendf(&conf, "[agent]\nhardware_id = %s\n\n[log]\nlevel = info\n\n[server]\n",
                    a->hardware_id);
    if (s)
        mmr_buf_appendf(&conf, "url = %s\n", s->url);
    if (token)
        mmr_buf_appendf(&conf, "enroll_token = %s\n", token);
    if (extra_conf)
        mmr_buf_appendf(&conf, "%s", extra_conf);
    char *path = mmr_path_join(a->dir, "agent.conf");
    fleet_write_file(path, conf.data);
    free(path);
    mmr_buf_free(&conf);
}

char *fleet_agent_path(const struct fleet_agent *a, const char *name)
{
    return mmr_path_join(a->dir, name);
}

json_t *fleet_agent_status(const struct fleet_agent *a)
{
    char *endpoint = NULL;
    if (mmr_ipc_endpoint(a->dir, &endpoint) < 0)
        return NULL;
    json_t *st = NULL;
    if (mmr_ipc_call(endpoint, "status", NULL, fleet_ms(5000), &st) < 0)
        st = NULL;
    free(endpoint);
    return st;
}

static bool agent_answers_cb(void *ud)
{
    json_t *st = fleet_agent_status(ud);
    json_decref(st);
    return st != NULL;
}

void fleet_agent_start(struct fleet_agent *a)
{
    cr_assert(!a->proc, "agent %s already running", a->dir);
    const char *argv[] = {MMR_AGENT_BIN, "-f", "--data-dir", a->dir, NULL};
    a->proc = start_logged(argv, a->stderr_path);
    if (fleet_wait_for(agent_answers_cb, a, 10000))
        return;
    fleet_kill9(&a->proc);
    char *err = fleet_read_file(a->stderr_path, NULL);
    cr_assert_fail("agent %s did not answer; stderr:\n%s", a->dir, err ? err : "");
}

static bool enrolled_cb(void *ud)
{
    json_t *st = fleet_agent_status(ud);
    bool yes = st && json_is_true(fleet_json_path(st, "enrollment.enrolled"));
    json_decref(st);
    return yes;
}

bool fleet_agent_wait_enrolled(const struct fleet_agent *a, int timeout_ms)
{
    return fleet_wait_for(enrolled_cb, (void *)a, timeout_ms);
}

void fleet_agent_start_enrolled(struct fleet_agent *a)
{
    fleet_agent_start(a);
    if (fleet_agent_wait_enrolled(a, 20000))
        return;
    char *err = fleet_read_file(a->stderr_path, NULL);
    cr_assert_fail("agent %s did not enroll; stderr:\n%s", a->dir, err ? err : "");
}

void fleet_agent_stop(struct fleet_agent *a)
{
    stop_logged(&a->proc, "mamori-agent", a->stderr_path, 2000);
}

void fleet_agent_kill9(struct fleet_agent *a)
{
    fleet_kill9(&a->proc);
}

int fleet_ctl(const struct fleet_agent *a, struct proc_result *res, ...)
{
    const char *argv[MAX_ARGS] = {MMR_CTL_BIN, "--data-dir", a->dir};
    size_t n = 3;
    va_list ap;
    va_start(ap, res);
    collect_args(argv, &n, ap);
    va_end(ap);
    proc_run(argv, NULL, fleet_ms(30000), res);
    return res->exit_code;
}

json_t *fleet_ctl_status(const struct fleet_agent *a)
{
    struct proc_result res;
    int rc = fleet_ctl(a, &res, "status", "--json", NULL);
    cr_assert_eq(rc, 0, "mamorictl status --json: exit %d\n%s", rc, res.err);
    json_t *doc = NULL;
    cr_assert_eq(mmr_json_parse_object(res.out, strlen(res.out), MMR_JSON_MAX_DEPTH, &doc), 0,
                 "status is not JSON: %s", res.out);
    proc_result_free(&res);
    return doc;
}

int fleet_agent_enroll(const struct fleet_agent *a, const char *token, struct proc_result *res)
{
    const char *argv[] = {MMR_AGENT_BIN, "enroll", token, "--data-dir", a->dir, NULL};
    proc_run(argv, NULL, fleet_ms(30000), res);
    return res->exit_code;
}

/* ---- JSON paths --------------------------------------------------------------- */

json_t *fleet_json_path(const json_t *doc, const char *path)
{
    char *copy = mmr_strdup(path);
    const json_t *cur = doc;
    for (char *save = NULL, *tok = strtok_r(copy, ".", &save); tok && cur;
         tok = strtok_r(NULL, ".", &save))
        cur = json_object_get(cur, tok);
    free(copy);
    return (json_t *)cur;
}

const char *fleet_json_str(const json_t *doc, const char *path)
{
    return json_string_value(fleet_json_path(doc, path));
}

long long fleet_json_int(const json_t *doc, const char *path)
{
    return (long long)json_integer_value(fleet_json_path(doc, path));
}
