/* The check-in cycle, on a thread of its own (its network calls block):
 * enrollment from a configured token, periodic check-in (interval with
 * jitter, exponential backoff with jitter on failure up to 15 minutes),
 * policy fetch and verification, certificate renewal at two-thirds of its
 * life, and draining the telemetry queue (paced by a token bucket, Critical
 * events first and at once). One keep-alive TLS connection with session
 * resumption, so steady-state check-ins pay no full handshake. */
#ifndef MMR_CHECKIN_H
#define MMR_CHECKIN_H

#include <stdbool.h>
#include <stdint.h>

struct mmr_queue;
struct mmr_health;
struct mmr_checkin;

struct mmr_checkin_opts {
    const char *data_dir;
    const char *db_path;
    const char *enroll_token;  /* from agent.conf; NULL or "": none */
    const char *hardware_id;   /* override; NULL: this computer's */
    struct mmr_queue *queue;
    struct mmr_health *health;
    int64_t min_backoff_ms;    /* 0: 5 s */
    int64_t max_backoff_ms;    /* 0: 15 min */
};

/* A copy of the cycle's state, for status. */
struct mmr_checkin_status {
    bool enrolled;
    bool revoked;
    char device_id[64];
    char server[256];
    char group[80];
    int64_t policy_version;
    int64_t last_checkin_ms;
    char last_result[256];
    int64_t next_checkin_ms;
    int64_t cert_not_after_ms;
    int failures;          /* consecutive */
    uint64_t events_sent;  /* acknowledged by the server since start */
    uint64_t connects;
    uint64_t resumed;
};

int mmr_checkin_start(const struct mmr_checkin_opts *opts, struct mmr_checkin **out);

/* Runs a cycle now (from any thread): selftest, new Critical events. */
void mmr_checkin_wake(struct mmr_checkin *c, bool upload_only);

void mmr_checkin_status(struct mmr_checkin *c, struct mmr_checkin_status *out);

/* Stops the thread. A network call in progress gets up to 2 s to finish;
 * past that the thread is left to end with the process, and this returns
 * false: the caller must then keep alive what the thread uses (the queue). */
bool mmr_checkin_stop(struct mmr_checkin *c);

#endif
