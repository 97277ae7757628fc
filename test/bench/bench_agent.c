/* Benchmarks of real agents against a real server on 127.0.0.1 (make bench):
 * upload drain rate over mutual TLS, idle memory and wake-ups, and bytes on
 * the wire per check-in, counted by an in-process TCP relay. */
#include "shared/compiler.h"
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "../integration/proc.h"
#include "shared/err.h"
#include "shared/ipc.h"
#include "shared/json.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "shared/token.h"

#define BACKLOG_EVENTS   200000
#define SELFTEST_CHUNK   50000 /* under the queue's 65,536 events waiting for the disk */
#define IDLE_WINDOW_S    60
#define SETTLE_MS        5000
#define WIRE_SAMPLES     5
#define IDLE_TIMEOUT_S   3    /* the server's keep-alive timeout in this run (default 90 s) */
#define CHECKINS_PER_DAY 1440 /* the default interval: 60 s */
/* IPv4 (20) + TCP with the timestamp option (32) per segment, and the four
 * segments of a close (FIN, ACK each way), which happen after the relay
 * reads its counters. */
#define HEADER_BYTES   52
#define CLOSE_SEGMENTS 4
#define PATH_MAX_LEN   512

struct agent {
    const char *name;
    char dir[PATH_MAX_LEN];
    char err[PATH_MAX_LEN];
    char *endpoint;
    struct proc *proc;
};

static struct {
    char root[PATH_MAX_LEN];
    char dir[PATH_MAX_LEN];
    char err[PATH_MAX_LEN];
    char url[64];
    int port;
    struct proc *proc;
} srv;

static struct agent drain = {.name = "drain"}, idle = {.name = "idle"}, wire = {.name = "wire"};

/* ---- processes and cleanup ------------------------------------------------------ */

static void stop_proc(struct proc **p, int grace_ms)
{
    if (!*p)
        return;
    proc_kill(*p, SIGTERM);
    struct proc_result res;
    proc_wait(*p, grace_ms, &res); /* kills with SIGKILL when late */
    proc_result_free(&res);
    *p = NULL;
}

static void relay_stop(void);

static void cleanup(void)
{
    stop_proc(&drain.proc, 5000);
    stop_proc(&idle.proc, 5000);
    stop_proc(&wire.proc, 5000);
    stop_proc(&srv.proc, 10000);
    relay_stop();
    if (srv.root[0]) {
        const char *argv[] = {"rm", "-rf", srv.root, NULL};
        struct proc_result res;
        proc_run(argv, &(struct proc_opts){.no_wrapper = true}, 30000, &res);
        proc_result_free(&res);
    }
    free(drain.endpoint);
    free(idle.endpoint);
    free(wire.endpoint);
}

MMR_PRINTF(1, 2) static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_agent: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    cleanup();
    exit(1);
}

static double now_s(void)
{
    return (double)uv_hrtime() / 1e9;
}

/* Runs a command to completion; argv ends with NULL. Returns the exit code. */
static int run(struct proc_result *res, const char *const argv[])
{
    proc_run(argv, &(struct proc_opts){.no_wrapper = true}, 120000, res);
    return res->exit_code;
}

/* Starts a long-running program with its output appended to err_path. */
static struct proc *start_logged(const char *const argv[], const char *err_path)
{
    const char *args[32];
    size_t n = 0;
    args[n++] = "/bin/sh";
    args[n++] = "-c";
    args[n++] = "exec \"$@\" >>\"$0\" 2>&1";
    args[n++] = err_path;
    for (size_t i = 0; argv[i] && n < 31; i++)
        args[n++] = argv[i];
    args[n] = NULL;
    return proc_start(args, &(struct proc_opts){.no_wrapper = true});
}

