/* mamori-agent: start-up, signals, service glue and module wiring. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "agent/agent.h"
#include "agent/agent_db.h"
#include "agent/checkin.h"
#include "agent/enroll.h"
#include "agent/events.h"
#include "agent/queue.h"
#include "agent/control.h"
#include "agent/diag.h"
#include "agent/health.h"
#include "agent/status.h"
#include "mamori_version.h"
#include "shared/db.h"
#include "shared/err.h"
#include "shared/log.h"
#include "shared/mem.h"
#include "shared/platform.h"

#define SERVICE_NAME "mamori-agent"

enum exit_code {
    EXIT_OK = 0,
    EXIT_USAGE = 1,
    EXIT_CONFIG = 2,
    EXIT_RUNNING = 3,
    EXIT_STARTUP = 4,
    EXIT_REFUSED = 5,
    EXIT_UNREACHABLE = 6,
    EXIT_SERVICE = 7,
};

struct runtime {
    struct mmr_agent agent;
    uv_signal_t sig_term;
    uv_signal_t sig_int;
    uv_signal_t sig_hup;
    /* A stop request from the Windows Service Control Manager's thread. */
    uv_async_t stop_async;
    uv_mutex_t stop_lock; /* guards the two flags below */
    bool stop_live;       /* stop_async is open: uv_async_send is safe */
    bool stop_requested;
    const char *data_dir_opt;
    const char *config_opt;
    const char *enroll_token;
    char *pidfile; /* written only when we daemonised ourselves */
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: mamori-agent [OPTIONS]\n"
            "       mamori-agent enroll TOKEN [--data-dir DIR] [--config FILE]\n"
            "       mamori-agent service install [--data-dir DIR] [--config FILE]\n"
            "       mamori-agent service uninstall\n"
            "Runs the Mamori endpoint agent, or enrolls this computer with a token.\n"
            "(Silent installs put the token in agent.conf, [server] enroll_token,\n"
            "and the agent enrolls at its first start.)\n"
            "On Windows, `service install` registers the agent as the automatically\n"
            "started service mamori-agent (LocalSystem, restarted on failure), with\n"
            "the given options; `service uninstall` stops and removes it. Both need\n"
            "an Administrator.\n\n"
            "  -f, --foreground     stay in the foreground and log to stderr\n"
            "      --data-dir DIR   data directory (default %s); the IPC socket\n"
            "                       then lives in DIR too\n"
            "      --config FILE    configuration file (default %s,\n"
            "                       or DIR/agent.conf with --data-dir)\n"
            "      --version        print the version and exit\n"
            "  -h, --help           print this help and exit\n\n"
            "Signals: SIGTERM/SIGINT stop, SIGHUP reloads the configuration. On Windows,\n"
            "Ctrl-C or the Service Control Manager stops it and `mamorictl reload`\n"
            "reloads; without -f it still runs in the foreground.\n"
            "Exit codes: 0 stopped cleanly (or enrolled), 1 usage, 2 configuration error,\n"
            "3 another agent runs on this data directory, 4 start-up failure,\n"
            "5 enrollment refused by the server, 6 server unreachable,\n"
            "7 the service could not be installed or removed.\n",
            mmr_default_data_dir(), mmr_default_config_path());
}

static int open_logging(const struct mmr_agent *a)
{
    enum mmr_log_level level = MMR_LOG_INFO;
    mmr_log_level_parse(a->cfg.log_level, &level);
    struct mmr_log_opts opts = {
        .level = level,
        .to_stderr = a->foreground || a->cfg.log_stderr || mmr_service_managed(),
        .file_path = a->cfg.log_file,
        .max_bytes = a->cfg.log_max_size,
        .keep = (int)a->cfg.log_keep,
    };
    return mmr_log_open(&opts);
}

