/* libFuzzer target for shared/config.c: hostile INI text against a schema
 * with every key type, then the dump reloaded with the same values. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/config.h"
#include "shared/err.h"
#include "shared/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fcfg {
    char *name;
    int64_t count;
    bool flag;
    char *secret;
    uint64_t size;
    int64_t wait;
    char *level;
    int64_t any;
    uint64_t any_size;
    int64_t any_wait;
};

static const char *const levels[] = {"debug", "info", "warn", "error", NULL};

#define K(sec, nm, ty, fld, def, lo, hi, ch, secret)                                               \
    {                                                                                              \
        sec, nm, ty, offsetof(struct fcfg, fld), def, lo, hi, ch, secret, nm                       \
    }

static const struct mmr_cfg_key schema[] = {
    K("a", "name", MMR_CFG_STRING, name, "x", 0, 0, NULL, false),
    K("a", "count", MMR_CFG_INT, count, "5", -10, 100, NULL, false),
    K("a", "flag", MMR_CFG_BOOL, flag, "no", 0, 0, NULL, false),
    K("a", "secret", MMR_CFG_STRING, secret, NULL, 0, 0, NULL, true),
    K("b", "size", MMR_CFG_SIZE, size, "1M", 1024, 1LL << 40, NULL, false),
    K("b", "wait", MMR_CFG_DURATION, wait, "30s", 1, 7LL * 86400 * 1000, NULL, false),
    K("b", "level", MMR_CFG_ENUM, level, "info", 0, 0, levels, false),
    K("c", "any", MMR_CFG_INT, any, NULL, 0, 0, NULL, false),
    K("c", "any_size", MMR_CFG_SIZE, any_size, NULL, 0, 0, NULL, false),
    K("c", "any_wait", MMR_CFG_DURATION, any_wait, NULL, 0, 0, NULL, false),
};
#define NKEYS (sizeof(schema) / sizeof(schema[0]))

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_config: %s (%s)\n", what, mmr_err_msg());
        abort();
    }
}

static void check_nothing_held(const struct fcfg *c)
{
    check(!c->name && !c->secret && !c->level, "strings held after an error");
}

/* The dump of a loaded file reloads to the same values, strings included
 * (';', '#' and '=' inside values are not comments or separators; tabs are
 * kept). A reload may fail only because "key = value" grew two bytes past
 * the line limit, which needs an input line close to 64 KiB. */
static void reload_dump(const struct fcfg *c)
{
    char *dump = mmr_config_dump(schema, NKEYS, c);
    check(strstr(dump, "[a]\n") == dump, "dump does not start with the first section");
    struct fcfg d;
    int rc = mmr_config_load_string("dump", dump, schema, NKEYS, &d);
    if (rc == 0) {
        check(d.count == c->count && d.flag == c->flag && d.size == c->size && d.wait == c->wait &&
                  d.any == c->any && d.any_size == c->any_size && d.any_wait == c->any_wait,
              "dump reloads to other numbers");
        check(strcmp(d.name, c->name) == 0, "dump reloads to another string");
        check(strcmp(d.level, c->level) == 0, "dump reloads to another enum value");
        if (c->secret[0] != '\0')
            check(strcmp(d.secret, "<redacted>") == 0, "secret not redacted");
        else
            check(d.secret[0] == '\0', "empty secret reloads as a value");
        mmr_config_free(schema, NKEYS, &d);
    } else {
        check(rc == MMR_ETOOBIG, "dump does not reload");
        check(strstr(mmr_err_msg(), "line is longer than") != NULL, "dump refused for its size");
        check_nothing_held(&d);
    }
    free(dump);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The string API stops at the first NUL, as a C string would. */
    char *text = mmr_malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';

    struct fcfg c;
    memset(&c, 0xA5, sizeof(c));
    mmr_err_clear();
    int rc = mmr_config_load_string("fuzz.conf", text, schema, NKEYS, &c);
    if (rc == 0) {
        check(c.count >= -10 && c.count <= 100, "count out of range");
        check(c.size >= 1024 && c.size <= (1ULL << 40), "size out of range");
        check(c.wait >= 1 && c.wait <= 7LL * 86400 * 1000, "wait out of range");
        reload_dump(&c);
        mmr_config_free(schema, NKEYS, &c);
        check_nothing_held(&c);
    } else {
        check(rc == MMR_EINVAL || rc == MMR_ETOOBIG, "unexpected error code");
        check(strncmp(mmr_err_msg(), "fuzz.conf:", 10) == 0, "message without file:line");
        check_nothing_held(&c);
    }

    /* The value parsers on the raw text. */
    uint64_t sz;
    int64_t ms;
    bool b;
    mmr_parse_size(text, &sz);
    mmr_parse_duration_ms(text, &ms);
    mmr_parse_bool(text, &b);
    free(text);
    return 0;
}