static int free_port(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_tcp_t tcp;
    uv_tcp_init(&loop, &tcp);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    int port = -1;
    if (uv_tcp_bind(&tcp, (const struct sockaddr *)&sa, 0) == 0) {
        struct sockaddr_in got;
        int len = sizeof(got);
        if (uv_tcp_getsockname(&tcp, (struct sockaddr *)&got, &len) == 0)
            port = ntohs(got.sin_port);
    }
    uv_close((uv_handle_t *)&tcp, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    if (port < 0)
        die("cannot find a free port");
    return port;
}

static void write_file(const char *path, const char *text, bool append)
{
    struct mmr_buf all = {0};
    char *old = NULL;
    size_t len = 0;
    if (append && mmr_file_read_all(path, 1 << 20, &old, &len) == 0)
        mmr_buf_append(&all, old, len);
    free(old);
    mmr_buf_append(&all, text, strlen(text));
    int rc = mmr_file_write_atomic(path, all.data, all.len);
    mmr_buf_free(&all);
    if (rc < 0)
        die("%s", mmr_err_msg());
}

static void show_log(const char *path)
{
    char *text = NULL;
    size_t len = 0;
    if (mmr_file_read_tail(path, 4096, &text, &len) == 0)
        fprintf(stderr, "--- %s (end) ---\n%s\n", path, text);
    free(text);
}

/* ---- the server ---------------------------------------------------------------- */

/* mamoriadm --dir <server> and the arguments up to a NULL. */
static int adm(struct proc_result *res, ...)
{
    const char *argv[16] = {MMR_ADM_BIN, "--dir", srv.dir};
    size_t n = 3;
    va_list ap;
    va_start(ap, res);
    for (const char *a = va_arg(ap, const char *); a && n < 15; a = va_arg(ap, const char *))
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    return run(res, argv);
}

static bool server_answers(void)
{
    struct proc_result res;
    int rc = adm(&res, "device", "list", NULL);
    proc_result_free(&res);
    return rc == 0;
}

static void server_start(void)
{
    const char *argv[] = {MMR_SERVER_BIN, "run", "--dir", srv.dir, NULL};
    srv.proc = start_logged(argv, srv.err);
    for (int i = 0; i < 150; i++) {
        if (server_answers())
            return;
        uv_sleep(100);
    }
    show_log(srv.err);
    die("mamori-server did not answer on %s", srv.url);
}

static void server_init(void)
{
    snprintf(srv.dir, sizeof(srv.dir), "%s/server", srv.root);
    snprintf(srv.err, sizeof(srv.err), "%s/server.out", srv.root);
    srv.port = free_port();
    snprintf(srv.url, sizeof(srv.url), "https://127.0.0.1:%d", srv.port);
    char listen[32];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", srv.port);
    const char *argv[] = {MMR_SERVER_BIN, "init", "--dir", srv.dir, "--listen", listen, NULL};
    struct proc_result res;
    if (run(&res, argv) != 0)
        die("mamori-server init: %s%s", res.out, res.err);
    proc_result_free(&res);
    char *conf = mmr_path_join(srv.dir, "server.conf");
    char extra[64];
    snprintf(extra, sizeof(extra), "[limits]\nidle_timeout = %ds\n", IDLE_TIMEOUT_S);
    write_file(conf, extra, true);
    free(conf);
}

/* ---- agents ------------------------------------------------------------------------ */

static json_t *status(const struct agent *a)
{
    json_t *st = NULL;
    if (mmr_ipc_call(a->endpoint, "status", NULL, 10000, &st) < 0)
        return NULL;
    return st;
}

static json_t *path(const json_t *doc, const char *p)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", p);
    const json_t *cur = doc;
    for (char *tok = strtok(buf, "."); tok && cur; tok = strtok(NULL, "."))
        cur = json_object_get(cur, tok);
    return (json_t *)(uintptr_t)cur;
}

static long long status_int(const struct agent *a, const char *p)
{
    json_t *st = status(a);
    long long v = st ? json_integer_value(path(st, p)) : -1;
    json_decref(st);
    return v;
}

static char *status_str(const struct agent *a, const char *p)
{
    json_t *st = status(a);
    const char *v = st ? json_string_value(path(st, p)) : NULL;
    char *out = mmr_strdup(v ? v : "");
    json_decref(st);
    return out;
}

