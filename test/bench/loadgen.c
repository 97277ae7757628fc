/* Load generator for mamori-server (make bench): enrolls N simulated agents
 * through /v1/enroll, then drives their check-ins over mutual TLS from T
 * threads, each an event loop, and prints "name: value unit" lines. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "mamori_version.h"
#include "shared/err.h"
#include "shared/gzip.h"
#include "shared/http.h"
#include "shared/https.h"
#include "shared/json.h"
#include "shared/mem.h"
#include "shared/pki.h"
#include "shared/platform.h"
#include "shared/tls.h"
#include "shared/token.h"

#define REQUEST_TIMEOUT_MS 30000
#define CLOSE_TIMEOUT_MS   5000
#define READ_CHUNK         (64 * 1024)
#define MAX_THREADS        64
#define ERRORS_SHOWN       5
#define USER_HZ            100 /* /proc/<pid>/stat ticks: 100 on every Linux we build for */

/* The phases, in order. Timed ones run for --seconds each. */
enum phase {
    PH_ENROLL,    /* /v1/enroll for every agent, over keep-alive connections */
    PH_FIRST,     /* each agent's first check-in: a full mutual-TLS handshake */
    PH_HOLD,      /* --hold agents connect (resuming) and keep their connections open */
    PH_KEEPALIVE, /* timed: check-ins on those open connections */
    PH_CLOSE,     /* the held connections close */
    PH_RESUMED,   /* timed: every check-in on a new connection resuming its TLS session */
    PH_COUNT
};

static const char *const phase_names[PH_COUNT] = {"enroll",     "first check-in", "hold",
                                                  "keep-alive", "close",          "resumed"};

struct counters {
    uint64_t ok;      /* requests answered 200 (in a timed phase: before the deadline) */
    uint64_t late;    /* timed phases: answered after the deadline */
    uint64_t errors;  /* failed requests, refusals, failed connections */
    uint64_t full;    /* connections that made a full handshake */
    uint64_t resumed; /* connections that resumed a TLS session */
    uint64_t retries; /* kept-alive connections found closed by the server, retried */
};

struct conn;

struct agent {
    struct mmr_tls_client *cli; /* identity and saved session; NULL until enrolled */
    struct mmr_buf checkin;     /* the whole check-in request, HTTP plaintext */
    struct conn *conn;          /* its open connection, or NULL */
    bool busy;
};

struct worker {
    uv_loop_t loop;
    uv_thread_t thread;
    uv_timer_t deadline;
    struct agent *agents; /* this worker's slice */
    size_t count;
    size_t first_index; /* of agents[0] in the whole fleet */
    size_t limit;       /* agents used in this phase: [0, limit) */
    size_t cursor;
    enum phase phase;
    bool draining; /* timed phase over: start nothing new */
    int inflight;
    int quitting;       /* connections closing gracefully */
    struct conn **idle; /* enrollment connections waiting for work */
    size_t nidle;
    struct counters c[PH_COUNT];
    int errors_shown;
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect_req;
    struct worker *w;
    struct agent *a; /* NULL: an enrollment connection */
    struct mmr_tls_conn *tls;
    struct mmr_http_parser *http;
    struct mmr_buf pending; /* the request, until the handshake is done */
    size_t job;             /* enrollment: index of the agent being enrolled */
    int handles;
    bool counted, closing, quitting, in_request, got_bytes, reused, retried;
};

/* ---- shared state (read-only while workers run) ------------------------------ */

static struct {
    char *url, *host, *dir;
    struct sockaddr_storage addr;
    size_t agents, hold;
    int threads, concurrency, seconds;
    int64_t server_pid;
    struct mmr_token token;
    struct mmr_key *key; /* one key pair for every simulated agent */
    char *csr;
    struct mmr_tls_client *enroll_cli; /* trusts the CA pinned by the token */
    uv_mutex_t lock;                   /* serialises error messages */
    struct agent *fleet;
    struct worker workers[MAX_THREADS];
} g;

/* ---- helpers ---------------------------------------------------------------- */

static double now_s(void)
{
    return (double)uv_hrtime() / 1e9;
}

static void report_error(struct worker *w, const char *what, const char *msg)
{
    w->c[w->phase].errors++;
    if (w->errors_shown++ >= ERRORS_SHOWN)
        return;
    uv_mutex_lock(&g.lock);
    fprintf(stderr, "loadgen: %s: %s\n", what, msg);
    uv_mutex_unlock(&g.lock);
}

/* A "Key:   123 kB" line of /proc/<pid>/status, in KiB; -1 when absent. */
static int64_t proc_status_kib(int64_t pid, const char *key)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%lld/status", (long long)pid);
    char *text = NULL;
    size_t len = 0;
    if (mmr_file_read_all(path, 1 << 20, &text, &len) < 0)
        return -1;
    int64_t v = -1;
    size_t klen = strlen(key);
    for (char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL)
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            v = strtoll(line + klen + 1, NULL, 10);
            break;
        }
    free(text);
    return v;
}

