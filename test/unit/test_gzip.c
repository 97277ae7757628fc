/* Unit tests for shared/gzip.c: round trips, limits and decompression bombs,
 * truncated and corrupt streams, and the Content-Encoding helper. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "shared/err.h"
#include "shared/gzip.h"
#include "shared/mem.h"

#define MIB (1024 * 1024)

static void fill_random(char *p, size_t n, uint32_t seed)
{
    uint32_t x = seed ? seed : 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (char)x;
    }
}

/* JSON events as the agent batches them: seq and time change each time. */
static void event_batch(struct mmr_buf *b, int count)
{
    mmr_buf_appendf(b, "{\"events\":[");
    for (int i = 0; i < count; i++)
        mmr_buf_appendf(b,
                        "%s{\"seq\":%d,\"device\":\"4c4c4544-0031-3510-8052-b4c04f4e3332\","
                        "\"time\":%lld,\"type\":\"agent.selftest\",\"severity\":0,"
                        "\"data\":{\"n\":%d,\"note\":\"pipeline check\"}}",
                        i ? "," : "", 1000 + i, 1700000000000LL + 37LL * i, i);
    mmr_buf_appendf(b, "]}");
}

static void round_trip(const char *data, size_t len, int level)
{
    struct mmr_buf z = {0};
    cr_assert_eq(mmr_gzip_compress(data, len, level, &z), 0);
    cr_assert_geq(z.len, 18);
    cr_expect_eq((unsigned char)z.data[0], 0x1f);
    cr_expect_eq((unsigned char)z.data[1], 0x8b);
    cr_expect_eq((unsigned char)z.data[2], 8, "deflate");
    struct mmr_buf out = {0};
    cr_assert_eq(mmr_gzip_decompress(z.data, z.len, len, &out), 0, "%s", mmr_err_msg());
    cr_assert_eq(out.len, len);
    cr_expect(len == 0 || memcmp(out.data, data, len) == 0);
    mmr_buf_free(&z);
    mmr_buf_free(&out);
}

Test(gzip, round_trips)
{
    const char *hello = "hello, gzip";
    for (int level = -1; level <= 9; level++)
        round_trip(hello, strlen(hello), level);
    size_t n = 3 * MIB + 17;
    char *rnd = mmr_malloc(n);
    fill_random(rnd, n, 7);
    round_trip(rnd, n, MMR_GZIP_LEVEL_DEFAULT);
    round_trip(rnd, n, 0);
    free(rnd);
    struct mmr_buf batch = {0};
    event_batch(&batch, 5000);
    round_trip(batch.data, batch.len, 1);
    round_trip(batch.data, batch.len, 9);
    mmr_buf_free(&batch);
}

Test(gzip, empty_input)
{
    round_trip("", 0, MMR_GZIP_LEVEL_DEFAULT);
    round_trip(NULL, 0, MMR_GZIP_LEVEL_DEFAULT);
    struct mmr_buf out = {0};
    cr_expect_eq(mmr_gzip_decompress("", 0, 100, &out), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "empty") != NULL);
    cr_expect_eq(out.len, 0);
    mmr_buf_free(&out);
}

Test(gzip, appends_and_interoperates_with_zlib)
{
    struct mmr_buf z = {0};
    mmr_buf_append(&z, "head", 4);
    cr_assert_eq(mmr_gzip_compress("payload", 7, 6, &z), 0);
    cr_expect(memcmp(z.data, "head", 4) == 0);
    /* zlib's own gzip reader (windowBits 16 + 15) agrees. */
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    cr_assert_eq(inflateInit2(&zs, 16 + MAX_WBITS), Z_OK);
    char out[32];
    zs.next_in = (Bytef *)z.data + 4;
    zs.avail_in = (uInt)(z.len - 4);
    zs.next_out = (Bytef *)out;
    zs.avail_out = sizeof(out);
    cr_expect_eq(inflate(&zs, Z_FINISH), Z_STREAM_END);
    cr_expect_eq(zs.total_out, 7);
    cr_expect(memcmp(out, "payload", 7) == 0);
    inflateEnd(&zs);

    struct mmr_buf o = {0};
    mmr_buf_append(&o, "pre", 3);
    cr_assert_eq(mmr_gzip_decompress(z.data + 4, z.len - 4, 100, &o), 0);
    cr_expect_str_eq(o.data, "prepayload");
    mmr_buf_free(&o);
    mmr_buf_free(&z);
}

Test(gzip, bad_level)
{
    struct mmr_buf z = {0};
    cr_expect_eq(mmr_gzip_compress("x", 1, 10, &z), MMR_EINVAL);
    cr_expect_eq(mmr_gzip_compress("x", 1, -2, &z), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "level") != NULL);
    cr_expect_eq(z.len, 0);
    mmr_buf_free(&z);
}

