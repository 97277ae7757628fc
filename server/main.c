/* mamori-server: `init` creates a server directory (configuration, PKI,
 * database, admin token); `run` serves agents and admins over TLS. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "mamori_version.h"
#include "server/ca.h"
#include "server/listener.h"
#include "server/server.h"
#include "server/store.h"
#include "shared/err.h"
#include "shared/log.h"
#include "shared/mem.h"
#include "shared/pki.h"
#include "shared/platform.h"

#define MAX_NAMES 16

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: mamori-server init --dir DIR [--listen HOST:PORT] [--names N1,N2] [--org O]\n"
            "       mamori-server run --dir DIR [--listen HOST:PORT]\n\n"
            "init  creates DIR: server.conf, pki/ (root CA, issuing CA, server and\n"
            "      policy-signing certificates), server.db and admin.token\n"
            "run   serves agents (/v1) and admins (/admin/v1) over TLS, in the foreground;\n"
            "      SIGTERM/SIGINT stop it (Ctrl-C on Windows)\n\n"
            "      --dir DIR          the server directory\n"
            "      --listen HOST:PORT address to listen on (default 127.0.0.1:8443)\n"
            "      --names LIST       DNS names and IPs for the server certificate\n"
            "      --org NAME         organisation name in certificates\n"
            "      --version, --help\n");
}

struct opts {
    const char *dir;
    const char *listen;
    const char *names;
    const char *org;
};

static int write_conf(const struct opts *o)
{
    char *path = mmr_path_join(o->dir, "server.conf");
    int rc = 0;
    if (!mmr_path_exists(path)) {
        char *text = mmr_asprintf("; Mamori server configuration (see docs/server.md)\n"
                                  "[server]\nlisten = %s\nnames = %s\norg = %s\n",
                                  o->listen ? o->listen : "127.0.0.1:8443",
                                  o->names ? o->names : "localhost,127.0.0.1",
                                  o->org ? o->org : "Mamori");
        rc = mmr_file_write_atomic(path, text, strlen(text));
        free(text);
    }
    free(path);
    return rc;
}

static int cmd_init(const struct opts *o)
{
    int rc = mmr_mkdir_p(o->dir, true);
    if (rc == 0)
        rc = write_conf(o);
    struct mmr_server_config cfg;
    if (rc == 0)
        rc = mmr_server_config_load(o->dir, &cfg);
    if (rc < 0) {
        fprintf(stderr, "mamori-server: %s\n", mmr_err_msg());
        return 2;
    }
    char *names_copy = mmr_strdup(cfg.names);
    const char *names[MAX_NAMES];
    size_t n = 0;
    for (char *tok = strtok(names_copy, ", "); tok && n < MAX_NAMES; tok = strtok(NULL, ", "))
        names[n++] = tok;
    struct mmr_ca_init_opts ca_opts = {.org = cfg.org, .server_names = names,
                                       .server_name_count = n};
    if (n == 0)
        rc = mmr_err_set(MMR_EINVAL, "[server] names is empty");
    if (rc == 0)
        rc = mmr_ca_init(o->dir, &ca_opts);
    free(names_copy);

    struct mmr_store *store = NULL;
    char *db = mmr_path_join(o->dir, "server.db");
    if (rc == 0)
        rc = mmr_store_open(db, NULL, &store);
    mmr_store_close(store);
    free(db);

    /* The admin token: 32 random bytes, shown as hex, kept owner-only. */
    uint8_t raw[32];
    char token[65];
    char *token_path = mmr_path_join(o->dir, "admin.token");
    if (rc == 0)
        rc = mmr_random_bytes(raw, sizeof(raw));
    if (rc == 0) {
        mmr_hex_encode(raw, sizeof(raw), token);
        rc = mmr_file_write_atomic(token_path, token, 64);
        memset(token, 0, sizeof(token));
    }
    struct mmr_ca *ca = NULL;
    if (rc == 0)
        rc = mmr_ca_load(o->dir, &ca);
    if (rc < 0) {
        fprintf(stderr, "mamori-server: %s\n", mmr_err_msg());
    } else {
        printf("Server directory %s is ready.\n"
               "  listen       %s\n  public URL   %s\n  root CA pin  sha256:%s\n"
               "  admin token  %s (owner-only)\n"
               "Start it with: mamori-server run --dir %s\n",
               o->dir, cfg.listen, cfg.public_url, mmr_ca_root_pin(ca), token_path, o->dir);
    }
    mmr_ca_free(ca);
    free(token_path);
    mmr_server_config_free(&cfg);
    return rc < 0 ? 1 : 0;
}

