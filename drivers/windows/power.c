/* Power state on Windows from GetSystemPowerStatus: the AC line status, the
 * battery flags and the remaining charge, as the taskbar's battery icon sees
 * them. */
#include "drivers/power.h"

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>

#include "shared/err.h"

/* BatteryFlag bits (winbase.h names them only in the documentation). */
#define FLAG_NO_BATTERY 128
#define FLAG_UNKNOWN    255
#define AC_OFFLINE      0
#define PERCENT_UNKNOWN 255

int mmr_power_read(const char *sysfs_root, struct mmr_power *out)
{
    (void)sysfs_root; /* Windows has one source of truth, not a tree */
    *out = (struct mmr_power){.on_ac = true, .has_battery = false, .battery_percent = -1};
    SYSTEM_POWER_STATUS st;
    if (!GetSystemPowerStatus(&st))
        return mmr_err_set(MMR_EIO, "cannot read the power status (error %lu)",
                           (unsigned long)GetLastError());
    out->has_battery = st.BatteryFlag != FLAG_UNKNOWN && !(st.BatteryFlag & FLAG_NO_BATTERY);
    /* Unknown AC status (255) counts as mains, like a missing adapter on Linux. */
    out->on_ac = !(out->has_battery && st.ACLineStatus == AC_OFFLINE);
    if (out->has_battery && st.BatteryLifePercent != PERCENT_UNKNOWN &&
        st.BatteryLifePercent <= 100)
        out->battery_percent = st.BatteryLifePercent;
    return 0;
}