/* Returns the loader's error (message set) when the file is refused. */
static int reload(struct runtime *rt)
{
    struct mmr_agent *a = &rt->agent;
    struct mmr_agent_config fresh;
    mmr_service_notify("RELOADING=1");
    int rc = mmr_agent_config_load(a->config_path, !a->config_explicit, rt->data_dir_opt, &fresh);
    if (rc < 0) {
        mmr_error("agent", "configuration reload failed, keeping the running one",
                  "error=\"%s\"", mmr_err_msg());
        mmr_service_notify("READY=1");
        return rc;
    }
    if (strcmp(fresh.data_dir, a->cfg.data_dir) != 0 || strcmp(fresh.run_dir, a->cfg.run_dir) != 0)
        mmr_warn("agent", "data_dir and run_dir changes take effect at the next restart", NULL);
    free(fresh.data_dir);
    free(fresh.run_dir);
    fresh.data_dir = mmr_strdup(a->cfg.data_dir);
    fresh.run_dir = mmr_strdup(a->cfg.run_dir);
    mmr_agent_config_free(&a->cfg);
    a->cfg = fresh;
    if (open_logging(a) < 0)
        fprintf(stderr, "mamori-agent: %s\n", mmr_err_msg());
    mmr_info("agent", "configuration reloaded", "config=\"%s\"", a->config_path);
    mmr_service_notify("READY=1");
    return 0;
}