/* CPU seconds (user + system) the process has used, from /proc/<pid>/stat. */
static double proc_cpu_s(int64_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%lld/stat", (long long)pid);
    char *text = NULL;
    size_t len = 0;
    if (mmr_file_read_all(path, 1 << 16, &text, &len) < 0)
        return 0;
    /* The command name may hold spaces: fields count from the last ')'. */
    char *p = strrchr(text, ')');
    double s = 0;
    if (p) {
        unsigned long long utime = 0, stime = 0;
        /* After ')': state(3) ... utime(14) stime(15). */
        if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                   &stime) == 2)
            s = (double)(utime + stime) / USER_HZ;
    }
    free(text);
    return s;
}

static double self_cpu_s(void)
{
    uv_rusage_t ru;
    if (uv_getrusage(&ru) != 0)
        return 0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---- connections --------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    buf->base = mmr_malloc(READ_CHUNK);
    buf->len = READ_CHUNK;
}

static void on_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->handles > 0)
        return;
    mmr_tls_conn_free(c->tls);
    mmr_http_parser_free(c->http);
    mmr_buf_free(&c->pending);
    free(c);
}

static void request_done(struct conn *c, int status, struct mmr_http_message *resp,
                         const char *error);
static void maybe_finish(struct worker *w);

/* Closes at once (errors, the server's close, the end of a graceful close). */
static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->a && c->a->conn == c)
        c->a->conn = NULL;
    struct worker *w = c->w;
    for (size_t i = 0; !c->a && i < w->nidle; i++)
        if (w->idle[i] == c)
            w->idle[i--] = w->idle[--w->nidle];
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    if (c->quitting) {
        w->quitting--;
        maybe_finish(w); /* the phase may have waited for this one */
    }
}

/* The connection failed: a request under way fails with it, unless it went
 * out on a kept-alive connection that the server had closed meanwhile (no
 * byte came back), which earns one retry on a new connection, as the agent
 * does. */
static void conn_fail(struct conn *c, const char *msg)
{
    if (c->closing)
        return;
    bool in_request = c->in_request;
    c->in_request = false;
    conn_close(c);
    if (in_request)
        request_done(c, (c->reused && !c->got_bytes && !c->retried) ? -1 : -2, NULL, msg);
}

struct write_req {
    uv_write_t req;
    char *data;
};

static void on_written(uv_write_t *req, int status)
{
    struct write_req *wr = (struct write_req *)req;
    struct conn *c = req->data;
    free(wr->data);
    free(wr);
    if (status < 0)
        conn_fail(c, uv_strerror(status));
}

static void flush(struct conn *c)
{
    size_t len;
    char *data = mmr_tls_conn_take_output(c->tls, &len);
    if (!data)
        return;
    if (c->closing) {
        free(data);
        return;
    }
    struct write_req *wr = mmr_malloc(sizeof(*wr));
    wr->data = data;
    wr->req.data = c;
    uv_buf_t buf = uv_buf_init(data, (unsigned)len);
    int rc = uv_write(&wr->req, (uv_stream_t *)&c->tcp, &buf, 1, on_written);
    if (rc < 0) {
        free(data);
        free(wr);
        conn_fail(c, uv_strerror(rc));
    }
}

static void on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->quitting)
        conn_close(c);
    else
        conn_fail(c, "timed out");
}

