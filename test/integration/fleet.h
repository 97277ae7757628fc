/* Integration-test fixture: a real mamori-server and real agents in one
 * temporary directory on 127.0.0.1, with helpers to drive mamoriadm and
 * mamorictl, wait for conditions and kill processes (see test_enroll.c). */
#ifndef MMR_TEST_FLEET_H
#define MMR_TEST_FLEET_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "proc.h"
#include "shared/https.h"

/* Binaries: the test target defines them (test/CMakeLists.txt). */
#ifndef MMR_SERVER_BIN
#error "define MMR_SERVER_BIN, MMR_ADM_BIN, MMR_AGENT_BIN and MMR_CTL_BIN"
#endif

#define FLEET_PATH_MAX 256

struct fleet_agent;

/* The temporary root: every server and agent directory lives below it, and
 * fleet_cleanup() removes it. */
struct fleet {
    char root[FLEET_PATH_MAX];
};

struct fleet_server {
    char dir[FLEET_PATH_MAX];         /* <root>/server: server.conf, pki/, server.db, logs/ */
    char stderr_path[FLEET_PATH_MAX]; /* <root>/server.stderr: its standard error */
    char url[64];                     /* https://127.0.0.1:PORT */
    int port;
    struct proc *proc; /* while running */
};

struct fleet_agent {
    char dir[FLEET_PATH_MAX]; /* data directory: agent.conf, agent.db, device.* */
    char stderr_path[FLEET_PATH_MAX];
    char hardware_id[64];
    struct proc *proc; /* while running */
};

/* ---- general ---------------------------------------------------------------- */

/* Timeouts grow tenfold under MMR_TEST_WRAPPER (valgrind). */
int fleet_ms(int normal_ms);

/* Creates the root directory /tmp/mmr-fleet-XXXXXX (asserts on failure). */
void fleet_init(struct fleet *f);
/* Stops nothing: stop servers and agents first. Removes the root. */
void fleet_cleanup(struct fleet *f);

/* A TCP port on 127.0.0.1 that was free a moment ago. */
int fleet_free_port(void);

/* Polls cond(ud) every 50 ms until it is true or timeout_ms (scaled by
 * fleet_ms) passes; returns its last answer. */
bool fleet_wait_for(bool (*cond)(void *ud), void *ud, int timeout_ms);

/* Writes text to path (asserts). */
void fleet_write_file(const char *path, const char *text);
/* Reads a whole file, NUL-terminated (allocated), or NULL. */
char *fleet_read_file(const char *path, size_t *len);
/* True when the file holds the bytes needle[0..len). */
bool fleet_file_contains(const char *path, const void *needle, size_t len);

/* SIGKILL and reap (no checks on the exit). */
void fleet_kill9(struct proc **p);

/* ---- the server -------------------------------------------------------------- */

/* `mamori-server init` in <root>/server on a free port; extra_conf, if not
 * NULL, is appended to server.conf (e.g. "[limits]\nrequest_timeout = 2s\n"). */
void fleet_server_init(struct fleet *f, struct fleet_server *s, const char *extra_conf);
/* `mamori-server run` and waits until the admin API answers (asserts). */
void fleet_server_start(struct fleet_server *s);
/* SIGTERM; expects a clean exit 0 in time and no sanitizer report. */
void fleet_server_stop(struct fleet_server *s);
void fleet_server_kill9(struct fleet_server *s);
/* True when GET /admin/v1/devices answers 200 (an in-process HTTPS call). */
bool fleet_server_answers(const struct fleet_server *s);

/* Runs `mamoriadm --dir DIR [args...]` (NULL-terminated). Returns the exit
 * code; res holds the output (free with proc_result_free). */
int fleet_adm(const struct fleet_server *s, struct proc_result *res, ...);
/* The same, parsing stdout as JSON (asserts exit 0 and valid JSON); pass the
 * arguments without --json. */
json_t *fleet_adm_json(const struct fleet_server *s, ...);
/* `mamoriadm token create --org O --group G --uses N [--expires E]`; the
 * token string (allocated). Asserts success. */
