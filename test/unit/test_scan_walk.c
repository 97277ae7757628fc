/* Tests for agent/scan_walk.c and the directory iterator under it: nested
 * trees, Japanese names, exclusions of every kind, size, depth and path
 * limits, a file root, cancelling, files that vanish mid-walk, and globs. */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "agent/scan_walk.h"
#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "testutil.h"

static char dir[512];

static void setup(void)
{
    mmr_test_mkdtemp("mmr-scanwalk", dir, sizeof(dir));
}

static void teardown(void)
{
    mmr_test_rmtree(dir);
}

TestSuite(scan_walk, .init = setup, .fini = teardown);

#define MAX_SEEN 64

struct seen {
    char *files[MAX_SEEN];
    size_t nfiles;
    char *skips[MAX_SEEN];
    enum mmr_walk_skip why[MAX_SEEN];
    size_t nskips;
    atomic_bool cancel;
    size_t cancel_after;   /* files; 0: never */
    int fail_with;         /* returned by on_file when set */
    char *remove_on_first; /* removed (with its contents) at the first file */
};

static int on_file(void *ctx, const char *path, const struct mmr_file_id *id)
{
    struct seen *s = ctx;
    cr_assert(id->regular, "%s handed out but not regular", path);
    cr_assert_lt(s->nfiles, MAX_SEEN);
    s->files[s->nfiles++] = mmr_strdup(path);
    if (s->cancel_after && s->nfiles == s->cancel_after)
        atomic_store(&s->cancel, true);
    if (s->remove_on_first && s->nfiles == 1)
        mmr_test_rmtree(s->remove_on_first);
    return s->fail_with;
}

static void on_skip(void *ctx, const char *path, enum mmr_walk_skip why, const char *detail)
{
    (void)detail;
    struct seen *s = ctx;
    cr_assert_lt(s->nskips, MAX_SEEN);
    s->why[s->nskips] = why;
    s->skips[s->nskips++] = mmr_strdup(path);
}

static void seen_free(struct seen *s)
{
    for (size_t i = 0; i < s->nfiles; i++)
        free(s->files[i]);
    for (size_t i = 0; i < s->nskips; i++)
        free(s->skips[i]);
    free(s->remove_on_first);
}

static struct mmr_walk_opts opts_for(struct seen *s)
{
    return (struct mmr_walk_opts){
        .on_file = on_file, .on_skip = on_skip, .ctx = s, .cancel = &s->cancel};
}

/* Path ends with the given components, joined with the system's separator. */
static bool ends_with(const char *path, const char *a, const char *b)
{
    char *tail = b ? mmr_path_join(a, b) : mmr_strdup(a);
    size_t pl = strlen(path), tl = strlen(tail);
    bool ok = pl > tl && strcmp(path + pl - tl, tail) == 0 && mmr_path_is_sep(path[pl - tl - 1]);
    free(tail);
    return ok;
}

static bool found(const struct seen *s, const char *a, const char *b)
{
    for (size_t i = 0; i < s->nfiles; i++)
        if (ends_with(s->files[i], a, b))
            return true;
    return false;
}

static bool skipped(const struct seen *s, const char *a, const char *b, enum mmr_walk_skip why)
{
    for (size_t i = 0; i < s->nskips; i++)
        if (s->why[i] == why && ends_with(s->skips[i], a, b))
            return true;
    return false;
}

static void put(const char *a, const char *b, const char *c, size_t size)
{
    char *p = c   ? mmr_test_path(dir, a, b, c, NULL)
              : b ? mmr_test_path(dir, a, b, NULL)
                  : mmr_test_path(dir, a, NULL);
    char *parent = c ? mmr_test_path(dir, a, b, NULL) : b ? mmr_test_path(dir, a, NULL) : NULL;
    if (parent)
        cr_assert_eq(mmr_mkdir_p(parent, false), 0, "%s", mmr_err_msg());
    char *data = mmr_calloc(1, size + 1);
    memset(data, 'x', size);
    mmr_test_write_file(p, data, size);
    free(data);
    free(parent);
    free(p);
}

static void tree(void)
{
    put("a.txt", NULL, NULL, 5);
    put("sub", "b.bin", NULL, 5);
    put("sub", "deep", "c.txt", 5);
    put("テスト", "日本語.txt", NULL, 5);
    put("logs", "x.log", NULL, 5);
}

