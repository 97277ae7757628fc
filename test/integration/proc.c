/* Test helper: real child processes through libuv, with captured output. */
#include "proc.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "shared/mem.h"

#define MAX_ARGS 64

struct proc {
    uv_loop_t loop;
    uv_process_t handle;
    uv_pipe_t out_pipe, err_pipe;
    uv_timer_t timer;
    struct mmr_buf out, err;
    int open_pipes;
    bool exited;
    int64_t exit_status;
    int term_signal;
    bool timed_out;
};

bool proc_wrapped(void)
{
    const char *w = getenv("MMR_TEST_WRAPPER");
    return w && w[0];
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    buf->base = mmr_malloc(suggested);
    buf->len = suggested;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct proc *p = s->loop->data;
    if (n > 0)
        mmr_buf_append(s == (uv_stream_t *)&p->out_pipe ? &p->out : &p->err, buf->base, (size_t)n);
    else if (n < 0) {
        uv_read_stop(s);
        p->open_pipes--;
    }
    free(buf->base);
}

static void on_exit_cb(uv_process_t *h, int64_t status, int sig)
{
    struct proc *p = h->loop->data;
    p->exited = true;
    p->exit_status = status;
    p->term_signal = sig;
}

/* argv with the wrapper's words in front; the strings point into *words. */
static void build_argv(const char *const argv[], bool wrap, char **words, char *out[MAX_ARGS])
{
    size_t n = 0;
    *words = NULL;
    const char *w = getenv("MMR_TEST_WRAPPER");
    if (wrap && w && w[0]) {
        *words = mmr_strdup(w);
        for (char *tok = strtok(*words, " "); tok && n < MAX_ARGS - 1; tok = strtok(NULL, " "))
            out[n++] = tok;
    }
    for (size_t i = 0; argv[i] && n < MAX_ARGS - 1; i++)
        out[n++] = (char *)argv[i];
    out[n] = NULL;
}

struct proc *proc_start(const char *const argv[], const struct proc_opts *opts)
{
    struct proc *p = mmr_calloc(1, sizeof(*p));
    uv_loop_init(&p->loop);
    p->loop.data = p;
    uv_pipe_init(&p->loop, &p->out_pipe, 0);
    uv_pipe_init(&p->loop, &p->err_pipe, 0);
    uv_timer_init(&p->loop, &p->timer);

    char *words;
    char *args[MAX_ARGS];
    build_argv(argv, !(opts && opts->no_wrapper), &words, args);
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&p->out_pipe},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&p->err_pipe},
    };
    uv_process_options_t po = {
        .exit_cb = on_exit_cb,
        .file = args[0],
        .args = args,
        .stdio_count = 3,
        .stdio = stdio,
    };
    if (opts && opts->set_user) {
        po.flags |= UV_PROCESS_SETUID | UV_PROCESS_SETGID;
        po.uid = opts->uid;
        po.gid = opts->gid;
    }
    int rc = uv_spawn(&p->loop, &p->handle, &po);
    free(words);
    if (rc < 0) {
        /* Report as an exit with a message, so the test's assertion explains. */
        mmr_buf_appendf(&p->err, "cannot start %s: %s", argv[0], uv_strerror(rc));
        p->exited = true;
        p->exit_status = 127;
        uv_close((uv_handle_t *)&p->out_pipe, NULL);
        uv_close((uv_handle_t *)&p->err_pipe, NULL);
        return p;
    }
    p->open_pipes = 2;
    uv_read_start((uv_stream_t *)&p->out_pipe, on_alloc, on_read);
    uv_read_start((uv_stream_t *)&p->err_pipe, on_alloc, on_read);
    return p;
}

int64_t proc_pid(const struct proc *p)
{
    return p->exited ? -1 : p->handle.pid;
}

int proc_kill(struct proc *p, int signum)
{
    if (p->exited)
        return -1;
    return uv_process_kill(&p->handle, signum);
}

static void on_timer(uv_timer_t *t)
{
    struct proc *p = t->loop->data;
    p->timed_out = true;
}

bool proc_wait(struct proc *p, int timeout_ms, struct proc_result *res)
{
    /* The loop has not run since proc_start: its cached clock is stale. */
    uv_update_time(&p->loop);
    uv_timer_start(&p->timer, on_timer, (uint64_t)timeout_ms, 0);
    while ((!p->exited || p->open_pipes > 0) && !p->timed_out)
        uv_run(&p->loop, UV_RUN_ONCE);
    bool timed_out = p->timed_out && !p->exited;
    if (!p->exited) {
        uv_process_kill(&p->handle, SIGKILL);
        while (!p->exited)
            uv_run(&p->loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, NULL);
    if (!uv_is_closing((uv_handle_t *)&p->handle) && p->handle.type == UV_PROCESS &&
        p->handle.loop == &p->loop)
        uv_close((uv_handle_t *)&p->handle, NULL);
    if (!uv_is_closing((uv_handle_t *)&p->out_pipe))
        uv_close((uv_handle_t *)&p->out_pipe, NULL);
    if (!uv_is_closing((uv_handle_t *)&p->err_pipe))
        uv_close((uv_handle_t *)&p->err_pipe, NULL);
    uv_run(&p->loop, UV_RUN_DEFAULT);
    uv_loop_close(&p->loop);

    mmr_buf_append(&p->out, "", 0);
    mmr_buf_append(&p->err, "", 0);
    res->exit_code = p->term_signal ? -1 : (int)p->exit_status;
    res->term_signal = p->term_signal;
    res->out = p->out.data;
    res->err = p->err.data;
    res->timed_out = timed_out;
    free(p);
    return !timed_out;
}

void proc_run(const char *const argv[], const struct proc_opts *opts, int timeout_ms,
              struct proc_result *res)
{
    proc_wait(proc_start(argv, opts), timeout_ms, res);
}

void proc_result_free(struct proc_result *res)
{
    free(res->out);
    free(res->err);
    memset(res, 0, sizeof(*res));
}
