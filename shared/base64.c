/* Base64 (RFC 4648 section 4: standard alphabet, '=' padding). Decoding is
 * strict so that one payload has exactly one text form. */
#include "shared/base64.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "shared/err.h"
#include "shared/mem.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *mmr_base64_encode(const void *data, size_t len)
{
    const unsigned char *in = data;
    size_t groups = len / 3 + (len % 3 != 0);
    /* Encoded text is 4/3 of data already in memory, so this only trips on
     * absurd lengths; mmr_calloc aborts on the multiplication overflow. */
    char *out = mmr_calloc(groups + 1, 4);
    char *o = out;

    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *o++ = alphabet[v >> 18 & 63];
        *o++ = alphabet[v >> 12 & 63];
        *o++ = alphabet[v >> 6 & 63];
        *o++ = alphabet[v & 63];
    }
    size_t rest = len - i;
    if (rest > 0) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (rest == 2)
            v |= (uint32_t)in[i + 1] << 8;
        *o++ = alphabet[v >> 18 & 63];
        *o++ = alphabet[v >> 12 & 63];
        *o++ = rest == 2 ? alphabet[v >> 6 & 63] : '=';
        *o++ = '=';
    }
    *o = '\0';
    return out;
}

/* The 6-bit value of a character, or -1 when it is not in the alphabet. */
static int sextet(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

static int bad_char(const char *text, size_t at)
{
    unsigned char c = (unsigned char)text[at];
    if (c == '=')
        return mmr_err_set(MMR_EINVAL, "base64: misplaced '=' at offset %zu", at);
    if (c >= 0x21 && c < 0x7F)
        return mmr_err_set(MMR_EINVAL, "base64: invalid character '%c' at offset %zu", c, at);
    return mmr_err_set(MMR_EINVAL, "base64: invalid byte 0x%02x at offset %zu", c, at);
}

/* Decodes the final group "xx==", "xxx=" or "xxxx" into out; returns the
 * number of bytes written or a negative code. */
static int decode_last(const char *text, size_t at, unsigned char *out)
{
    const unsigned char *g = (const unsigned char *)text + at;
    size_t pad = g[3] == '=' ? (g[2] == '=' ? 2 : 1) : 0;
    int s[4] = {0, 0, 0, 0};

    for (size_t k = 0; k < 4 - pad; k++) {
        s[k] = sextet(g[k]);
        if (s[k] < 0)
            return bad_char(text, at + k);
    }
    uint32_t v = (uint32_t)s[0] << 18 | (uint32_t)s[1] << 12 | (uint32_t)s[2] << 6 | (uint32_t)s[3];
    /* Bits that padding discards must be zero, or "QQ==" and "QR==" would
     * both decode to "A". */
    if ((pad == 2 && (v & 0xFFFF) != 0) || (pad == 1 && (v & 0xFF) != 0))
        return mmr_err_set(MMR_EINVAL, "base64: non-zero padding bits at offset %zu", at + 3 - pad);
    out[0] = (unsigned char)(v >> 16);
    if (pad < 2)
        out[1] = (unsigned char)(v >> 8);
    if (pad < 1)
        out[2] = (unsigned char)v;
    return (int)(3 - pad);
}

int mmr_base64_decode(const char *text, size_t len, unsigned char **out, size_t *out_len)
{
    if (len % 4 != 0)
        return mmr_err_set(MMR_EINVAL, "base64: length %zu is not a multiple of 4", len);

    unsigned char *buf = mmr_malloc(len / 4 * 3 + 1);
    size_t n = 0;
    int rc = 0;

    for (size_t at = 0; at + 4 < len; at += 4) {
        int s[4];
        for (size_t k = 0; k < 4; k++) {
            s[k] = sextet((unsigned char)text[at + k]);
            if (s[k] < 0) {
                rc = bad_char(text, at + k);
                goto fail;
            }
        }
        uint32_t v =
            (uint32_t)s[0] << 18 | (uint32_t)s[1] << 12 | (uint32_t)s[2] << 6 | (uint32_t)s[3];
        buf[n++] = (unsigned char)(v >> 16);
        buf[n++] = (unsigned char)(v >> 8);
        buf[n++] = (unsigned char)v;
    }
    if (len > 0) {
        rc = decode_last(text, len - 4, buf + n);
        if (rc < 0)
            goto fail;
        n += (size_t)rc;
    }
    buf[n] = '\0';
    *out = buf;
    *out_len = n;
    return 0;
fail:
    free(buf);
    return rc;
}
