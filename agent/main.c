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

enum exit_code {
    EXIT_OK = 0,
    EXIT_USAGE = 1,
    EXIT_CONFIG = 2,
    EXIT_RUNNING = 3,
    EXIT_STARTUP = 4,
    EXIT_REFUSED = 5,
    EXIT_UNREACHABLE = 6,
};

struct runtime {
    struct mmr_agent agent;
    uv_signal_t sig_term;
    uv_signal_t sig_int;
    uv_signal_t sig_hup;
    const char *data_dir_opt;
    char *pidfile; /* written only when we daemonised ourselves */
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: mamori-agent [OPTIONS]\n"
            "       mamori-agent enroll TOKEN [--data-dir DIR] [--config FILE]\n"
            "Runs the Mamori endpoint agent, or enrolls this computer with a token.\n"
            "(Silent installs put the token in agent.conf, [server] enroll_token,\n"
            "and the agent enrolls at its first start.)\n\n"
            "  -f, --foreground     stay in the foreground and log to stderr\n"
            "      --data-dir DIR   data directory (default %s); the IPC socket\n"
            "                       then lives in DIR too\n"
            "      --config FILE    configuration file (default %s,\n"
            "                       or DIR/agent.conf with --data-dir)\n"
            "      --version        print the version and exit\n"
            "  -h, --help           print this help and exit\n\n"
            "Signals: SIGTERM/SIGINT stop, SIGHUP reloads the configuration.\n"
            "Exit codes: 0 stopped cleanly (or enrolled), 1 usage, 2 configuration error,\n"
            "3 another agent runs on this data directory, 4 start-up failure,\n"
            "5 enrollment refused by the server, 6 server unreachable.\n",
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

static void reload(struct runtime *rt)
{
    struct mmr_agent *a = &rt->agent;
    struct mmr_agent_config fresh;
    mmr_service_notify("RELOADING=1");
    if (mmr_agent_config_load(a->config_path, !a->config_explicit, rt->data_dir_opt, &fresh) < 0) {
        mmr_error("agent", "configuration reload failed, keeping the running one",
                  "error=\"%s\"", mmr_err_msg());
        mmr_service_notify("READY=1");
        return;
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
    uv_close((uv_handle_t *)&rt->sig_term, NULL);
    uv_close((uv_handle_t *)&rt->sig_int, NULL);
    uv_close((uv_handle_t *)&rt->sig_hup, NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct runtime *rt = s->data;
    if (signum == SIGHUP)
        reload(rt);
    else
        stop(rt, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void handle_reload(struct mmr_control_call *call, json_t *args, void *ud)
{
    reload(ud);
    mmr_control_reply(call, json_pack("{s:s}", "config", ((struct runtime *)ud)->agent.config_path));
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

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"foreground", no_argument, NULL, 'f'}, {"data-dir", required_argument, NULL, 'd'},
        {"config", required_argument, NULL, 'c'}, {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    struct runtime rt;
    memset(&rt, 0, sizeof(rt));
    struct mmr_agent *a = &rt.agent;
    const char *config_opt = NULL;
    int opt;
    while ((opt = getopt_long(argc, argv, "fh", options, NULL)) != -1) {
        switch (opt) {
        case 'f': a->foreground = true; break;
        case 'd': rt.data_dir_opt = optarg; break;
        case 'c': config_opt = optarg; break;
        case 'V': printf("mamori-agent %s (%s)\n", MMR_VERSION, MMR_GIT_COMMIT); return EXIT_OK;
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    const char *enroll_token = NULL;
    if (optind + 2 == argc && strcmp(argv[optind], "enroll") == 0) {
        enroll_token = argv[optind + 1];
    } else if (optind < argc) {
        fprintf(stderr, "mamori-agent: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }
    mmr_process_ignore_sigpipe();

    mmr_process_private_files();
    a->started_ms = mmr_time_now_ms();
    a->started_mono_ms = mmr_time_mono_ms();
    a->health = mmr_health_new();
    a->config_path = mmr_agent_config_path(config_opt, rt.data_dir_opt, &a->config_explicit);
    int code = EXIT_OK;
    if (mmr_agent_config_load(a->config_path, !a->config_explicit, rt.data_dir_opt, &a->cfg) < 0) {
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
    if (rc == MMR_EBUSY && enroll_token) {
        free(lock_path);
        fprintf(stderr, "mamori-agent: the agent is running on %s; stop it first, or put the "
                        "token in agent.conf ([server] enroll_token) and restart it\n",
                a->cfg.data_dir);
        code = EXIT_RUNNING;
        goto out;
    }
    if (rc == 0 && enroll_token) {
        free(lock_path);
        code = enroll_now(a, enroll_token);
        goto out;
    }
    if (rc == 0 && !a->foreground && !mmr_service_managed()) {
        /* Locks do not survive fork: check first (so the refusal reaches the
         * terminal), then take the lock again in the daemon. */
        mmr_lock_release(a->lock);
        a->lock = NULL;
        rt.pidfile = mmr_path_join(a->cfg.run_dir, "mamori-agent.pid");
        rc = mmr_daemonize(rt.pidfile);
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
    if (run(&rt) < 0)
        code = EXIT_STARTUP;
    mmr_info("agent", "stopped", "code=%d", code);
out:
    if (rt.pidfile && a->lock)
        mmr_file_remove(rt.pidfile);
    free(rt.pidfile);
    cleanup(a);
    return code;
}
