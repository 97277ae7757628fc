/* Enrollment tokens: the one string an asset-management tool passes to a
 * silent install. It carries the server URL, the token's public id and
 * secret, the SHA-256 pin of the root CA (so the first connection trusts
 * nothing it has not been told to), and optional organisation and group.
 * Format: "mmr1." + base64url(JSON), no padding. */
#ifndef MMR_TOKEN_H
#define MMR_TOKEN_H

#include <stddef.h>

#define MMR_TOKEN_MAX_LEN 4096

struct mmr_token {
    char *url;    /* "https://mamori.example.lg.jp:8443" */
    char *id;     /* public id, e.g. "tk_3f9a1c2b" */
    char *secret; /* never logged */
    char *pin;    /* 64 hex digits: SHA-256 of the root CA certificate (DER) */
    char *org;    /* may be NULL */
    char *group;  /* may be NULL */
};

/* Allocated string. */
char *mmr_token_encode(const struct mmr_token *t);

/* Parses untrusted text (whitespace around it is ignored). Errors say what
 * is wrong without echoing the secret. */
int mmr_token_decode(const char *text, struct mmr_token *out);

void mmr_token_free(struct mmr_token *t);

/* Splits "https://host:port" into host and port (default 8443). Only https
 * is accepted. Allocated. */
int mmr_url_split(const char *url, char **host, char **port);

#endif
