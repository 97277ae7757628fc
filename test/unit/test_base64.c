/* Unit tests for shared/base64.c: RFC 4648 vectors, round trips of every
 * length and byte value, and strict refusal of malformed text. */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "shared/base64.h"
#include "shared/err.h"

static const struct {
    const char *plain;
    const char *encoded;
} rfc4648[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

Test(base64, rfc4648_vectors_encode)
{
    for (size_t i = 0; i < sizeof(rfc4648) / sizeof(rfc4648[0]); i++) {
        char *enc = mmr_base64_encode(rfc4648[i].plain, strlen(rfc4648[i].plain));
        cr_assert_str_eq(enc, rfc4648[i].encoded);
        free(enc);
    }
}

Test(base64, rfc4648_vectors_decode)
{
    for (size_t i = 0; i < sizeof(rfc4648) / sizeof(rfc4648[0]); i++) {
        unsigned char *dec = NULL;
        size_t len = 99;
        const char *text = rfc4648[i].encoded;
        cr_assert_eq(mmr_base64_decode(text, strlen(text), &dec, &len), 0, "%s", mmr_err_msg());
        cr_assert_eq(len, strlen(rfc4648[i].plain));
        cr_assert_eq(memcmp(dec, rfc4648[i].plain, len), 0);
        cr_assert_eq(dec[len], '\0', "decoded data is NUL-terminated");
        free(dec);
    }
}

Test(base64, empty_decodes_to_empty_allocated)
{
    unsigned char *dec = NULL;
    size_t len = 7;
    cr_assert_eq(mmr_base64_decode("", 0, &dec, &len), 0);
    cr_assert_not_null(dec);
    cr_assert_eq(len, 0);
    cr_assert_eq(dec[0], '\0');
    free(dec);
}

Test(base64, round_trip_every_length_and_byte)
{
    unsigned char data[300];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (unsigned char)(i * 7 + 3);
    for (size_t len = 0; len <= sizeof(data); len++) {
        char *enc = mmr_base64_encode(data, len);
        cr_assert_eq(strlen(enc), (len + 2) / 3 * 4);
        unsigned char *dec;
        size_t dlen;
        cr_assert_eq(mmr_base64_decode(enc, strlen(enc), &dec, &dlen), 0, "len %zu: %s", len,
                     mmr_err_msg());
        cr_assert_eq(dlen, len);
        cr_assert_eq(memcmp(dec, data, len), 0, "len %zu", len);
        free(dec);
        free(enc);
    }
}

Test(base64, all_byte_values_and_alphabet)
{
    unsigned char data[256];
    for (int i = 0; i < 256; i++)
        data[i] = (unsigned char)i;
    char *enc = mmr_base64_encode(data, sizeof(data));
    cr_assert_not_null(strchr(enc, '+'));
    cr_assert_not_null(strchr(enc, '/'));
    unsigned char *dec;
    size_t len;
    cr_assert_eq(mmr_base64_decode(enc, strlen(enc), &dec, &len), 0);
    cr_assert_eq(len, 256);
    cr_assert_eq(memcmp(dec, data, 256), 0);
    free(dec);
    free(enc);
}

Test(base64, decode_uses_len_not_nul)
{
    /* Only the first 4 characters are the input. */
    unsigned char *dec;
    size_t len;
    cr_assert_eq(mmr_base64_decode("Zm9vYmFy", 4, &dec, &len), 0);
    cr_assert_eq(len, 3);
    cr_assert_eq(memcmp(dec, "foo", 3), 0);
    free(dec);
}

static void expect_bad(const char *text, size_t len, const char *fragment)
{
    unsigned char *dec = (unsigned char *)"untouched";
    size_t out_len = 12345;
    mmr_err_clear();
    cr_assert_eq(mmr_base64_decode(text, len, &dec, &out_len), MMR_EINVAL, "accepted '%.*s'",
                 (int)len, text);
    cr_assert_str_eq((const char *)dec, "untouched", "output written on error");
    cr_assert_eq(out_len, 12345);
    cr_assert(strstr(mmr_err_msg(), fragment), "message '%s' lacks '%s'", mmr_err_msg(), fragment);
}

Test(base64, refuses_bad_length)
{
    expect_bad("Zg=", 3, "not a multiple of 4");
    expect_bad("Zg", 2, "not a multiple of 4");
    expect_bad("Zm9vY", 5, "not a multiple of 4");
    expect_bad("A", 1, "not a multiple of 4");
}

Test(base64, refuses_missing_padding)
{
    /* Unpadded forms of "f" and "fo" are refused: the alphabet is padded. */
    expect_bad("Zg", 2, "multiple of 4");
    expect_bad("Zm8", 3, "multiple of 4");
}

Test(base64, refuses_whitespace)
{
    expect_bad("Zm9v\nYmFy", 9, "multiple of 4");
    expect_bad("Zm9v Ym E", 9, "multiple of 4");
    expect_bad("Zm9v\r\nYm", 8, "0x0d at offset 4");
    expect_bad("Zm 9", 4, "0x20");
    expect_bad("Zm9v\tYmF", 8, "0x09");
}

Test(base64, refuses_bad_characters)
{
    expect_bad("Zm9-", 4, "'-'");
    expect_bad("Zm9_", 4, "'_'");
    expect_bad("Zm*v", 4, "offset 2");
    expect_bad("Zm9vYmF.", 8, "offset 7");
    expect_bad("Zm9v\xff\xffYm", 8, "0xff at offset 4");
    expect_bad("Zm\0v", 4, "0x00 at offset 2");
}

Test(base64, refuses_misplaced_padding)
{
    expect_bad("====", 4, "'='");
    expect_bad("Z===", 4, "'='");
    expect_bad("Zg=v", 4, "'=' at offset 2");
    expect_bad("Zg==Zm9v", 8, "'=' at offset 2");
    expect_bad("=Zg=", 4, "offset 0");
    expect_bad("Zm9v=Zg=", 8, "offset 4");
}

Test(base64, refuses_nonzero_padding_bits)
{
    /* "Zh==" and "Zm9=" carry bits that padding throws away. */
    expect_bad("Zh==", 4, "padding bits");
    expect_bad("Zm9=", 4, "padding bits");
    expect_bad("Zm9vYh==", 8, "padding bits");
}
