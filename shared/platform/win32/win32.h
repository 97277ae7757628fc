/* Internal helpers shared by the Windows platform files: UTF-8 inside,
 * UTF-16 at every Windows API call, Windows errors as MMR_E* codes, and the
 * security descriptors that keep Mamori's files private. */
#ifndef MMR_PLATFORM_WIN32_H
#define MMR_PLATFORM_WIN32_H

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <stdbool.h>
#include <windows.h>

/* UTF-8 to a newly allocated UTF-16 string; NULL (with the error set,
 * MMR_EINVAL) when the input is not valid UTF-8. */
wchar_t *mmr_w_from_utf8(const char *s);
/* UTF-16 to a newly allocated UTF-8 string; NULL on invalid UTF-16. */
char *mmr_utf8_from_w(const wchar_t *w);

/* A path as Windows wants it: UTF-16, '/' turned into '\\', made absolute,
 * and with the "\\\\?\\" prefix when long so that MAX_PATH does not apply.
 * \\?\ and \\.\ names (pipes, devices) are only converted. */
wchar_t *mmr_w_path(const char *path);

/* Maps GetLastError()-style codes to MMR_E* codes. */
int mmr_win_error_code(DWORD err);
/* Sets the error message "<what>: <Windows message> (error N)" and returns
 * the mapped code. */
int mmr_win_err_set(DWORD err, const char *what);
/* The same with a path: "<what> '<path>': <Windows message> (error N)". */
int mmr_win_err_path(DWORD err, const char *what, const char *path);

/* The SID of the user this process runs as (a process-lifetime copy), or
 * NULL when the process token cannot be read. */
PSID mmr_win_self_sid(void);

/* A self-relative security descriptor whose protected DACL grants full
 * control to SYSTEM, Administrators and this process's user only; for a
 * directory the entries are inherited by what is created inside it. Freed
 * with free(); NULL with the error set on failure. */
PSECURITY_DESCRIPTOR mmr_win_private_sd(bool dir);

/* Replaces the DACL of an existing file or directory with the private one
 * (and, for a directory, lets the entries flow to its children). */
int mmr_win_make_private(const wchar_t *wpath, const char *path, bool dir);

#endif
