/* The POSIX half of the unit tests' system-specific helpers (testutil.h). */
#include "testutil.h"

#include <criterion/criterion.h>

#include <sys/stat.h>

void mmr_test_expose_to_others(const char *path)
{
    cr_assert_eq(chmod(path, 0644), 0, "chmod %s", path);
}

bool mmr_test_power_reads_sysfs(void)
{
    return true;
}

bool mmr_test_sqlite_sidecars_private(void)
{
    return true;
}