/* 100 MiB of zeros, compressed by streaming so the test never holds them. */
static void zero_bomb(struct mmr_buf *z, size_t total)
{
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    cr_assert_eq(deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    static char zeros[MIB];
    static unsigned char out[64 * 1024];
    size_t left = total;
    int rc;
    do {
        size_t n = left < sizeof(zeros) ? left : sizeof(zeros);
        zs.next_in = (Bytef *)zeros;
        zs.avail_in = (uInt)n;
        left -= n;
        int flush = left ? Z_NO_FLUSH : Z_FINISH;
        do {
            zs.next_out = out;
            zs.avail_out = sizeof(out);
            rc = deflate(&zs, flush);
            mmr_buf_append(z, out, sizeof(out) - zs.avail_out);
        } while (zs.avail_out == 0);
    } while (left);
    cr_assert_eq(rc, Z_STREAM_END);
    deflateEnd(&zs);
}

Test(gzip, bomb_refused_without_allocating_it)
{
    struct mmr_buf z = {0};
    zero_bomb(&z, 100 * (size_t)MIB);
    fprintf(stderr, "gzip bomb: 100 MiB of zeros in %zu bytes\n", z.len);
    struct mmr_buf out = {0};
    cr_expect_eq(mmr_gzip_decompress(z.data, z.len, 8 * MIB, &out), MMR_ETOOBIG);
    cr_expect(strstr(mmr_err_msg(), "ratio") != NULL, "%s", mmr_err_msg());
    cr_expect_eq(out.len, 0);
    /* Refused on the way, near the ratio floor, far below the limit. */
    cr_expect_leq(out.cap, 4 * MIB, "%zu bytes held", out.cap);

    /* Under a limit lower than the floor, the limit speaks first. */
    mmr_buf_free(&out);
    cr_expect_eq(mmr_gzip_decompress(z.data, z.len, 64 * 1024, &out), MMR_ETOOBIG);
    cr_expect(strstr(mmr_err_msg(), "exceeds 65536") != NULL, "%s", mmr_err_msg());
    cr_expect_leq(out.cap, 128 * 1024);
    mmr_buf_free(&out);
    mmr_buf_free(&z);

    /* Zeros up to the floor are still fine; beyond it they are absurd. */
    zero_bomb(&z, MMR_GZIP_RATIO_FLOOR);
    cr_expect_eq(mmr_gzip_decompress(z.data, z.len, 8 * MIB, &out), 0);
    cr_expect_eq(out.len, MMR_GZIP_RATIO_FLOOR);
    mmr_buf_free(&out);
    mmr_buf_free(&z);
    zero_bomb(&z, 2 * MIB);
    cr_expect_eq(mmr_gzip_decompress(z.data, z.len, 8 * MIB, &out), MMR_ETOOBIG);
    mmr_buf_free(&out);
    mmr_buf_free(&z);
}

Test(gzip, output_limit_exact)
{
    size_t n = 9 * MIB;
    char *rnd = mmr_malloc(n);
    fill_random(rnd, n, 99);
    struct mmr_buf z = {0};
    cr_assert_eq(mmr_gzip_compress(rnd, n, 6, &z), 0);
    struct mmr_buf out = {0};
    cr_expect_eq(mmr_gzip_decompress(z.data, z.len, 8 * MIB, &out), MMR_ETOOBIG);
    cr_expect(strstr(mmr_err_msg(), "exceeds 8388608") != NULL, "%s", mmr_err_msg());
    cr_expect_eq(out.len, 0);
    cr_expect_eq(mmr_gzip_decompress(z.data, z.len, n - 1, &out), MMR_ETOOBIG);
    cr_expect_eq(mmr_gzip_decompress(z.data, z.len, n, &out), 0);
    cr_expect_eq(out.len, n);
    cr_expect(memcmp(out.data, rnd, n) == 0);
    mmr_buf_free(&out);
    mmr_buf_free(&z);
    free(rnd);
}

Test(gzip, event_batches_stay_far_below_the_ratio)
{
    struct mmr_buf batch = {0};
    event_batch(&batch, 20000);
    struct mmr_buf z = {0};
    cr_assert_eq(mmr_gzip_compress(batch.data, batch.len, MMR_GZIP_LEVEL_DEFAULT, &z), 0);
    double ratio = (double)batch.len / (double)z.len;
    fprintf(stderr, "gzip event batch: %zu -> %zu bytes, ratio %.1f:1\n", batch.len, z.len, ratio);
    cr_expect_lt(ratio, MMR_GZIP_MAX_RATIO / 4);
    struct mmr_buf out = {0};
    cr_expect_eq(mmr_gzip_decompress(z.data, z.len, 64 * MIB, &out), 0);
    cr_expect_eq(out.len, batch.len);
    mmr_buf_free(&out);
    mmr_buf_free(&z);
    mmr_buf_free(&batch);
}

Test(gzip, truncated_streams)
{
    struct mmr_buf batch = {0};
    event_batch(&batch, 300);
    struct mmr_buf z = {0};
    cr_assert_eq(mmr_gzip_compress(batch.data, batch.len, 6, &z), 0);
    struct mmr_buf out = {0};
    mmr_buf_append(&out, "keep", 4);
    for (size_t cut = 1; cut < z.len; cut++) {
        cr_assert_eq(mmr_gzip_decompress(z.data, cut, 64 * MIB, &out), MMR_EINVAL, "cut %zu", cut);
        cr_assert_eq(out.len, 4, "output restored after cut %zu", cut);
    }
    cr_expect_str_eq(out.data, "keep");
    cr_expect(strstr(mmr_err_msg(), "truncated") != NULL, "%s", mmr_err_msg());
    mmr_buf_free(&out);
    mmr_buf_free(&z);
    mmr_buf_free(&batch);
}

Test(gzip, corrupt_streams)
{
    struct mmr_buf batch = {0};
    event_batch(&batch, 200);
    struct mmr_buf z = {0};
    cr_assert_eq(mmr_gzip_compress(batch.data, batch.len, 6, &z), 0);
    struct mmr_buf out = {0};

    /* Any flipped bit: refused, or (in bits nobody reads: the header's
     * time and OS, padding) the very same data. Never other data. */
    int refused = 0;
    for (size_t i = 0; i < z.len; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            z.data[i] ^= (char)(1 << bit);
            out.len = 0;
            int rc = mmr_gzip_decompress(z.data, z.len, 64 * MIB, &out);
            z.data[i] ^= (char)(1 << bit);
            if (rc == 0) {
                cr_assert_eq(out.len, batch.len, "byte %zu bit %d", i, bit);
                cr_assert(memcmp(out.data, batch.data, batch.len) == 0, "byte %zu", i);
            } else {
                cr_assert(rc == MMR_EINVAL || rc == MMR_ETOOBIG, "byte %zu: rc %d", i, rc);
                refused++;
            }
        }
    }
    cr_expect_gt(refused, (int)(z.len * 2));

    /* The trailer: CRC-32, then the length. */
    z.data[z.len - 8] ^= 1;
    cr_expect_eq(mmr_gzip_decompress(z.data, z.len, 64 * MIB, &out), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "corrupt") != NULL, "%s", mmr_err_msg());
    z.data[z.len - 8] ^= 1;
    z.data[z.len - 1] ^= 1;
    cr_expect_eq(mmr_gzip_decompress(z.data, z.len, 64 * MIB, &out), MMR_EINVAL);
    z.data[z.len - 1] ^= 1;
    z.data[0] = 'x';
    cr_expect_eq(mmr_gzip_decompress(z.data, z.len, 64 * MIB, &out), MMR_EINVAL);
    mmr_buf_free(&z);

    /* Not gzip at all: a zlib stream, text, noise. */
    char zl[256];
    uLongf zlen = sizeof(zl);
    cr_assert_eq(compress2((Bytef *)zl, &zlen, (const Bytef *)"zlib not gzip", 13, 6), Z_OK);
    cr_expect_eq(mmr_gzip_decompress(zl, zlen, 100, &out), MMR_EINVAL);
    cr_expect_eq(mmr_gzip_decompress("{\"plain\":1}", 11, 100, &out), MMR_EINVAL);
    char noise[4096];
    fill_random(noise, sizeof(noise), 3);
    noise[0] = 0x1f;
    noise[1] = (char)0x8b;
    noise[2] = 8;
    noise[3] = 0;
    cr_expect_eq(mmr_gzip_decompress(noise, sizeof(noise), 100, &out), MMR_EINVAL);
    mmr_buf_free(&out);
    mmr_buf_free(&batch);
}

