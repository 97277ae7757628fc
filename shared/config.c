/* Schema-driven INI configuration: our own small INI grammar with strict
 * "file:line: message" errors, defaults, the redacted dump for diagnostic
 * bundles, and the size/duration/boolean value parsers. */
#include "shared/config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"

#define MAX_FILE_BYTES (1024 * 1024)

/* Longest line accepted, without its line ending. An enrollment token with a
 * URL, a CA pin and Japanese organisation and group names runs to a few
 * hundred bytes; this leaves room for any value a person would write. */
#define MAX_LINE_BYTES (64 * 1024)

/* Names longer than this get no "did you mean" suggestion. */
#define SUGGEST_MAX 48

/* Characters of an offending line quoted in a syntax error. */
#define EXCERPT_MAX 40

/* One pass over the text, line by line, stopping at the first error. */
struct parser {
    const char *name;
    const char *text;
    size_t len;
    size_t lineno;       /* the line being handled, from 1 */
    const char *section; /* the schema's name of the current section, NULL before one */
    const struct mmr_cfg_key *schema;
    size_t nkeys;
    void *cfg;
    size_t *set_on; /* per key: line that set it, 0 if not set yet */
};

/* ---- value parsers -------------------------------------------------------- */

/* Reads the leading decimal digits of s into *out. Returns the number of
 * digits, 0 if none, or -1 on overflow. */
static int read_digits(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    int n = 0;
    for (; s[n] >= '0' && s[n] <= '9'; n++) {
        uint64_t d = (uint64_t)(s[n] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return n;
}

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bool same_ascii_nocase(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (lower(*a) != lower(*b))
            return false;
    return *a == *b;
}

int mmr_parse_size(const char *s, uint64_t *out)
{
    static const char units[] = "kmgt";
    uint64_t v;
    int n = read_digits(s, &v);
    if (n < 0)
        return mmr_err_set(MMR_EINVAL, "'%s' is too large for a size", s);
    if (n == 0)
        goto bad;

    const char *u = s + n;
    uint64_t mult = 1;
    const char *unit = *u ? strchr(units, lower(*u)) : NULL;
    if (unit) {
        mult = (uint64_t)1 << (10 * (unit - units + 1));
        u++;
    }
    if (*u == 'B' || *u == 'b')
        u++;
    if (*u != '\0')
        goto bad;
    if (v > UINT64_MAX / mult)
        return mmr_err_set(MMR_EINVAL, "'%s' is too large for a size", s);
    *out = v * mult;
    return 0;
bad:
    return mmr_err_set(MMR_EINVAL, "'%s' is not a size (use e.g. 512K, 10M, 1G)", s);
}

int mmr_parse_duration_ms(const char *s, int64_t *out)
{
    static const struct {
        const char *suffix;
        int64_t ms;
    } units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 3600 * 1000}, {"d", 86400 * 1000},
    };
    uint64_t v;
    int n = read_digits(s, &v);
    if (n < 0 || (n > 0 && v > (uint64_t)INT64_MAX))
        return mmr_err_set(MMR_EINVAL, "'%s' is too long a duration", s);
    if (n == 0)
        goto bad;
    if (s[n] == '\0' && v == 0) {
        *out = 0;
        return 0;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(s + n, units[i].suffix) != 0)
            continue;
        if ((int64_t)v > INT64_MAX / units[i].ms)
            return mmr_err_set(MMR_EINVAL, "'%s' is too long a duration", s);
        *out = (int64_t)v * units[i].ms;
        return 0;
    }
bad:
    return mmr_err_set(MMR_EINVAL, "'%s' is not a duration (use e.g. 500ms, 30s, 5m, 2h, 7d)", s);
}

int mmr_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (same_ascii_nocase(s, yes[i])) {
            *out = true;
            return 0;
        }
        if (same_ascii_nocase(s, no[i])) {
            *out = false;
            return 0;
        }
    }
    return mmr_err_set(MMR_EINVAL, "'%s' is not a boolean (use true or false)", s);
}

