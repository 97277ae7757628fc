/* The Windows half of the unit tests' system-specific helpers (testutil.h). */
#include "testutil.h"

#include <criterion/criterion.h>

#include <stdlib.h>

#include <windows.h>

#include <aclapi.h>

#include "shared/mem.h"

void mmr_test_expose_to_others(const char *path)
{
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, NULL, 0);
    cr_assert_gt(n, 0, "%s is not UTF-8", path);
    wchar_t *wpath = mmr_malloc((size_t)n * sizeof(wchar_t));
    MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, wpath, n);

    BYTE everyone[SECURITY_MAX_SID_SIZE];
    DWORD sid_size = sizeof(everyone);
    BOOL sid_ok = CreateWellKnownSid(WinWorldSid, NULL, everyone, &sid_size);
    PACL old = NULL, acl = NULL;
    PSECURITY_DESCRIPTOR sd = NULL;
    DWORD err = GetNamedSecurityInfoW(wpath, SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, NULL, NULL,
                                      &old, NULL, &sd);
    if (err == ERROR_SUCCESS && sid_ok) {
        EXPLICIT_ACCESS_W ea = {
            .grfAccessPermissions = GENERIC_READ,
            .grfAccessMode = GRANT_ACCESS,
            .grfInheritance = NO_INHERITANCE,
            .Trustee = {.TrusteeForm = TRUSTEE_IS_SID,
                        .TrusteeType = TRUSTEE_IS_WELL_KNOWN_GROUP,
                        .ptstrName = (LPWSTR)everyone},
        };
        err = SetEntriesInAclW(1, &ea, old, &acl);
    }
    if (err == ERROR_SUCCESS && sid_ok)
        err = SetNamedSecurityInfoW(wpath, SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, NULL, NULL,
                                    acl, NULL);
    LocalFree(acl);
    LocalFree(sd);
    free(wpath);
    cr_assert(sid_ok, "CreateWellKnownSid: %lu", GetLastError());
    cr_assert_eq(err, ERROR_SUCCESS, "granting Everyone read access to %s: error %lu", path, err);
}

bool mmr_test_power_reads_sysfs(void)
{
    return false;
}

/* Wine's ntdll exports wine_get_version; Windows' does not. */
static bool under_wine(void)
{
    HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");
    return ntdll && GetProcAddress(ntdll, "wine_get_version") != NULL;
}

bool mmr_test_sqlite_sidecars_private(void)
{
    return !under_wine();
}
