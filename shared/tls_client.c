/* The blocking TLS client: TCP with timeouts on a private libuv loop (so the
 * same code runs on Windows), carrying the memory TLS engine of tls.c. For the
 * agent's transport worker and for tests. See shared/tls.h. */
#include "shared/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"

#define READ_CHUNK     (64 * 1024)
#define WRITE_CHUNK    (64 * 1024)
#define CLOSE_GRACE_MS 1000

struct mmr_tls_stream {
    uv_loop_t loop;
    uv_timer_t timer;
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    bool tcp_open;   /* tcp is initialised and must be closed */
    bool tcp_closed; /* its close callback ran */
    struct mmr_tls_conn *tls;
    char where[300]; /* "host:port", for messages */

    /* What the loop saw while we waited. */
    bool timed_out;
    int connect_status; /* 1 while connecting */
    bool got_input;
    bool tcp_eof;
    int io_error; /* a libuv error from reading or writing */
    size_t writes_pending;
    char rbuf[READ_CHUNK];
};

struct write_req {
    uv_write_t req;
    char *data;
};

typedef bool (*wait_done_fn)(const struct mmr_tls_stream *s);

static void on_timeout(uv_timer_t *t)
{
    struct mmr_tls_stream *s = t->data;
    s->timed_out = true;
}

/* Runs the private loop until done(s), an I/O error, or the deadline
 * (monotonic ms). */
static void run_until(struct mmr_tls_stream *s, uint64_t deadline, wait_done_fn done)
{
    s->timed_out = false;
    uint64_t now = mmr_time_mono_ms();
    /* The loop's clock is stale when it has not run for a while. */
    uv_update_time(&s->loop);
    uv_timer_start(&s->timer, on_timeout, deadline > now ? deadline - now : 0, 0);
    while (!done(s) && !s->timed_out && s->io_error == 0)
        uv_run(&s->loop, UV_RUN_ONCE);
    uv_timer_stop(&s->timer);
}

static void on_tcp_closed(uv_handle_t *h)
{
    struct mmr_tls_stream *s = h->data;
    s->tcp_closed = true;
}

static void close_tcp(struct mmr_tls_stream *s)
{
    if (!s->tcp_open)
        return;
    s->tcp_open = false;
    /* Cancels a pending connect and pending writes; their callbacks run
     * before the close callback. */
    uv_close((uv_handle_t *)&s->tcp, on_tcp_closed);
    while (!s->tcp_closed)
        uv_run(&s->loop, UV_RUN_ONCE);
}

static int io_failure(const struct mmr_tls_stream *s)
{
    return mmr_err_set(MMR_ECONN, "connection lost: %s", uv_strerror(s->io_error));
}

/* ---- connecting ----------------------------------------------------------------- */

static void on_connect(uv_connect_t *req, int status)
{
    struct mmr_tls_stream *s = req->data;
    s->connect_status = status;
}

static bool connect_done(const struct mmr_tls_stream *s)
{
    return s->connect_status != 1;
}

/* Returns 0 or a libuv error (UV_ETIMEDOUT when the deadline passed). */
static int connect_addr(struct mmr_tls_stream *s, const struct sockaddr *addr, uint64_t deadline)
{
    int rc = uv_tcp_init(&s->loop, &s->tcp);
    if (rc < 0)
        return rc;
    s->tcp_open = true;
    s->tcp_closed = false;
    s->tcp.data = s;
    s->connect_status = 1;
    s->connect_req.data = s;
    rc = uv_tcp_connect(&s->connect_req, &s->tcp, addr, on_connect);
    if (rc == 0) {
        run_until(s, deadline, connect_done);
        rc = s->connect_status == 1 ? UV_ETIMEDOUT : s->connect_status;
    }
    if (rc < 0) {
        close_tcp(s);
        return rc;
    }
    uv_tcp_nodelay(&s->tcp, 1);
    return 0;
}

