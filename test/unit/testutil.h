/* Portable helpers for the unit tests: temporary directories under the system's
 * temporary folder (uv_os_tmpdir: $TMPDIR or /tmp, GetTempPath on Windows),
 * removed with everything inside, and short sleeps. Built on libuv's uv_fs_*. */
#ifndef MMR_TEST_TESTUTIL_H
#define MMR_TEST_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Creates a new private directory "<tmp>/<prefix>-XXXXXX" and writes its path
 * to buf. Fails the running test when that is impossible. */
void mmr_test_mkdtemp(const char *prefix, char *buf, size_t len);

/* Removes path and everything below it without following symbolic links.
 * A missing path is not an error. Returns 0 or a negative libuv error. */
int mmr_test_rmtree(const char *path);

/* Writes len bytes to path, replacing it. Fails the running test on error. */
void mmr_test_write_file(const char *path, const void *data, size_t len);

/* Overwrites len bytes of an existing file at offset. Fails the running test
 * on error. */
void mmr_test_write_at(const char *path, int64_t offset, const void *data, size_t len);

/* Cuts or extends path to size bytes. Fails the running test on error. */
void mmr_test_truncate(const char *path, int64_t size);

void mmr_test_sleep_ms(unsigned ms);

/* dir joined with each following name (mmr_path_join: the system's separator),
 * up to a NULL. Allocated. */
char *mmr_test_path(const char *dir, ...) __attribute__((sentinel));

/* ---- testutil_posix.c / testutil_win32.c ---------------------------------- */

/* Lets other users read path (mode 0644; an ACL entry for Everyone on
 * Windows), so that owner-only checks have something to find. */
void mmr_test_expose_to_others(const char *path);

/* True when drivers/power reads the sysfs tree it is given (Linux), so a fake
 * tree decides what it reports; Windows asks the system instead. */
bool mmr_test_power_reads_sysfs(void);

/* True where the -wal and -shm files SQLite creates beside a database are as
 * private as their directory: on Linux SQLite gives them the database's mode;
 * on Windows they inherit the directory's ACL. Not under Wine, which ignores
 * the inheritable entries of the directory and gives a new file a default
 * DACL that lets others read it. */
bool mmr_test_sqlite_sidecars_private(void);

#endif
