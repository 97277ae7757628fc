/* Tests for drivers/linux/power.c against fake sysfs trees built in
 * temporary directories: laptops on battery and on AC, desktops, odd files. */
#include <criterion/criterion.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "drivers/power.h"
#include "shared/err.h"
#include "testutil.h"

static char root[512];

static void setup(void)
{
    mmr_test_mkdtemp("mmr-power", root, sizeof(root));
}

static void teardown(void)
{
    mmr_test_rmtree(root);
}

/* Creates <root>/class/power_supply/<supply>/<attr> holding value, with the
 * directories on the way. */
static void put(const char *supply, const char *attr, const char *value)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/class", root);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/class/power_supply", root);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/class/power_supply/%s", root, supply);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/class/power_supply/%s/%s", root, supply, attr);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    fputs(value, f);
    fclose(f);
}

static void make_battery(const char *name, const char *status, const char *capacity)
{
    put(name, "type", "Battery\n");
    put(name, "present", "1\n");
    put(name, "status", status);
    if (capacity)
        put(name, "capacity", capacity);
}

static struct mmr_power read_ok(void)
{
    struct mmr_power p;
    int rc = mmr_power_read(root, &p);
    cr_assert_eq(rc, 0, "mmr_power_read: %d %s", rc, mmr_err_msg());
    return p;
}

TestSuite(power, .init = setup, .fini = teardown);

Test(power, laptop_on_battery)
{
    put("AC", "type", "Mains\n");
    put("AC", "online", "0\n");
    make_battery("BAT0", "Discharging\n", "37\n");
    struct mmr_power p = read_ok();
    cr_expect_not(p.on_ac);
    cr_expect(p.has_battery);
    cr_expect_eq(p.battery_percent, 37);
}

Test(power, laptop_on_ac_charging)
{
    put("AC", "type", "Mains\n");
    put("AC", "online", "1\n");
    make_battery("BAT0", "Charging\n", "80\n");
    struct mmr_power p = read_ok();
    cr_expect(p.on_ac);
    cr_expect(p.has_battery);
    cr_expect_eq(p.battery_percent, 80);
}

Test(power, usb_c_charger_counts_as_ac)
{
    put("AC", "type", "Mains\n");
    put("AC", "online", "0\n");
    put("ucsi-source-psy-USBC000:001", "type", "USB\n");
    put("ucsi-source-psy-USBC000:001", "online", "1\n");
    make_battery("BAT0", "Not charging\n", "100\n");
    struct mmr_power p = read_ok();
    cr_expect(p.on_ac);
}

Test(power, battery_status_without_adapter)
{
    make_battery("BAT0", "Discharging\n", "50\n");
    cr_expect_not(read_ok().on_ac);
    put("BAT0", "status", "Charging\n");
    cr_expect(read_ok().on_ac);
    /* Full with nothing else known: nothing says we are on battery. */
    put("BAT0", "status", "Full\n");
    cr_expect(read_ok().on_ac);
}

Test(power, adapter_offline_battery_status_unknown)
{
    put("ADP1", "type", "Mains\n");
    put("ADP1", "online", "0\n");
    make_battery("BAT1", "Unknown\n", "64\n");
    cr_expect_not(read_ok().on_ac);
}

Test(power, desktop_no_battery)
{
    put("AC", "type", "Mains\n");
    put("AC", "online", "1\n");
    struct mmr_power p = read_ok();
    cr_expect(p.on_ac);
    cr_expect_not(p.has_battery);
    cr_expect_eq(p.battery_percent, -1);
}

Test(power, adapter_offline_without_battery_is_ac)
{
    put("AC", "type", "Mains\n");
    put("AC", "online", "0\n");
    struct mmr_power p = read_ok();
    cr_expect(p.on_ac);
    cr_expect_not(p.has_battery);
}

Test(power, empty_power_supply_dir)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/class", root);
    cr_assert_eq(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/class/power_supply", root);
    cr_assert_eq(mkdir(path, 0755), 0);
    struct mmr_power p = read_ok();
    cr_expect(p.on_ac);
    cr_expect_not(p.has_battery);
    cr_expect_eq(p.battery_percent, -1);
}

Test(power, missing_power_supply_dir_is_desktop)
{
    struct mmr_power p = read_ok();
    cr_expect(p.on_ac);
    cr_expect_not(p.has_battery);
    cr_expect_eq(p.battery_percent, -1);
}

Test(power, missing_root)
{
    char missing[128];
    snprintf(missing, sizeof(missing), "%s/nope", root);
    struct mmr_power p = {.on_ac = false, .has_battery = true, .battery_percent = 5};
    cr_expect_eq(mmr_power_read(missing, &p), MMR_ENOENT);
    cr_expect(strstr(mmr_err_msg(), "nope") != NULL, "message: %s", mmr_err_msg());
    cr_expect(p.on_ac);
    cr_expect_not(p.has_battery);
    cr_expect_eq(p.battery_percent, -1);
}

Test(power, power_supply_is_a_file)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/class", root);
    cr_assert_eq(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/class/power_supply", root);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fclose(f);
    struct mmr_power p;
    cr_expect_eq(mmr_power_read(root, &p), MMR_EIO);
    cr_expect(strstr(mmr_err_msg(), "power_supply") != NULL, "message: %s", mmr_err_msg());
    cr_expect(p.on_ac);
}

Test(power, garbage_capacity)
{
    make_battery("BAT0", "Discharging\n", "lots\n");
    struct mmr_power p = read_ok();
    cr_expect(p.has_battery);
    cr_expect_not(p.on_ac);
    cr_expect_eq(p.battery_percent, -1);
}

