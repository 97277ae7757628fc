/* gzip (RFC 1952) compression of buffers for event batches and downloads, and
 * bounded decompression that refuses bombs before allocating their output. */
#ifndef MMR_GZIP_H
#define MMR_GZIP_H

#include <stdbool.h>
#include <stddef.h>

#include "shared/mem.h"

/* zlib's level 6: most of level 9's ratio at a fraction of its CPU. */
#define MMR_GZIP_LEVEL_DEFAULT 6

/* Decompression refuses output growing faster than this many bytes per input
 * byte once it passes MMR_GZIP_RATIO_FLOOR. Deflate tops out near 1032:1
 * (long runs of one byte); JSON event batches, whose sequence numbers and
 * times change from one event to the next, stay far below. */
#define MMR_GZIP_MAX_RATIO   500
#define MMR_GZIP_RATIO_FLOOR (1024 * 1024)

/* Appends the gzip encoding of in[0..len) to out. level is 0 (store) to 9, or
 * -1 for zlib's default. Returns 0, or MMR_EINVAL for a bad level. */
int mmr_gzip_compress(const void *in, size_t len, int level, struct mmr_buf *out);

/* Appends the decompression of the single gzip member in[0..len) to out.
 * Returns 0; MMR_ETOOBIG when the output would exceed max_out bytes or its
 * ratio to the input read so far passes MMR_GZIP_MAX_RATIO (nothing beyond a
 * few chunks past the point of refusal is ever allocated); MMR_EINVAL for
 * input that is empty, truncated, corrupt (bad header, data or CRC) or
 * followed by trailing bytes. On failure out->len is restored. */
int mmr_gzip_decompress(const void *in, size_t len, size_t max_out, struct mmr_buf *out);

/* Whether a Content-Encoding header value names gzip alone ("gzip" or the
 * legacy "x-gzip", any case, surrounding spaces allowed). NULL is false. */
bool mmr_gzip_is_encoding(const char *value);

#endif
