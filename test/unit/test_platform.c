/* Unit tests for the platform layer that hold on every system (Linux, and
 * Windows under Wine); test_platform_posix.c and test_platform_win32.c hold
 * the rest. Japanese file names check that UTF-8 paths reach the OS intact. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "testutil.h"

static char dir[512];

static void setup(void)
{
    mmr_test_mkdtemp("mmr-plat", dir, sizeof(dir));
}

static void teardown(void)
{
    cr_expect_eq(mmr_test_rmtree(dir), 0);
}

TestSuite(platform, .init = setup, .fini = teardown);

static bool private_path(const char *p)
{
    bool priv = false;
    cr_assert_eq(mmr_file_is_private(p, &priv), 0, "%s", mmr_err_msg());
    return priv;
}

static char *read_text(const char *p)
{
    char *text;
    size_t len;
    cr_assert_eq(mmr_file_read_all(p, 1 << 20, &text, &len), 0, "%s", mmr_err_msg());
    cr_assert_eq(strlen(text), len);
    return text;
}

Test(platform, mkdir_p_private_leaf)
{
    char *a = mmr_path_join(dir, "a");
    char *ab = mmr_path_join(a, "b");
    char *deep = mmr_path_join(ab, "c");
    cr_assert_eq(mmr_mkdir_p(deep, true), 0, "%s", mmr_err_msg());
    cr_expect(mmr_path_exists(deep));
    cr_expect(private_path(deep));
    /* Again: an existing directory is fine. */
    cr_assert_eq(mmr_mkdir_p(deep, true), 0, "%s", mmr_err_msg());
    cr_assert_eq(mmr_mkdir_p(a, false), 0, "%s", mmr_err_msg());
    /* An existing, too-open directory is tightened. */
    mmr_test_expose_to_others(deep);
    cr_expect_not(private_path(deep));
    cr_assert_eq(mmr_mkdir_p(deep, true), 0, "%s", mmr_err_msg());
    cr_expect(private_path(deep));
    /* A file in the way is an error, at the leaf or above it. */
    char *file = mmr_path_join(dir, "file");
    cr_assert_eq(mmr_file_write_atomic(file, "x", 1), 0);
    cr_expect_eq(mmr_mkdir_p(file, false), MMR_EEXIST);
    char *below = mmr_path_join(file, "sub");
    cr_expect_eq(mmr_mkdir_p(below, false), MMR_EEXIST);
    cr_expect_eq(mmr_mkdir_p("", false), MMR_EINVAL);
    free(below);
    free(file);
    free(deep);
    free(ab);
    free(a);
}

Test(platform, read_all_limits)
{
    char *p = mmr_path_join(dir, "f");
    cr_assert_eq(mmr_file_write_atomic(p, "hello", 5), 0);
    cr_expect(private_path(p));
    char *text;
    size_t len;
    cr_assert_eq(mmr_file_read_all(p, 5, &text, &len), 0);
    cr_expect_eq(len, 5);
    cr_expect_str_eq(text, "hello");
    free(text);
    cr_expect_eq(mmr_file_read_all(p, 4, &text, &len), MMR_ETOOBIG);
    cr_expect(strstr(mmr_err_msg(), "limit"));
    cr_expect_eq(mmr_file_read_all(dir, 100, &text, &len), MMR_EINVAL, "a directory");
    char *missing = mmr_path_join(dir, "missing");
    cr_expect_eq(mmr_file_read_all(missing, 100, &text, &len), MMR_ENOENT);
    cr_expect(strstr(mmr_err_msg(), "missing"));
    cr_expect_eq(mmr_file_read_tail(missing, 100, &text, &len), MMR_ENOENT);
    free(missing);
    free(p);
}

Test(platform, read_tail_starts_at_a_line)
{
    char *p = mmr_path_join(dir, "log");
    const char *text = "first line\nsecond line\nthird\n";
    cr_assert_eq(mmr_file_write_atomic(p, text, strlen(text)), 0);
    char *out;
    size_t len;
    cr_assert_eq(mmr_file_read_tail(p, 15, &out, &len), 0);
    cr_expect_str_eq(out, "third\n");
    free(out);
    cr_assert_eq(mmr_file_read_tail(p, 1000, &out, &len), 0);
    cr_expect_str_eq(out, text);
    free(out);
    free(p);
}

