/* Windows clocks: UTC wall time (precise system time), monotonic time (the
 * performance counter), ISO-8601 formatting. */
#include "shared/platform.h"

#include <stdio.h>

#include "shared/platform/win32/win32.h"

/* 100 ns intervals between 1601-01-01 (FILETIME) and 1970-01-01. */
#define EPOCH_DIFF_100NS 116444736000000000LL

int64_t mmr_time_now_ms(void)
{
    FILETIME ft;
    GetSystemTimePreciseAsFileTime(&ft);
    int64_t t = (int64_t)(((uint64_t)ft.dwHighDateTime << 32) | ft.dwLowDateTime);
    return (t - EPOCH_DIFF_100NS) / 10000;
}

uint64_t mmr_time_mono_ms(void)
{
    LARGE_INTEGER freq, now;
    QueryPerformanceFrequency(&freq); /* cannot fail since Windows XP */
    QueryPerformanceCounter(&now);
    uint64_t c = (uint64_t)now.QuadPart, f = (uint64_t)freq.QuadPart;
    /* Split so that counter * 1000 cannot overflow. */
    return c / f * 1000 + c % f * 1000 / f;
}

void mmr_time_format(int64_t ms, char buf[32])
{
    /* FILETIME starts in 1601, which covers every time we will ever format;
     * earlier ones are shown as 1601. */
    if (ms > (INT64_MAX - EPOCH_DIFF_100NS) / 10000) {
        snprintf(buf, 32, "invalid time");
        return;
    }
    int64_t t = ms < -EPOCH_DIFF_100NS / 10000 ? 0 : ms * 10000 + EPOCH_DIFF_100NS;
    FILETIME ft = {.dwLowDateTime = (DWORD)t, .dwHighDateTime = (DWORD)((uint64_t)t >> 32)};
    SYSTEMTIME st;
    if (!FileTimeToSystemTime(&ft, &st)) {
        snprintf(buf, 32, "invalid time");
        return;
    }
    snprintf(buf, 32, "%04u-%02u-%02uT%02u:%02u:%02u.%03uZ", st.wYear, st.wMonth, st.wDay, st.wHour,
             st.wMinute, st.wSecond, st.wMilliseconds);
}
