/* Windows system facts for status and diagnostics (edition, build, host,
 * uptime, memory) and the hardware identifier (SMBIOS UUID, else the
 * installation's MachineGuid). */
#include "shared/platform.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform/win32/win32.h"

/* The raw SMBIOS table provider, 'RSMB' as a big-endian DWORD. */
#define RSMB ((DWORD)'R' << 24 | (DWORD)'S' << 16 | (DWORD)'M' << 8 | (DWORD)'B')

#define CURRENT_VERSION_KEY L"SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion"

/* A REG_SZ value under HKLM in UTF-8; false when missing or unreadable. */
static bool reg_string(const wchar_t *key, const wchar_t *name, char *out, size_t cap)
{
    wchar_t buf[256];
    DWORD size = sizeof(buf);
    if (RegGetValueW(HKEY_LOCAL_MACHINE, key, name, RRF_RT_REG_SZ, NULL, buf, &size) !=
        ERROR_SUCCESS)
        return false;
    char *utf8 = mmr_utf8_from_w(buf);
    if (!utf8)
        return false;
    snprintf(out, cap, "%s", utf8);
    free(utf8);
    return out[0] != '\0';
}

static bool reg_dword(const wchar_t *key, const wchar_t *name, DWORD *out)
{
    DWORD size = sizeof(*out);
    return RegGetValueW(HKEY_LOCAL_MACHINE, key, name, RRF_RT_REG_DWORD, NULL, out, &size) ==
           ERROR_SUCCESS;
}

typedef LONG(WINAPI *rtl_get_version_fn)(OSVERSIONINFOW *);

/* The real version: GetVersionEx lies to programs without a manifest that
 * lists Windows 10, RtlGetVersion does not. */
static bool os_version(OSVERSIONINFOW *vi)
{
    memset(vi, 0, sizeof(*vi));
    vi->dwOSVersionInfoSize = sizeof(*vi);
    HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");
    if (!ntdll)
        return false;
    rtl_get_version_fn fn =
        (rtl_get_version_fn)(void (*)(void))GetProcAddress(ntdll, "RtlGetVersion");
    return fn && fn(vi) == 0;
}

static const char *arch_name(void)
{
    SYSTEM_INFO si;
    GetNativeSystemInfo(&si);
    /* The names Linux uses, so that one fleet reads the same. */
    switch (si.wProcessorArchitecture) {
    case PROCESSOR_ARCHITECTURE_AMD64:
        return "x86_64";
    case PROCESSOR_ARCHITECTURE_ARM64:
        return "aarch64";
    case PROCESSOR_ARCHITECTURE_INTEL:
        return "x86";
    default:
        return "unknown";
    }
}

int mmr_sysinfo_get(struct mmr_sysinfo *out)
{
    memset(out, 0, sizeof(*out));
    OSVERSIONINFOW vi;
    bool have_version = os_version(&vi);
    char product[64];
    if (!reg_string(CURRENT_VERSION_KEY, L"ProductName", product, sizeof(product)))
        snprintf(product, sizeof(product), "Windows");
    /* Windows 11 still calls itself "Windows 10 ..." in ProductName; build
     * 22000 is the first Windows 11. */
    if (have_version && vi.dwBuildNumber >= 22000 && strncmp(product, "Windows 10", 10) == 0)
        snprintf(out->os_name, sizeof(out->os_name), "Windows 11%s", product + 10);
    else
        snprintf(out->os_name, sizeof(out->os_name), "%s", product);
    DWORD ubr = 0;
    if (have_version && reg_dword(CURRENT_VERSION_KEY, L"UBR", &ubr))
        snprintf(out->os_version, sizeof(out->os_version), "%lu.%lu.%lu.%lu",
                 (unsigned long)vi.dwMajorVersion, (unsigned long)vi.dwMinorVersion,
                 (unsigned long)vi.dwBuildNumber, (unsigned long)ubr);
    else if (have_version)
        snprintf(out->os_version, sizeof(out->os_version), "%lu.%lu.%lu",
                 (unsigned long)vi.dwMajorVersion, (unsigned long)vi.dwMinorVersion,
                 (unsigned long)vi.dwBuildNumber);
    snprintf(out->arch, sizeof(out->arch), "%s", arch_name());

    wchar_t host[256];
    DWORD n = 256;
    char *utf8 =
        GetComputerNameExW(ComputerNameDnsHostname, host, &n) ? mmr_utf8_from_w(host) : NULL;
    snprintf(out->hostname, sizeof(out->hostname), "%s", utf8 ? utf8 : "unknown");
    free(utf8);

    out->uptime_s = GetTickCount64() / 1000;
    MEMORYSTATUSEX mem = {.dwLength = sizeof(mem)};
    if (GlobalMemoryStatusEx(&mem)) {
        out->mem_total = mem.ullTotalPhys;
        out->mem_free = mem.ullAvailPhys;
    }
    return 0;
}