static int parse_int(const char *s, int64_t *out)
{
    bool neg = s[0] == '-';
    uint64_t v;
    int n = read_digits(s + neg, &v);
    if (n == 0 || (n > 0 && s[neg + n] != '\0'))
        return mmr_err_set(MMR_EINVAL, "'%s' is not an integer", s);
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    if (n < 0 || v > limit)
        return mmr_err_set(MMR_EINVAL, "'%s' is too large for an integer", s);
    if (!neg)
        *out = (int64_t)v;
    else
        *out = v == limit ? INT64_MIN : -(int64_t)v;
    return 0;
}

/* ---- canonical forms for the dump and range messages ------------------------ */

static void format_size(uint64_t v, char *buf, size_t size)
{
    static const char units[] = "TGMK";
    for (int i = 0; i < 4 && v != 0; i++) {
        uint64_t mult = (uint64_t)1 << (10 * (4 - i));
        if (v % mult == 0) {
            snprintf(buf, size, "%" PRIu64 "%c", v / mult, units[i]);
            return;
        }
    }
    snprintf(buf, size, "%" PRIu64, v);
}

static void format_duration(int64_t ms, char *buf, size_t size)
{
    static const struct {
        const char *suffix;
        int64_t ms;
    } units[] = {{"d", 86400 * 1000}, {"h", 3600 * 1000}, {"m", 60 * 1000}, {"s", 1000}};
    if (ms == 0) {
        snprintf(buf, size, "0s");
        return;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ms % units[i].ms == 0) {
            snprintf(buf, size, "%" PRId64 "%s", ms / units[i].ms, units[i].suffix);
            return;
        }
    }
    snprintf(buf, size, "%" PRId64 "ms", ms);
}

/* ---- fields ------------------------------------------------------------------ */

static void *field(const struct mmr_cfg_key *key, void *cfg)
{
    return (char *)cfg + key->offset;
}

static const void *cfield(const struct mmr_cfg_key *key, const void *cfg)
{
    return (const char *)cfg + key->offset;
}

static bool holds_string(const struct mmr_cfg_key *key)
{
    return key->type == MMR_CFG_STRING || key->type == MMR_CFG_ENUM;
}

static bool limited(const struct mmr_cfg_key *key)
{
    return key->min != 0 || key->max != 0;
}

static void set_string(const struct mmr_cfg_key *key, void *cfg, const char *value)
{
    char **p = field(key, cfg);
    free(*p);
    *p = mmr_strdup(value);
}

static int out_of_range(const char *value, const char *lo, const char *hi)
{
    return mmr_err_set(MMR_EINVAL, "'%s' is out of range (%s to %s)", value, lo, hi);
}

static int set_enum(const struct mmr_cfg_key *key, void *cfg, const char *value)
{
    for (const char *const *c = key->choices; *c; c++) {
        if (strcmp(*c, value) == 0) {
            set_string(key, cfg, value);
            return 0;
        }
    }
    struct mmr_buf list = {0};
    for (const char *const *c = key->choices; *c; c++)
        mmr_buf_appendf(&list, "%s%s", c == key->choices ? "" : ", ", *c);
    int rc = mmr_err_set(MMR_EINVAL, "'%s' is not one of: %s", value, list.data);
    mmr_buf_free(&list);
    return rc;
}

