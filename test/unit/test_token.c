/* Unit tests for shared/token.c: round trip, damage, URL parsing. */
#include <criterion/criterion.h>

#include <string.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/token.h"

#define PIN "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

Test(token, round_trip)
{
    struct mmr_token t = {.url = "https://127.0.0.1:8443", .id = "tk_1", .secret = "s3cr3t",
                          .pin = PIN, .org = "高松市", .group = NULL};
    char *text = mmr_token_encode(&t);
    cr_expect(strncmp(text, "mmr1.", 5) == 0);
    cr_expect_null(strpbrk(text, "+/= \n"), "%s", text);
    char *padded = mmr_asprintf("  %s\n", text);
    struct mmr_token back;
    cr_assert_eq(mmr_token_decode(padded, &back), 0, "%s", mmr_err_msg());
    cr_expect_str_eq(back.url, t.url);
    cr_expect_str_eq(back.id, "tk_1");
    cr_expect_str_eq(back.secret, "s3cr3t");
    cr_expect_str_eq(back.pin, PIN);
    cr_expect_str_eq(back.org, "高松市");
    cr_expect_null(back.group);
    mmr_token_free(&back);
    free(padded);

    /* Damage: cut short, altered, foreign. */
    text[strlen(text) / 2] = '\0';
    cr_expect_lt(mmr_token_decode(text, &back), 0);
    cr_expect_null(strstr(mmr_err_msg(), "s3cr3t"), "the secret is never echoed");
    free(text);
    cr_expect_eq(mmr_token_decode("hello", &back), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "mmr1."));
    cr_expect_eq(mmr_token_decode("mmr1.!!!!", &back), MMR_EINVAL);
    cr_expect_eq(mmr_token_decode("mmr1.e30", &back), MMR_EINVAL, "{} lacks fields");
}

Test(token, bad_pin_and_url)
{
    struct mmr_token t = {.url = "http://x", .id = "a", .secret = "b", .pin = PIN};
    char *text = mmr_token_encode(&t);
    struct mmr_token back;
    cr_expect_eq(mmr_token_decode(text, &back), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "https"), "%s", mmr_err_msg());
    free(text);
    t.url = "https://x";
    t.pin = "abc";
    text = mmr_token_encode(&t);
    cr_expect_eq(mmr_token_decode(text, &back), MMR_EINVAL);
    cr_expect(strstr(mmr_err_msg(), "pin"), "%s", mmr_err_msg());
    free(text);
}

Test(token, url_split)
{
    char *h, *p;
    cr_assert_eq(mmr_url_split("https://mamori.example.lg.jp", &h, &p), 0);
    cr_expect_str_eq(h, "mamori.example.lg.jp");
    cr_expect_str_eq(p, "8443");
    free(h);
    free(p);
    cr_assert_eq(mmr_url_split("https://127.0.0.1:9443/", &h, &p), 0);
    cr_expect_str_eq(h, "127.0.0.1");
    cr_expect_str_eq(p, "9443");
    free(h);
    free(p);
    cr_assert_eq(mmr_url_split("https://[::1]:1234", &h, &p), 0);
    cr_expect_str_eq(h, "::1");
    cr_expect_str_eq(p, "1234");
    free(h);
    free(p);
    cr_expect_lt(mmr_url_split("https://:80", &h, &p), 0);
    cr_expect_lt(mmr_url_split("https://h:99999", &h, &p), 0);
    cr_expect_lt(mmr_url_split("https://h:", &h, &p), 0);
    cr_expect_lt(mmr_url_split("https://[::1", &h, &p), 0);
    cr_expect_lt(mmr_url_split("ftp://h", &h, &p), 0);
}
