/* Error codes and the per-thread error message buffer. */
#include "shared/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MSG_MAX 1024

static _Thread_local char last_msg[MSG_MAX];

static const struct {
    int code;
    const char *name;
    const char *text;
} codes[] = {
    {MMR_OK, "OK", "success"},
    {MMR_EINVAL, "EINVAL", "malformed input"},
    {MMR_ENOMEM, "ENOMEM", "out of memory"},
    {MMR_EIO, "EIO", "input/output error"},
    {MMR_ENOENT, "ENOENT", "not found"},
    {MMR_EEXIST, "EEXIST", "already exists"},
    {MMR_EPERM, "EPERM", "permission denied"},
    {MMR_EBUSY, "EBUSY", "in use"},
    {MMR_ETOOBIG, "ETOOBIG", "over a limit"},
    {MMR_ECORRUPT, "ECORRUPT", "data is corrupt"},
    {MMR_ETIMEDOUT, "ETIMEDOUT", "timed out"},
    {MMR_ECONN, "ECONN", "connection failed"},
    {MMR_EPROTO, "EPROTO", "protocol error"},
    {MMR_ENOSPC, "ENOSPC", "no space left"},
    {MMR_EDB, "EDB", "database error"},
    {MMR_EUNSUP, "EUNSUP", "not supported"},
};

const char *mmr_err_name(int code)
{
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (codes[i].code == code)
            return codes[i].name;
    return "EUNKNOWN";
}

int mmr_err_from_name(const char *name)
{
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (strcmp(codes[i].name, name) == 0)
            return codes[i].code;
    return MMR_EPROTO;
}

const char *mmr_err_str(int code)
{
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (codes[i].code == code)
            return codes[i].text;
    return "unknown error";
}

int mmr_err_set(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_msg, sizeof(last_msg), fmt, ap);
    va_end(ap);
    return code;
}

int mmr_err_wrap(int code, const char *fmt, ...)
{
    char prev[MSG_MAX];
    char prefix[MSG_MAX];
    va_list ap;

    memcpy(prev, last_msg, sizeof(prev));
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    if (prev[0] != '\0')
        snprintf(last_msg, sizeof(last_msg), "%s: %s", prefix, prev);
    else
        snprintf(last_msg, sizeof(last_msg), "%s: %s", prefix, mmr_err_str(code));
    return code;
}

const char *mmr_err_msg(void)
{
    return last_msg;
}

void mmr_err_clear(void)
{
    last_msg[0] = '\0';
}
