/* Enrollment: from one token to a device identity. Makes the device's key
 * (it never leaves the device), sends a CSR with the token to the server
 * whose CA matches the token's pin, and stores the certificate, the CA chain,
 * the policy-signing certificate and the facts (device id, server, group) in
 * the data directory and agent.db. */
#ifndef MMR_ENROLL_H
#define MMR_ENROLL_H

#include <stdint.h>

struct mmr_db;

struct mmr_enroll_opts {
    const char *data_dir;
    const char *token;       /* "mmr1...." */
    const char *hardware_id; /* NULL: this computer's */
    int timeout_ms;          /* 0: 30 s */
};

/* 0 when enrolled; MMR_EPERM when the server refused (the message gives the
 * reason: token expired, used up, revoked, unknown; or the pin did not
 * match): retrying will not help. MMR_ECONN / MMR_ETIMEDOUT: try later.
 * *device_id (may be NULL) receives the id, allocated. */
int mmr_enroll(const struct mmr_enroll_opts *opts, struct mmr_db *db, char **device_id);

#endif
