/* libFuzzer target for shared/json.c: hostile bytes through the bounded
 * parser, every typed getter on whatever parses, and dump/parse round trips. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_json: %s (%s)\n", what, mmr_err_msg());
        abort();
    }
}

/* Every getter on every member: most calls fail, and each failure must leave
 * a message and the output untouched. */
static void probe(json_t *obj)
{
    const char *key;
    json_t *member;
    json_object_foreach(obj, key, member)
    {
        const char *s = NULL;
        int64_t n = 0;
        bool b = false;
        json_t *o = NULL;
        if (mmr_json_get_str(obj, "$.fuzz", key, true, &s) == 0)
            check(s == json_string_value(member), "string getter returned another value");
        else
            check(s == NULL && mmr_err_msg()[0] != '\0', "string getter failed badly");
        if (mmr_json_get_int(obj, "$.fuzz", key, true, -1000, 1000, &n) == 0)
            check(n >= -1000 && n <= 1000, "integer getter ignored its range");
        else
            check(n == 0, "integer getter wrote on error");
        mmr_json_get_int(obj, NULL, key, true, INT64_MIN, INT64_MAX, &n);
        mmr_json_get_bool(obj, "$.fuzz", key, true, &b);
        if (mmr_json_get_object(obj, "$.fuzz", key, true, &o) == 0)
            probe(o);
        o = NULL;
        if (mmr_json_get_array(obj, "$.fuzz", key, true, &o) == 0)
            check(json_is_array(o), "array getter returned a non-array");
        check(strlen(mmr_err_msg()) < 1024, "message too long");
    }
    const char *s = "kept";
    if (!json_object_get(obj, "absent"))
        check(mmr_json_get_str(obj, "$", "absent", false, &s) == 0 && strcmp(s, "kept") == 0,
              "a missing optional field is not left alone");
}

static void round_trip(const json_t *value, size_t depth)
{
    char *line = mmr_json_dump_line(value);
    check(strchr(line, '\n') == NULL, "line dump holds a newline");
    json_t *again = NULL;
    check(mmr_json_parse(line, strlen(line), depth, &again) == 0, "line dump does not parse");
    check(json_equal(value, again), "line dump parses to another value");
    json_decref(again);
    free(line);

    char *pretty = mmr_json_dump_pretty(value);
    check(mmr_json_parse(pretty, strlen(pretty), depth, &again) == 0, "pretty dump does not parse");
    check(json_equal(value, again), "pretty dump parses to another value");
    json_decref(again);
    free(pretty);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    json_t *value = NULL;

    mmr_err_clear();
    int rc = mmr_json_parse(text, size, MMR_JSON_MAX_DEPTH, &value);
    if (rc < 0) {
        check(value == NULL, "output written on error");
        check(rc == MMR_EINVAL || rc == MMR_ETOOBIG, "unexpected error code");
        check(strncmp(mmr_err_msg(), "line ", 5) == 0, "message without a location");
        return 0;
    }
    if (json_is_object(value))
        probe(value);
    round_trip(value, MMR_JSON_MAX_DEPTH);
    json_decref(value);

    /* The same bytes under a tight limit, and as an object only. */
    if (mmr_json_parse(text, size, 2, &value) == 0)
        json_decref(value);
    if (mmr_json_parse_object(text, size, MMR_JSON_MAX_DEPTH, &value) == 0)
        json_decref(value);
    return 0;
}
