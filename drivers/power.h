/* Power state sensing (mains or battery, charge level) for the scan throttle
 * and diagnostics. One implementation per OS: drivers/linux/power.c reads
 * sysfs under a root path so that tests can drive it with a fake tree. */
#ifndef MMR_POWER_H
#define MMR_POWER_H

#include <stdbool.h>

struct mmr_power {
    bool on_ac;          /* running on mains power (true when nothing says otherwise) */
    bool has_battery;    /* a battery that powers the system (not a mouse's) is present */
    int battery_percent; /* 0-100, the mean over system batteries; -1 unknown */
};

/* Linux: reads <sysfs_root>/class/power_supply ("/sys" in production). Each supply's
 * type, online, scope, present, capacity and status files are read when
 * present; missing, unreadable or malformed ones count as unknown. A battery
 * without a readable capacity falls back to energy_now/energy_full or
 * charge_now/charge_full.
 *
 * on_ac is decided by the first rule that applies: an adapter (Mains, USB,
 * ...) reports online=1: true; a system battery is Discharging: false; one is
 * Charging: true; an adapter reports online=0 and there is a battery: false;
 * otherwise true. A machine without a power_supply directory (desktops, VMs,
 * containers) is on AC with no battery. A missing sysfs_root is MMR_ENOENT,
 * an unreadable power_supply directory MMR_EIO; on error *out holds those
 * same no-battery defaults.
 *
 * Windows: sysfs_root is ignored; GetSystemPowerStatus answers (an unknown
 * AC line status counts as mains). */
int mmr_power_read(const char *sysfs_root, struct mmr_power *out);

#endif