/* Parses value for key and stores it. The message, on error, has no prefix. */
static int set_value(const struct mmr_cfg_key *key, void *cfg, const char *value)
{
    char lo[32], hi[32];
    int rc;

    switch (key->type) {
    case MMR_CFG_STRING:
        set_string(key, cfg, value);
        return 0;
    case MMR_CFG_ENUM:
        return set_enum(key, cfg, value);
    case MMR_CFG_BOOL:
        return mmr_parse_bool(value, field(key, cfg));
    case MMR_CFG_INT: {
        int64_t v = 0;
        if ((rc = parse_int(value, &v)) < 0)
            return rc;
        if (limited(key) && (v < key->min || v > key->max)) {
            snprintf(lo, sizeof(lo), "%" PRId64, key->min);
            snprintf(hi, sizeof(hi), "%" PRId64, key->max);
            return out_of_range(value, lo, hi);
        }
        memcpy(field(key, cfg), &v, sizeof(v));
        return 0;
    }
    case MMR_CFG_SIZE: {
        uint64_t v = 0;
        if ((rc = mmr_parse_size(value, &v)) < 0)
            return rc;
        if (limited(key) && (v < (uint64_t)key->min || v > (uint64_t)key->max)) {
            format_size((uint64_t)key->min, lo, sizeof(lo));
            format_size((uint64_t)key->max, hi, sizeof(hi));
            return out_of_range(value, lo, hi);
        }
        memcpy(field(key, cfg), &v, sizeof(v));
        return 0;
    }
    case MMR_CFG_DURATION: {
        int64_t v = 0;
        if ((rc = mmr_parse_duration_ms(value, &v)) < 0)
            return rc;
        if (limited(key) && (v < key->min || v > key->max)) {
            format_duration(key->min, lo, sizeof(lo));
            format_duration(key->max, hi, sizeof(hi));
            return out_of_range(value, lo, hi);
        }
        memcpy(field(key, cfg), &v, sizeof(v));
        return 0;
    }
    }
    return mmr_err_set(MMR_EINVAL, "unknown key type %d", (int)key->type);
}

/* Every field to its zero value without freeing: cfg may hold garbage. */
static void zero_fields(const struct mmr_cfg_key *schema, size_t nkeys, void *cfg)
{
    for (size_t i = 0; i < nkeys; i++) {
        const struct mmr_cfg_key *key = &schema[i];
        void *p = field(key, cfg);
        switch (key->type) {
        case MMR_CFG_STRING:
        case MMR_CFG_ENUM:
            *(char **)p = NULL;
            break;
        case MMR_CFG_BOOL:
            *(bool *)p = false;
            break;
        case MMR_CFG_SIZE:
            *(uint64_t *)p = 0;
            break;
        case MMR_CFG_INT:
        case MMR_CFG_DURATION:
            *(int64_t *)p = 0;
            break;
        }
    }
}

/* Schema mistakes are programming errors, reported before any file is read
 * so that they fail every test rather than only some configurations. */
static int check_schema(const struct mmr_cfg_key *schema, size_t nkeys)
{
    for (size_t i = 0; i < nkeys; i++) {
        const struct mmr_cfg_key *key = &schema[i];
        if (!key->section || !key->name || !key->section[0] || !key->name[0])
            return mmr_err_set(MMR_EINVAL, "config schema: key %zu has no section or name", i);
        if ((unsigned)key->type > MMR_CFG_ENUM)
            return mmr_err_set(MMR_EINVAL, "config schema: [%s] %s: unknown type %d", key->section,
                               key->name, (int)key->type);
        if (key->type == MMR_CFG_ENUM && (!key->choices || !key->choices[0]))
            return mmr_err_set(MMR_EINVAL, "config schema: [%s] %s: enum without choices",
                               key->section, key->name);
        if (key->min > key->max || (key->type == MMR_CFG_SIZE && key->min < 0))
            return mmr_err_set(MMR_EINVAL, "config schema: [%s] %s: bad limits", key->section,
                               key->name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(schema[j].section, key->section) == 0 &&
                strcmp(schema[j].name, key->name) == 0)
                return mmr_err_set(MMR_EINVAL, "config schema: [%s] %s is listed twice",
                                   key->section, key->name);
    }
    return 0;
}

