/* The server's TLS listener: accepts TCP connections on the loop thread,
 * runs TLS and HTTP/1.1 keep-alive on them, hands each complete request to
 * the API on the thread pool and writes the reply. Enforces connection,
 * size and time limits so that no client can starve the others. */
#ifndef MMR_LISTENER_H
#define MMR_LISTENER_H

#include <stdint.h>

#include "server/server.h"

struct mmr_listener;

struct mmr_listener_stats {
    uint64_t connections;     /* open now */
    uint64_t accepted;
    uint64_t handshakes_full;
    uint64_t handshakes_resumed;
    uint64_t requests;
    uint64_t refused;         /* connections closed for a protocol or limit violation */
};

/* Listens on "host:port" ("[::1]:8443" for IPv6). */
int mmr_listener_start(struct mmr_server *srv, const char *listen, struct mmr_listener **out);

/* Stops accepting and closes every connection; free after the loop ran. */
void mmr_listener_stop(struct mmr_listener *l);
void mmr_listener_free(struct mmr_listener *l);

void mmr_listener_stats(const struct mmr_listener *l, struct mmr_listener_stats *out);

#endif
