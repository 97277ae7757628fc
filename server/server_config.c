/* The server's configuration file (<dir>/server.conf): schema and loading. */
#include "server/server.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};

#define KEY(sec, nm, ty, field, dflt, lo, hi, ch, hlp)                                            \
    {sec, nm, ty, offsetof(struct mmr_server_config, field), dflt, lo, hi, ch, false, hlp}

const struct mmr_cfg_key mmr_server_config_schema[] = {
    KEY("server", "listen", MMR_CFG_STRING, listen, "127.0.0.1:8443", 0, 0, NULL,
        "address and port for agents and admins (TLS)"),
    KEY("server", "public_url", MMR_CFG_STRING, public_url, NULL, 0, 0, NULL,
        "URL agents use, put in enrollment tokens (default: https://<listen>)"),
    KEY("server", "names", MMR_CFG_STRING, names, "localhost,127.0.0.1", 0, 0, NULL,
        "comma-separated DNS names and IPs of the server certificate (used by init)"),
    KEY("server", "org", MMR_CFG_STRING, org, "Mamori", 0, 0, NULL,
        "organisation name in every certificate (used by init)"),
    KEY("pki", "device_cert_lifetime", MMR_CFG_DURATION, device_cert_ms, "90d", 60 * 1000,
        3650LL * 86400 * 1000, NULL,
        "lifetime of device certificates (agents renew at two-thirds of it)"),
    KEY("limits", "max_body", MMR_CFG_SIZE, max_body, "8M", 64 * 1024, 256LL * 1024 * 1024,
        NULL, "largest request body (decompressed)"),
    KEY("limits", "max_connections", MMR_CFG_INT, max_connections, "30000", 1, 1000000, NULL,
        "connections held open at once"),
    /* Longer than the default check-in interval (60 s + 20 % jitter): an agent
     * keeps its connection between check-ins, so an idle check-in costs no
     * TCP or TLS handshake on the wire (SIM lines pay per byte). The price is
     * ~44 KiB of mbedTLS record buffers per connected agent on the server;
     * shorten it to trade bytes for memory (docs/performance.md). */
    KEY("limits", "idle_timeout", MMR_CFG_DURATION, idle_timeout_ms, "90s", 1000,
        3600 * 1000, NULL, "close a keep-alive connection idle this long"),
    KEY("limits", "request_timeout", MMR_CFG_DURATION, request_timeout_ms, "15s", 100,
        600 * 1000, NULL, "a started request must arrive whole within this (slowloris)"),
    KEY("agents", "checkin_interval", MMR_CFG_DURATION, checkin_interval_ms, "60s", 1000,
        86400 * 1000, NULL, "check-in interval suggested to agents without a policy setting"),
    KEY("log", "level", MMR_CFG_ENUM, log_level, "info", 0, 0, log_levels, "log level"),
    KEY("log", "file", MMR_CFG_STRING, log_file, NULL, 0, 0, NULL,
        "log file (default: <dir>/logs/server.log)"),
};

const size_t mmr_server_config_nkeys =
    sizeof(mmr_server_config_schema) / sizeof(mmr_server_config_schema[0]);

int mmr_server_config_load(const char *dir, struct mmr_server_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    char *path = mmr_path_join(dir, "server.conf");
    int rc = mmr_config_load(path, true, mmr_server_config_schema, mmr_server_config_nkeys, cfg);
    free(path);
    if (rc < 0)
        return rc;
    if (!cfg->public_url || !cfg->public_url[0]) {
        free(cfg->public_url);
        cfg->public_url = mmr_asprintf("https://%s", cfg->listen);
    }
    if (!cfg->log_file || !cfg->log_file[0]) {
        free(cfg->log_file);
        char *logs = mmr_path_join(dir, "logs");
        cfg->log_file = mmr_path_join(logs, "server.log");
        free(logs);
    }
    return 0;
}

void mmr_server_config_free(struct mmr_server_config *cfg)
{
    mmr_config_free(mmr_server_config_schema, mmr_server_config_nkeys, cfg);
}
