/* Unit tests for shared/err.c: code names and texts, the per-thread message,
 * wrapping, and truncation of long messages. */
#include <criterion/criterion.h>

#include <string.h>

#include <uv.h>

#include "shared/err.h"

static const struct {
    int code;
    const char *name;
} all_codes[] = {
    {MMR_OK, "OK"},
    {MMR_EINVAL, "EINVAL"},
    {MMR_ENOMEM, "ENOMEM"},
    {MMR_EIO, "EIO"},
    {MMR_ENOENT, "ENOENT"},
    {MMR_EEXIST, "EEXIST"},
    {MMR_EPERM, "EPERM"},
    {MMR_EBUSY, "EBUSY"},
    {MMR_ETOOBIG, "ETOOBIG"},
    {MMR_ECORRUPT, "ECORRUPT"},
    {MMR_ETIMEDOUT, "ETIMEDOUT"},
    {MMR_ECONN, "ECONN"},
    {MMR_EPROTO, "EPROTO"},
    {MMR_ENOSPC, "ENOSPC"},
    {MMR_EDB, "EDB"},
    {MMR_EUNSUP, "EUNSUP"},
};
#define NCODES (sizeof(all_codes) / sizeof(all_codes[0]))

Test(err, names_round_trip)
{
    for (size_t i = 0; i < NCODES; i++) {
        cr_assert_str_eq(mmr_err_name(all_codes[i].code), all_codes[i].name);
        cr_assert_eq(mmr_err_from_name(all_codes[i].name), all_codes[i].code);
    }
}

Test(err, unknown_codes_and_names)
{
    cr_assert_str_eq(mmr_err_name(1), "EUNKNOWN");
    cr_assert_str_eq(mmr_err_name(-99), "EUNKNOWN");
    cr_assert_str_eq(mmr_err_str(-99), "unknown error");
    cr_assert_eq(mmr_err_from_name("ENOPE"), MMR_EPROTO);
    cr_assert_eq(mmr_err_from_name(""), MMR_EPROTO);
    cr_assert_eq(mmr_err_from_name("einval"), MMR_EPROTO, "names are case-sensitive");
    cr_assert_eq(mmr_err_from_name("EINVAL "), MMR_EPROTO);
}

Test(err, every_code_has_a_distinct_description)
{
    for (size_t i = 0; i < NCODES; i++) {
        const char *s = mmr_err_str(all_codes[i].code);
        cr_assert_neq(strcmp(s, "unknown error"), 0, "%s", all_codes[i].name);
        cr_assert_gt(strlen(s), 0);
        for (size_t j = 0; j < i; j++)
            cr_assert_neq(strcmp(s, mmr_err_str(all_codes[j].code)), 0, "%s and %s",
                          all_codes[i].name, all_codes[j].name);
    }
    cr_assert_str_eq(mmr_err_str(MMR_EINVAL), "malformed input");
}

Test(err, set_returns_code_and_formats)
{
    mmr_err_clear();
    cr_assert_str_eq(mmr_err_msg(), "");
    cr_assert_eq(mmr_err_set(MMR_ENOENT, "no key '%s' (%d)", "k", 7), MMR_ENOENT);
    cr_assert_str_eq(mmr_err_msg(), "no key 'k' (7)");
    cr_assert_eq(mmr_err_set(MMR_EIO, "second"), MMR_EIO);
    cr_assert_str_eq(mmr_err_msg(), "second", "a new message replaces the old one");
    mmr_err_clear();
    cr_assert_str_eq(mmr_err_msg(), "");
}

Test(err, wrap_prefixes_context)
{
    mmr_err_set(MMR_EIO, "disk on fire");
    cr_assert_eq(mmr_err_wrap(MMR_EIO, "writing %s", "a.db"), MMR_EIO);
    cr_assert_str_eq(mmr_err_msg(), "writing a.db: disk on fire");
    mmr_err_wrap(MMR_EIO, "saving");
    cr_assert_str_eq(mmr_err_msg(), "saving: writing a.db: disk on fire");
}

Test(err, wrap_without_message_uses_description)
{
    mmr_err_clear();
    cr_assert_eq(mmr_err_wrap(MMR_ETIMEDOUT, "connecting to %s", "server"), MMR_ETIMEDOUT);
    cr_assert_str_eq(mmr_err_msg(), "connecting to server: timed out");
}

Test(err, wrap_may_quote_the_current_message)
{
    mmr_err_set(MMR_EINVAL, "inner");
    mmr_err_wrap(MMR_EINVAL, "[%s]", mmr_err_msg());
    cr_assert_str_eq(mmr_err_msg(), "[inner]: inner");
}

Test(err, long_messages_are_truncated)
{
    char big[3000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    mmr_err_set(MMR_EINVAL, "%s", big);
    size_t len = strlen(mmr_err_msg());
    cr_assert_gt(len, 500);
    cr_assert_lt(len, sizeof(big) - 1);
    cr_assert_eq(strspn(mmr_err_msg(), "x"), len);

    /* The context stays at the front when the tail is cut. */
    mmr_err_wrap(MMR_EINVAL, "context");
    cr_assert(strncmp(mmr_err_msg(), "context: xxx", 12) == 0);
    cr_assert_eq(strlen(mmr_err_msg()), len);

    mmr_err_set(MMR_EINVAL, "short");
    mmr_err_wrap(MMR_EINVAL, "%s", big);
    cr_assert_eq(strlen(mmr_err_msg()), len);
    cr_assert_eq(strspn(mmr_err_msg(), "x"), len);
}

struct other {
    char seen[64];
    int res;
};

static void other_thread(void *arg)
{
    struct other *o = arg;
    strcpy(o->seen, mmr_err_msg());
    mmr_err_set(MMR_EIO, "from the other thread");
    o->res = strcmp(mmr_err_msg(), "from the other thread") == 0 ? 0 : 1;
}

Test(err, message_is_per_thread)
{
    struct other o = {.seen = "sentinel", .res = -1};
    mmr_err_set(MMR_EINVAL, "main thread");
    uv_thread_t t;
    cr_assert_eq(uv_thread_create(&t, other_thread, &o), 0);
    cr_assert_eq(uv_thread_join(&t), 0);
    cr_assert_eq(o.res, 0);
    cr_assert_str_eq(o.seen, "", "a new thread starts without a message");
    cr_assert_str_eq(mmr_err_msg(), "main thread");
}