static void ipc(const struct agent *a, const char *cmd, json_t *args)
{
    json_t *res = NULL;
    if (mmr_ipc_call(a->endpoint, cmd, args, 120000, &res) < 0)
        die("%s agent: %s: %s", a->name, cmd, mmr_err_msg());
    json_decref(res);
}

/* Starts an agent that enrolls silently with token, and waits until it has
 * checked in and applied the group's policy. */
static void agent_start(struct agent *a, const char *token, int number)
{
    snprintf(a->dir, sizeof(a->dir), "%s/%s", srv.root, a->name);
    snprintf(a->err, sizeof(a->err), "%s/%s.out", srv.root, a->name);
    if (mmr_mkdir_p(a->dir, true) < 0 || mmr_ipc_endpoint(a->dir, &a->endpoint) < 0)
        die("%s", mmr_err_msg());
    char *conf = mmr_path_join(a->dir, "agent.conf");
    char *text = mmr_asprintf(
        "[agent]\nhardware_id = bench-hw-%012d\n[server]\nenroll_token = %s\n", number, token);
    write_file(conf, text, false);
    free(text);
    free(conf);
    const char *argv[] = {MMR_AGENT_BIN, "-f", "--data-dir", a->dir, NULL};
    a->proc = start_logged(argv, a->err);
    for (int i = 0; i < 300; i++) {
        if (status_int(a, "policy.version") >= 1)
            return;
        uv_sleep(100);
    }
    show_log(a->err);
    die("the %s agent did not enroll and apply the policy", a->name);
}

/* Wakes a check-in and waits until the cycle is over (its next one is
 * scheduled anew). */
static void sync_and_wait(const struct agent *a)
{
    char *next0 = status_str(a, "checkin.next");
    ipc(a, "sync", NULL);
    for (int i = 0; i < 1000; i++) {
        char *next = status_str(a, "checkin.next");
        bool done = strcmp(next, next0) != 0;
        free(next);
        if (done) {
            free(next0);
            return;
        }
        uv_sleep(10);
    }
    free(next0);
    die("the %s agent's check-in did not finish", a->name);
}

/* Sum of the context switches of every thread of a process. */
static uint64_t context_switches(int64_t pid)
{
    char dir[64];
    snprintf(dir, sizeof(dir), "/proc/%lld/task", (long long)pid);
    uv_fs_t req;
    uint64_t total = 0;
    if (uv_fs_scandir(NULL, &req, dir, 0, NULL) < 0)
        die("cannot list %s", dir);
    uv_dirent_t ent;
    while (uv_fs_scandir_next(&req, &ent) != UV_EOF) {
        char file[128];
        snprintf(file, sizeof(file), "%s/%s/status", dir, ent.name);
        char *text = NULL;
        size_t len = 0;
        if (mmr_file_read_all(file, 1 << 16, &text, &len) < 0)
            continue; /* the thread ended meanwhile */
        static const char *const keys[] = {"\nvoluntary_ctxt_switches:",
                                           "\nnonvoluntary_ctxt_switches:"};
        for (size_t k = 0; k < 2; k++) {
            const char *v = strstr(text, keys[k]);
            if (v)
                total += strtoull(v + strlen(keys[k]), NULL, 10);
        }
        free(text);
    }
    uv_fs_req_cleanup(&req);
    return total;
}

static double rss_mib(int64_t pid)
{
    char file[64];
    snprintf(file, sizeof(file), "/proc/%lld/status", (long long)pid);
    char *text = NULL;
    size_t len = 0;
    double v = -1;
    if (mmr_file_read_all(file, 1 << 16, &text, &len) == 0) {
        const char *p = strstr(text, "\nVmRSS:");
        if (p)
            v = (double)strtoull(p + strlen("\nVmRSS:"), NULL, 10) / 1024.0;
    }
    free(text);
    return v;
}

/* ---- the counting relay -------------------------------------------------------- */

/* TCP_INFO as Linux fills it: glibc's struct stops before the segment
 * counters (kernel ABI, stable since Linux 4.2). */