Test(platform, atomic_write_replaces)
{
    char *p = mmr_path_join(dir, "state");
    cr_assert_eq(mmr_file_write_atomic(p, "one", 3), 0);
    cr_assert_eq(mmr_file_write_atomic(p, "two!", 4), 0);
    cr_expect_eq(mmr_file_size(p), 4);
    char *text = read_text(p);
    cr_expect_str_eq(text, "two!");
    free(text);
    cr_assert_eq(mmr_file_write_atomic(p, "", 0), 0);
    cr_expect_eq(mmr_file_size(p), 0);
    char *bad = mmr_asprintf("%s/no/such/dir/file", dir);
    cr_expect_eq(mmr_file_write_atomic(bad, "x", 1), MMR_ENOENT);
    free(bad);
    free(p);
}

Test(platform, make_private_and_check)
{
    char *p = mmr_path_join(dir, "db");
    cr_assert_eq(mmr_file_make_private(p), 0, "%s", mmr_err_msg());
    cr_expect(mmr_path_exists(p));
    cr_expect_eq(mmr_file_size(p), 0);
    cr_expect(private_path(p));
    mmr_test_expose_to_others(p);
    cr_expect_not(private_path(p));
    cr_assert_eq(mmr_file_make_private(p), 0, "%s", mmr_err_msg());
    cr_expect(private_path(p));
    bool priv;
    char *missing = mmr_path_join(dir, "missing");
    cr_expect_eq(mmr_file_is_private(missing, &priv), MMR_ENOENT);
    free(missing);
    free(p);
}

Test(platform, append_file_survives_rotation)
{
    char *p = mmr_path_join(dir, "append.log");
    char *rotated = mmr_path_join(dir, "append.log.1");
    struct mmr_file *f;
    cr_assert_eq(mmr_file_open_append(p, &f), 0, "%s", mmr_err_msg());
    cr_expect_eq(mmr_file_append(f, "ab", 2), 0);
    cr_expect_eq(mmr_file_append(f, "cd", 2), 0);
    cr_expect_eq(mmr_file_sync(f), 0, "%s", mmr_err_msg());
    cr_expect_eq(mmr_file_size(p), 4);
    cr_expect(private_path(p));
    /* A log is renamed while its writer still has it open; the writer
     * keeps appending to the renamed file until it reopens. */
    cr_assert_eq(mmr_file_rename(p, rotated), 0, "%s", mmr_err_msg());
    cr_expect_eq(mmr_file_append(f, "ef", 2), 0);
    mmr_file_close(f);
    cr_expect_not(mmr_path_exists(p));
    char *text = read_text(rotated);
    cr_expect_str_eq(text, "abcdef");
    free(text);
    /* Appending to an existing file adds to its end. */
    cr_assert_eq(mmr_file_write_atomic(p, "old\n", 4), 0);
    cr_assert_eq(mmr_file_open_append(p, &f), 0, "%s", mmr_err_msg());
    cr_expect_eq(mmr_file_append(f, "new\n", 4), 0);
    mmr_file_close(f);
    text = read_text(p);
    cr_expect_str_eq(text, "old\nnew\n");
    free(text);
    /* Renaming replaces the target. */
    cr_assert_eq(mmr_file_rename(p, rotated), 0, "%s", mmr_err_msg());
    cr_expect_eq(mmr_file_size(rotated), 8);
    cr_expect_lt(mmr_file_rename(p, rotated), 0, "the source is gone");
    mmr_file_close(NULL);
    char *missing = mmr_asprintf("%s/no/such/dir/log", dir);
    cr_expect_eq(mmr_file_open_append(missing, &f), MMR_ENOENT);
    free(missing);
    cr_expect_lt(mmr_file_size("/nonexistent/x"), 0);
    free(rotated);
    free(p);
}

Test(platform, remove_is_quiet_about_missing_files)
{
    char *p = mmr_path_join(dir, "gone");
    cr_assert_eq(mmr_file_write_atomic(p, "x", 1), 0);
    cr_expect_eq(mmr_file_remove(p), 0);
    cr_expect_not(mmr_path_exists(p));
    cr_expect_eq(mmr_file_remove(p), 0);
    free(p);
}