/* Sends the pending request (the handshake is done). */
static void send_pending(struct conn *c)
{
    if (c->pending.len == 0)
        return;
    int rc = mmr_tls_conn_write(c->tls, c->pending.data, c->pending.len);
    c->pending.len = 0;
    if (rc < 0) {
        conn_fail(c, mmr_err_msg());
        return;
    }
    flush(c);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (n <= 0 || c->closing) {
        free(buf->base);
        if (n < 0 && !c->closing) {
            if (c->in_request)
                conn_fail(c,
                          n == UV_EOF ? "the server closed the connection" : uv_strerror((int)n));
            else
                conn_close(c); /* idle close by the server, or the end of a graceful close */
        }
        return;
    }
    int rc = mmr_tls_conn_feed(c->tls, buf->base, (size_t)n);
    free(buf->base);
    if (rc == 0 && !mmr_tls_conn_handshake_done(c->tls)) {
        rc = mmr_tls_conn_handshake(c->tls);
        if (rc == MMR_TLS_WANT_INPUT)
            rc = 0;
    }
    flush(c);
    if (rc < 0) {
        conn_fail(c, mmr_err_msg());
        return;
    }
    if (!mmr_tls_conn_handshake_done(c->tls))
        return;
    if (!c->counted) {
        c->counted = true;
        if (mmr_tls_conn_resumed(c->tls))
            c->w->c[c->w->phase].resumed++;
        else
            c->w->c[c->w->phase].full++;
        send_pending(c);
        if (c->closing)
            return;
    }
    char plain[16 * 1024];
    size_t got = 0;
    while (!c->closing &&
           (rc = mmr_tls_conn_read(c->tls, plain, sizeof(plain), &got)) == MMR_TLS_OK) {
        if (!c->in_request)
            continue; /* nothing is expected: ignore */
        c->got_bytes = true;
        size_t used = 0;
        int prc = mmr_http_parser_feed(c->http, plain, got, &used);
        if (prc < 0) {
            conn_fail(c, mmr_err_msg());
            return;
        }
        if (prc == MMR_HTTP_DONE) {
            struct mmr_http_message msg;
            mmr_http_parser_take(c->http, &msg);
            c->in_request = false;
            uv_timer_stop(&c->timer);
            request_done(c, msg.status, &msg, NULL);
            mmr_http_message_free(&msg);
        }
    }
    if (c->closing)
        return;
    if (rc == MMR_TLS_EOF) {
        if (c->in_request)
            conn_fail(c, "the server ended the TLS session");
        else
            conn_close(c);
    } else if (rc < 0) {
        conn_fail(c, mmr_err_msg());
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    if (c->closing)
        return;
    if (status < 0) {
        conn_fail(c, uv_strerror(status));
        return;
    }
    int rc = mmr_tls_conn_handshake(c->tls);
    if (rc < 0) {
        conn_fail(c, mmr_err_msg());
        return;
    }
    flush(c);
    if (!c->closing)
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static struct conn *conn_new(struct worker *w, struct agent *a, struct mmr_tls_client *cli)
{
    struct conn *c = mmr_calloc(1, sizeof(*c));
    c->w = w;
    c->a = a;
    c->handles = 2;
    uv_tcp_init(&w->loop, &c->tcp);
    uv_timer_init(&w->loop, &c->timer);
    c->tcp.data = c->timer.data = c->connect_req.data = c;
    c->http = mmr_http_parser_new(MMR_HTTP_RESPONSE, NULL);
    if (mmr_tls_conn_new_client(cli, g.host, &c->tls) < 0) {
        report_error(w, "TLS", mmr_err_msg());
        conn_close(c);
        return NULL;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    int rc = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&g.addr, on_connect);
    if (rc < 0) {
        report_error(w, "connect", uv_strerror(rc));
        conn_close(c);
        return NULL;
    }
    return c;
}

/* Sends one request on c, connecting first when needed. */
static void conn_request(struct conn *c, const void *req, size_t len)
{
    c->in_request = true;
    c->got_bytes = false;
    uv_timer_start(&c->timer, on_timer, REQUEST_TIMEOUT_MS, 0);
    mmr_buf_append(&c->pending, req, len);
    if (c->counted)
        send_pending(c);
}

/* Ends the connection politely: close_notify, then the server closes its end
 * (as its idle timeout would), then ours. */
static void conn_quit(struct conn *c)
{
    if (c->closing || c->quitting)
        return;
    if (c->a && c->a->conn == c)
        c->a->conn = NULL;
    c->quitting = true;
    c->w->quitting++;
    if (!c->counted || mmr_tls_conn_close_notify(c->tls) < 0) {
        conn_close(c);
        return;
    }
    flush(c);
    uv_timer_start(&c->timer, on_timer, CLOSE_TIMEOUT_MS, 0);
}

/* ---- the phases -------------------------------------------------------------- */

static void pump(struct worker *w);

static void maybe_finish(struct worker *w)
{
    if (w->inflight > 0 || w->quitting > 0)
        return;
    bool more;
    switch (w->phase) {
    case PH_ENROLL:
    case PH_FIRST:
    case PH_HOLD:
        more = w->cursor < w->limit;
        break;
    case PH_KEEPALIVE:
    case PH_RESUMED:
        more = !w->draining;
        break;
    default:
        more = false;
    }
    if (!more) {
        while (w->nidle > 0)
            conn_quit(w->idle[--w->nidle]);
        if (w->quitting == 0)
            uv_stop(&w->loop);
    }
}

static void enroll_start(struct worker *w, struct conn *c, size_t i)
{
    char hw[64];
    snprintf(hw, sizeof(hw), "10adc0de-0000-4000-8000-%012zu", w->first_index + i);
    char host[32];
    snprintf(host, sizeof(host), "sim-%06zu", w->first_index + i);
    json_t *body =
        json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "token_id", g.token.id, "token_secret",
                  g.token.secret, "csr", g.csr, "hardware_id", hw, "hostname", host, "os",
                  "Linux (Debian GNU/Linux 12 x86_64)", "agent_version", MMR_VERSION);
    char *text = mmr_json_dump_line(body);
    json_decref(body);
    struct mmr_buf req = {0};
    struct mmr_http_header h[2] = {{"Content-Type", "application/json"},
                                   {"Accept", "application/json"}};
    mmr_http_write_request(&req, "POST", g.host, "/v1/enroll", h, 2, text, strlen(text), true);
    free(text);
    c->job = i;
    w->inflight++;
    conn_request(c, req.data, req.len);
    mmr_buf_free(&req);
}

/* The check-in request of agent i: what the real agent sends, gzipped. */
static void build_checkin(struct worker *w, size_t i, struct agent *a)
{
    char host[32];
    snprintf(host, sizeof(host), "sim-%06zu", w->first_index + i);
    json_t *body = json_pack(
        "{s:s,s:s,s:s,s:I,s:I,s:{s:{s:I,s:I,s:[I,I,I,I],s:[I,I,I]},s:{s:{s:s,s:s},s:{s:s,"
        "s:s},s:{s:s,s:s}}}}",
        "hostname", host, "os", "Linux (Debian GNU/Linux 12 x86_64)", "agent_version", MMR_VERSION,
        "policy_version", (json_int_t)0, "queue_depth", (json_int_t)0, "posture", "queue", "events",
        (json_int_t)0, "bytes", (json_int_t)0, "by_severity", (json_int_t)0, (json_int_t)0,
        (json_int_t)0, (json_int_t)0, "dropped", (json_int_t)0, (json_int_t)0, (json_int_t)0,
        "modules", "checkin", "state", "ok", "detail", g.url, "queue", "state", "ok", "detail",
        "agent.db", "control", "state", "ok", "detail", "listening");
    char *text = mmr_json_dump_line(body);
    json_decref(body);
    struct mmr_buf gz = {0};
    mmr_gzip_compress(text, strlen(text), MMR_GZIP_LEVEL_DEFAULT, &gz);
    free(text);
    struct mmr_http_header h[3] = {{"Accept", "application/json"},
                                   {"Content-Type", "application/json"},
                                   {"Content-Encoding", "gzip"}};
    mmr_http_write_request(&a->checkin, "POST", g.host, "/v1/checkin", h, 3, gz.data, gz.len, true);
    mmr_buf_free(&gz);
}

static int enroll_finish(struct worker *w, size_t i, const struct mmr_http_message *resp)
{
    json_t *reply = NULL;
    const char *cert, *chain;
    int rc = mmr_json_parse_object(resp->body, resp->body_len, MMR_JSON_MAX_DEPTH, &reply);
    if (rc == 0 && ((rc = mmr_json_get_str(reply, "$", "certificate", true, &cert)) < 0 ||
                    (rc = mmr_json_get_str(reply, "$", "ca_chain", true, &chain)) < 0))
        rc = mmr_err_wrap(rc, "enrollment reply");
    if (rc == 0) {
        struct mmr_tls_client_opts o = {.ca_pem = chain, .cert_chain_pem = cert, .key = g.key};
        rc = mmr_tls_client_new(&o, &w->agents[i].cli);
    }
    if (rc == 0)
        build_checkin(w, i, &w->agents[i]);
    json_decref(reply);
    return rc;
}

/* Returns false when no connection could even be started (counted as an error). */
static bool checkin_start(struct worker *w, struct agent *a, bool retry)
{
    struct conn *c = a->conn;
    if (c && !c->closing && !c->quitting) {
        c->reused = true;
    } else {
        c = conn_new(w, a, a->cli);
        if (!c)
            return false;
        a->conn = c;
    }
    a->busy = true;
    w->inflight++;
    c->retried = retry;
    conn_request(c, a->checkin.data, a->checkin.len);
    return true;
}

/* A request ended: status is the HTTP status, -1 for a dead kept-alive
 * connection worth a retry, -2 for a failure. */
static void request_done(struct conn *c, int status, struct mmr_http_message *resp,
                         const char *error)
{
    struct worker *w = c->w;
    struct counters *k = &w->c[w->phase];
    w->inflight--;
    if (!c->a) { /* enrollment */
        if (status == 200 && enroll_finish(w, c->job, resp) == 0) {
            k->ok++;
        } else if (status > 0) {
            char msg[256];
            snprintf(msg, sizeof(msg), "HTTP %d %.200s", status,
                     status == 200 ? mmr_err_msg() : resp->body);
            report_error(w, "enroll", msg);
        } else {
            report_error(w, "enroll", error);
        }
        if (!c->closing) {
            w->idle[w->nidle++] = c;
        }
        pump(w);
        maybe_finish(w);
        return;
    }
    struct agent *a = c->a;
    a->busy = false;
    if (status == -1) {
        k->retries++;
        if (checkin_start(w, a, true))
            return;
    }
    if (status == 200) {
        if (w->draining)
            k->late++;
        else
            k->ok++;
    } else if (status > 0) {
        char msg[256];
        snprintf(msg, sizeof(msg), "HTTP %d %.200s", status, resp->body);
        report_error(w, "check-in", msg);
    } else {
        report_error(w, "check-in", error);
    }
    if (!c->closing && (w->phase == PH_FIRST || w->phase == PH_RESUMED || status != 200))
        conn_quit(c);
    pump(w);
    maybe_finish(w);
}

/* Starts requests until --concurrency are in flight or the phase has no more. */
static void pump(struct worker *w)
{
    while (w->inflight < g.concurrency && !w->draining) {
        if (w->phase == PH_ENROLL) {
            if (w->cursor >= w->limit)
                return;
            struct conn *c = w->nidle > 0 ? w->idle[--w->nidle] : NULL;
            if (!c && !(c = conn_new(w, NULL, g.enroll_cli)))
                return;
            enroll_start(w, c, w->cursor++);
            continue;
        }
        if (w->phase == PH_FIRST || w->phase == PH_HOLD) {
            if (w->cursor >= w->limit)
                return;
            struct agent *a = &w->agents[w->cursor++];
            if (a->cli && !checkin_start(w, a, false))
                return;
            continue;
        }
        /* Timed phases: round robin, skipping agents already under way. */
        struct agent *a = NULL;
        for (size_t tries = 0; tries < w->limit && !a; tries++) {
            struct agent *cand = &w->agents[w->cursor++ % w->limit];
            if (cand->cli && !cand->busy)
                a = cand;
        }
        if (!a || !checkin_start(w, a, false))
            return;
    }
}

static void on_deadline(uv_timer_t *t)
{
    struct worker *w = t->data;
    w->draining = true;
    maybe_finish(w);
}

static void worker_run(void *arg)
{
    struct worker *w = arg;
    w->cursor = 0;
    w->draining = false;
    if (w->phase == PH_CLOSE) {
        for (size_t i = 0; i < w->count; i++)
            if (w->agents[i].conn)
                conn_quit(w->agents[i].conn);
    } else {
        if (w->phase == PH_KEEPALIVE || w->phase == PH_RESUMED)
            uv_timer_start(&w->deadline, on_deadline, (uint64_t)g.seconds * 1000, 0);
        pump(w);
    }
    maybe_finish(w);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_timer_stop(&w->deadline);
}

/* Runs one phase on every worker; returns its wall time in seconds. */
static double run_phase(enum phase ph, size_t total_limit)
{
    double t0 = now_s();
    for (int i = 0; i < g.threads; i++) {
        struct worker *w = &g.workers[i];
        w->phase = ph;
        /* This worker's share of the first total_limit agents of the fleet. */
        size_t base = total_limit / (size_t)g.threads, extra = total_limit % (size_t)g.threads;
        w->limit = base + ((size_t)i < extra ? 1 : 0);
        if (w->limit > w->count)
            w->limit = w->count;
        if (uv_thread_create(&w->thread, worker_run, w) != 0) {
            fprintf(stderr, "loadgen: cannot start a thread\n");
            exit(1);
        }
    }
    for (int i = 0; i < g.threads; i++)
        uv_thread_join(&g.workers[i].thread);
    return now_s() - t0;
}

static struct counters sum(enum phase ph)
{
    struct counters s = {0};
    for (int i = 0; i < g.threads; i++) {
        const struct counters *k = &g.workers[i].c[ph];
        s.ok += k->ok;
        s.late += k->late;
        s.errors += k->errors;
        s.full += k->full;
        s.resumed += k->resumed;
        s.retries += k->retries;
    }
    return s;
}

/* ---- set-up: the admin API -------------------------------------------------------- */

static int admin_call(const char *method, const char *target, const json_t *body, int *status,
                      json_t **reply)
{
    char *root_path = mmr_asprintf("%s/pki/root.crt", g.dir);
    char *token_path = mmr_asprintf("%s/admin.token", g.dir);
    char *root = NULL, *tok = NULL;
    size_t len;
    struct mmr_tls_client *cli = NULL;
    struct mmr_https *h = NULL;
    struct mmr_http_message resp;
    memset(&resp, 0, sizeof(resp));
    char *text = body ? mmr_json_dump_line(body) : NULL;
    int rc = mmr_file_read_all(root_path, MMR_PEM_MAX, &root, &len);
    if (rc == 0)
        rc = mmr_file_read_all(token_path, 4096, &tok, &len);
    if (rc == 0) {
        while (len > 0 && (tok[len - 1] == '\n' || tok[len - 1] == '\r'))
            tok[--len] = '\0';
        struct mmr_tls_client_opts o = {.ca_pem = root};
        rc = mmr_tls_client_new(&o, &cli);
    }
    if (rc == 0) {
        struct mmr_https_opts ho = {.url = g.url, .tls = cli};
        rc = mmr_https_new(&ho, &h);
    }
    if (rc == 0) {
        char *auth = mmr_asprintf("Bearer %s", tok);
        struct mmr_http_header hd[2] = {{"Authorization", auth},
                                        {"Content-Type", "application/json"}};
        rc = mmr_https_request(h, method, target, hd, text ? 2 : 1, text, text ? strlen(text) : 0,
                               &resp);
        memset(auth, 0, strlen(auth));
        free(auth);
    }
    if (rc == 0) {
        *status = resp.status;
        *reply = NULL;
        mmr_json_parse(resp.body, resp.body_len, MMR_JSON_MAX_DEPTH, reply);
    }
    mmr_http_message_free(&resp);
    mmr_https_free(h);
    mmr_tls_client_free(cli);
    if (tok)
        memset(tok, 0, strlen(tok));
    free(tok);
    free(root);
    free(text);
    free(root_path);
    free(token_path);
    return rc;
}

static int create_token(char **out)
{
    json_t *body = json_pack("{s:s,s:s,s:I,s:I}", "org", "bench", "group", "loadgen", "uses",
                             (json_int_t)1000000, "expires_in_s", (json_int_t)86400);
    int status = 0;
    json_t *reply = NULL;
    int rc = admin_call("POST", "/admin/v1/tokens", body, &status, &reply);
    json_decref(body);
    const char *tok = json_string_value(json_object_get(reply, "token"));
    if (rc == 0 && (status != 201 || !tok))
        rc = mmr_err_set(MMR_EPROTO, "token create: HTTP %d", status);
    if (rc == 0)
        *out = mmr_strdup(tok);
    json_decref(reply);
    return rc;
}

static int64_t enrolled_devices(void)
{
    int status = 0;
    json_t *reply = NULL;
    int64_t total = -1;
    if (admin_call("GET", "/admin/v1/devices?limit=1", NULL, &status, &reply) == 0 && status == 200)
        total = json_integer_value(json_object_get(reply, "total"));
    json_decref(reply);
    return total;
}

static int resolve(void)
{
    char *host, *port;
    int rc = mmr_url_split(g.url, &host, &port);
    if (rc < 0)
        return rc;
    g.host = host;
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_getaddrinfo_t req;
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    int uvrc = uv_getaddrinfo(&loop, &req, NULL, host, port, &hints);
    if (uvrc == 0) {
        memcpy(&g.addr, req.addrinfo->ai_addr, req.addrinfo->ai_addrlen);
        uv_freeaddrinfo(req.addrinfo);
    }
    uv_loop_close(&loop);
    free(port);
    if (uvrc < 0)
        return mmr_err_set(MMR_ECONN, "cannot resolve %s: %s", host, uv_strerror(uvrc));
    return 0;
}

/* ---- main --------------------------------------------------------------------------- */

static void usage(FILE *out)
{
    fprintf(out, "Usage: loadgen --server URL --dir SERVERDIR [--agents N] [--seconds S]\n"
                 "               [--threads T] [--concurrency C] [--hold M] [--server-pid PID]\n\n"
                 "Enrolls N simulated agents (token made through the admin API of SERVERDIR),\n"
                 "then measures check-ins: first contact (full mutual-TLS handshake), M agents\n"
                 "holding connections open (memory), S seconds of check-ins on open connections\n"
                 "(keep-alive), S seconds of check-ins each on a new connection that resumes its\n"
                 "TLS session (the steady state at the default 60 s interval, since the server\n"
                 "closes idle connections after 15 s). T threads with C requests in flight each.\n"
                 "  defaults: N 1000, S 10, T 2, C 32, M min(N, 15000)\n");
}

static void print_rate(const char *name, uint64_t n, double s, const char *unit)
{
    printf("%s: %.0f %s\n", name, s > 0 ? (double)n / s : 0.0, unit);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"server", required_argument, NULL, 's'},  {"dir", required_argument, NULL, 'd'},
        {"agents", required_argument, NULL, 'n'},  {"seconds", required_argument, NULL, 'S'},
        {"threads", required_argument, NULL, 't'}, {"concurrency", required_argument, NULL, 'c'},
        {"hold", required_argument, NULL, 'm'},    {"server-pid", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    g.agents = 1000;
    g.seconds = 10;
    g.threads = 2;
    g.concurrency = 32;
    long long hold = -1;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (opt) {
        case 's':
            g.url = optarg;
            break;
        case 'd':
            g.dir = optarg;
            break;
        case 'n':
            g.agents = (size_t)strtoull(optarg, NULL, 10);
            break;
        case 'S':
            g.seconds = atoi(optarg);
            break;
        case 't':
            g.threads = atoi(optarg);
            break;
        case 'c':
            g.concurrency = atoi(optarg);
            break;
        case 'm':
            hold = strtoll(optarg, NULL, 10);
            break;
        case 'p':
            g.server_pid = strtoll(optarg, NULL, 10);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (!g.url || !g.dir || optind != argc || g.agents < 1 || g.seconds < 1 || g.threads < 1 ||
        g.threads > MAX_THREADS || g.concurrency < 1 || g.agents < (size_t)g.threads) {
        usage(stderr);
        return 1;
    }
    g.hold = hold < 0 ? (g.agents < 15000 ? g.agents : 15000) : (size_t)hold;
    if (g.hold > g.agents)
        g.hold = g.agents;
    mmr_process_ignore_sigpipe();
    uv_mutex_init(&g.lock);

    char *token_text = NULL;
    int rc = resolve();
    if (rc == 0)
        rc = create_token(&token_text);
    if (rc == 0)
        rc = mmr_token_decode(token_text, &g.token);
    if (rc == 0)
        rc = mmr_key_generate(&g.key);
    if (rc == 0)
        rc = mmr_csr_create(g.key, "loadgen-simulated-agent", &g.csr);
    if (rc == 0) {
        struct mmr_tls_client_opts o = {.pin_sha256 = g.token.pin};
        rc = mmr_tls_client_new(&o, &g.enroll_cli);
    }
    if (rc < 0) {
        fprintf(stderr, "loadgen: %s\n", mmr_err_msg());
        return 2;
    }

    g.fleet = mmr_calloc(g.agents, sizeof(*g.fleet));
    size_t base = g.agents / (size_t)g.threads, extra = g.agents % (size_t)g.threads, at = 0;
    for (int i = 0; i < g.threads; i++) {
        struct worker *w = &g.workers[i];
        w->count = base + ((size_t)i < extra ? 1 : 0);
        w->agents = g.fleet + at;
        w->first_index = at;
        at += w->count;
        uv_loop_init(&w->loop);
        uv_timer_init(&w->loop, &w->deadline);
        w->deadline.data = w;
        w->idle = mmr_calloc((size_t)g.concurrency, sizeof(*w->idle));
    }

    printf("# loadgen: %zu simulated agents, %d threads x %d requests in flight, %zu connections "
           "held, %d s per timed phase\n",
           g.agents, g.threads, g.concurrency, g.hold, g.seconds);
    printf("# one key pair serves every simulated agent's CSR: the server still verifies each "
           "CSR and issues a distinct certificate per device\n");
    fflush(stdout);

    double cpu0 = g.server_pid ? proc_cpu_s(g.server_pid) : 0, self0 = self_cpu_s();
    double cpu[PH_COUNT] = {0}, self[PH_COUNT] = {0}, secs[PH_COUNT] = {0};
    int64_t rss_base = -1, rss_held = -1, rss_start = -1;
    if (g.server_pid)
        rss_start = proc_status_kib(g.server_pid, "VmRSS");
    for (int ph = 0; ph < PH_COUNT; ph++) {
        size_t limit = ph == PH_HOLD || ph == PH_KEEPALIVE ? g.hold : g.agents;
        if (ph == PH_HOLD && g.server_pid) {
            uv_sleep(1000); /* let closed connections go */
            rss_base = proc_status_kib(g.server_pid, "VmRSS");
        }
        secs[ph] = run_phase((enum phase)ph, limit);
        if (ph == PH_HOLD && g.server_pid)
            rss_held = proc_status_kib(g.server_pid, "VmRSS");
        double c1 = g.server_pid ? proc_cpu_s(g.server_pid) : 0, s1 = self_cpu_s();
        cpu[ph] = c1 > cpu0 ? c1 - cpu0 : 0; /* 0 as well when the server is gone */
        self[ph] = s1 - self0;
        cpu0 = c1;
        self0 = s1;
        struct counters k = sum((enum phase)ph);
        fprintf(stderr,
                "loadgen: %-14s %6.1f s: %" PRIu64 " ok, %" PRIu64 " errors, %" PRIu64
                " full + %" PRIu64 " resumed handshakes, %" PRIu64 " retries; cpu s: server "
                "%.1f, loadgen %.1f\n",
                phase_names[ph], secs[ph], k.ok + k.late, k.errors, k.full, k.resumed, k.retries,
                cpu[ph], self[ph]);
        if (ph == PH_ENROLL && k.ok == 0) {
            fprintf(stderr, "loadgen: no agent enrolled, giving up\n");
            return 3;
        }
    }

    struct counters ke = sum(PH_ENROLL), kf = sum(PH_FIRST), kh = sum(PH_HOLD),
                    kk = sum(PH_KEEPALIVE), kr = sum(PH_RESUMED), kc = sum(PH_CLOSE);
    uint64_t errors = ke.errors + kf.errors + kh.errors + kk.errors + kr.errors + kc.errors;
    uint64_t steady_full = kh.full + kk.full + kr.full;
    uint64_t steady_resumed = kh.resumed + kk.resumed + kr.resumed;
    print_rate("server.enrollments_per_s", ke.ok, secs[PH_ENROLL], "enrollments/s");
    print_rate("server.checkins_per_s_full_handshake", kf.ok, secs[PH_FIRST], "checkins/s");
    print_rate("server.checkins_per_s", kr.ok, g.seconds, "checkins/s");
    print_rate("server.checkins_per_s_keepalive", kk.ok, g.seconds, "checkins/s");
    if (g.server_pid) {
        printf("server.cpu_ms_per_enrollment: %.2f ms\n",
               ke.ok ? cpu[PH_ENROLL] * 1e3 / (double)ke.ok : 0.0);
        printf("server.cpu_us_per_checkin_full_handshake: %.0f us\n",
               kf.ok ? cpu[PH_FIRST] * 1e6 / (double)kf.ok : 0.0);
        printf("server.cpu_us_per_checkin: %.0f us\n",
               kr.ok + kr.late ? cpu[PH_RESUMED] * 1e6 / (double)(kr.ok + kr.late) : 0.0);
        printf("server.cpu_us_per_checkin_keepalive: %.0f us\n",
               kk.ok + kk.late ? cpu[PH_KEEPALIVE] * 1e6 / (double)(kk.ok + kk.late) : 0.0);
        /* Robust to other load on the machine: what one core of server CPU
         * sustains at the measured cost. */
        if (kr.ok + kr.late > 0 && cpu[PH_RESUMED] > 0)
            printf("server.checkins_per_core_s: %.0f checkins/s\n",
                   (double)(kr.ok + kr.late) / cpu[PH_RESUMED]);
    }
    printf("loadgen.cpu_us_per_checkin: %.0f us\n",
           kr.ok + kr.late ? self[PH_RESUMED] * 1e6 / (double)(kr.ok + kr.late) : 0.0);
    printf("server.enrolled_devices: %lld devices\n", (long long)enrolled_devices());
    printf("server.checkins_total: %" PRIu64 " checkins\n",
           kf.ok + kh.ok + kk.ok + kk.late + kr.ok + kr.late);
    printf("server.connections_held: %" PRIu64 " connections\n", kh.ok);
    if (g.server_pid) {
        printf("server.rss_start_mib: %.1f MiB\n", (double)rss_start / 1024.0);
        printf("server.rss_base_mib: %.1f MiB\n", (double)rss_base / 1024.0);
        printf("server.rss_mib: %.1f MiB\n", (double)rss_held / 1024.0);
        printf("server.rss_per_connection_kib: %.1f KiB\n",
               kh.ok ? (double)(rss_held - rss_base) / (double)kh.ok : 0.0);
    }
    printf("loadgen.rss_mib: %.1f MiB\n",
           (double)proc_status_kib(mmr_process_id(), "VmRSS") / 1024.0);
    printf("server.handshakes_resumed_ratio: %.3f ratio\n",
           steady_full + steady_resumed
               ? (double)steady_resumed / (double)(steady_full + steady_resumed)
               : 0.0);
    printf("server.errors: %" PRIu64 " errors\n", errors);
    fflush(stdout);

    /* Close everything that is left, then free. */
    for (int i = 0; i < g.threads; i++) {
        struct worker *w = &g.workers[i];
        for (size_t j = 0; j < w->count; j++)
            if (w->agents[j].conn)
                conn_close(w->agents[j].conn);
        uv_close((uv_handle_t *)&w->deadline, NULL);
        /* A uv_stop() left by the closes ends the first run early. */
        while (uv_run(&w->loop, UV_RUN_DEFAULT) != 0)
            ;
        uv_loop_close(&w->loop);
        free(w->idle);
    }
    for (size_t i = 0; i < g.agents; i++) {
        mmr_tls_client_free(g.fleet[i].cli);
        mmr_buf_free(&g.fleet[i].checkin);
    }
    free(g.fleet);
    mmr_tls_client_free(g.enroll_cli);
    mmr_key_free(g.key);
    free(g.csr);
    free(g.host);
    mmr_token_free(&g.token);
    if (token_text)
        memset(token_text, 0, strlen(token_text));
    free(token_text);
    uv_mutex_destroy(&g.lock);
    return errors > 0 ? 4 : 0;
}