static int resolve_and_connect(struct mmr_tls_stream *s, const char *host, uint16_t port,
                               uint64_t deadline, int timeout_ms)
{
    char service[8];
    snprintf(service, sizeof(service), "%u", (unsigned)port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    uv_getaddrinfo_t req;
    /* Without a callback, libuv resolves synchronously (no loop needed). */
    int rc = uv_getaddrinfo(&s->loop, &req, NULL, host, service, &hints);
    if (rc < 0)
        return mmr_err_set(MMR_ECONN, "cannot resolve '%s': %s", host, uv_strerror(rc));
    int last = UV_EAI_NONAME;
    for (const struct addrinfo *ai = req.addrinfo; ai; ai = ai->ai_next) {
        last = connect_addr(s, ai->ai_addr, deadline);
        if (last == 0 || last == UV_ETIMEDOUT)
            break;
    }
    uv_freeaddrinfo(req.addrinfo);
    if (last == UV_ETIMEDOUT)
        return mmr_err_set(MMR_ETIMEDOUT, "cannot connect within %d ms", timeout_ms);
    if (last < 0)
        return mmr_err_set(MMR_ECONN, "cannot connect: %s", uv_strerror(last));
    return 0;
}

/* ---- moving ciphertext ------------------------------------------------------------ */

static void on_write(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct mmr_tls_stream *s = req->data;
    if (status < 0 && status != UV_ECANCELED && s->io_error == 0)
        s->io_error = status;
    s->writes_pending--;
    free(w->data);
    free(w);
}

static bool writes_done(const struct mmr_tls_stream *s)
{
    return s->writes_pending == 0;
}

/* Sends what the engine has queued and waits until the kernel has it. */
static int flush(struct mmr_tls_stream *s, uint64_t deadline)
{
    size_t len = 0;
    char *data = mmr_tls_conn_take_output(s->tls, &len);
    if (data) {
        if (!s->tcp_open) {
            free(data);
            return mmr_err_set(MMR_ECONN, "not connected");
        }
        struct write_req *w = mmr_malloc(sizeof(*w));
        w->data = data;
        w->req.data = s;
        uv_buf_t buf = uv_buf_init(data, (unsigned)len);
        int rc = uv_write(&w->req, (uv_stream_t *)&s->tcp, &buf, 1, on_write);
        if (rc < 0) {
            free(data);
            free(w);
            return mmr_err_set(MMR_ECONN, "cannot send: %s", uv_strerror(rc));
        }
        s->writes_pending++;
    }
    if (s->writes_pending == 0)
        return 0;
    run_until(s, deadline, writes_done);
    if (s->io_error)
        return io_failure(s);
    if (s->writes_pending)
        return mmr_err_set(MMR_ETIMEDOUT, "sending timed out");
    return 0;
}

/* Best-effort flush (an alert before giving up) that keeps the message. */
static void flush_quietly(struct mmr_tls_stream *s)
{
    char msg[1024];
    snprintf(msg, sizeof(msg), "%s", mmr_err_msg());
    flush(s, mmr_time_mono_ms() + CLOSE_GRACE_MS);
    mmr_err_set(0, "%s", msg);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct mmr_tls_stream *s = h->data;
    (void)suggested;
    buf->base = s->rbuf;
    buf->len = sizeof(s->rbuf);
}

static void on_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *buf)
{
    struct mmr_tls_stream *s = stream->data;
    if (n > 0) {
        /* A refusal is kept by the engine and reported by its next call. */
        mmr_tls_conn_feed(s->tls, buf->base, (size_t)n);
        s->got_input = true;
    } else if (n == UV_EOF) {
        s->tcp_eof = true;
    } else if (n < 0) {
        s->io_error = (int)n;
    } else {
        return; /* nothing this time */
    }
    /* One chunk at a time: the engine's input stays bounded. */
    uv_read_stop(stream);
}

static bool input_done(const struct mmr_tls_stream *s)
{
    return s->got_input || s->tcp_eof;
}

/* Waits for the next chunk of ciphertext, during the handshake or a read. */
static int fill(struct mmr_tls_stream *s, uint64_t deadline, int timeout_ms, bool handshaking)
{
    const char *during = handshaking ? " during the TLS handshake" : "";
    if (!s->tcp_eof) {
        s->got_input = false;
        int rc = uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
        if (rc < 0)
            return mmr_err_set(MMR_ECONN, "cannot read: %s", uv_strerror(rc));
        run_until(s, deadline, input_done);
        uv_read_stop((uv_stream_t *)&s->tcp);
        if (s->got_input)
            return 0;
        if (s->io_error)
            return io_failure(s);
    }
    if (s->tcp_eof)
        return mmr_err_set(MMR_ECONN, "the server closed the connection%s",
                           handshaking ? during : " without close_notify");
    return mmr_err_set(MMR_ETIMEDOUT, "no answer within %d ms%s", timeout_ms, during);
}

