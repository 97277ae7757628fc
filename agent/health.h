/* Module health: each module reports its state (ok, degraded, failed, ...)
 * with a one-line detail; status, diag and the tray read the registry. */
#ifndef MMR_HEALTH_H
#define MMR_HEALTH_H

#include <jansson.h>

enum mmr_health_state {
    MMR_HEALTH_STARTING,
    MMR_HEALTH_OK,
    MMR_HEALTH_DEGRADED, /* working, with a problem worth a look */
    MMR_HEALTH_FAILED,   /* not doing its job */
    MMR_HEALTH_DISABLED, /* switched off by policy or configuration */
};

struct mmr_health;

struct mmr_health *mmr_health_new(void);
void mmr_health_free(struct mmr_health *h);

/* Thread-safe. detail may be NULL. The first report registers the module;
 * modules are listed in registration order. */
void mmr_health_set(struct mmr_health *h, const char *module, enum mmr_health_state state,
                    const char *detail);

const char *mmr_health_state_name(enum mmr_health_state state);

/* [{"module":"control","state":"ok","detail":"...","since":"<iso time>"}, ...] */
json_t *mmr_health_json(struct mmr_health *h);

#endif