static void stop(struct runtime *rt, const char *why)
{
    mmr_info("agent", "stopping", "reason=%s", why);
    mmr_service_notify("STOPPING=1");
    bool uplink_stopped = mmr_checkin_stop(rt->agent.checkin);
    rt->agent.checkin = NULL;
    /* Commits what is pending. A check-in thread stuck in a network call may
     * still use the queue: then the queue stays open until the process exits
     * (what was not reported stored was never promised). */
    if (uplink_stopped) {
        mmr_queue_close(rt->agent.queue);
        rt->agent.queue = NULL;
    }
    mmr_control_stop(rt->agent.control);
    uv_mutex_lock(&rt->stop_lock);
    rt->stop_live = false;
    uv_mutex_unlock(&rt->stop_lock);
    uv_close((uv_handle_t *)&rt->stop_async, NULL);
    uv_close((uv_handle_t *)&rt->sig_term, NULL);
    uv_close((uv_handle_t *)&rt->sig_int, NULL);
    uv_close((uv_handle_t *)&rt->sig_hup, NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct runtime *rt = s->data;
    if (signum == SIGHUP)
        (void)reload(rt);
    else
        stop(rt, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void on_stop_request(uv_async_t *async)
{
    stop(async->data, "service stop");
}

/* The service manager's stop, from its own thread: only wakes the loop, which
 * then stops exactly as on SIGTERM. Safe before the loop runs and after it
 * has stopped. */
static void request_stop(void *ctx)
{
    struct runtime *rt = ctx;
    uv_mutex_lock(&rt->stop_lock);
    rt->stop_requested = true;
    if (rt->stop_live)
        uv_async_send(&rt->stop_async);
    uv_mutex_unlock(&rt->stop_lock);
}

static void handle_reload(struct mmr_control_call *call, json_t *args, void *ud)
{
    struct runtime *rt = ud;
    int rc = reload(rt);
    if (rc < 0)
        mmr_control_fail(call, rc, mmr_err_msg());
    else
        mmr_control_reply(call, json_pack("{s:s}", "config", rt->agent.config_path));
}

/* A damaged agent.db must not leave the laptop unprotected: move it aside
 * (kept for the helpdesk) and start with a fresh one. */
static int open_database(struct mmr_agent *a)
{
    int rc = mmr_agent_db_open(a->db_path, &a->db);
    if (rc == 0)
        mmr_health_set(a->health, "database", MMR_HEALTH_OK, NULL);
    if (rc != MMR_ECORRUPT)
        return rc;
    char *why = mmr_strdup(mmr_err_msg());
    char ts[32];
    mmr_time_format(mmr_time_now_ms(), ts);
    char *aside = mmr_asprintf("%s.corrupt-%s", a->db_path, ts);
    mmr_error("agent", "agent database is damaged, moving it aside", "path=\"%s\" error=\"%s\"",
              aside, why);
    rc = mmr_file_rename(a->db_path, aside);
    if (rc == 0) {
        static const char *const sidecars[] = {"-wal", "-shm"};
        for (size_t i = 0; i < 2; i++) {
            /* Keep the journal with its database: it may hold the newest rows. */
            char *side = mmr_asprintf("%s%s", a->db_path, sidecars[i]);
            char *side_aside = mmr_asprintf("%s%s", aside, sidecars[i]);
            if (mmr_path_exists(side))
                mmr_file_rename(side, side_aside);
            free(side_aside);
            free(side);
        }
        rc = mmr_agent_db_open(a->db_path, &a->db);
    }
    if (rc == 0) {
        char *detail = mmr_asprintf("previous database was damaged (%s) and was moved to %s", why,
                                    aside);
        mmr_health_set(a->health, "database", MMR_HEALTH_DEGRADED, detail);
        free(detail);
    }
    free(aside);
    free(why);
    return rc;
}

static int prepare_dirs(struct mmr_agent *a)
{
    int rc = mmr_mkdir_p(a->cfg.data_dir, true);
    if (rc == 0) {
        char *logs = mmr_path_join(a->cfg.data_dir, "logs");
        rc = mmr_mkdir_p(logs, true);
        free(logs);
    }
    /* The run directory holds only the socket, which every user may reach. */
    if (rc == 0 && strcmp(a->cfg.run_dir, a->cfg.data_dir) != 0)
        rc = mmr_mkdir_p(a->cfg.run_dir, false);
    return rc;
}

static void on_critical(void *arg)
{
    struct mmr_agent *a = arg;
    if (a->checkin)
        mmr_checkin_wake(a->checkin, true);
}

static int start_uplink(struct mmr_agent *a)
{
    struct mmr_queue_opts qo = {.on_critical = on_critical, .arg = a};
    int rc = mmr_queue_open(a->db_path, a->loop, &qo, &a->queue);
    if (rc < 0) {
        mmr_health_set(a->health, "queue", MMR_HEALTH_FAILED, mmr_err_msg());
        return rc;
    }
    mmr_health_set(a->health, "queue", MMR_HEALTH_OK, NULL);
    /* Silent installs give the token in agent.conf or, for tools that can
     * only set the environment, in MAMORI_ENROLL_TOKEN. */
    const char *token = a->cfg.enroll_token;
    if (!token || !token[0])
        token = getenv("MAMORI_ENROLL_TOKEN");
    struct mmr_checkin_opts co = {.data_dir = a->cfg.data_dir, .db_path = a->db_path,
                                  .enroll_token = token,
                                  .hardware_id = a->cfg.hardware_id, .queue = a->queue,
                                  .health = a->health};
    return mmr_checkin_start(&co, &a->checkin);
}

static int start_modules(struct runtime *rt)
{
    struct mmr_agent *a = &rt->agent;
    int rc = start_uplink(a);
    if (rc < 0)
        return rc;
    rc = mmr_control_start(a->loop, a->endpoint, NULL, &a->control);
    if (rc < 0) {
        mmr_health_set(a->health, "control", MMR_HEALTH_FAILED, mmr_err_msg());
        return rc;
    }
    mmr_status_register(a->control, a);
    mmr_diag_register(a->control, a);
    mmr_events_register(a->control, a);
    mmr_control_register(a->control, "reload", true, handle_reload, rt);
    mmr_health_set(a->health, "control", MMR_HEALTH_OK, a->endpoint);
    return 0;
}

static int run(struct runtime *rt)
{
    struct mmr_agent *a = &rt->agent;
    a->loop = uv_default_loop();
    uv_signal_init(a->loop, &rt->sig_term);
    uv_signal_init(a->loop, &rt->sig_int);
    uv_signal_init(a->loop, &rt->sig_hup);
    rt->sig_term.data = rt->sig_int.data = rt->sig_hup.data = rt;
    uv_signal_start(&rt->sig_term, on_signal, SIGTERM);
    uv_signal_start(&rt->sig_int, on_signal, SIGINT);
    uv_signal_start(&rt->sig_hup, on_signal, SIGHUP);
    uv_async_init(a->loop, &rt->stop_async, on_stop_request);
    rt->stop_async.data = rt;
    uv_mutex_lock(&rt->stop_lock);
    rt->stop_live = true;
    if (rt->stop_requested)
        uv_async_send(&rt->stop_async);
    uv_mutex_unlock(&rt->stop_lock);

    int rc = start_modules(rt);
    if (rc < 0) {
        mmr_error("agent", "start-up failed", "error=\"%s\"", mmr_err_msg());
        stop(rt, "start-up failure");
    } else {
        mmr_info("agent", "started", "version=%s pid=%lld data_dir=\"%s\" endpoint=\"%s\"",
                 MMR_VERSION, (long long)mmr_process_id(), a->cfg.data_dir, a->endpoint);
        mmr_service_notify("READY=1");
    }
    uv_run(a->loop, UV_RUN_DEFAULT);
    mmr_control_free(a->control);
    uv_loop_close(a->loop);
    return rc;
}

static void cleanup(struct mmr_agent *a)
{
    mmr_db_close(a->db);
    mmr_health_free(a->health);
    mmr_lock_release(a->lock);
    mmr_agent_config_free(&a->cfg);
    free(a->config_path);
    free(a->db_path);
    free(a->endpoint);
    mmr_log_close();
}

/* `mamori-agent enroll TOKEN`: enrolls now, in the foreground. */
static int enroll_now(struct mmr_agent *a, const char *token)
{
    struct mmr_log_opts lo = {.level = MMR_LOG_INFO, .to_stderr = false,
                              .file_path = a->cfg.log_file};
    mmr_log_open(&lo);
    a->db_path = mmr_path_join(a->cfg.data_dir, "agent.db");
    int rc = mmr_agent_db_open(a->db_path, &a->db);
    char *device_id = NULL;
    if (rc == 0) {
        struct mmr_enroll_opts eo = {.data_dir = a->cfg.data_dir, .token = token,
                                     .hardware_id = a->cfg.hardware_id};
        rc = mmr_enroll(&eo, a->db, &device_id);
    }
    if (rc < 0) {
        fprintf(stderr, "mamori-agent: %s\n", mmr_err_msg());
        return rc == MMR_EPERM ? EXIT_REFUSED
               : rc == MMR_ECONN || rc == MMR_ETIMEDOUT ? EXIT_UNREACHABLE
                                                        : EXIT_STARTUP;
    }
    printf("Enrolled as device %s. Start the agent to check in.\n", device_id);
    free(device_id);
    return EXIT_OK;
}

/* Appends one argument for a Windows command line (the rules of
 * CommandLineToArgvW): quoted, with backslashes doubled only before a quote. */
static void append_quoted(struct mmr_buf *b, const char *arg)
{
    mmr_buf_append(b, " \"", 2);
    for (const char *p = arg;; p++) {
        size_t slashes = 0;
        while (*p == '\\') {
            slashes++;
            p++;
        }
        if (*p == '\0' || *p == '"') {
            /* Before a quote (ours at the end, or a literal one): 2n + 1. */
            for (size_t i = 0; i < slashes * 2; i++)
                mmr_buf_append(b, "\\", 1);
            if (*p == '\0')
                break;
            mmr_buf_append(b, "\\\"", 2);
        } else {
            for (size_t i = 0; i < slashes; i++)
                mmr_buf_append(b, "\\", 1);
            mmr_buf_append(b, p, 1);
        }
    }
    mmr_buf_append(b, "\"", 1);
}

/* The service starts in the system directory: give it absolute paths. A
 * missing data directory is created (owner-only), as the agent would;
 * *created says so, for the undo when the installation fails. */
static int service_path_arg(struct mmr_buf *b, const char *opt, const char *path, bool is_dir,
                            bool *created)
{
    if (!path)
        return 0;
    uv_fs_t req;
    int r = uv_fs_realpath(NULL, &req, path, NULL);
    if (r == UV_ENOENT && is_dir) {
        uv_fs_req_cleanup(&req);
        int rc = mmr_mkdir_p(path, true);
        if (rc < 0)
            return rc;
        *created = true;
        r = uv_fs_realpath(NULL, &req, path, NULL);
    }
    if (r < 0) {
        uv_fs_req_cleanup(&req);
        return mmr_err_set(r == UV_ENOENT ? MMR_ENOENT : MMR_EIO, "%s %s: %s", opt, path,
                           uv_strerror(r));
    }
    mmr_buf_appendf(b, " %s", opt);
    append_quoted(b, req.ptr);
    uv_fs_req_cleanup(&req);
    return 0;
}

/* `mamori-agent service install|uninstall` (Windows). */
static int service_command(const char *verb, const struct runtime *rt)
{
    int rc;
    if (strcmp(verb, "install") == 0) {
        struct mmr_buf args = {0};
        bool created = false;
        rc = service_path_arg(&args, "--data-dir", rt->data_dir_opt, true, &created);
        if (rc == 0)
            rc = service_path_arg(&args, "--config", rt->config_opt, false, &created);
        struct mmr_service_spec spec = {
            .name = SERVICE_NAME,
            .display_name = "Mamori Agent",
            .description = "Mamori endpoint security agent: reports this computer's state and "
                           "events to the organisation's Mamori server.",
            .args = args.len ? args.data + 1 : NULL, /* without the leading space */
        };
        if (rc == 0)
            rc = mmr_service_install(&spec);
        if (rc == 0)
            printf("Service %s installed (automatic start, LocalSystem, restarted on "
                   "failure).\nStart it now with: sc start %s\n", SERVICE_NAME, SERVICE_NAME);
        if (rc < 0 && created) {
            /* Leave no trace of a failed install (the directory is still empty). */
            uv_fs_t req;
            uv_fs_rmdir(NULL, &req, rt->data_dir_opt, NULL);
            uv_fs_req_cleanup(&req);
        }
        mmr_buf_free(&args);
    } else if (strcmp(verb, "uninstall") == 0) {
        if (rt->data_dir_opt || rt->config_opt) {
            fprintf(stderr, "mamori-agent: service uninstall takes no options\n");
            return EXIT_USAGE;
        }
        rc = mmr_service_uninstall(SERVICE_NAME);
        if (rc == 0)
            printf("Service %s removed (or was not installed).\n", SERVICE_NAME);
    } else {
        fprintf(stderr, "mamori-agent: unknown service command '%s' (install, uninstall)\n",
                verb);
        usage(stderr);
        return EXIT_USAGE;
    }
    if (rc < 0) {
        fprintf(stderr, "mamori-agent: %s\n", mmr_err_msg());
        return rc == MMR_EUNSUP ? EXIT_USAGE : EXIT_SERVICE;
    }
    return EXIT_OK;
}

/* The agent's life from configuration to exit; under the Windows SCM it runs
 * on the service thread. Returns the exit code. */
static int agent_main(void *ctx)
{
    struct runtime *rt = ctx;
    struct mmr_agent *a = &rt->agent;
    mmr_process_ignore_sigpipe();

    mmr_process_private_files();
    a->started_ms = mmr_time_now_ms();
    a->started_mono_ms = mmr_time_mono_ms();
    a->health = mmr_health_new();
    a->config_path = mmr_agent_config_path(rt->config_opt, rt->data_dir_opt, &a->config_explicit);
    int code = EXIT_OK;
    if (mmr_agent_config_load(a->config_path, !a->config_explicit, rt->data_dir_opt, &a->cfg) < 0) {
        fprintf(stderr, "mamori-agent: %s\n", mmr_err_msg());
        code = EXIT_CONFIG;
        goto out;
    }
    if (prepare_dirs(a) < 0 || mmr_ipc_endpoint(a->cfg.run_dir, &a->endpoint) < 0) {
        fprintf(stderr, "mamori-agent: %s\n", mmr_err_msg());
        code = EXIT_STARTUP;
        goto out;
    }
    char *lock_path = mmr_path_join(a->cfg.data_dir, "agent.lock");
    int rc = mmr_lock_acquire(lock_path, &a->lock);
    if (rc == MMR_EBUSY && rt->enroll_token) {
        free(lock_path);
        fprintf(stderr, "mamori-agent: the agent is running on %s; stop it first, or put the "
                        "token in agent.conf ([server] enroll_token) and restart it\n",
                a->cfg.data_dir);
        code = EXIT_RUNNING;
        goto out;
    }
    if (rc == 0 && rt->enroll_token) {
        free(lock_path);
        code = enroll_now(a, rt->enroll_token);
        goto out;
    }
    if (rc == 0 && !a->foreground && !mmr_service_managed()) {
        /* Locks do not survive fork: check first (so the refusal reaches the
         * terminal), then take the lock again in the daemon. */
        mmr_lock_release(a->lock);
        a->lock = NULL;
        rt->pidfile = mmr_path_join(a->cfg.run_dir, "mamori-agent.pid");
        rc = mmr_daemonize(rt->pidfile);
        if (rc == MMR_EUNSUP) {
            /* Windows: nothing to detach from; stay in the foreground. */
            free(rt->pidfile);
            rt->pidfile = NULL;
            rc = 0;
        }
        if (rc == 0)
            rc = mmr_lock_acquire(lock_path, &a->lock);
    }
    free(lock_path);
    if (rc < 0) {
        fprintf(stderr, "mamori-agent: %s\n", mmr_err_msg());
        code = rc == MMR_EBUSY ? EXIT_RUNNING : EXIT_STARTUP;
        goto out;
    }
    if (open_logging(a) < 0)
        fprintf(stderr, "mamori-agent: logging to file disabled: %s\n", mmr_err_msg());

    a->db_path = mmr_path_join(a->cfg.data_dir, "agent.db");
    if (open_database(a) < 0) {
        mmr_error("agent", "cannot open the agent database", "error=\"%s\"", mmr_err_msg());
        fprintf(stderr, "mamori-agent: %s\n", mmr_err_msg());
        code = EXIT_STARTUP;
        goto out;
    }
    if (run(rt) < 0)
        code = EXIT_STARTUP;
    mmr_info("agent", "stopped", "code=%d", code);
out:
    if (rt->pidfile && a->lock)
        mmr_file_remove(rt->pidfile);
    free(rt->pidfile);
    rt->pidfile = NULL;
    cleanup(a);
    return code;
}

int main(int argc, char **argv)
{
    mmr_process_init(&argc, &argv);
    static const struct option options[] = {
        {"foreground", no_argument, NULL, 'f'}, {"data-dir", required_argument, NULL, 'd'},
        {"config", required_argument, NULL, 'c'}, {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    struct runtime rt;
    memset(&rt, 0, sizeof(rt));
    int opt;
    while ((opt = getopt_long(argc, argv, "fh", options, NULL)) != -1) {
        switch (opt) {
        case 'f': rt.agent.foreground = true; break;
        case 'd': rt.data_dir_opt = optarg; break;
        case 'c': rt.config_opt = optarg; break;
        case 'V': printf("mamori-agent %s (%s)\n", MMR_VERSION, MMR_GIT_COMMIT); return EXIT_OK;
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind + 2 == argc && strcmp(argv[optind], "service") == 0)
        return service_command(argv[optind + 1], &rt);
    if (optind + 2 == argc && strcmp(argv[optind], "enroll") == 0) {
        rt.enroll_token = argv[optind + 1];
    } else if (optind < argc) {
        fprintf(stderr, "mamori-agent: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }
    uv_mutex_init(&rt.stop_lock);
    int code = rt.enroll_token ? agent_main(&rt)
                               : mmr_service_run(SERVICE_NAME, agent_main, request_stop, &rt);
    if (code < 0) {
        fprintf(stderr, "mamori-agent: %s\n", mmr_err_msg());
        code = EXIT_STARTUP;
    }
    uv_mutex_destroy(&rt.stop_lock);
    return code;
}
