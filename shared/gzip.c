/* gzip compression and bounded decompression on zlib. Output goes through a
 * small stack chunk, so a refused bomb costs at most the bytes already
 * accepted: nothing is sized from what the stream claims. */
#include "shared/gzip.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "shared/err.h"

/* Window bits for zlib: 15 (32 KiB window) plus 16 selects the gzip wrapper
 * (and only it: a raw zlib stream is refused when inflating). */
#define GZIP_WBITS (16 + MAX_WBITS)
#define CHUNK      (16 * 1024)

/* zlib's memory goes through mem.h like everything else (aborts on OOM). */
static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
    return mmr_calloc(items, size);
}

static void z_free(voidpf opaque, voidpf ptr)
{
    free(ptr);
}

static void stream_init(z_stream *zs)
{
    memset(zs, 0, sizeof(*zs));
    zs->zalloc = z_alloc;
    zs->zfree = z_free;
}

/* Hands zlib the next slice of input: avail_in is 32 bits wide. */
static void refill(z_stream *zs, const unsigned char **src, size_t *left)
{
    if (zs->avail_in != 0 || *left == 0)
        return;
    uInt n = *left > UINT_MAX ? UINT_MAX : (uInt)*left;
    zs->next_in = (Bytef *)*src;
    zs->avail_in = n;
    *src += n;
    *left -= n;
}

int mmr_gzip_compress(const void *in, size_t len, int level, struct mmr_buf *out)
{
    if (level < -1 || level > 9)
        return mmr_err_set(MMR_EINVAL, "gzip: compression level %d is not between 0 and 9", level);
    z_stream zs;
    stream_init(&zs);
    int zrc = deflateInit2(&zs, level, Z_DEFLATED, GZIP_WBITS, 8, Z_DEFAULT_STRATEGY);
    if (zrc != Z_OK)
        return mmr_err_set(MMR_EUNSUP, "gzip: zlib cannot start a compressor (%d)", zrc);

    const unsigned char *src = in;
    size_t left = len;
    unsigned char chunk[CHUNK];
    do {
        refill(&zs, &src, &left);
        int flush = (left == 0) ? Z_FINISH : Z_NO_FLUSH;
        zs.next_out = chunk;
        zs.avail_out = sizeof(chunk);
        /* Z_BUF_ERROR only means "no progress this round" and cannot
         * repeat: each round brings fresh output space or fresh input. */
        zrc = deflate(&zs, flush);
        mmr_buf_append(out, chunk, sizeof(chunk) - zs.avail_out);
    } while (zrc != Z_STREAM_END);
    deflateEnd(&zs);
    return 0;
}

/* One round of inflate into chunk: 1 while more is to come, 0 at the end of
 * the stream, or a negative error code. *got receives the bytes produced. */
static int inflate_round(z_stream *zs, unsigned char *chunk, size_t *got)
{
    zs->next_out = chunk;
    zs->avail_out = CHUNK;
    int zrc = inflate(zs, Z_NO_FLUSH);
    *got = CHUNK - zs->avail_out;
    switch (zrc) {
    case Z_OK:
        return 1;
    case Z_STREAM_END:
        return 0;
    case Z_BUF_ERROR:
        /* Output space was fresh, so no progress means no input left. */
        return mmr_err_set(MMR_EINVAL, "gzip: truncated stream");
    default:
        return mmr_err_set(MMR_EINVAL, "gzip: corrupt stream: %s",
                           zs->msg ? zs->msg : "invalid data");
    }
}

int mmr_gzip_decompress(const void *in, size_t len, size_t max_out, struct mmr_buf *out)
{
    if (len == 0)
        return mmr_err_set(MMR_EINVAL, "gzip: empty input");
    z_stream zs;
    stream_init(&zs);
    int zrc = inflateInit2(&zs, GZIP_WBITS);
    if (zrc != Z_OK)
        return mmr_err_set(MMR_EUNSUP, "gzip: zlib cannot start a decompressor (%d)", zrc);

    size_t start = out->len;
    const unsigned char *src = in;
    size_t left = len;
    size_t produced = 0;
    unsigned char chunk[CHUNK];
    int rc;
    do {
        refill(&zs, &src, &left);
        size_t got = 0;
        rc = inflate_round(&zs, chunk, &got);
        if (rc < 0)
            break;
        if (got > max_out - produced) {
            rc = mmr_err_set(MMR_ETOOBIG, "gzip: decompressed data exceeds %zu bytes", max_out);
            break;
        }
        produced += got;
        size_t read = len - left - zs.avail_in;
        if (produced > MMR_GZIP_RATIO_FLOOR && produced / MMR_GZIP_MAX_RATIO > read) {
            rc = mmr_err_set(MMR_ETOOBIG,
                             "gzip: %zu bytes expand to over %zu: ratio above %d:1, refused", read,
                             produced, MMR_GZIP_MAX_RATIO);
            break;
        }
        mmr_buf_append(out, chunk, got);
    } while (rc > 0);

    if (rc == 0 && (zs.avail_in != 0 || left != 0))
        rc = mmr_err_set(MMR_EINVAL, "gzip: %zu trailing bytes after the stream",
                         (size_t)zs.avail_in + left);
    inflateEnd(&zs);
    if (rc < 0 && out->data) {
        out->len = start;
        out->data[start] = '\0';
    }
    return rc < 0 ? rc : 0;
}

static bool same_nocase(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++) {
        char c = a[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != b[i])
            return false;
    }
    return true;
}

bool mmr_gzip_is_encoding(const char *value)
{
    if (!value)
        return false;
    const char *s = value;
    const char *e = value + strlen(value);
    while (s < e && (*s == ' ' || *s == '\t'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    size_t n = (size_t)(e - s);
    return same_nocase(s, n, "gzip") || same_nocase(s, n, "x-gzip");
}
