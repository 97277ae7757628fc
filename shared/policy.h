/* Policy documents: one JSON document per group with a profile and sections
 * (checkin, telemetry, notify, scan, devctl, crypt, patch, ...). Validation is
 * shared by the server (refuses a bad document at publish time, naming the
 * JSON path of the error) and the agent (keeps its last good policy when a new
 * one fails). Sections this version does not know are kept untouched, so a
 * newer server can publish them to older agents. */
#ifndef MMR_POLICY_H
#define MMR_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* Largest policy document accepted, and its nesting limit. */
#define MMR_POLICY_MAX_BYTES (1024 * 1024)
#define MMR_POLICY_MAX_DEPTH 16

struct mmr_policy {
    json_t *doc;                  /* the whole document, unknown sections included */
    const char *profile;          /* "carried-out", "office-internet" or "server" */
    int64_t checkin_interval_ms;  /* checkin.interval: default 60 s, 10 s .. 1 day */
    int64_t checkin_jitter_pct;   /* checkin.jitter_percent: default 20, 0..50 */
    uint64_t queue_max_bytes;     /* telemetry.queue_max_bytes: default 64 MiB */
    int64_t queue_max_events;     /* telemetry.queue_max_events: default 1,000,000 */
    int64_t upload_batch_events;  /* telemetry.upload_batch_events: default 1,000 */
    int64_t upload_rate_eps;      /* telemetry.upload_rate: events/s drained from a backlog */
    const char *language;         /* notify.language: "ja" (default) or "en" */
};

/* Parses and validates a document; fills the typed view with defaults for
 * what is absent. Errors are MMR_EINVAL with "$.telemetry.queue_max_bytes:
 * ..." or MMR_ETOOBIG for size and depth. */
int mmr_policy_parse(const char *text, size_t len, struct mmr_policy *out);

/* Validates an already parsed document (borrowed; a reference is taken). */
int mmr_policy_from_json(json_t *doc, struct mmr_policy *out);

void mmr_policy_free(struct mmr_policy *p);

/* The built-in policy an agent runs before its first check-in. */
void mmr_policy_defaults(struct mmr_policy *p);

#endif