Test(power, odd_capacity_values)
{
    make_battery("BAT0", "Discharging\n", "");
    cr_expect_eq(read_ok().battery_percent, -1);
    put("BAT0", "capacity", "-3\n");
    cr_expect_eq(read_ok().battery_percent, -1);
    put("BAT0", "capacity", "104\n");
    cr_expect_eq(read_ok().battery_percent, 100);
    put("BAT0", "capacity", "  42  \n");
    cr_expect_eq(read_ok().battery_percent, 42);
    put("BAT0", "capacity", "42%\n");
    cr_expect_eq(read_ok().battery_percent, -1);
    put("BAT0", "capacity", "99999999999999999999999\n");
    cr_expect_eq(read_ok().battery_percent, -1);
}

Test(power, capacity_from_energy_or_charge)
{
    make_battery("BAT0", "Discharging\n", NULL);
    put("BAT0", "energy_now", "25000000\n");
    put("BAT0", "energy_full", "50000000\n");
    cr_expect_eq(read_ok().battery_percent, 50);

    make_battery("BAT1", "Discharging\n", NULL);
    put("BAT1", "charge_now", "1000\n");
    put("BAT1", "charge_full", "4000\n");
    /* The mean of 50 and 25, rounded. */
    cr_expect_eq(read_ok().battery_percent, 38);

    put("BAT1", "charge_full", "0\n");
    cr_expect_eq(read_ok().battery_percent, 50);
}

Test(power, two_batteries_mean)
{
    make_battery("BAT0", "Discharging\n", "90\n");
    make_battery("BAT1", "Discharging\n", "20\n");
    struct mmr_power p = read_ok();
    cr_expect_eq(p.battery_percent, 55);
    cr_expect_not(p.on_ac);
}

Test(power, peripheral_and_absent_batteries_ignored)
{
    put("hid-mouse-battery", "type", "Battery\n");
    put("hid-mouse-battery", "scope", "Device\n");
    put("hid-mouse-battery", "status", "Discharging\n");
    put("hid-mouse-battery", "capacity", "10\n");
    make_battery("BAT1", "Unknown\n", "0\n");
    put("BAT1", "present", "0\n");
    struct mmr_power p = read_ok();
    cr_expect(p.on_ac);
    cr_expect_not(p.has_battery);
    cr_expect_eq(p.battery_percent, -1);
}

Test(power, unknown_types_and_missing_files)
{
    put("weird", "type", "Flux capacitor\n");
    put("weird", "online", "0\n");
    put("notype", "online", "0\n");
    put("UPS0", "type", "UPS\n");
    put("UPS0", "online", "0\n");
    put("AC", "type", "Mains\n"); /* no online file */
    make_battery("BAT0", "", "12\n");
    struct mmr_power p = read_ok();
    cr_expect(p.on_ac);
    cr_expect(p.has_battery);
    cr_expect_eq(p.battery_percent, 12);
}

Test(power, garbage_online_and_binary_type)
{
    put("AC", "type", "Mains\n");
    put("AC", "online", "yes\n");
    put("BIN", "type", "\x01\x02\xff");
    make_battery("BAT0", "Discharging\n", "70\n");
    struct mmr_power p = read_ok();
    cr_expect_not(p.on_ac);
    cr_expect_eq(p.battery_percent, 70);
}

Test(power, attribute_that_is_a_directory_or_fifo)
{
    char path[512];
    make_battery("BAT0", "Discharging\n", NULL);
    snprintf(path, sizeof(path), "%s/class/power_supply/BAT0/capacity", root);
    cr_assert_eq(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/class/power_supply/BAT0/energy_now", root);
    cr_assert_eq(mkfifo(path, 0600), 0);
    put("BAT0", "energy_full", "100\n");
    struct mmr_power p = read_ok();
    cr_expect(p.has_battery);
    cr_expect_eq(p.battery_percent, -1);
}

Test(power, supply_that_is_a_file)
{
    char path[512];
    make_battery("BAT0", "Charging\n", "33\n");
    snprintf(path, sizeof(path), "%s/class/power_supply/stray", root);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fclose(f);
    struct mmr_power p = read_ok();
    cr_expect(p.on_ac);
    cr_expect_eq(p.battery_percent, 33);
}

Test(power, symlinked_supplies_like_real_sysfs)
{
    /* Real sysfs: class/power_supply/BAT0 -> ../../devices/.../BAT0 */
    char dir[512];
    char link[512];
    put("AC", "type", "Mains\n");
    put("AC", "online", "0\n");
    snprintf(dir, sizeof(dir), "%s/devices", root);
    cr_assert_eq(mkdir(dir, 0755), 0);
    snprintf(dir, sizeof(dir), "%s/devices/BAT0", root);
    cr_assert_eq(mkdir(dir, 0755), 0);
    static const char *const attrs[][2] = {
        {"type", "Battery\n"}, {"status", "Unknown\n"}, {"capacity", "61\n"}};
    for (size_t i = 0; i < 3; i++) {
        char path[600];
        snprintf(path, sizeof(path), "%s/%s", dir, attrs[i][0]);
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f);
        fputs(attrs[i][1], f);
        fclose(f);
    }
    snprintf(link, sizeof(link), "%s/class/power_supply/BAT0", root);
    cr_assert_eq(symlink("../../devices/BAT0", link), 0);
    struct mmr_power p = read_ok();
    cr_expect(p.has_battery);
    cr_expect_not(p.on_ac);
    cr_expect_eq(p.battery_percent, 61);
}