Test(gzip, trailing_bytes_refused)
{
    struct mmr_buf z = {0};
    cr_assert_eq(mmr_gzip_compress("one", 3, 6, &z), 0);
    size_t one = z.len;
    struct mmr_buf out = {0};
    mmr_buf_append(&z, "x", 1);
    cr_expect_eq(mmr_gzip_decompress(z.data, z.len, 100, &out), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "1 trailing") != NULL, "%s", mmr_err_msg());
    /* A second member is trailing data too: our writer makes one. */
    z.len = one;
    cr_assert_eq(mmr_gzip_compress("two", 3, 6, &z), 0);
    cr_expect_eq(mmr_gzip_decompress(z.data, z.len, 100, &out), MMR_EINVAL);
    cr_expect_eq(out.len, 0);
    mmr_buf_free(&out);
    mmr_buf_free(&z);
}

Test(gzip, content_encoding)
{
    cr_expect(mmr_gzip_is_encoding("gzip"));
    cr_expect(mmr_gzip_is_encoding("GZip"));
    cr_expect(mmr_gzip_is_encoding(" \tgzip "));
    cr_expect(mmr_gzip_is_encoding("x-gzip"));
    cr_expect_not(mmr_gzip_is_encoding(NULL));
    cr_expect_not(mmr_gzip_is_encoding(""));
    cr_expect_not(mmr_gzip_is_encoding("deflate"));
    cr_expect_not(mmr_gzip_is_encoding("gzip, br"));
    cr_expect_not(mmr_gzip_is_encoding("gzipx"));
    cr_expect_not(mmr_gzip_is_encoding("gzi"));
    cr_expect_not(mmr_gzip_is_encoding("gzib"));
    cr_expect_not(mmr_gzip_is_encoding("identity"));
}