Test(scan_walk, nested_tree_with_japanese_names)
{
    tree();
    struct seen s = {0};
    struct mmr_walk_opts o = opts_for(&s);
    struct mmr_walk_stats st;
    cr_assert_eq(mmr_walk(dir, &o, &st), 0, "%s", mmr_err_msg());
    cr_expect_eq(st.files, 5);
    cr_expect_eq(st.bytes, 25);
    cr_expect_eq(st.dirs, 5); /* root, sub, deep, テスト, logs */
    cr_expect(found(&s, "テスト", "日本語.txt"));
    cr_expect(found(&s, "deep", "c.txt"));
    cr_expect(found(&s, "a.txt", NULL));
    cr_expect_eq(s.nskips, 0);
    cr_expect_not(st.cancelled);
    seen_free(&s);
}

Test(scan_walk, root_with_trailing_separator)
{
    put("a.txt", NULL, NULL, 1);
    char *root = mmr_path_join(dir, "");
    struct seen s = {0};
    struct mmr_walk_opts o = opts_for(&s);
    cr_assert_eq(mmr_walk(root, &o, NULL), 0, "%s", mmr_err_msg());
    cr_assert_eq(s.nfiles, 1);
    cr_expect(ends_with(s.files[0], "a.txt", NULL));
    cr_expect_null(strstr(s.files[0] + 1, "//"));
    free(root);
    seen_free(&s);
}

Test(scan_walk, exclusions_by_prefix_glob_extension_and_own_dirs)
{
    tree();
    put("own", "agent.db", NULL, 3);
    char *sub = mmr_test_path(dir, "sub", NULL);
    char *own = mmr_test_path(dir, "own", NULL);
    const char *paths[] = {sub};
    const char *owns[] = {own};
    const char *globs[] = {"*.log", "**/テスト/*.txt"};
    const char *exts[] = {"TXT"};
    struct seen s = {0};
    struct mmr_walk_opts o = opts_for(&s);
    o.exclude_paths = paths;
    o.n_exclude_paths = 1;
    o.own_dirs = owns;
    o.n_own_dirs = 1;
    o.exclude_globs = globs;
    o.n_exclude_globs = 2;
    struct mmr_walk_stats st;
    cr_assert_eq(mmr_walk(dir, &o, &st), 0, "%s", mmr_err_msg());
    cr_expect_eq(st.files, 1); /* a.txt */
    cr_expect(found(&s, "a.txt", NULL));
    cr_expect(skipped(&s, "sub", NULL, MMR_WALK_EXCLUDED)); /* whole subtree */
    cr_expect(skipped(&s, "own", NULL, MMR_WALK_EXCLUDED));
    cr_expect(skipped(&s, "logs", "x.log", MMR_WALK_EXCLUDED));        /* glob on the name */
    cr_expect(skipped(&s, "テスト", "日本語.txt", MMR_WALK_EXCLUDED)); /* glob on the path */
    cr_expect_eq(st.skipped[MMR_WALK_EXCLUDED], 4);
    seen_free(&s);

    /* Extensions ignore case; a prefix is whole components only. */
    struct seen s2 = {0};
    o = opts_for(&s2);
    o.exclude_exts = exts;
    o.n_exclude_exts = 1;
    char *subprefix = mmr_test_path(dir, "su", NULL);
    const char *paths2[] = {subprefix};
    o.exclude_paths = paths2;
    o.n_exclude_paths = 1;
    cr_assert_eq(mmr_walk(dir, &o, &st), 0, "%s", mmr_err_msg());
    cr_expect_eq(st.files, 3); /* b.bin, x.log, agent.db */
    cr_expect(found(&s2, "sub", "b.bin"));
    cr_expect(skipped(&s2, "deep", "c.txt", MMR_WALK_EXCLUDED));
    seen_free(&s2);
    free(subprefix);
    free(sub);
    free(own);
}

Test(scan_walk, too_big_files)
{
    put("small", NULL, NULL, 10);
    put("big", NULL, NULL, 11);
    struct seen s = {0};
    struct mmr_walk_opts o = opts_for(&s);
    o.max_file_size = 10;
    struct mmr_walk_stats st;
    cr_assert_eq(mmr_walk(dir, &o, &st), 0);
    cr_expect_eq(st.files, 1);
    cr_expect(found(&s, "small", NULL));
    cr_expect(skipped(&s, "big", NULL, MMR_WALK_TOO_BIG));
    seen_free(&s);
}

