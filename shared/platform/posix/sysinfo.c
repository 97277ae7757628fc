/* POSIX system facts for status and diagnostics: OS name, kernel, host,
 * uptime, memory. */
#include "shared/platform.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "shared/err.h"

/* PRETTY_NAME="Debian GNU/Linux 12 (bookworm)" from os-release. */
static void read_os_name(char *out, size_t cap)
{
    snprintf(out, cap, "Linux");
    FILE *f = fopen("/etc/os-release", "re");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "PRETTY_NAME=", 12) != 0)
            continue;
        char *v = line + 12;
        v[strcspn(v, "\r\n")] = '\0';
        size_t n = strlen(v);
        if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
            v[n - 1] = '\0';
            v++;
        }
        snprintf(out, cap, "%s", v);
        break;
    }
    fclose(f);
}

int mmr_sysinfo_get(struct mmr_sysinfo *out)
{
    memset(out, 0, sizeof(*out));
    read_os_name(out->os_name, sizeof(out->os_name));
    struct utsname un;
    if (uname(&un) == 0) {
        snprintf(out->os_version, sizeof(out->os_version), "%s", un.release);
        snprintf(out->arch, sizeof(out->arch), "%s", un.machine);
    }
    if (gethostname(out->hostname, sizeof(out->hostname) - 1) != 0)
        snprintf(out->hostname, sizeof(out->hostname), "unknown");
    struct sysinfo si;
    if (sysinfo(&si) == 0) {
        out->uptime_s = (uint64_t)si.uptime;
        out->mem_total = (uint64_t)si.totalram * si.mem_unit;
        out->mem_free = (uint64_t)(si.freeram + si.bufferram) * si.mem_unit;
    }
    return 0;
}

/* First line of a small file, trimmed and lower-cased; false if unusable. */
static bool read_id_file(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    char line[128] = "";
    bool ok = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    if (!ok)
        return false;
    line[strcspn(line, " \r\n")] = '\0';
    size_t n = strlen(line);
    bool any_digit = false;
    for (size_t i = 0; i < n; i++) {
        line[i] = (char)tolower((unsigned char)line[i]);
        if (!isxdigit((unsigned char)line[i]) && line[i] != '-')
            return false; /* "Not Settable", "Default string", ... */
        if (line[i] != '0' && line[i] != 'f' && line[i] != '-')
            any_digit = true;
    }
    /* Firmware often ships all-zero or all-F UUIDs: not an identity. */
    if (n < 16 || !any_digit)
        return false;
    snprintf(buf, len, "%s", line);
    return true;
}

int mmr_hardware_id(char *buf, size_t len)
{
    if (read_id_file("/sys/class/dmi/id/product_uuid", buf, len) ||
        read_id_file("/etc/machine-id", buf, len) ||
        read_id_file("/var/lib/dbus/machine-id", buf, len))
        return 0;
    return mmr_err_set(MMR_ENOENT, "no hardware or machine identifier on this system "
                                   "(set [agent] hardware_id in agent.conf)");
}

int64_t mmr_process_id(void)
{
    return (int64_t)getpid();
}