Test(platform, lock_holds_the_pid)
{
    char *p = mmr_path_join(dir, "agent.lock");
    struct mmr_lock *lock;
    cr_assert_eq(mmr_lock_acquire(p, &lock), 0, "%s", mmr_err_msg());
    /* Readable while locked, so that a second instance can name the holder. */
    char *text = read_text(p);
    cr_expect_eq(strtoll(text, NULL, 10), mmr_process_id());
    free(text);
    cr_expect(private_path(p));
    mmr_lock_release(lock);
    cr_assert_eq(mmr_lock_acquire(p, &lock), 0, "released lock not available");
    mmr_lock_release(lock);
    mmr_lock_release(NULL);
    char *bad = mmr_asprintf("%s/no/such/dir/agent.lock", dir);
    cr_expect_lt(mmr_lock_acquire(bad, &lock), 0);
    free(bad);
    free(p);
}

Test(platform, time_format)
{
    char buf[32];
    mmr_time_format(0, buf);
    cr_expect_str_eq(buf, "1970-01-01T00:00:00.000Z");
    mmr_time_format(1795305600123LL, buf);
    cr_expect_str_eq(buf, "2026-11-22T00:00:00.123Z");
    mmr_time_format(-1, buf);
    cr_expect_str_eq(buf, "1969-12-31T23:59:59.999Z");
    mmr_time_format(951782400000LL, buf);
    cr_expect_str_eq(buf, "2000-02-29T00:00:00.000Z");
    uint64_t a = mmr_time_mono_ms();
    mmr_test_sleep_ms(20);
    uint64_t b = mmr_time_mono_ms();
    cr_expect_geq(b, a + 15);
    cr_expect_lt(b, a + 5000);
    int64_t now = mmr_time_now_ms();
    cr_expect_gt(now, 1700000000000LL);
    int64_t c_now = (int64_t)time(NULL) * 1000;
    cr_expect_lt(now > c_now ? now - c_now : c_now - now, 5000, "wall clock agrees with time()");
}

Test(platform, paths_join)
{
    char *p = mmr_path_join(dir, "x");
    cr_expect_eq(strncmp(p, dir, strlen(dir)), 0);
    cr_expect_eq(strlen(p), strlen(dir) + 2);
    cr_expect_str_eq(p + strlen(dir) + 1, "x");
    cr_assert_eq(mmr_file_write_atomic(p, "1", 1), 0);
    cr_expect(mmr_path_exists(p));
    /* A trailing separator on the directory is not doubled. */
    char *slash = mmr_asprintf("%s/", dir);
    char *q = mmr_path_join(slash, "x");
    cr_expect_eq(strlen(q), strlen(p));
    cr_expect(mmr_path_exists(q));
    char *missing = mmr_path_join(dir, "missing");
    cr_expect_not(mmr_path_exists(missing));
    free(missing);
    free(q);
    free(slash);
    free(p);
}

Test(platform, default_locations)
{
    cr_expect_neq(mmr_default_data_dir()[0], '\0');
    cr_expect_neq(mmr_default_run_dir()[0], '\0');
    cr_expect(strstr(mmr_default_config_path(), "agent.conf"));
    cr_expect_str_eq(mmr_default_data_dir(), mmr_default_data_dir(), "stable");
    char *a, *b;
    cr_assert_eq(mmr_ipc_endpoint(dir, &a), 0, "%s", mmr_err_msg());
    cr_assert_eq(mmr_ipc_endpoint(dir, &b), 0);
    cr_expect_str_eq(a, b, "the same directory gives the same endpoint");
    free(b);
    char *other = mmr_path_join(dir, "other");
    cr_assert_eq(mmr_ipc_endpoint(other, &b), 0);
    cr_expect_str_neq(a, b);
    free(b);
    free(other);
    free(a);
}