#ifdef __linux__
struct tcp_info_segs {
    struct tcp_info base;
    uint64_t pacing_rate, max_pacing_rate, bytes_acked, bytes_received;
    uint32_t segs_out, segs_in;
};
#endif

struct pair {
    uv_tcp_t agent, server;
    uv_connect_t connect;
    struct pair *prev, *next;
    int handles;
    bool closing;
};

struct counts {
    uint64_t up, down; /* TCP payload bytes: agent to server, server to agent */
    uint64_t segments; /* TCP segments between agent and relay, both ways */
    uint64_t accepted; /* connections */
    int open;
};

static struct {
    bool running;
    uv_loop_t loop;
    uv_thread_t thread;
    uv_tcp_t listener;
    uv_async_t stop;
    struct sockaddr_in upstream;
    int port;
    uv_mutex_t lock; /* guards what follows; the loop thread writes, the main thread reads */
    struct counts c;
    uint64_t segs_closed;
    struct pair *pairs;
} relay;

static uint64_t segments_of(uv_tcp_t *t)
{
#ifdef __linux__
    uv_os_fd_t fd;
    struct tcp_info_segs ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    if (uv_fileno((uv_handle_t *)t, &fd) == 0 &&
        getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 && len >= sizeof(ti))
        return (uint64_t)ti.segs_in + ti.segs_out;
#else
    (void)t;
#endif
    return 0;
}

static void pair_closed(uv_handle_t *h)
{
    struct pair *p = h->data;
    if (--p->handles == 0)
        free(p);
}

static void pair_close(struct pair *p)
{
    if (p->closing)
        return;
    p->closing = true;
    uv_mutex_lock(&relay.lock);
    relay.segs_closed += segments_of(&p->agent) + CLOSE_SEGMENTS;
    if (p->prev)
        p->prev->next = p->next;
    else
        relay.pairs = p->next;
    if (p->next)
        p->next->prev = p->prev;
    relay.c.open--;
    uv_mutex_unlock(&relay.lock);
    uv_close((uv_handle_t *)&p->agent, pair_closed);
    uv_close((uv_handle_t *)&p->server, pair_closed);
}

static void relay_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    buf->base = mmr_malloc(suggested);
    buf->len = suggested;
}

static void relay_written(uv_write_t *req, int status)
{
    free(req->data);
    free(req);
    (void)status; /* a failed write shows as a read error on the same pair */
}

static void relay_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct pair *p = s->data;
    if (n <= 0 || p->closing) {
        free(buf->base);
        if (n < 0)
            pair_close(p);
        return;
    }
    bool up = s == (uv_stream_t *)&p->agent;
    uv_mutex_lock(&relay.lock);
    if (up)
        relay.c.up += (uint64_t)n;
    else
        relay.c.down += (uint64_t)n;
    uv_mutex_unlock(&relay.lock);
    uv_write_t *w = mmr_malloc(sizeof(*w));
    w->data = buf->base;
    uv_buf_t out = uv_buf_init(buf->base, (unsigned)n);
    if (uv_write(w, up ? (uv_stream_t *)&p->server : (uv_stream_t *)&p->agent, &out, 1,
                 relay_written) < 0) {
        free(buf->base);
        free(w);
        pair_close(p);
    }
}

static void relay_connected(uv_connect_t *req, int status)
{
    struct pair *p = req->data;
    if (p->closing)
        return;
    if (status < 0) {
        pair_close(p);
        return;
    }
    uv_read_start((uv_stream_t *)&p->agent, relay_alloc, relay_read);
    uv_read_start((uv_stream_t *)&p->server, relay_alloc, relay_read);
}

static void relay_accept(uv_stream_t *l, int status)
{
    if (status < 0)
        return;
    struct pair *p = mmr_calloc(1, sizeof(*p));
    p->handles = 2;
    uv_tcp_init(&relay.loop, &p->agent);
    uv_tcp_init(&relay.loop, &p->server);
    p->agent.data = p->server.data = p->connect.data = p;
    uv_mutex_lock(&relay.lock);
    p->next = relay.pairs;
    if (relay.pairs)
        relay.pairs->prev = p;
    relay.pairs = p;
    relay.c.open++;
    relay.c.accepted++;
    uv_mutex_unlock(&relay.lock);
    if (uv_accept(l, (uv_stream_t *)&p->agent) < 0 ||
        uv_tcp_connect(&p->connect, &p->server, (const struct sockaddr *)&relay.upstream,
                       relay_connected) < 0)
        pair_close(p);
}

