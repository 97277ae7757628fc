/* JSON helpers over jansson: bounded parsing of untrusted input with precise
 * error messages, typed field access that names the JSON path of an error,
 * and one-line serialisation for newline-delimited protocols. */
#ifndef MMR_JSON_H
#define MMR_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* Default nesting limit for documents from outside (network, files, IPC). */
#define MMR_JSON_MAX_DEPTH 32

/* Parses exactly one JSON value from buf (len bytes, need not be
 * NUL-terminated). Refuses nesting deeper than max_depth (MMR_ETOOBIG) and
 * anything that is not valid UTF-8 JSON (MMR_EINVAL, message with line and
 * column), including NUL bytes, "\u0000", duplicate object keys and trailing
 * data. Returns a new reference in *out; *out is untouched on error. */
int mmr_json_parse(const char *buf, size_t len, size_t max_depth, json_t **out);

/* Like mmr_json_parse, and the value must be an object. */
int mmr_json_parse_object(const char *buf, size_t len, size_t max_depth, json_t **out);

/* Typed getters. path is the JSON path of obj used in messages ("$.scan",
 * NULL for "$"); the error says e.g. "$.scan.cpu_cap: expected an integer
 * between 1 and 100, got 150". A missing optional field leaves *out untouched
 * and returns 0; a missing required field is MMR_EINVAL, and so is a null
 * value (null is a wrong type, not a missing field). Strings, objects and
 * arrays are borrowed from obj. *out is untouched on error. */
int mmr_json_get_str(const json_t *obj, const char *path, const char *key, bool required,
                     const char **out);
int mmr_json_get_int(const json_t *obj, const char *path, const char *key, bool required,
                     int64_t min, int64_t max, int64_t *out);
int mmr_json_get_bool(const json_t *obj, const char *path, const char *key, bool required,
                      bool *out);
int mmr_json_get_object(const json_t *obj, const char *path, const char *key, bool required,
                        json_t **out);
int mmr_json_get_array(const json_t *obj, const char *path, const char *key, bool required,
                       json_t **out);

/* A UTC time in ms as "2026-11-22T00:07:27.123Z", or null for 0 / negative
 * ("never"). A new reference. */
json_t *mmr_json_time(int64_t ms);

/* Compact one-line serialisation with sorted keys; allocated (free()), no
 * trailing newline. Never contains a raw newline (JSON escapes them in
 * strings). NULL gives "null". */
char *mmr_json_dump_line(const json_t *value);

/* Pretty serialisation (2-space indent, sorted keys, no trailing newline)
 * for humans and files; allocated (free()). */
char *mmr_json_dump_pretty(const json_t *value);

#endif