Test(scan_walk, depth_and_path_limits)
{
    put("1", "2", "f", 1);
    char *deep = mmr_test_path(dir, "1", "2", "3", "4", NULL);
    cr_assert_eq(mmr_mkdir_p(deep, false), 0);
    struct seen s = {0};
    struct mmr_walk_opts o = opts_for(&s);
    o.max_depth = 2;
    struct mmr_walk_stats st;
    cr_assert_eq(mmr_walk(dir, &o, &st), 0);
    cr_expect_eq(st.files, 1);
    cr_expect(skipped(&s, "2", "3", MMR_WALK_TOO_DEEP));
    seen_free(&s);

    struct seen s2 = {0};
    o = opts_for(&s2);
    o.max_path = strlen(dir) + 4; /* "<dir>/1/2" fits, "<dir>/1/2/f" does not */
    cr_assert_eq(mmr_walk(dir, &o, &st), 0);
    cr_expect_eq(st.files, 0);
    cr_expect(skipped(&s2, "2", "f", MMR_WALK_TOO_LONG));
    cr_expect(skipped(&s2, "2", "3", MMR_WALK_TOO_LONG));
    seen_free(&s2);
    free(deep);
}

Test(scan_walk, cancel_mid_walk)
{
    for (int i = 0; i < 10; i++) {
        char name[16];
        snprintf(name, sizeof(name), "f%d", i);
        put(name, NULL, NULL, 1);
    }
    struct seen s = {.cancel_after = 3};
    struct mmr_walk_opts o = opts_for(&s);
    struct mmr_walk_stats st;
    cr_assert_eq(mmr_walk(dir, &o, &st), 0);
    cr_expect(st.cancelled);
    cr_expect_eq(st.files, 3);
    seen_free(&s);

    /* Cancelled before it starts: nothing at all. */
    struct seen s2 = {0};
    atomic_store(&s2.cancel, true);
    o = opts_for(&s2);
    cr_assert_eq(mmr_walk(dir, &o, &st), 0);
    cr_expect(st.cancelled);
    cr_expect_eq(st.files + st.dirs, 0);
    seen_free(&s2);
}

Test(scan_walk, callback_error_stops_the_walk)
{
    put("a", NULL, NULL, 1);
    put("b", NULL, NULL, 1);
    struct seen s = {.fail_with = MMR_EIO};
    struct mmr_walk_opts o = opts_for(&s);
    cr_expect_eq(mmr_walk(dir, &o, NULL), MMR_EIO);
    cr_expect_eq(s.nfiles, 1);
    seen_free(&s);
}

Test(scan_walk, file_root)
{
    put("テスト.exe", NULL, NULL, 7);
    char *p = mmr_test_path(dir, "テスト.exe", NULL);
    struct seen s = {0};
    struct mmr_walk_opts o = opts_for(&s);
    struct mmr_walk_stats st;
    cr_assert_eq(mmr_walk(p, &o, &st), 0, "%s", mmr_err_msg());
    cr_expect_eq(st.files, 1);
    cr_expect_eq(st.bytes, 7);
    cr_expect_eq(st.dirs, 0);
    cr_expect_str_eq(s.files[0], p);
    seen_free(&s);

    const char *exts[] = {".EXE"};
    struct seen s2 = {0};
    o = opts_for(&s2);
    o.exclude_exts = exts;
    o.n_exclude_exts = 1;
    cr_assert_eq(mmr_walk(p, &o, &st), 0);
    cr_expect_eq(st.files, 0);
    cr_expect_eq(st.skipped[MMR_WALK_EXCLUDED], 1);
    seen_free(&s2);
    free(p);
}

Test(scan_walk, missing_root_and_bad_options)
{
    char *p = mmr_test_path(dir, "nope", NULL);
    struct seen s = {0};
    struct mmr_walk_opts o = opts_for(&s);
    cr_expect_eq(mmr_walk(p, &o, NULL), MMR_ENOENT);
    o.on_file = NULL;
    cr_expect_eq(mmr_walk(dir, &o, NULL), MMR_EINVAL);
    char *long_glob = mmr_calloc(1, MMR_GLOB_MAX_PATTERN + 2);
    memset(long_glob, 'a', MMR_GLOB_MAX_PATTERN + 1);
    const char *globs[] = {long_glob};
    o = opts_for(&s);
    o.exclude_globs = globs;
    o.n_exclude_globs = 1;
    cr_expect_eq(mmr_walk(dir, &o, NULL), MMR_EINVAL);
    cr_expect_eq(s.nfiles, 0);
    free(long_glob);
    free(p);
    seen_free(&s);
}