/* ---- the stream ----------------------------------------------------------------- */

static void destroy(struct mmr_tls_stream *s)
{
    close_tcp(s);
    uv_close((uv_handle_t *)&s->timer, NULL);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
    mmr_tls_conn_free(s->tls);
    free(s);
}

static uint64_t deadline_of(int timeout_ms)
{
    return mmr_time_mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
}

static int handshake(struct mmr_tls_stream *s, uint64_t deadline, int timeout_ms)
{
    for (;;) {
        int rc = mmr_tls_conn_handshake(s->tls);
        if (rc < 0) {
            flush_quietly(s); /* the alert telling the server why */
            return rc;
        }
        int io = flush(s, deadline);
        if (io < 0)
            return io;
        if (rc == MMR_TLS_OK)
            return 0;
        io = fill(s, deadline, timeout_ms, true);
        if (io < 0)
            return io;
    }
}

int mmr_tls_stream_connect(struct mmr_tls_client *cli, const char *host, uint16_t port,
                           int timeout_ms, struct mmr_tls_stream **out)
{
    *out = NULL;
    uint64_t deadline = deadline_of(timeout_ms);
    struct mmr_tls_stream *s = mmr_calloc(1, sizeof(*s));
    snprintf(s->where, sizeof(s->where), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host,
             (unsigned)port);
    int rc = uv_loop_init(&s->loop);
    if (rc < 0) {
        free(s);
        return mmr_err_set(MMR_EIO, "cannot start an event loop: %s", uv_strerror(rc));
    }
    uv_timer_init(&s->loop, &s->timer);
    s->timer.data = s;
    rc = mmr_tls_conn_new_client(cli, host, &s->tls);
    if (rc == 0)
        rc = resolve_and_connect(s, host, port, deadline, timeout_ms);
    if (rc == 0)
        rc = handshake(s, deadline, timeout_ms);
    if (rc < 0) {
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s", mmr_err_msg());
        char where[sizeof(s->where)];
        memcpy(where, s->where, sizeof(where));
        destroy(s);
        return mmr_err_set(rc, "%s: %s", where, msg);
    }
    *out = s;
    return 0;
}

int mmr_tls_stream_write_all(struct mmr_tls_stream *s, const void *data, size_t len, int timeout_ms)
{
    uint64_t deadline = deadline_of(timeout_ms);
    const char *p = data;
    while (len > 0) {
        size_t chunk = len < WRITE_CHUNK ? len : WRITE_CHUNK;
        int rc = mmr_tls_conn_write(s->tls, p, chunk);
        if (rc == 0)
            rc = flush(s, deadline);
        if (rc < 0)
            return mmr_err_wrap(rc, "%s", s->where);
        p += chunk;
        len -= chunk;
    }
    return 0;
}

int mmr_tls_stream_read(struct mmr_tls_stream *s, void *buf, size_t cap, int timeout_ms, size_t *n)
{
    *n = 0;
    uint64_t deadline = deadline_of(timeout_ms);
    for (;;) {
        int rc = mmr_tls_conn_read(s->tls, buf, cap, n);
        if (rc == MMR_TLS_OK)
            return 0;
        if (rc == MMR_TLS_EOF)
            return 0;
        if (rc < 0) {
            flush_quietly(s);
            return mmr_err_wrap(rc, "%s", s->where);
        }
        rc = flush(s, deadline);
        if (rc == 0)
            rc = fill(s, deadline, timeout_ms, false);
        if (rc < 0)
            return mmr_err_wrap(rc, "%s", s->where);
    }
}

struct mmr_tls_conn *mmr_tls_stream_conn(struct mmr_tls_stream *s)
{
    return s->tls;
}

void mmr_tls_stream_close(struct mmr_tls_stream *s)
{
    if (!s)
        return;
    if (s->tcp_open && !s->tcp_eof && s->io_error == 0 && mmr_tls_conn_close_notify(s->tls) == 0)
        flush(s, deadline_of(CLOSE_GRACE_MS));
    destroy(s);
}