static void relay_on_stop(uv_async_t *a)
{
    while (relay.pairs)
        pair_close(relay.pairs);
    uv_close((uv_handle_t *)&relay.listener, NULL);
    uv_close((uv_handle_t *)a, NULL);
}

static void relay_thread(void *arg)
{
    (void)arg;
    uv_run(&relay.loop, UV_RUN_DEFAULT);
}

static void relay_start(int upstream_port)
{
    uv_mutex_init(&relay.lock);
    uv_loop_init(&relay.loop);
    uv_ip4_addr("127.0.0.1", upstream_port, &relay.upstream);
    uv_tcp_init(&relay.loop, &relay.listener);
    uv_async_init(&relay.loop, &relay.stop, relay_on_stop);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    struct sockaddr_in got;
    int len = sizeof(got);
    if (uv_tcp_bind(&relay.listener, (const struct sockaddr *)&sa, 0) < 0 ||
        uv_listen((uv_stream_t *)&relay.listener, 16, relay_accept) < 0 ||
        uv_tcp_getsockname(&relay.listener, (struct sockaddr *)&got, &len) < 0)
        die("cannot start the relay");
    relay.port = ntohs(got.sin_port);
    if (uv_thread_create(&relay.thread, relay_thread, NULL) != 0)
        die("cannot start the relay thread");
    relay.running = true;
}

static void relay_stop(void)
{
    if (!relay.running)
        return;
    relay.running = false;
    uv_async_send(&relay.stop);
    uv_thread_join(&relay.thread);
    uv_loop_close(&relay.loop);
    uv_mutex_destroy(&relay.lock);
}

static struct counts relay_counts(void)
{
    uv_mutex_lock(&relay.lock);
    struct counts c = relay.c;
    c.segments = relay.segs_closed;
    for (struct pair *p = relay.pairs; p; p = p->next)
        c.segments += segments_of(&p->agent);
    uv_mutex_unlock(&relay.lock);
    return c;
}

static void wait_relay_idle(void)
{
    for (int i = 0; i < (IDLE_TIMEOUT_S + 10) * 20; i++) {
        if (relay_counts().open == 0)
            return;
        uv_sleep(50);
    }
    die("the server did not close the idle connection within %d s", IDLE_TIMEOUT_S + 10);
}

/* ---- the benchmarks ---------------------------------------------------------------- */

static char *make_token(void)
{
    struct proc_result res;
    if (adm(&res, "token", "create", "--org", "bench", "--group", "bench", "--uses", "10", NULL) !=
        0)
        die("token create: %s", res.err);
    char *tok = mmr_strdup(res.out);
    proc_result_free(&res);
    tok[strcspn(tok, "\r\n")] = '\0';
    return tok;
}

/* The same token with the relay's URL: the agent then talks through it. */
static char *relay_token(const char *token)
{
    struct mmr_token t;
    if (mmr_token_decode(token, &t) < 0)
        die("%s", mmr_err_msg());
    free(t.url);
    t.url = mmr_asprintf("https://127.0.0.1:%d", relay.port);
    char *out = mmr_token_encode(&t);
    mmr_token_free(&t);
    return out;
}