/* ---- hardware identifier -------------------------------------------------- */

/* What GetSystemFirmwareTable('RSMB') returns: a header, then the raw
 * SMBIOS structure table. */
struct raw_smbios {
    BYTE calling_method;
    BYTE major;
    BYTE minor;
    BYTE dmi_revision;
    DWORD length;
    BYTE data[];
};

/* Firmware often ships all-zero or all-F UUIDs: not an identity. */
static bool uuid_is_real(const BYTE *u)
{
    for (int i = 0; i < 16; i++) {
        BYTE hi = u[i] >> 4, lo = u[i] & 0xF;
        if ((hi != 0 && hi != 0xF) || (lo != 0 && lo != 0xF))
            return true;
    }
    return false;
}

/* The UUID of the System Information structure (type 1), formatted the way
 * Linux shows it in /sys/class/dmi/id/product_uuid: since SMBIOS 2.6 the
 * first three fields are little-endian. */
static bool smbios_uuid(char *buf, size_t len)
{
    UINT size = GetSystemFirmwareTable(RSMB, 0, NULL, 0);
    if (size < sizeof(struct raw_smbios))
        return false;
    struct raw_smbios *raw = mmr_malloc(size);
    bool found = false;
    if (GetSystemFirmwareTable(RSMB, 0, raw, size) != size || raw->length > size - sizeof(*raw))
        goto out;
    const BYTE *p = raw->data, *end = raw->data + raw->length;
    while (!found && end - p >= 4) {
        BYTE type = p[0], hlen = p[1];
        if (hlen < 4 || hlen > end - p || type == 127)
            break;
        if (type == 1 && hlen >= 0x18 && uuid_is_real(p + 8)) {
            const BYTE *u = p + 8;
            bool le = raw->major > 2 || (raw->major == 2 && raw->minor >= 6);
            unsigned long a = le ? (unsigned long)u[3] << 24 | (unsigned long)u[2] << 16 |
                                       (unsigned long)u[1] << 8 | u[0]
                                 : (unsigned long)u[0] << 24 | (unsigned long)u[1] << 16 |
                                       (unsigned long)u[2] << 8 | u[3];
            unsigned b = le ? (unsigned)(u[5] << 8 | u[4]) : (unsigned)(u[4] << 8 | u[5]);
            unsigned c = le ? (unsigned)(u[7] << 8 | u[6]) : (unsigned)(u[6] << 8 | u[7]);
            snprintf(buf, len, "%08lx-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x", a, b, c, u[8],
                     u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
            found = true;
            break;
        }
        /* The formatted area is followed by strings, ended by two NULs. */
        const BYTE *q = p + hlen;
        while (end - q >= 2 && !(q[0] == 0 && q[1] == 0))
            q++;
        if (end - q < 2)
            break;
        p = q + 2;
    }
out:
    free(raw);
    return found;
}

/* The GUID Windows setup gave this installation. */
static bool machine_guid(char *buf, size_t len)
{
    char guid[64];
    if (!reg_string(L"SOFTWARE\\Microsoft\\Cryptography", L"MachineGuid", guid, sizeof(guid)) ||
        strlen(guid) < 16)
        return false;
    for (char *c = guid; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    snprintf(buf, len, "%s", guid);
    return true;
}

int mmr_hardware_id(char *buf, size_t len)
{
    if (smbios_uuid(buf, len) || machine_guid(buf, len))
        return 0;
    return mmr_err_set(MMR_ENOENT, "no hardware or machine identifier on this system "
                                   "(set [agent] hardware_id in agent.conf)");
}

int64_t mmr_process_id(void)
{
    return (int64_t)GetCurrentProcessId();
}