char *fleet_token_create(const struct fleet_server *s, const char *org, const char *group, int uses,
                         const char *expires);

/* An in-process admin API call with the bearer token: returns the HTTP status
 * (or a negative MMR_E* code) and the JSON reply in *reply (may be NULL). */
int fleet_admin_call(const struct fleet_server *s, const char *method, const char *target,
                     const json_t *body, json_t **reply);

/* An HTTPS client of the server (trusting DIR/pki/root.crt), optionally with
 * a client certificate: for raw API calls from a test. */
struct fleet_client {
    struct mmr_tls_client *tls;
    struct mmr_https *https;
    char *auth; /* "Bearer <admin token>" once fleet_client_use_admin_token */
};

/* cert_pem/key_pem NULL: no client certificate. Asserts on failure. */
void fleet_client_open(struct fleet_client *c, const struct fleet_server *s, const char *cert_pem,
                       const char *key_pem);
/* The same with agent a's device.crt and device.key. */
void fleet_client_open_device(struct fleet_client *c, const struct fleet_server *s,
                              const struct fleet_agent *a);
/* Sends the server's admin token with every request from now on. */
void fleet_client_use_admin_token(struct fleet_client *c, const struct fleet_server *s);
/* One request; body may be NULL. Returns the HTTP status or a negative MMR_E*
 * code; *reply gets the parsed JSON body (may be NULL; reply may be NULL). */
int fleet_client_call(struct fleet_client *c, const char *method, const char *target,
                      const char *body, size_t len, json_t **reply);
void fleet_client_close(struct fleet_client *c);

/* ---- agents ------------------------------------------------------------------- */

/* Makes the data directory <root>/<name> with agent.conf naming hardware_id
 * (NULL: "test-hw-" and the name padded with zeros), the server URL and, when
 * token is not NULL, enroll_token (silent enrollment at first start).
 * extra_conf is appended (may be NULL). Does not start anything. */
void fleet_agent_init(struct fleet *f, struct fleet_agent *a, const char *name,
                      const struct fleet_server *s, const char *hardware_id, const char *token,
                      const char *extra_conf);
/* `mamori-agent -f --data-dir D`; waits until the IPC socket answers. */
void fleet_agent_start(struct fleet_agent *a);
/* Starts and waits until status says enrolled (asserts, with the agent's
 * stderr on failure). */
void fleet_agent_start_enrolled(struct fleet_agent *a);
/* Polls status until enrollment.enrolled is true; false on timeout. */
bool fleet_agent_wait_enrolled(const struct fleet_agent *a, int timeout_ms);
/* SIGTERM; expects exit 0 within 2 s (scaled) and no sanitizer report. */
void fleet_agent_stop(struct fleet_agent *a);
void fleet_agent_kill9(struct fleet_agent *a);

/* Runs `mamorictl --data-dir D [args...]` (NULL-terminated); exit code. */
int fleet_ctl(const struct fleet_agent *a, struct proc_result *res, ...);
/* `mamorictl status --json` parsed, or NULL when the agent does not answer.
 * Uses the IPC client in-process (fast, also under valgrind). */
json_t *fleet_agent_status(const struct fleet_agent *a);
/* The same through the real mamorictl binary (asserts success). */
json_t *fleet_ctl_status(const struct fleet_agent *a);
/* `mamori-agent enroll TOKEN --data-dir D`; exit code, output in res. */
int fleet_agent_enroll(const struct fleet_agent *a, const char *token, struct proc_result *res);

/* A path inside the agent's data directory (allocated). */
char *fleet_agent_path(const struct fleet_agent *a, const char *name);

/* Helpers for JSON paths like "enrollment.device_id" (NULL when missing). */
json_t *fleet_json_path(const json_t *doc, const char *path);
const char *fleet_json_str(const json_t *doc, const char *path);
long long fleet_json_int(const json_t *doc, const char *path);

#endif