Test(scan_walk, directories_removed_mid_walk_are_vanished)
{
    /* The first file found removes the whole tree, the directory being listed
     * included; the names the listing already holds are then gone when they
     * are identified. This is also how an unreadable directory is tested as
     * root, who can read every directory. */
    char *top = mmr_test_path(dir, "all", NULL);
    for (int i = 0; i < 8; i++) {
        char name[16];
        snprintf(name, sizeof(name), "d%d", i);
        char *f = mmr_test_path(top, name, "f", NULL);
        char *d = mmr_test_path(top, name, NULL);
        cr_assert_eq(mmr_mkdir_p(d, false), 0);
        mmr_test_write_file(f, "x", 1);
        free(f);
        free(d);
    }
    struct seen s = {0};
    struct mmr_walk_opts o = opts_for(&s);
    struct mmr_walk_stats st;
    cr_assert_eq(mmr_walk(top, &o, &st), 0);
    cr_expect_eq(st.files, 8);
    seen_free(&s);

    struct seen s2 = {.remove_on_first = mmr_strdup(top)};
    o = opts_for(&s2);
    cr_assert_eq(mmr_walk(top, &o, &st), 0, "%s", mmr_err_msg());
    cr_expect_eq(st.files, 1);
    cr_expect_geq(st.skipped[MMR_WALK_VANISHED], 1, "vanished %llu",
                  (unsigned long long)st.skipped[MMR_WALK_VANISHED]);
    seen_free(&s2);
    free(top);
}

Test(scan_walk, skip_names)
{
    cr_expect_str_eq(mmr_walk_skip_name(MMR_WALK_TOO_BIG), "too_big");
    cr_expect_str_eq(mmr_walk_skip_name(MMR_WALK_NETWORK_FS), "network_fs");
    cr_expect_str_eq(mmr_walk_skip_name(MMR_WALK_VANISHED), "vanished");
    cr_expect_str_eq(mmr_walk_skip_name(MMR_WALK_SKIP_COUNT), "unknown");
    for (int i = 0; i < MMR_WALK_SKIP_COUNT; i++)
        cr_expect_neq(strcmp(mmr_walk_skip_name((enum mmr_walk_skip)i), "unknown"), 0);
}

/* ---- the directory iterator and the filesystem kind ---------------------------- */

Test(scan_walk, dir_iterator_lists_names_and_types)
{
    put("テスト.txt", NULL, NULL, 1);
    char *sub = mmr_test_path(dir, "sub", NULL);
    cr_assert_eq(mmr_mkdir_p(sub, false), 0);
    struct mmr_dir *d;
    cr_assert_eq(mmr_dir_open(dir, false, &d), 0, "%s", mmr_err_msg());
    const char *name;
    enum mmr_dirent_type type;
    int n, count = 0;
    bool got_file = false, got_dir = false;
    while ((n = mmr_dir_next(d, &name, &type)) == 1) {
        count++;
        if (strcmp(name, "テスト.txt") == 0)
            got_file = type == MMR_DIRENT_FILE;
        if (strcmp(name, "sub") == 0)
            got_dir = type == MMR_DIRENT_DIR;
    }
    cr_expect_eq(n, 0);
    cr_expect_eq(count, 2);
    cr_expect(got_file);
    cr_expect(got_dir);
    cr_expect_eq(mmr_dir_next(d, &name, &type), 0); /* stays at the end */
    mmr_dir_close(d);

    cr_assert_eq(mmr_dir_open(sub, false, &d), 0);
    cr_expect_eq(mmr_dir_next(d, &name, &type), 0); /* empty */
    mmr_dir_close(d);
    mmr_dir_close(NULL);

    char *missing = mmr_test_path(dir, "missing", NULL);
    char *file = mmr_test_path(dir, "テスト.txt", NULL);
    cr_expect_eq(mmr_dir_open(missing, false, &d), MMR_ENOENT);
    cr_expect_eq(mmr_dir_open(file, false, &d), MMR_EINVAL, "%s", mmr_err_msg());
    free(missing);
    free(file);
    free(sub);
}

