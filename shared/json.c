/* JSON over jansson for untrusted input: a depth-bounding pre-scan before the
 * parser, "line L, column C" messages, typed getters that name the JSON path
 * of a bad field, and allocation-checked serialisation. */
#include "shared/json.h"
#include "shared/platform.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/mem.h"

/* Duplicate keys are refused: jansson would keep the last one, while another
 * reader of the same document (a signature checker, a log, the server) may keep
 * the first, so the same bytes could mean two things to two components. */
#define PARSE_FLAGS (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY)

/* Longest quoted key that error messages show before eliding the rest. */
#define PATH_KEY_MAX 64

/* Position of a byte for messages: 1-based line and character column. */
struct pos {
    size_t line;
    size_t column;
};

static void advance(struct pos *p, unsigned char c)
{
    if (c == '\n') {
        p->line++;
        p->column = 0;
    } else if ((c & 0xC0) != 0x80) {
        /* Columns count characters, so continuation bytes do not move it. */
        p->column++;
    }
}

/* Refuses raw NUL bytes and container nesting deeper than max_depth before
 * jansson sees the input, so that its recursive parser is bounded by us. */
static int prescan(const char *buf, size_t len, size_t max_depth)
{
    struct pos p = {1, 0};
    size_t depth = 0;
    bool in_string = false;
    bool escaped = false;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)buf[i];
        advance(&p, c);
        if (c == '\0')
            return mmr_err_set(MMR_EINVAL, "line %zu, column %zu: NUL byte in JSON text", p.line,
                               p.column);
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth)
                return mmr_err_set(MMR_ETOOBIG,
                                   "line %zu, column %zu: nesting deeper than %zu levels", p.line,
                                   p.column, max_depth);
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return 0;
}

/* Copies jansson's message, replacing control characters that its "near
 * '...'" excerpt of the input may carry, so that logs stay one clean line. */
static void clean_text(const char *in, char *out, size_t out_size)
{
    size_t i = 0;
    for (; in[i] != '\0' && i + 1 < out_size; i++) {
        unsigned char c = (unsigned char)in[i];
        out[i] = (c < 0x20 || c == 0x7F) ? '?' : (char)c;
    }
    out[i] = '\0';
}

static bool blank(const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != ' ' && buf[i] != '\t' && buf[i] != '\n' && buf[i] != '\r')
            return false;
    return true;
}

int mmr_json_parse(const char *buf, size_t len, size_t max_depth, json_t **out)
{
    int rc = prescan(buf, len, max_depth);
    if (rc < 0)
        return rc;
    if (blank(buf, len))
        return mmr_err_set(MMR_EINVAL, "line 1, column 1: empty JSON document");

    json_error_t error;
    json_t *value = json_loadb(buf, len, PARSE_FLAGS, &error);
    if (!value) {
        char text[JSON_ERROR_TEXT_LENGTH];
        clean_text(error.text, text, sizeof(text));
        int column = error.column > 0 ? error.column : 1;
        int line = error.line > 0 ? error.line : 1;
        return mmr_err_set(MMR_EINVAL, "line %d, column %d: %s", line, column, text);
    }
    *out = value;
    return 0;
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a real number";
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    case JSON_NULL:
        return "null";
    }
    return "an unknown value";
}

int mmr_json_parse_object(const char *buf, size_t len, size_t max_depth, json_t **out)
{
    json_t *value;
    int rc = mmr_json_parse(buf, len, max_depth, &value);
    if (rc < 0)
        return rc;
    if (!json_is_object(value)) {
        rc = mmr_err_set(MMR_EINVAL, "expected a JSON object, got %s", type_name(value));
        json_decref(value);
        return rc;
    }
    *out = value;
    return 0;
}

