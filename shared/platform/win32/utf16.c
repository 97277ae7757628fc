/* Windows string and error helpers: UTF-8 <-> UTF-16 at the API boundary,
 * UTF-8 paths turned into Windows paths (long ones with the \\?\ prefix),
 * and GetLastError() codes turned into MMR_E* codes with readable messages. */
#include "shared/platform/win32/win32.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "shared/err.h"
#include "shared/mem.h"

/* CreateDirectoryW's limit is MAX_PATH minus room for an 8.3 file name;
 * anything this long or longer goes through the \\?\ form. */
#define SHORT_PATH_MAX (MAX_PATH - 12)

wchar_t *mmr_w_from_utf8(const char *s)
{
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, NULL, 0);
    if (n <= 0) {
        mmr_err_set(MMR_EINVAL, "text is not valid UTF-8");
        return NULL;
    }
    wchar_t *w = mmr_malloc((size_t)n * sizeof(wchar_t));
    if (MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, n) != n) {
        free(w);
        mmr_err_set(MMR_EINVAL, "text is not valid UTF-8");
        return NULL;
    }
    return w;
}

char *mmr_utf8_from_w(const wchar_t *w)
{
    int n = WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, w, -1, NULL, 0, NULL, NULL);
    if (n <= 0) {
        mmr_err_set(MMR_EINVAL, "text is not valid UTF-16");
        return NULL;
    }
    char *s = mmr_malloc((size_t)n);
    if (WideCharToMultiByte(CP_UTF8, WC_ERR_INVALID_CHARS, w, -1, s, n, NULL, NULL) != n) {
        free(s);
        mmr_err_set(MMR_EINVAL, "text is not valid UTF-16");
        return NULL;
    }
    return s;
}

static bool starts_with(const wchar_t *w, const wchar_t *prefix)
{
    return wcsncmp(w, prefix, wcslen(prefix)) == 0;
}

wchar_t *mmr_w_path(const char *path)
{
    wchar_t *w = mmr_w_from_utf8(path);
    if (!w)
        return NULL;
    /* \\?\ paths are taken literally by Windows and \\.\ names devices and
     * pipes: both are already in their final form. */
    if (starts_with(w, L"\\\\?\\") || starts_with(w, L"\\\\.\\"))
        return w;
    for (wchar_t *p = w; *p; p++)
        if (*p == L'/')
            *p = L'\\';

    /* Absolute, with "." and ".." resolved: the \\?\ form skips Windows' own
     * normalisation, and a short relative path can be long once the current
     * directory is in front of it. */
    DWORD need = GetFullPathNameW(w, 0, NULL, NULL);
    if (need == 0)
        return w; /* let the call that uses it report the error */
    wchar_t *full = mmr_malloc(need * sizeof(wchar_t));
    DWORD got = GetFullPathNameW(w, need, full, NULL);
    if (got == 0 || got >= need) {
        free(full);
        return w;
    }
    free(w);
    if (got < SHORT_PATH_MAX)
        return full;
    bool unc = starts_with(full, L"\\\\");
    const wchar_t *prefix = unc ? L"\\\\?\\UNC\\" : L"\\\\?\\";
    const wchar_t *rest = unc ? full + 2 : full;
    size_t len = wcslen(prefix) + wcslen(rest) + 1;
    wchar_t *out = mmr_malloc(len * sizeof(wchar_t));
    wcscpy(out, prefix);
    wcscat(out, rest);
    free(full);
    return out;
}

int mmr_win_error_code(DWORD err)
{
    switch (err) {
    case ERROR_FILE_NOT_FOUND:
    case ERROR_PATH_NOT_FOUND:
    case ERROR_INVALID_DRIVE:
    case ERROR_BAD_NETPATH:
    case ERROR_BAD_NET_NAME:
    case ERROR_BAD_PATHNAME:
    case ERROR_DIRECTORY:
    case ERROR_NOT_FOUND:
    case ERROR_NONE_MAPPED:
        return MMR_ENOENT;
    case ERROR_ACCESS_DENIED:
    case ERROR_PRIVILEGE_NOT_HELD:
    case ERROR_WRITE_PROTECT:
    case ERROR_INVALID_OWNER:
        return MMR_EPERM;
    case ERROR_SHARING_VIOLATION:
    case ERROR_LOCK_VIOLATION:
    case ERROR_PIPE_BUSY:
    case ERROR_BUSY:
        return MMR_EBUSY;
    case ERROR_DISK_FULL:
    case ERROR_HANDLE_DISK_FULL:
        return MMR_ENOSPC;
    case ERROR_FILE_EXISTS:
    case ERROR_ALREADY_EXISTS:
        return MMR_EEXIST;
    case ERROR_NOT_ENOUGH_MEMORY:
    case ERROR_OUTOFMEMORY:
        return MMR_ENOMEM;
    case ERROR_INVALID_NAME:
    case ERROR_INVALID_PARAMETER:
    case ERROR_NO_UNICODE_TRANSLATION:
        return MMR_EINVAL;
    case ERROR_FILENAME_EXCED_RANGE:
    case ERROR_BUFFER_OVERFLOW:
        return MMR_ETOOBIG;
    case ERROR_NOT_SUPPORTED:
    case ERROR_CALL_NOT_IMPLEMENTED:
        return MMR_EUNSUP;
    case ERROR_SEM_TIMEOUT:
    case WAIT_TIMEOUT:
        return MMR_ETIMEDOUT;
    default:
        return MMR_EIO;
    }
}

/* The system's text for err in UTF-8, without the trailing ".\r\n". */
static void win_message(DWORD err, char *buf, size_t cap)
{
    wchar_t *text = NULL;
    DWORD flags =
        FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS;
    /* English first, so that logs read the same everywhere; the user's
     * language when English messages are not installed. */
    DWORD n = FormatMessageW(flags, NULL, err, MAKELANGID(LANG_ENGLISH, SUBLANG_ENGLISH_US),
                             (LPWSTR)&text, 0, NULL);
    if (n == 0)
        n = FormatMessageW(flags, NULL, err, 0, (LPWSTR)&text, 0, NULL);
    char *utf8 = n ? mmr_utf8_from_w(text) : NULL;
    if (text)
        LocalFree(text);
    snprintf(buf, cap, "%s", utf8 ? utf8 : "unknown error");
    free(utf8);
    size_t len = strlen(buf);
    while (len > 0 && (buf[len - 1] == '\r' || buf[len - 1] == '\n' || buf[len - 1] == ' ' ||
                       buf[len - 1] == '.'))
        buf[--len] = '\0';
}

int mmr_win_err_set(DWORD err, const char *what)
{
    char msg[256];
    win_message(err, msg, sizeof(msg));
    return mmr_err_set(mmr_win_error_code(err), "%s: %s (error %lu)", what, msg,
                       (unsigned long)err);
}

int mmr_win_err_path(DWORD err, const char *what, const char *path)
{
    char msg[256];
    win_message(err, msg, sizeof(msg));
    return mmr_err_set(mmr_win_error_code(err), "%s '%s': %s (error %lu)", what, path, msg,
                       (unsigned long)err);
}
