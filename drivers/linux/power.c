/* Power state on Linux from sysfs: <root>/class/power_supply/<name>/ holds one
 * directory per adapter or battery, each with small text attribute files. */
#include "drivers/power.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shared/err.h"
#include "shared/mem.h"

/* Far more than any machine has; bounds the work on a strange tree. */
#define MAX_SUPPLIES 64
#define ATTR_MAX     64

struct evidence {
    bool adapter_online;
    bool adapter_offline;
    bool discharging;
    bool charging;
    bool battery;
    long percent_sum;
    int percent_n;
};

/* Reads a small attribute file, trimmed of surrounding white space. False
 * when it is missing, not a regular file, unreadable or empty. */
static bool read_attr(const char *dir, const char *name, char *buf, size_t buflen)
{
    char *path = mmr_asprintf("%s/%s", dir, name);
    /* O_NONBLOCK: a FIFO planted in a fake tree must not hang us. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    free(path);
    if (fd < 0)
        return false;
    struct stat sb;
    ssize_t n = -1;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode)) {
        do
            n = read(fd, buf, buflen - 1);
        while (n < 0 && errno == EINTR);
    }
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        buf[--n] = '\0';
    size_t lead = strspn(buf, " \t\n");
    memmove(buf, buf + lead, (size_t)n - lead + 1);
    return buf[0] != '\0';
}

/* A whole attribute as a decimal integer. */
static bool read_long(const char *dir, const char *name, long *out)
{
    char buf[ATTR_MAX];
    if (!read_attr(dir, name, buf, sizeof(buf)))
        return false;
    char *end;
    errno = 0;
    long v = strtol(buf, &end, 10);
    if (errno != 0 || end == buf || *end != '\0')
        return false;
    *out = v;
    return true;
}

static bool attr_is(const char *dir, const char *name, const char *want)
{
    char buf[ATTR_MAX];
    return read_attr(dir, name, buf, sizeof(buf)) && strcmp(buf, want) == 0;
}

/* now/full as a percentage, for batteries that report no capacity. */
static int ratio_percent(const char *dir, const char *now_name, const char *full_name)
{
    long now;
    long full;
    if (!read_long(dir, now_name, &now) || !read_long(dir, full_name, &full) || now < 0 ||
        full <= 0)
        return -1;
    long long pct = ((long long)now * 100 + full / 2) / full;
    return pct > 100 ? 100 : (int)pct;
}

static int battery_percent(const char *dir)
{
    long cap;
    if (read_long(dir, "capacity", &cap) && cap >= 0)
        return cap > 100 ? 100 : (int)cap;
    int pct = ratio_percent(dir, "energy_now", "energy_full");
    return pct >= 0 ? pct : ratio_percent(dir, "charge_now", "charge_full");
}

/* Adapters are what can power the system from outside. UPS supplies are
 * left out: whether one is on mains says nothing about this machine's own
 * battery, and desktops behind one have no battery to save. */
static bool is_adapter(const char *type)
{
    return strcmp(type, "Mains") == 0 || strncmp(type, "USB", 3) == 0 ||
           strcmp(type, "Wireless") == 0 || strcmp(type, "BrickID") == 0;
}

static void add_supply(const char *dir, struct evidence *ev)
{
    char type[ATTR_MAX];
    if (!read_attr(dir, "type", type, sizeof(type)))
        return;
    if (is_adapter(type)) {
        long online;
        if (read_long(dir, "online", &online))
            *(online > 0 ? &ev->adapter_online : &ev->adapter_offline) = true;
        return;
    }
    if (strcmp(type, "Battery") != 0)
        return;
    /* Peripherals (mice, keyboards, headsets) report batteries with scope
     * Device; an empty battery bay reports present=0. */
    if (attr_is(dir, "scope", "Device") || attr_is(dir, "present", "0"))
        return;
    ev->battery = true;
    char status[ATTR_MAX];
    if (read_attr(dir, "status", status, sizeof(status))) {
        if (strcmp(status, "Discharging") == 0)
            ev->discharging = true;
        else if (strcmp(status, "Charging") == 0)
            ev->charging = true;
    }
    int pct = battery_percent(dir);
    if (pct >= 0) {
        ev->percent_sum += pct;
        ev->percent_n++;
    }
}

static bool decide_on_ac(const struct evidence *ev)
{
    if (ev->adapter_online)
        return true;
    if (ev->discharging)
        return false;
    if (ev->charging)
        return true;
    if (ev->adapter_offline && ev->battery)
        return false;
    return true;
}

int mmr_power_read(const char *sysfs_root, struct mmr_power *out)
{
    *out = (struct mmr_power){.on_ac = true, .has_battery = false, .battery_percent = -1};

    char *class_dir = mmr_asprintf("%s/class/power_supply", sysfs_root);
    DIR *d = opendir(class_dir);
    if (!d) {
        int err = errno;
        int rc = 0;
        struct stat sb;
        if (stat(sysfs_root, &sb) != 0 || !S_ISDIR(sb.st_mode))
            rc = mmr_err_set(MMR_ENOENT, "reading power state: sysfs root '%s' is not a directory",
                             sysfs_root);
        else if (err != ENOENT)
            rc = mmr_err_set(MMR_EIO, "reading power state: %s: %s", class_dir, strerror(err));
        free(class_dir);
        return rc;
    }

    struct evidence ev = {0};
    int seen = 0;
    struct dirent *de;
    while (seen < MAX_SUPPLIES && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char *dir = mmr_asprintf("%s/%s", class_dir, de->d_name);
        add_supply(dir, &ev);
        free(dir);
        seen++;
    }
    closedir(d);
    free(class_dir);

    out->on_ac = decide_on_ac(&ev);
    out->has_battery = ev.battery;
    if (ev.percent_n > 0)
        out->battery_percent = (int)((ev.percent_sum + ev.percent_n / 2) / ev.percent_n);
    return 0;
}