static void bench_drain(const char *token)
{
    agent_start(&drain, token, 1);
    stop_proc(&srv.proc, 10000);
    double t0 = now_s();
    char count[16];
    snprintf(count, sizeof(count), "%d", SELFTEST_CHUNK);
    for (int queued = 0; queued < BACKLOG_EVENTS; queued += SELFTEST_CHUNK) {
        const char *argv[] = {MMR_CTL_BIN, "--data-dir", drain.dir, "selftest",
                              "--events",  count,        NULL};
        struct proc_result res;
        if (run(&res, argv) != 0)
            die("mamorictl selftest: %s", res.err);
        proc_result_free(&res);
    }
    double pushed = now_s() - t0;
    long long depth = status_int(&drain, "queue.depth");
    if (depth < BACKLOG_EVENTS)
        die("the queue holds %lld events, expected %d", depth, BACKLOG_EVENTS);

    server_start();
    t0 = now_s();
    ipc(&drain, "sync", NULL);
    while ((depth = status_int(&drain, "queue.depth")) != 0) {
        if (now_s() - t0 > 300)
            die("the backlog did not drain in 300 s (%lld left)", depth);
        uv_sleep(20);
    }
    double drained = now_s() - t0;

    struct proc_result res;
    char *device = status_str(&drain, "enrollment.device_id");
    adm(&res, "events", "count", "--device", device, "--type", "agent.selftest", NULL);
    long long stored = strtoll(res.out, NULL, 10);
    proc_result_free(&res);
    free(device);
    stop_proc(&drain.proc, 5000);

    printf("agent.selftest_enqueue_events_per_s: %.0f events/s\n", BACKLOG_EVENTS / pushed);
    printf("agent.drain_events_per_s: %.0f events/s\n", BACKLOG_EVENTS / drained);
    printf("agent.drain_events_stored: %lld events\n", stored);
    if (stored != BACKLOG_EVENTS)
        fprintf(stderr, "bench_agent: the server holds %lld selftest events, expected %d\n", stored,
                BACKLOG_EVENTS);
    fflush(stdout);
}

/* Per check-in, averaged over the samples of one mode. */
struct wire_mode {
    double up, down; /* TCP payload bytes: agent to server, server to agent */
    double segments; /* TCP segments, both ways */
    double tls;      /* up + down */
    double ip;       /* with IP and TCP headers */
};

struct wire_result {
    struct wire_mode resumed, keepalive;
    long long resumed_handshakes; /* among the resumed samples */
};

static void wire_mode_set(struct wire_mode *m, const struct counts *before,
                          const struct counts *after, int samples)
{
    m->up = (double)(after->up - before->up) / samples;
    m->down = (double)(after->down - before->down) / samples;
    m->segments = (double)(after->segments - before->segments) / samples;
    m->tls = m->up + m->down;
    m->ip = m->tls + m->segments * HEADER_BYTES;
}

static void bench_wire(const char *token, struct wire_result *r)
{
    char *tok = relay_token(token);
    agent_start(&wire, tok, 3);
    free(tok);

    /* Resumed: the server has closed the connection since the last check-in. */
    long long resumed0 = status_int(&wire, "checkin.resumed");
    struct counts total0 = {0}, total1 = {0};
    for (int i = 0; i < WIRE_SAMPLES; i++) {
        wait_relay_idle();
        struct counts before = relay_counts();
        sync_and_wait(&wire);
        wait_relay_idle();
        struct counts after = relay_counts();
        total1.up += after.up - before.up;
        total1.down += after.down - before.down;
        total1.segments += after.segments - before.segments;
    }
    r->resumed_handshakes = status_int(&wire, "checkin.resumed") - resumed0;
    wire_mode_set(&r->resumed, &total0, &total1, WIRE_SAMPLES);

    /* Keep-alive: check-ins on the connection the first one opened. */
    sync_and_wait(&wire);
    uv_sleep(300); /* delayed ACKs */
    struct counts before = relay_counts();
    for (int i = 0; i < WIRE_SAMPLES; i++)
        sync_and_wait(&wire);
    uv_sleep(300);
    struct counts after = relay_counts();
    if (after.accepted != before.accepted)
        fprintf(stderr, "bench_agent: the keep-alive samples opened %" PRIu64 " connections\n",
                after.accepted - before.accepted);
    wire_mode_set(&r->keepalive, &before, &after, WIRE_SAMPLES);
    stop_proc(&wire.proc, 5000);
}

