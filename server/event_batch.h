/* The body of POST /v1/events: {"after": N, "events": [{"seq", "time",
 * "type", "severity", "data"}, ...]}, parsed from untrusted bytes with limits
 * into what the store inserts. */
#ifndef MMR_EVENT_BATCH_H
#define MMR_EVENT_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "server/store.h"

struct mmr_event_batch {
    int64_t after;                    /* see mmr_store_events_insert */
    struct mmr_store_event_in *events;
    size_t count;
    json_t *doc_;                     /* owns the strings events point to */
    char **data_;                     /* serialised data objects */
};

/* Refuses (MMR_EINVAL / MMR_ETOOBIG, message with the JSON path) anything
 * malformed: seqs must be >= 1 and strictly increasing, types 1..64 printable
 * characters, severity 0..3, data an object of at most 64 KiB serialised,
 * at most MMR_STORE_EVENTS_MAX events. */
int mmr_event_batch_parse(const char *body, size_t len, struct mmr_event_batch *out);
void mmr_event_batch_free(struct mmr_event_batch *b);

#endif
