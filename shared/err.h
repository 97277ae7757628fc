/* Error codes and the per-thread error message.
 * Functions return 0 on success or a negative MMR_E* code; the human message
 * explaining the last failure on this thread is in mmr_err_msg(). */
#ifndef MMR_ERR_H
#define MMR_ERR_H

#include "shared/compiler.h"

enum mmr_err {
    MMR_OK = 0,
    MMR_EINVAL = -1,    /* malformed input or bad argument */
    MMR_ENOMEM = -2,    /* allocation failed (only where we do not abort) */
    MMR_EIO = -3,       /* read/write/fsync failed */
    MMR_ENOENT = -4,    /* no such file, key or record */
    MMR_EEXIST = -5,    /* already exists */
    MMR_EPERM = -6,     /* caller is not allowed */
    MMR_EBUSY = -7,     /* held by someone else (lock, another instance) */
    MMR_ETOOBIG = -8,   /* over a size, depth or count limit */
    MMR_ECORRUPT = -9,  /* stored data is damaged */
    MMR_ETIMEDOUT = -10,
    MMR_ECONN = -11,    /* peer unreachable or connection lost */
    MMR_EPROTO = -12,   /* peer broke the protocol */
    MMR_ENOSPC = -13,   /* disk full */
    MMR_EDB = -14,      /* database error other than corruption or full disk */
    MMR_EUNSUP = -15,   /* not supported on this system */
};

/* Stable upper-case name of a code ("EINVAL"), for JSON replies and logs. */
const char *mmr_err_name(int code);

/* The code for a name from mmr_err_name; MMR_EPROTO for unknown names. */
int mmr_err_from_name(const char *name);

/* Short English description of a code ("malformed input"). */
const char *mmr_err_str(int code);

/* Records a formatted message for this thread and returns code, so that
 * "return mmr_err_set(MMR_EINVAL, "bad key '%s'", key);" reads naturally. */
int mmr_err_set(int code, const char *fmt, ...) MMR_PRINTF(2, 3);

/* Prefixes the current message with context: "opening x: <previous message>".
 * Returns code. */
int mmr_err_wrap(int code, const char *fmt, ...) MMR_PRINTF(2, 3);

/* The last message recorded on this thread ("" if none). */
const char *mmr_err_msg(void);

void mmr_err_clear(void);

#endif
