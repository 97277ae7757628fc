/* INI configuration described by a schema: every key has a type, limits, a
 * default and a secret flag. Unknown sections or keys, bad values and syntax
 * errors are refused with "file:line: message". The schema also drives the
 * redacted dump that goes into diagnostic bundles.
 *
 * The file format (parsed here, no library), one construct per line:
 *   [section]      header; blanks inside the brackets are ignored, nothing may follow ']'
 *   key = value    split at the first '='; blanks around key and value are ignored
 *   ; comment      also '#': only as the first character after optional indentation
 * Blank lines, CRLF line endings and a UTF-8 BOM are accepted. There are no
 * inline comments: in "dir = /srv ; old", the value is "/srv ; old", and '#'
 * or '=' inside a value are kept too. There is no quoting and no continuation
 * line: an indented line is a line like any other. ':' is not a separator.
 * Text must be UTF-8 without NUL or control characters other than tab; lines
 * are limited to 64 KiB and files to 1 MiB. Each key may be set once; a
 * section may appear more than once. */
#ifndef MMR_CONFIG_H
#define MMR_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mmr_cfg_type {
    MMR_CFG_STRING,   /* char * (allocated; freed by mmr_config_free); never NULL */
    MMR_CFG_INT,      /* int64_t, within [min, max] */
    MMR_CFG_BOOL,     /* bool: true/false, yes/no, on/off, 1/0 (any case) */
    MMR_CFG_SIZE,     /* uint64_t bytes: "512", "64K", "10M", "2G", "1T" (powers of 1024) */
    MMR_CFG_DURATION, /* int64_t milliseconds: "500ms", "30s", "5m", "2h", "7d" */
    MMR_CFG_ENUM,     /* char *, one of choices (exact match) */
};

struct mmr_cfg_key {
    const char *section;
    const char *name;
    enum mmr_cfg_type type;
    size_t offset;              /* offsetof the field in the caller's struct */
    const char *def;            /* default, in the file's syntax; NULL: "", 0, false,
                                   or an ENUM's first choice */
    int64_t min, max;           /* INT, SIZE, DURATION limits (0, 0: unlimited) */
    const char *const *choices; /* ENUM: NULL-terminated list */
    bool secret;                /* never printed (diag bundles, logs) */
    const char *help;           /* one line for docs and error messages */
};

/* Fills cfg with defaults, then with the file's values. path NULL or a
 * missing file with missing_ok: defaults only. Files over 1 MiB are refused.
 * cfg's previous contents are overwritten, not freed (call mmr_config_free
 * before loading again). On error cfg holds nothing allocated; errors in the
 * text name file:line and are MMR_ETOOBIG for a line over its limit, else
 * MMR_EINVAL. */
int mmr_config_load(const char *path, bool missing_ok, const struct mmr_cfg_key *schema,
                    size_t nkeys, void *cfg);

/* Same, from a string (name is used in messages, "config" if NULL); it ends
 * at its NUL and has no size limit of its own. */
int mmr_config_load_string(const char *name, const char *text, const struct mmr_cfg_key *schema,
                           size_t nkeys, void *cfg);

/* Frees strings held by cfg and zeroes them. */
void mmr_config_free(const struct mmr_cfg_key *schema, size_t nkeys, void *cfg);

/* Renders cfg as INI text; secret values that are set print as "<redacted>".
 * Control characters other than tab print as '?'. Loading the dump gives the
 * same values back, secrets aside (a value read from a file never has
 * surrounding blanks).
 * Allocated. */
char *mmr_config_dump(const struct mmr_cfg_key *schema, size_t nkeys, const void *cfg);

/* Value parsers, exposed for policy documents and command lines. */
int mmr_parse_size(const char *s, uint64_t *out);
int mmr_parse_duration_ms(const char *s, int64_t *out);
int mmr_parse_bool(const char *s, bool *out);

#endif