static int apply_defaults(const struct mmr_cfg_key *schema, size_t nkeys, void *cfg)
{
    for (size_t i = 0; i < nkeys; i++) {
        const struct mmr_cfg_key *key = &schema[i];
        const char *def = key->def;
        if (!def && key->type == MMR_CFG_STRING)
            def = "";
        else if (!def && key->type == MMR_CFG_ENUM)
            def = key->choices[0];
        if (!def)
            continue;
        int rc = set_value(key, cfg, def);
        if (rc < 0)
            return mmr_err_wrap(rc, "config schema: default of [%s] %s", key->section, key->name);
    }
    return 0;
}

/* ---- suggestions ---------------------------------------------------------- */

/* Levenshtein distance for short ASCII names; SIZE_MAX when either is long. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > SUGGEST_MAX || lb > SUGGEST_MAX)
        return SIZE_MAX;
    size_t prev[SUGGEST_MAX + 1], cur[SUGGEST_MAX + 1];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1;
            size_t ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, sizeof(prev));
    }
    return prev[lb];
}

/* Appends " (did you mean X?)" for a close candidate, else the full list of
 * candidates. section NULL: candidates are the sections, else its keys. */
static void suggest(struct mmr_buf *b, const struct mmr_cfg_key *schema, size_t nkeys,
                    const char *section, const char *wrong)
{
    const char *best = NULL;
    size_t best_d = SIZE_MAX;
    size_t candidates = 0;
    for (size_t i = 0; i < nkeys; i++) {
        if (section && strcmp(schema[i].section, section) != 0)
            continue;
        const char *cand = section ? schema[i].name : schema[i].section;
        size_t d = edit_distance(wrong, cand);
        candidates++;
        if (d < best_d) {
            best_d = d;
            best = cand;
        }
    }
    const char *open = section ? "'" : "[";
    const char *close = section ? "'" : "]";
    if (candidates == 0) {
        mmr_buf_appendf(b, " (no %s are valid)", section ? "keys" : "sections");
        return;
    }
    if (best && best_d <= 2 && best_d < strlen(best)) {
        mmr_buf_appendf(b, " (did you mean %s%s%s?)", open, best, close);
        return;
    }
    mmr_buf_appendf(b, " (valid %s: ", section ? "keys" : "sections");
    bool first = true;
    for (size_t i = 0; i < nkeys; i++) {
        if (section && strcmp(schema[i].section, section) != 0)
            continue;
        const char *cand = section ? schema[i].name : schema[i].section;
        bool listed = false;
        for (size_t j = 0; !section && j < i; j++)
            listed = listed || strcmp(schema[j].section, cand) == 0;
        if (listed)
            continue;
        mmr_buf_appendf(b, "%s%s%s%s", first ? "" : ", ", open, cand, close);
        first = false;
    }
    mmr_buf_append(b, ")", 1);
}

/* ---- parsing ---------------------------------------------------------------- */

/* The grammar, one line at a time (the header documents it for users):
 *   [section]     the name is trimmed; nothing may follow ']'
 *   key = value   split at the first '='; key and value are trimmed
 *   ; or #        a comment, when it is the first character after indentation
 * There are no inline comments ("a ; b" is a value) and no continuation lines. */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Narrows [*s, *s + *len) to its text without surrounding spaces and tabs. */
static void trim(const char **s, size_t *len)
{
    while (*len > 0 && is_blank((*s)[0])) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && is_blank((*s)[*len - 1]))
        (*len)--;
}

/* Length of the valid UTF-8 prefix of s: overlong forms, surrogates and code
 * points past U+10FFFF are invalid. */
static size_t utf8_valid_prefix(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t more;
        uint32_t cp, lowest;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) {
            more = 1;
            cp = c & 0x1F;
            lowest = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            more = 2;
            cp = c & 0x0F;
            lowest = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            more = 3;
            cp = c & 0x07;
            lowest = 0x10000;
        } else {
            return i;
        }
        if (len - i <= more)
            return i;
        for (size_t k = 1; k <= more; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return i;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < lowest || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return i;
        i += more + 1;
    }
    return len;
}

