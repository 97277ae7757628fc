/* POSIX-only test for agent/queue.c: a producer process killed with SIGKILL
 * (fork, kill -9) at random moments loses no event it reported as stored and
 * never reuses a seq. */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "agent/queue.h"
#include "shared/err.h"
#include "testutil.h"

static char dir[512];
static char path[600];

static void setup(void)
{
    mmr_test_mkdtemp("mmr-queue-posix", dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/agent.db", dir);
}

static void teardown(void)
{
    mmr_test_rmtree(dir);
}

TestSuite(queue_posix, .init = setup, .fini = teardown);

static struct mmr_queue *open_q(void)
{
    struct mmr_queue *q = NULL;
    int rc = mmr_queue_open(path, NULL, NULL, &q);
    cr_assert_eq(rc, 0, "mmr_queue_open: %d %s", rc, mmr_err_msg());
    cr_assert_not_null(q);
    return q;
}

/* Every stored event, as the upload JSON parsed back. */
static json_t *read_all(struct mmr_queue *q)
{
    struct mmr_queue_batch b;
    int rc = mmr_queue_read(q, 0, 10000000, 1u << 30, &b);
    cr_assert_eq(rc, 0, "read: %s", mmr_err_msg());
    json_error_t err;
    json_t *arr = json_loadb(b.json, b.json_len, 0, &err);
    cr_assert_not_null(arr, "batch JSON: %s: %.200s", err.text, b.json);
    cr_assert(json_is_array(arr));
    cr_assert_eq(json_array_size(arr), b.count);
    mmr_queue_batch_free(&b);
    return arr;
}

static uint64_t ev_seq(json_t *ev)
{
    return (uint64_t)json_integer_value(json_object_get(ev, "seq"));
}

/* ---- kill -9 --------------------------------------------------------------- */

#define KILL_ROUNDS 20

struct child_producer {
    struct mmr_queue *q;
    int fd;
    int round;
    int id;
};

static void child_produce(void *arg)
{
    struct child_producer *p = arg;
    char data[96];
    for (int i = 0;; i++) {
        snprintf(data, sizeof(data), "{\"round\":%d,\"thread\":%d,\"i\":%d}", p->round, p->id, i);
        struct mmr_event ev = {.type = "test.kill", .severity = i % 4, .data = data};
        uint64_t seq;
        if (mmr_queue_push_sync(p->q, &ev, &seq) != 0)
            _exit(3);
        /* 8 bytes: a pipe write that small is atomic. */
        if (write(p->fd, &seq, sizeof(seq)) != (ssize_t)sizeof(seq))
            _exit(4);
    }
}

static void child_main(int fd, int round)
{
    struct mmr_queue *q = NULL;
    if (mmr_queue_open(path, NULL, NULL, &q) != 0)
        _exit(2);
    struct child_producer p[2] = {{q, fd, round, 0}, {q, fd, round, 1}};
    uv_thread_t t;
    if (uv_thread_create(&t, child_produce, &p[1]) != 0)
        _exit(5);
    child_produce(&p[0]);
}

static size_t read_seqs(int fd, uint64_t **seqs, size_t n, size_t *cap)
{
    uint64_t seq;
    ssize_t got;
    while ((got = read(fd, &seq, sizeof(seq))) == (ssize_t)sizeof(seq)) {
        if (n == *cap) {
            *cap = *cap ? *cap * 2 : 1024;
            *seqs = realloc(*seqs, *cap * sizeof(**seqs));
        }
        (*seqs)[n++] = seq;
    }
    cr_assert_eq(got, 0, "partial seq from the pipe");
    return n;
}

Test(queue_posix, kill_9_loses_nothing_reported_as_stored)
{
    uint64_t *seqs = NULL;
    size_t n = 0, cap = 0;
    uint64_t round_max = 0;
    srand((unsigned)time(NULL));
    for (int round = 0; round < KILL_ROUNDS; round++) {
        int fds[2];
        cr_assert_eq(pipe(fds), 0);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            close(fds[0]);
            child_main(fds[1], round);
            _exit(6);
        }
        close(fds[1]);
        /* Once it stores (under valgrind that takes a while), let it run for a
         * random moment, then kill it mid-flight. */
        uint64_t first;
        cr_assert_eq(read(fds[0], &first, sizeof(first)), (ssize_t)sizeof(first),
                     "the child stored nothing");
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            seqs = realloc(seqs, cap * sizeof(*seqs));
        }
        seqs[n++] = first;
        usleep((useconds_t)(30000 + rand() % 150000));
        kill(pid, SIGKILL);
        int status;
        cr_assert_eq(waitpid(pid, &status, 0), pid);
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                  "the child ended by itself: status %d", status);
        size_t before = n - 1;
        n = read_seqs(fds[0], &seqs, n, &cap);
        close(fds[0]);
        /* Seqs reported in this round are all beyond those of the last. */
        for (size_t i = before; i < n; i++)
            cr_assert_gt(seqs[i], round_max, "seq %llu reused", (unsigned long long)seqs[i]);
        for (size_t i = before; i < n; i++)
            if (seqs[i] > round_max)
                round_max = seqs[i];
    }
    cr_assert_gt(n, KILL_ROUNDS, "the children stored almost nothing (%zu)", n);

    struct mmr_queue *q = open_q();
    json_t *arr = read_all(q);
    size_t stored = json_array_size(arr);
    uint64_t max_stored = stored ? ev_seq(json_array_get(arr, stored - 1)) : 0;
    unsigned char *have = calloc(max_stored + 1, 1);
    /* No event twice: (round, thread, i) is unique, seqs strictly increase. */
    json_t *seen = json_object();
    uint64_t prev = 0;
    size_t i;
    json_t *ev;
    json_array_foreach(arr, i, ev)
    {
        uint64_t s = ev_seq(ev);
        cr_assert_gt(s, prev);
        prev = s;
        have[s] = 1;
        json_t *d = json_object_get(ev, "data");
        char key[64];
        snprintf(key, sizeof(key), "%lld/%lld/%lld",
                 (long long)json_integer_value(json_object_get(d, "round")),
                 (long long)json_integer_value(json_object_get(d, "thread")),
                 (long long)json_integer_value(json_object_get(d, "i")));
        cr_assert_null(json_object_get(seen, key), "event %s stored twice", key);
        json_object_set_new(seen, key, json_true());
    }
    for (size_t k = 0; k < n; k++)
        cr_assert(seqs[k] <= max_stored && have[seqs[k]], "reported seq %llu is lost",
                  (unsigned long long)seqs[k]);
    cr_expect_geq(stored, n);
    json_decref(seen);
    json_decref(arr);
    free(have);
    free(seqs);
    mmr_queue_close(q);
}