Test(platform, system_facts)
{
    struct mmr_sysinfo si;
    cr_assert_eq(mmr_sysinfo_get(&si), 0);
    cr_expect_neq(si.hostname[0], '\0');
    cr_expect_neq(si.os_name[0], '\0');
    cr_expect_neq(si.os_version[0], '\0');
    cr_expect_neq(si.arch[0], '\0');
    cr_expect_gt(si.mem_total, 0);
    cr_expect_leq(si.mem_free, si.mem_total);
    uint64_t free_b, total;
    cr_assert_eq(mmr_disk_space(dir, &free_b, &total), 0, "%s", mmr_err_msg());
    cr_expect_gt(total, 0);
    cr_expect_leq(free_b, total);
    cr_expect_lt(mmr_disk_space("/nonexistent/path", &free_b, &total), 0);
    unsigned char a[32] = {0}, b[32] = {0};
    cr_assert_eq(mmr_random_bytes(a, sizeof(a)), 0);
    cr_assert_eq(mmr_random_bytes(b, sizeof(b)), 0);
    cr_expect_neq(memcmp(a, b, sizeof(a)), 0);
    cr_assert_eq(mmr_random_bytes(a, 0), 0);
    cr_expect_gt(mmr_process_id(), 0);
    char hw[65], hw2[65];
    cr_assert_eq(mmr_hardware_id(hw, sizeof(hw)), 0, "%s", mmr_err_msg());
    cr_assert_eq(mmr_hardware_id(hw2, sizeof(hw2)), 0);
    cr_expect_str_eq(hw, hw2, "stable");
    cr_expect_geq(strlen(hw), 16);
    for (const char *c = hw; *c; c++)
        cr_expect(!(*c >= 'A' && *c <= 'Z'), "lower-case: %s", hw);
}

/* Everything a data directory needs, under テスト with a file named 日本語.txt. */
Test(platform, japanese_paths)
{
    char *jdir = mmr_path_join(dir, "テスト");
    char *sub = mmr_path_join(jdir, "データ");
    cr_assert_eq(mmr_mkdir_p(sub, true), 0, "%s", mmr_err_msg());
    cr_expect(mmr_path_exists(jdir));
    cr_expect(private_path(sub));

    char *file = mmr_path_join(sub, "日本語.txt");
    const char *text = "こんにちは\n";
    cr_assert_eq(mmr_file_write_atomic(file, text, strlen(text)), 0, "%s", mmr_err_msg());
    cr_expect(mmr_path_exists(file));
    cr_expect_eq(mmr_file_size(file), (int64_t)strlen(text));
    cr_expect(private_path(file));
    char *got = read_text(file);
    cr_expect_str_eq(got, text);
    free(got);

    struct mmr_file *f;
    cr_assert_eq(mmr_file_open_append(file, &f), 0, "%s", mmr_err_msg());
    cr_expect_eq(mmr_file_append(f, "さようなら\n", strlen("さようなら\n")), 0);
    cr_expect_eq(mmr_file_sync(f), 0);
    mmr_file_close(f);
    char *tail;
    size_t len;
    cr_assert_eq(mmr_file_read_tail(file, 20, &tail, &len), 0, "%s", mmr_err_msg());
    cr_expect_str_eq(tail, "さようなら\n");
    free(tail);

    char *renamed = mmr_path_join(sub, "名前.txt");
    cr_assert_eq(mmr_file_rename(file, renamed), 0, "%s", mmr_err_msg());
    cr_expect_not(mmr_path_exists(file));
    cr_expect(mmr_path_exists(renamed));
    cr_assert_eq(mmr_file_make_private(file), 0, "%s", mmr_err_msg());
    cr_expect(private_path(file));

    char *lockp = mmr_path_join(sub, "ロック");
    struct mmr_lock *lock;
    cr_assert_eq(mmr_lock_acquire(lockp, &lock), 0, "%s", mmr_err_msg());
    mmr_lock_release(lock);

    uint64_t free_b, total;
    cr_assert_eq(mmr_disk_space(sub, &free_b, &total), 0, "%s", mmr_err_msg());
    cr_expect_gt(total, 0);
    cr_assert_eq(mmr_disk_space(renamed, &free_b, &total), 0, "%s", mmr_err_msg());
    cr_expect_gt(total, 0);

    char *ep;
    cr_assert_eq(mmr_ipc_endpoint(sub, &ep), 0, "%s", mmr_err_msg());
    free(ep);
    cr_expect_eq(mmr_file_remove(renamed), 0);
    cr_expect_not(mmr_path_exists(renamed));
    free(lockp);
    free(renamed);
    free(file);
    free(sub);
    free(jdir);
}
