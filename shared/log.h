/* Logging: one line per record in logfmt (key=value) to stderr and/or a
 * size-rotated file. Safe to call from any thread. Never log secrets. */
#ifndef MMR_LOG_H
#define MMR_LOG_H

#include "shared/compiler.h"
#include <stdbool.h>
#include <stddef.h>

enum mmr_log_level {
    MMR_LOG_DEBUG = 0,
    MMR_LOG_INFO = 1,
    MMR_LOG_WARN = 2,
    MMR_LOG_ERROR = 3,
};

struct mmr_log_opts {
    enum mmr_log_level level;
    bool to_stderr;
    const char *file_path; /* NULL: no file */
    size_t max_bytes;      /* rotate when the file reaches this size (0: 10 MiB) */
    int keep;              /* rotated files kept: path.1 .. path.keep (0: 5) */
};

/* (Re)configures the process-wide logger; safe to call again on reload. */
int mmr_log_open(const struct mmr_log_opts *opts);
void mmr_log_close(void);

/* Parses "debug", "info", "warn", "error". */
int mmr_log_level_parse(const char *s, enum mmr_log_level *out);
const char *mmr_log_level_name(enum mmr_log_level level);

/* Writes "ts=... level=info mod=<mod> msg="<msg>" <fields>". msg is a fixed
 * text (grep-able); variable data goes in fields, a printf format producing
 * key=value pairs (quote values that may hold spaces: path=\"%s\"). Control
 * characters are escaped so a record is always one line. fields may be NULL. */
void mmr_log(enum mmr_log_level level, const char *mod, const char *msg, const char *fields, ...)
    MMR_PRINTF(4, 5);

#define mmr_debug(mod, msg, ...) mmr_log(MMR_LOG_DEBUG, mod, msg, __VA_ARGS__)
#define mmr_info(mod, msg, ...)  mmr_log(MMR_LOG_INFO, mod, msg, __VA_ARGS__)
#define mmr_warn(mod, msg, ...)  mmr_log(MMR_LOG_WARN, mod, msg, __VA_ARGS__)
#define mmr_error(mod, msg, ...) mmr_log(MMR_LOG_ERROR, mod, msg, __VA_ARGS__)

#endif