struct runtime {
    struct mmr_server srv;
    struct mmr_listener *listener;
    uv_signal_t sig_term, sig_int;
};

static void on_signal(uv_signal_t *s, int signum)
{
    struct runtime *rt = s->data;
    mmr_info("server", "stopping", "signal=%d", signum);
    mmr_listener_stop(rt->listener);
    uv_close((uv_handle_t *)&rt->sig_term, NULL);
    uv_close((uv_handle_t *)&rt->sig_int, NULL);
}

static int load_admin_token(struct mmr_server *srv)
{
    char *path = mmr_path_join(srv->dir, "admin.token");
    char *text = NULL;
    size_t len = 0;
    int rc = mmr_file_read_all(path, 4096, &text, &len);
    free(path);
    if (rc < 0)
        return rc;
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        len--;
    mmr_sha256(text, len, srv->admin_token_hash);
    memset(text, 0, len);
    free(text);
    return 0;
}

static int cmd_run(const struct opts *o)
{
    struct runtime rt;
    memset(&rt, 0, sizeof(rt));
    struct mmr_server *srv = &rt.srv;
    srv->dir = mmr_strdup(o->dir);
    mmr_process_private_files();
    int rc = mmr_server_config_load(o->dir, &srv->cfg);
    if (rc < 0) {
        fprintf(stderr, "mamori-server: %s\n", mmr_err_msg());
        free(srv->dir);
        return 2;
    }
    if (o->listen) {
        free(srv->cfg.listen);
        srv->cfg.listen = mmr_strdup(o->listen);
    }
    char *logs = mmr_path_join(o->dir, "logs");
    mmr_mkdir_p(logs, true);
    free(logs);
    enum mmr_log_level level = MMR_LOG_INFO;
    mmr_log_level_parse(srv->cfg.log_level, &level);
    struct mmr_log_opts lo = {.level = level, .to_stderr = true, .file_path = srv->cfg.log_file};
    mmr_log_open(&lo);

    char *db = mmr_path_join(o->dir, "server.db");
    rc = mmr_ca_load(o->dir, &srv->ca);
    if (rc == 0)
        rc = load_admin_token(srv);
    if (rc == 0)
        rc = mmr_store_open(db, NULL, &srv->store);
    free(db);
    srv->loop = uv_default_loop();
    if (rc == 0)
        rc = mmr_listener_start(srv, srv->cfg.listen, &rt.listener);
    if (rc < 0) {
        mmr_error("server", "start-up failed", "error=\"%s\"", mmr_err_msg());
        fprintf(stderr, "mamori-server: %s\n", mmr_err_msg());
    } else {
        uv_signal_init(srv->loop, &rt.sig_term);
        uv_signal_init(srv->loop, &rt.sig_int);
        rt.sig_term.data = rt.sig_int.data = &rt;
        uv_signal_start(&rt.sig_term, on_signal, SIGTERM);
        uv_signal_start(&rt.sig_int, on_signal, SIGINT);
        mmr_info("server", "started", "version=%s listen=%s pid=%lld", MMR_VERSION,
                 srv->cfg.listen, (long long)mmr_process_id());
        mmr_service_notify("READY=1");
    }
    uv_run(srv->loop, UV_RUN_DEFAULT);
    mmr_listener_free(rt.listener);
    uv_loop_close(srv->loop);
    mmr_store_close(srv->store);
    mmr_ca_free(srv->ca);
    mmr_server_config_free(&srv->cfg);
    free(srv->dir);
    mmr_info("server", "stopped", NULL);
    mmr_log_close();
    return rc < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    mmr_process_init(&argc, &argv);
    static const struct option options[] = {
        {"dir", required_argument, NULL, 'd'},   {"listen", required_argument, NULL, 'l'},
        {"names", required_argument, NULL, 'n'}, {"org", required_argument, NULL, 'o'},
        {"version", no_argument, NULL, 'V'},     {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct opts o = {0};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (opt) {
        case 'd': o.dir = optarg; break;
        case 'l': o.listen = optarg; break;
        case 'n': o.names = optarg; break;
        case 'o': o.org = optarg; break;
        case 'V': printf("mamori-server %s (%s)\n", MMR_VERSION, MMR_GIT_COMMIT); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (optind != argc - 1 || !o.dir) {
        usage(stderr);
        return 1;
    }
    if (strcmp(argv[optind], "init") == 0)
        return cmd_init(&o);
    if (strcmp(argv[optind], "run") == 0)
        return cmd_run(&o);
    fprintf(stderr, "mamori-server: unknown command '%s'\n", argv[optind]);
    usage(stderr);
    return 1;
}