static bool plain_key(const char *key)
{
    if (key[0] == '\0' || (key[0] >= '0' && key[0] <= '9'))
        return false;
    for (const char *k = key; *k; k++) {
        char c = *k;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

/* "$.scan" + "cpu_cap" -> "$.scan.cpu_cap"; keys that are not identifiers are
 * quoted ("$.paths[\"C:\\\\x\"]") and long ones elided. Allocated. */
static char *child_path(const char *path, const char *key)
{
    struct mmr_buf b = {0};
    const char *base = path ? path : "$";
    mmr_buf_append(&b, base, strlen(base));
    if (plain_key(key) && strlen(key) <= PATH_KEY_MAX) {
        mmr_buf_appendf(&b, ".%s", key);
        return b.data;
    }
    mmr_buf_append(&b, "[\"", 2);
    size_t i = 0;
    for (; key[i] != '\0' && i < PATH_KEY_MAX; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c == '"' || c == '\\')
            mmr_buf_appendf(&b, "\\%c", c);
        else if (c < 0x20 || c == 0x7F)
            mmr_buf_appendf(&b, "\\u%04x", c);
        else
            mmr_buf_append(&b, &key[i], 1);
    }
    if (key[i] != '\0')
        mmr_buf_append(&b, "...", 3);
    mmr_buf_append(&b, "\"]", 2);
    return b.data;
}

/* Finds obj[key]. Returns 1 with *value set, 0 when absent and optional, or
 * a negative code with the message set. */
static int lookup(const json_t *obj, const char *path, const char *key, bool required,
                  json_t **value)
{
    if (!json_is_object(obj))
        return mmr_err_set(MMR_EINVAL, "%s: expected an object, got %s", path ? path : "$",
                           obj ? type_name(obj) : "nothing");
    *value = json_object_get(obj, key);
    if (*value)
        return 1;
    if (!required)
        return 0;
    char *p = child_path(path, key);
    int rc = mmr_err_set(MMR_EINVAL, "%s: required field is missing", p);
    free(p);
    return rc;
}

static int wrong_type(const char *path, const char *key, const char *expected, const json_t *value)
{
    char *p = child_path(path, key);
    int rc = mmr_err_set(MMR_EINVAL, "%s: expected %s, got %s", p, expected, type_name(value));
    free(p);
    return rc;
}

int mmr_json_get_str(const json_t *obj, const char *path, const char *key, bool required,
                     const char **out)
{
    json_t *v;
    int rc = lookup(obj, path, key, required, &v);
    if (rc <= 0)
        return rc;
    if (!json_is_string(v))
        return wrong_type(path, key, "a string", v);
    *out = json_string_value(v);
    return 0;
}

int mmr_json_get_int(const json_t *obj, const char *path, const char *key, bool required,
                     int64_t min, int64_t max, int64_t *out)
{
    json_t *v;
    int rc = lookup(obj, path, key, required, &v);
    if (rc <= 0)
        return rc;

    char expected[96];
    if (min == INT64_MIN && max == INT64_MAX)
        snprintf(expected, sizeof(expected), "an integer");
    else
        snprintf(expected, sizeof(expected), "an integer between %" PRId64 " and %" PRId64, min,
                 max);
    if (!json_is_integer(v))
        return wrong_type(path, key, expected, v);

    json_int_t n = json_integer_value(v);
    if (n < min || n > max) {
        char *p = child_path(path, key);
        rc = mmr_err_set(MMR_EINVAL, "%s: expected %s, got %lld", p, expected, (long long)n);
        free(p);
        return rc;
    }
    *out = (int64_t)n;
    return 0;
}

int mmr_json_get_bool(const json_t *obj, const char *path, const char *key, bool required,
                      bool *out)
{
    json_t *v;
    int rc = lookup(obj, path, key, required, &v);
    if (rc <= 0)
        return rc;
    if (!json_is_boolean(v))
        return wrong_type(path, key, "true or false", v);
    *out = json_is_true(v);
    return 0;
}

int mmr_json_get_object(const json_t *obj, const char *path, const char *key, bool required,
                        json_t **out)
{
    json_t *v;
    int rc = lookup(obj, path, key, required, &v);
    if (rc <= 0)
        return rc;
    if (!json_is_object(v))
        return wrong_type(path, key, "an object", v);
    *out = v;
    return 0;
}

int mmr_json_get_array(const json_t *obj, const char *path, const char *key, bool required,
                       json_t **out)
{
    json_t *v;
    int rc = lookup(obj, path, key, required, &v);
    if (rc <= 0)
        return rc;
    if (!json_is_array(v))
        return wrong_type(path, key, "an array", v);
    *out = v;
    return 0;
}

/* jansson allocates with its own (replaceable) allocator and returns NULL
 * both on out-of-memory and for values it cannot encode (a NULL value, a
 * cycle). The copy gives callers memory they free() like every other string. */
static char *dump(const json_t *value, size_t flags)
{
    if (!value)
        return mmr_strdup("null");
    char *text = json_dumps(value, flags | JSON_ENCODE_ANY | JSON_SORT_KEYS);
    if (!text) {
        /* A valid value only fails to encode when memory runs out: same
         * policy as mmr_malloc. */
        fprintf(stderr, "mamori: cannot serialise JSON (out of memory or a cyclic value)\n");
        abort();
    }
    char *copy = mmr_strdup(text);
    json_malloc_t malloc_fn;
    json_free_t free_fn;
    json_get_alloc_funcs(&malloc_fn, &free_fn);
    free_fn(text);
    return copy;
}

char *mmr_json_dump_line(const json_t *value)
{
    return dump(value, JSON_COMPACT);
}

char *mmr_json_dump_pretty(const json_t *value)
{
    return dump(value, JSON_INDENT(2));
}

json_t *mmr_json_time(int64_t ms)
{
    if (ms <= 0)
        return json_null();
    char buf[32];
    mmr_time_format(ms, buf);
    return json_string(buf);
}
