/* Base64 (RFC 4648, standard alphabet, padded) for binary payloads in JSON. */
#ifndef MMR_BASE64_H
#define MMR_BASE64_H

#include <stddef.h>

/* Allocated, NUL-terminated. */
char *mmr_base64_encode(const void *data, size_t len);

/* Strict decoding: whitespace, bad characters or bad padding give MMR_EINVAL.
 * *out is allocated (NUL-terminated for convenience). */
int mmr_base64_decode(const char *text, size_t len, unsigned char **out, size_t *out_len);

#endif