Test(scan_walk, fs_kind_of_temp_dir_is_local)
{
    enum mmr_fs_kind kind = MMR_FS_PSEUDO;
    cr_assert_eq(mmr_fs_kind(dir, &kind), 0, "%s", mmr_err_msg());
    cr_expect_eq(kind, MMR_FS_LOCAL);
    char *missing = mmr_test_path(dir, "missing", "x", NULL);
    cr_expect_lt(mmr_fs_kind(missing, &kind), 0);
    free(missing);
}

/* ---- globs ------------------------------------------------------------------------ */

struct glob_case {
    const char *pattern, *s;
    unsigned flags;
    bool match;
};

static const struct glob_case glob_cases[] = {
    {"*.exe", "setup.exe", 0, true},
    {"*.exe", "setup.EXE", 0, false},
    {"*.exe", "setup.EXE", MMR_GLOB_PATHS_WIN, true},
    {"*.exe", "dir/setup.exe", 0, false}, /* * stays in one component */
    {"**.exe", "dir/setup.exe", 0, true},
    {"/home/**/cache/*", "/home/u/.cache/cache/x", 0, true},
    {"/home/**/cache/*", "/home/cache/x", 0, true}, /* **\/ may be nothing */
    {"/home/**/cache/*", "/home/u/cache/a/b", 0, false},
    {"**/node_modules/**", "/srv/app/node_modules/x/y.js", 0, true},
    {"a?c", "abc", 0, true},
    {"a?c", "a/c", 0, false},
    {"a?c", "aテc", 0, true}, /* ? is one character, not one byte */
    {"[a-c]x", "bx", 0, true},
    {"[a-c]x", "dx", 0, false},
    {"[!a-c]x", "dx", 0, true},
    {"[!a-c]x", "ax", 0, false},
    {"[]]", "]", 0, true},
    {"[A-C]", "b", MMR_GLOB_PATHS_WIN, true},
    {"[a-c]", "B", MMR_GLOB_PATHS_WIN, true},
    {"[テト]", "ト", 0, true},
    {"[abc", "[abc", 0, true}, /* unclosed: literal */
    {"\\*", "*", 0, true},
    {"\\*", "x", 0, false},
    {"C:\\Users\\*\\AppData", "c:/users/ken/appdata", MMR_GLOB_PATHS_WIN, true},
    {"C:\\Users\\*\\AppData", "C:\\Users\\ken\\x\\AppData", MMR_GLOB_PATHS_WIN, false},
    {"テスト/*.txt", "テスト/日本語.txt", 0, true},
    {"", "", 0, true},
    {"", "a", 0, false},
    {"*", "", 0, true},
    {"abc", "ab", 0, false},
    {"ab", "abc", 0, false},
};

Test(scan_walk, glob_cases)
{
    for (size_t i = 0; i < sizeof(glob_cases) / sizeof(glob_cases[0]); i++) {
        const struct glob_case *c = &glob_cases[i];
        struct mmr_glob *g;
        cr_assert_eq(mmr_glob_compile(c->pattern, c->flags, &g), 0);
        cr_expect_eq(mmr_glob_match(g, c->s), c->match, "'%s' on '%s' (flags %u)", c->pattern, c->s,
                     c->flags);
        mmr_glob_free(g);
    }
}

Test(scan_walk, pathological_glob_finishes_fast)
{
    size_t n = 20000;
    char *s = mmr_malloc(n + 1);
    memset(s, 'a', n);
    s[n] = 0;
    const char *pats[] = {"a*a*a*a*a*a*a*a*a*b", "**a**a**a**a**a**a**b", "*a*a*a*a*a*a*a*a"};
    uint64_t t0 = mmr_time_mono_ms();
    for (size_t i = 0; i < 3; i++) {
        struct mmr_glob *g;
        cr_assert_eq(mmr_glob_compile(pats[i], 0, &g), 0);
        cr_expect_eq(mmr_glob_match(g, s), i == 2, "%s", pats[i]);
        mmr_glob_free(g);
    }
    /* Backtracking would take ~n^9 steps; the state set takes n * pattern. */
    cr_expect_lt(mmr_time_mono_ms() - t0, 2000);
    free(s);
}
