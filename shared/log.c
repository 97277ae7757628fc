/* Process-wide logger: logfmt lines to stderr and a size-rotated file. */
#include "shared/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"

#define LINE_MAX_BYTES 8192
#define DEFAULT_MAX_BYTES (10u * 1024 * 1024)
#define DEFAULT_KEEP 5

static struct {
    uv_once_t once;
    uv_mutex_t lock;
    enum mmr_log_level level;
    bool to_stderr;
    char *path;
    struct mmr_file *file;
    int64_t file_bytes;
    size_t max_bytes;
    int keep;
} logger = {.once = UV_ONCE_INIT, .level = MMR_LOG_INFO, .to_stderr = true};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

static void init_lock(void)
{
    uv_mutex_init(&logger.lock);
}

const char *mmr_log_level_name(enum mmr_log_level level)
{
    if ((unsigned)level > MMR_LOG_ERROR)
        return "unknown";
    return level_names[level];
}

int mmr_log_level_parse(const char *s, enum mmr_log_level *out)
{
    for (int i = 0; i <= MMR_LOG_ERROR; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum mmr_log_level)i;
            return 0;
        }
    }
    return mmr_err_set(MMR_EINVAL, "unknown log level '%s' (expected debug, info, warn or error)",
                       s);
}

static void close_file_locked(void)
{
    if (logger.file)
        mmr_file_close(logger.file);
    logger.file = NULL;
    free(logger.path);
    logger.path = NULL;
}

static int open_file_locked(void)
{
    int rc = mmr_file_open_append(logger.path, &logger.file);
    if (rc < 0)
        return rc;
    int64_t size = mmr_file_size(logger.path);
    logger.file_bytes = size > 0 ? size : 0;
    return 0;
}

int mmr_log_open(const struct mmr_log_opts *opts)
{
    uv_once(&logger.once, init_lock);
    uv_mutex_lock(&logger.lock);
    close_file_locked();
    logger.level = opts->level;
    logger.to_stderr = opts->to_stderr;
    logger.max_bytes = opts->max_bytes ? opts->max_bytes : DEFAULT_MAX_BYTES;
    logger.keep = opts->keep > 0 ? opts->keep : DEFAULT_KEEP;
    int rc = 0;
    if (opts->file_path) {
        logger.path = mmr_strdup(opts->file_path);
        rc = open_file_locked();
        if (rc < 0) {
            free(logger.path);
            logger.path = NULL;
        }
    }
    uv_mutex_unlock(&logger.lock);
    return rc;
}

void mmr_log_close(void)
{
    uv_once(&logger.once, init_lock);
    uv_mutex_lock(&logger.lock);
    close_file_locked();
    uv_mutex_unlock(&logger.lock);
}

/* agent.log -> agent.log.1 -> ... -> agent.log.<keep>; the oldest is dropped. */
static void rotate_locked(void)
{
    mmr_file_close(logger.file);
    logger.file = NULL;
    for (int i = logger.keep; i >= 1; i--) {
        char *to = mmr_asprintf("%s.%d", logger.path, i);
        char *from = i == 1 ? mmr_strdup(logger.path) : mmr_asprintf("%s.%d", logger.path, i - 1);
        if (i == logger.keep)
            mmr_file_remove(to);
        mmr_file_rename(from, to);
        free(from);
        free(to);
    }
    if (open_file_locked() < 0)
        fprintf(stderr, "mamori: cannot reopen log file after rotation: %s\n", mmr_err_msg());
}

/* Appends s, escaping quotes and backslashes when quoted, and always escaping
 * control characters so that one record stays one line. */
static size_t append_escaped(char *out, size_t pos, size_t cap, const char *s, bool quoted)
{
    for (; *s && pos + 5 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n') {
            out[pos++] = '\\';
            out[pos++] = 'n';
        } else if (c == '\r') {
            out[pos++] = '\\';
            out[pos++] = 'r';
        } else if (c == '\t') {
            out[pos++] = '\\';
            out[pos++] = 't';
        } else if (c < 0x20 || c == 0x7f) {
            pos += (size_t)snprintf(out + pos, cap - pos, "\\x%02x", c);
        } else if (quoted && (c == '"' || c == '\\')) {
            out[pos++] = '\\';
            out[pos++] = (char)c;
        } else {
            out[pos++] = (char)c;
        }
    }
    return pos;
}

void mmr_log(enum mmr_log_level level, const char *mod, const char *msg, const char *fields, ...)
{
    uv_once(&logger.once, init_lock);
    if (level < logger.level)
        return;

    char line[LINE_MAX_BYTES];
    char ts[32];
    mmr_time_format(mmr_time_now_ms(), ts);
    size_t pos = (size_t)snprintf(line, sizeof(line), "ts=%s level=%s mod=%s msg=\"", ts,
                                  mmr_log_level_name(level), mod);
    if (pos > sizeof(line) / 2)
        pos = sizeof(line) / 2; /* a runaway module name; keep room for the rest */
    pos = append_escaped(line, pos, sizeof(line), msg, true);
    line[pos++] = '"';
    if (fields && fields[0]) {
        char formatted[LINE_MAX_BYTES];
        va_list ap;
        va_start(ap, fields);
        vsnprintf(formatted, sizeof(formatted), fields, ap);
        va_end(ap);
        line[pos++] = ' ';
        pos = append_escaped(line, pos, sizeof(line), formatted, false);
    }
    line[pos++] = '\n';

    uv_mutex_lock(&logger.lock);
    if (logger.to_stderr)
        fwrite(line, 1, pos, stderr);
    if (logger.file) {
        if (mmr_file_append(logger.file, line, pos) == 0)
            logger.file_bytes += (int64_t)pos;
        if ((size_t)logger.file_bytes >= logger.max_bytes)
            rotate_locked();
    }
    uv_mutex_unlock(&logger.lock);
}