/* Prefixes the message already set with "file:line". Returns code. */
static int refuse_line(const struct parser *p, int code)
{
    return mmr_err_wrap(code, "%s:%zu", p->name, p->lineno);
}

static int check_bytes(const struct parser *p, const char *line, size_t len)
{
    size_t valid = utf8_valid_prefix((const unsigned char *)line, len);
    for (size_t i = 0; i < valid; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c == '\0') {
            mmr_err_set(MMR_EINVAL, "NUL byte");
            return refuse_line(p, MMR_EINVAL);
        }
        if ((c < 0x20 && c != '\t') || c == 0x7F) {
            mmr_err_set(MMR_EINVAL, "control character 0x%02x", c);
            return refuse_line(p, MMR_EINVAL);
        }
    }
    if (valid < len) {
        mmr_err_set(MMR_EINVAL, "invalid UTF-8 (byte 0x%02x)", (unsigned char)line[valid]);
        return refuse_line(p, MMR_EINVAL);
    }
    return 0;
}

/* At most EXCERPT_MAX bytes of s, cut on a character boundary (s is valid
 * UTF-8), for quoting in a message. */
static size_t excerpt_len(const char *s, size_t len)
{
    if (len <= EXCERPT_MAX)
        return len;
    size_t n = EXCERPT_MAX;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

/* The schema's spelling of section name, or NULL if it has no such section. */
static const char *known_section(const struct parser *p, const char *name, size_t len)
{
    for (size_t i = 0; i < p->nkeys; i++)
        if (strlen(p->schema[i].section) == len && memcmp(p->schema[i].section, name, len) == 0)
            return p->schema[i].section;
    return NULL;
}

/* A line starting with '['. An unknown section is refused even without keys:
 * a typo'd header would otherwise hide the keys after it. */
static int parse_section(struct parser *p, const char *line, size_t len)
{
    const char *close = memchr(line, ']', len);
    if (!close) {
        mmr_err_set(MMR_EINVAL, "section name is not closed with ']'");
        return refuse_line(p, MMR_EINVAL);
    }
    const char *rest = close + 1;
    size_t rest_len = len - (size_t)(rest - line);
    trim(&rest, &rest_len);
    if (rest_len > 0) {
        size_t shown = excerpt_len(rest, rest_len);
        mmr_err_set(MMR_EINVAL, "text after the section header: '%.*s%s'", (int)shown, rest,
                    shown < rest_len ? "..." : "");
        return refuse_line(p, MMR_EINVAL);
    }
    const char *name = line + 1;
    size_t name_len = (size_t)(close - name);
    trim(&name, &name_len);
    p->section = known_section(p, name, name_len);
    if (p->section)
        return 0;

    struct mmr_buf b = {0};
    mmr_buf_appendf(&b, "unknown section [%.*s]", (int)name_len, name);
    char *wrong = mmr_strndup(name, name_len);
    suggest(&b, p->schema, p->nkeys, NULL, wrong);
    free(wrong);
    mmr_err_set(MMR_EINVAL, "%s", b.data);
    mmr_buf_free(&b);
    return refuse_line(p, MMR_EINVAL);
}

static const struct mmr_cfg_key *find_key(const struct parser *p, const char *name, size_t len,
                                          size_t *index)
{
    for (size_t i = 0; i < p->nkeys; i++) {
        const struct mmr_cfg_key *key = &p->schema[i];
        if (strcmp(key->section, p->section) == 0 && strlen(key->name) == len &&
            memcmp(key->name, name, len) == 0) {
            *index = i;
            return key;
        }
    }
    return NULL;
}

/* "key = value", already known to hold an '=' at eq. */
static int parse_key(struct parser *p, const char *line, size_t len, const char *eq)
{
    const char *name = line;
    size_t name_len = (size_t)(eq - line);
    const char *value = eq + 1;
    size_t value_len = len - name_len - 1;
    trim(&name, &name_len);
    trim(&value, &value_len);

    if (!p->section) {
        mmr_err_set(MMR_EINVAL, "key '%.*s' is outside any [section]", (int)name_len, name);
        return refuse_line(p, MMR_EINVAL);
    }
    size_t i;
    const struct mmr_cfg_key *key = find_key(p, name, name_len, &i);
    if (!key) {
        struct mmr_buf b = {0};
        mmr_buf_appendf(&b, "[%s] unknown key '%.*s'", p->section, (int)name_len, name);
        char *wrong = mmr_strndup(name, name_len);
        suggest(&b, p->schema, p->nkeys, p->section, wrong);
        free(wrong);
        mmr_err_set(MMR_EINVAL, "%s", b.data);
        mmr_buf_free(&b);
        return refuse_line(p, MMR_EINVAL);
    }
    if (p->set_on[i]) {
        mmr_err_set(MMR_EINVAL, "[%s] %s: set twice (first on line %zu)", key->section, key->name,
                    p->set_on[i]);
        return refuse_line(p, MMR_EINVAL);
    }
    char *copy = mmr_strndup(value, value_len);
    int rc = set_value(key, p->cfg, copy);
    free(copy);
    if (rc < 0) {
        mmr_err_wrap(rc, "[%s] %s", key->section, key->name);
        return refuse_line(p, rc);
    }
    p->set_on[i] = p->lineno;
    return 0;
}

/* One line without its line ending. */
static int parse_line(struct parser *p, const char *line, size_t len)
{
    if (p->lineno == 1 && len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
        line += 3;
        len -= 3;
    }
    int rc = check_bytes(p, line, len);
    if (rc < 0)
        return rc;
    if (len > MAX_LINE_BYTES) {
        mmr_err_set(MMR_ETOOBIG, "line is longer than %d bytes", MAX_LINE_BYTES);
        return refuse_line(p, MMR_ETOOBIG);
    }
    bool indented = len > 0 && is_blank(line[0]);
    trim(&line, &len);
    if (len == 0 || line[0] == ';' || line[0] == '#')
        return 0;
    if (line[0] == '[')
        return parse_section(p, line, len);
    const char *eq = memchr(line, '=', len);
    if (eq)
        return parse_key(p, line, len, eq);

    size_t shown = excerpt_len(line, len);
    mmr_err_set(MMR_EINVAL, "expected 'key = value', a [section] or a comment, got '%.*s%s'%s",
                (int)shown, line, shown < len ? "..." : "",
                indented ? " (indented lines do not continue a value)" : "");
    return refuse_line(p, MMR_EINVAL);
}

static int parse_text(struct parser *p)
{
    p->set_on = mmr_calloc(p->nkeys, sizeof(*p->set_on));
    int rc = 0;
    size_t off = 0;
    while (rc == 0 && off < p->len) {
        const char *line = p->text + off;
        const char *nl = memchr(line, '\n', p->len - off);
        size_t len = nl ? (size_t)(nl - line) : p->len - off;
        off += len + (nl ? 1 : 0);
        if (len > 0 && line[len - 1] == '\r')
            len--;
        p->lineno++;
        rc = parse_line(p, line, len);
    }
    free(p->set_on);
    p->set_on = NULL;
    return rc;
}

static int load_text(const char *name, const char *text, size_t len,
                     const struct mmr_cfg_key *schema, size_t nkeys, void *cfg)
{
    int rc = check_schema(schema, nkeys);
    if (rc < 0)
        return rc;
    zero_fields(schema, nkeys, cfg);
    rc = apply_defaults(schema, nkeys, cfg);
    if (rc == 0 && text) {
        struct parser p = {
            .name = name ? name : "config",
            .text = text,
            .len = len,
            .schema = schema,
            .nkeys = nkeys,
            .cfg = cfg,
        };
        rc = parse_text(&p);
    }
    if (rc < 0)
        mmr_config_free(schema, nkeys, cfg);
    return rc;
}

int mmr_config_load(const char *path, bool missing_ok, const struct mmr_cfg_key *schema,
                    size_t nkeys, void *cfg)
{
    if (!path)
        return load_text(NULL, NULL, 0, schema, nkeys, cfg);
    char *text = NULL;
    size_t len = 0;
    int rc = mmr_file_read_all(path, MAX_FILE_BYTES, &text, &len);
    if (rc == MMR_ENOENT && missing_ok)
        return load_text(path, NULL, 0, schema, nkeys, cfg);
    if (rc < 0) {
        /* Leave cfg as load_text would on error: zeroed, nothing allocated. */
        if (check_schema(schema, nkeys) == 0)
            zero_fields(schema, nkeys, cfg);
        return mmr_err_wrap(rc, "reading configuration");
    }
    rc = load_text(path, text, len, schema, nkeys, cfg);
    free(text);
    return rc;
}

int mmr_config_load_string(const char *name, const char *text, const struct mmr_cfg_key *schema,
                           size_t nkeys, void *cfg)
{
    return load_text(name, text, text ? strlen(text) : 0, schema, nkeys, cfg);
}

void mmr_config_free(const struct mmr_cfg_key *schema, size_t nkeys, void *cfg)
{
    for (size_t i = 0; i < nkeys; i++) {
        if (!holds_string(&schema[i]))
            continue;
        char **p = field(&schema[i], cfg);
        free(*p);
        *p = NULL;
    }
}

/* ---- dump -------------------------------------------------------------------- */

static void dump_string(struct mmr_buf *b, const char *s)
{
    /* Values set by code rather than read from a file could hold a newline
     * that would forge a line in the dump. A tab is kept: files may hold it,
     * and the dump reads back to the same value. */
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char out = ((c < 0x20 && c != '\t') || c == 0x7F) ? '?' : (char)c;
        mmr_buf_append(b, &out, 1);
    }
}