int main(void)
{
    mmr_process_ignore_sigpipe();
    uv_fs_t req;
    if (uv_fs_mkdtemp(NULL, &req, "/tmp/mmr-bench-XXXXXX", NULL) < 0)
        die("cannot make a temporary directory");
    snprintf(srv.root, sizeof(srv.root), "%s", req.path);
    uv_fs_req_cleanup(&req);

    server_init();
    server_start();
    /* Check in once a day (the idle measurement must see no check-in), and
     * drain a backlog as fast as the agent allows (the default is 5,000/s). */
    char *policy = mmr_path_join(srv.root, "policy.json");
    write_file(policy,
               "{\"profile\": \"carried-out\",\n"
               " \"checkin\": {\"interval\": 86400, \"jitter_percent\": 0},\n"
               " \"telemetry\": {\"upload_rate\": 1000000}}\n",
               false);
    struct proc_result res;
    if (adm(&res, "policy", "publish", "--group", "bench", policy, NULL) != 0)
        die("policy publish: %s", res.err);
    proc_result_free(&res);
    free(policy);
    char *token = make_token();

    printf("# agent benchmarks: policy telemetry.upload_rate 1000000 events/s (default 5000), "
           "checkin.interval 86400 s; server idle_timeout %d s (default 90 s: the bytes of a "
           "check-in do not depend on it)\n",
           IDLE_TIMEOUT_S);
    fflush(stdout);
    bench_drain(token);

    /* The idle agent is watched for a minute while the wire agent works. */
    agent_start(&idle, token, 2);
    uv_sleep(SETTLE_MS);
    int64_t pid = proc_pid(idle.proc);
    double t0 = now_s();
    uint64_t cs0 = context_switches(pid);
    relay_start(srv.port);
    struct wire_result wr;
    bench_wire(token, &wr);
    double left = IDLE_WINDOW_S - (now_s() - t0);
    if (left > 0)
        uv_sleep((unsigned)(left * 1000));
    uint64_t cs1 = context_switches(pid);
    double window = now_s() - t0;
    double rss = rss_mib(pid);
    stop_proc(&idle.proc, 5000);
    stop_proc(&srv.proc, 10000);
    free(token);

    printf("agent.idle_rss_mib: %.1f MiB\n", rss);
    printf("agent.idle_wakeups_per_min: %.1f wakeups/min\n", (double)(cs1 - cs0) * 60.0 / window);
    const struct wire_mode *m[2] = {&wr.resumed, &wr.keepalive};
    const char *names[2] = {"resumed", "keepalive"};
    printf("# bytes on the wire: TCP payload plus %d bytes of IPv4 and TCP headers per segment "
           "(segments counted by the kernel, TCP_INFO)\n",
           HEADER_BYTES);
    for (int i = 0; i < 2; i++)
        printf("# %s check-in: %.0f bytes up, %.0f down (TCP payload), %.1f TCP segments\n",
               names[i], m[i]->up, m[i]->down, m[i]->segments);
    printf("agent.tls_bytes_per_checkin_resumed: %.0f bytes\n", wr.resumed.tls);
    printf("agent.tls_bytes_per_checkin_keepalive: %.0f bytes\n", wr.keepalive.tls);
    printf("agent.bytes_per_checkin_resumed: %.0f bytes\n", wr.resumed.ip);
    printf("agent.bytes_per_checkin_keepalive: %.0f bytes\n", wr.keepalive.ip);
    printf("agent.wire_samples_resumed: %lld of %d checkins\n", wr.resumed_handshakes,
           WIRE_SAMPLES);
    /* The default server idle_timeout (90 s) outlives the default interval
     * (60 s +- 20 %): an idle agent's check-ins ride its kept-alive
     * connection. The target is under 1 MiB a day. */
    printf("agent.bytes_per_day_default_interval_kib: %.0f KiB\n",
           wr.keepalive.ip * CHECKINS_PER_DAY / 1024.0);
    /* Where the server's idle_timeout is set below the interval (to save
     * server memory), every check-in reconnects and resumes its session. */
    printf("agent.bytes_per_day_reconnecting_kib: %.0f KiB\n",
           wr.resumed.ip * CHECKINS_PER_DAY / 1024.0);
    cleanup();
    return 0;
}