static void dump_value(struct mmr_buf *b, const struct mmr_cfg_key *key, const void *cfg)
{
    const void *p = cfield(key, cfg);
    char tmp[32];

    switch (key->type) {
    case MMR_CFG_STRING:
    case MMR_CFG_ENUM: {
        const char *s = *(char *const *)p;
        if (!s || !s[0])
            return;
        if (key->secret)
            mmr_buf_appendf(b, " <redacted>");
        else {
            mmr_buf_append(b, " ", 1);
            dump_string(b, s);
        }
        return;
    }
    case MMR_CFG_BOOL:
        snprintf(tmp, sizeof(tmp), "%s", *(const bool *)p ? "true" : "false");
        break;
    case MMR_CFG_INT: {
        int64_t v;
        memcpy(&v, p, sizeof(v));
        snprintf(tmp, sizeof(tmp), "%" PRId64, v);
        break;
    }
    case MMR_CFG_SIZE: {
        uint64_t v;
        memcpy(&v, p, sizeof(v));
        format_size(v, tmp, sizeof(tmp));
        break;
    }
    case MMR_CFG_DURATION: {
        int64_t v;
        memcpy(&v, p, sizeof(v));
        format_duration(v, tmp, sizeof(tmp));
        break;
    }
    default:
        snprintf(tmp, sizeof(tmp), "?");
        break;
    }
    mmr_buf_appendf(b, " %s", key->secret ? "<redacted>" : tmp);
}

char *mmr_config_dump(const struct mmr_cfg_key *schema, size_t nkeys, const void *cfg)
{
    struct mmr_buf b = {0};
    const char *section = NULL;
    mmr_buf_append(&b, "", 0);
    for (size_t i = 0; i < nkeys; i++) {
        const struct mmr_cfg_key *key = &schema[i];
        if (!section || strcmp(section, key->section) != 0) {
            mmr_buf_appendf(&b, "%s[%s]\n", section ? "\n" : "", key->section);
            section = key->section;
        }
        mmr_buf_appendf(&b, "%s =", key->name);
        dump_value(&b, key, cfg);
        mmr_buf_append(&b, "\n", 1);
    }
    return b.data;
}
