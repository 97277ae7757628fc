/* Step 1 of the scan pipeline: walks a scan root and hands every regular file
 * worth scanning to a callback, after exclusions, size limit and filesystem
 * rules; everything it leaves out is reported with a reason. */
#ifndef MMR_SCAN_WALK_H
#define MMR_SCAN_WALK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shared/platform.h"

/* Why an entry was not handed to on_file. */
enum mmr_walk_skip {
    MMR_WALK_EXCLUDED,   /* own directory, path prefix, glob or extension */
    MMR_WALK_TOO_BIG,    /* over max_file_size */
    MMR_WALK_SPECIAL,    /* device, FIFO, socket */
    MMR_WALK_SYMLINK,    /* symbolic link, junction or other reparse point: never followed */
    MMR_WALK_OTHER_FS,   /* another filesystem, and cross_filesystems is off */
    MMR_WALK_NETWORK_FS, /* on a network filesystem below the root */
    MMR_WALK_PSEUDO_FS,  /* on a kernel pseudo filesystem (/proc, /sys...) */
    MMR_WALK_UNREADABLE, /* cannot be listed or identified (detail says why) */
    MMR_WALK_VANISHED,   /* listed, then gone before it could be identified */
    MMR_WALK_TOO_DEEP,   /* a directory deeper than max_depth below the root */
    MMR_WALK_TOO_LONG,   /* a path longer than max_path bytes */
    MMR_WALK_LOOP,       /* a directory that is one of its own parents (a bind mount) */
    MMR_WALK_SKIP_COUNT
};

/* Stable lower-case name of a reason ("too_big"), for events and logs. */
const char *mmr_walk_skip_name(enum mmr_walk_skip why);

#define MMR_WALK_DEFAULT_DEPTH 64
#define MMR_WALK_DEFAULT_PATH  4096

/* A handed-out file: return 0 to go on, or a negative MMR_E* code to stop the
 * walk with that code. */
typedef int (*mmr_walk_file_fn)(void *ctx, const char *path, const struct mmr_file_id *id);
/* A skipped entry (a directory's whole subtree when it is one). detail is an
 * error message for unreadable entries, else NULL. */
typedef void (*mmr_walk_skip_fn)(void *ctx, const char *path, enum mmr_walk_skip why,
                                 const char *detail);

struct mmr_walk_opts {
    /* Always excluded, whatever the policy says: the agent's data directory,
     * its quarantine... Compared like exclude_paths. */
    const char *const *own_dirs;
    size_t n_own_dirs;
    /* Path prefixes, by whole components ("/a/b" covers /a/b and /a/b/c, not
     * /a/bc); case-insensitive and either separator on Windows. */
    const char *const *exclude_paths;
    size_t n_exclude_paths;
    /* Globs (mmr_glob_match). A pattern with a separator is matched against
     * the whole path, one without against the entry's name. */
    const char *const *exclude_globs;
    size_t n_exclude_globs;
    /* File name endings, ASCII case-insensitive, with or without the dot:
     * "exe", ".tmp", "tar.gz". */
    const char *const *exclude_exts;
    size_t n_exclude_exts;
    uint64_t max_file_size;    /* 0: no limit */
    bool cross_filesystems;    /* enter other local filesystems below the root */
    unsigned max_depth;        /* directories below the root; 0: MMR_WALK_DEFAULT_DEPTH */
    size_t max_path;           /* bytes; 0: MMR_WALK_DEFAULT_PATH */
    const atomic_bool *cancel; /* checked before each entry; NULL: never */
    mmr_walk_file_fn on_file;  /* required */
    mmr_walk_skip_fn on_skip;  /* optional */
    void *ctx;
};

struct mmr_walk_stats {
    uint64_t files; /* handed to on_file */
    uint64_t bytes; /* their sizes */
    uint64_t dirs;  /* listed, the root included */
    uint64_t skipped[MMR_WALK_SKIP_COUNT];
    bool cancelled;
};

/* Walks root, a file or a directory. Symbolic links and reparse points below
 * the root are never followed, so the walk cannot leave the root, and a
 * directory met again below itself (a bind mount) is not entered; the
 * root itself is taken as named (a link given as root is followed). Network
 * and pseudo filesystems met below the root are skipped; a root on a network
 * filesystem is walked (someone asked for that share explicitly), a root on
 * a pseudo filesystem is skipped. A directory that cannot be read is reported
 * and the walk goes on. Iterative: at most max_depth directories are open.
 * Returns 0 when the walk ends or is cancelled (stats->cancelled), MMR_ENOENT
 * when the root does not exist, MMR_EINVAL for bad options or a glob that is
 * too long, or on_file's error. stats is zeroed first; it may be NULL. */
int mmr_walk(const char *root, const struct mmr_walk_opts *opts, struct mmr_walk_stats *stats);

/* ---- globs ------------------------------------------------------------------ */

/* "*" matches within one path component, "?" one character (not a
 * separator), "[a-z]" / "[!a-z]" one character of a set, "**" anything across
 * separators; "**" followed by a separator may also match no directory at
 * all, so that a pattern "x" "/" "**" "/" "y" matches x/y. Characters are
 * UTF-8 code points. MMR_GLOB_PATHS_WIN: '\\' is a separator like '/', and
 * case is ignored (ASCII); otherwise '\\' quotes the next character. Matching
 * takes time proportional to pattern length times string length, whatever
 * the pattern. */
#define MMR_GLOB_PATHS_WIN   1u
#define MMR_GLOB_MAX_PATTERN 1024

struct mmr_glob;

/* MMR_EINVAL when the pattern is longer than MMR_GLOB_MAX_PATTERN bytes. */
int mmr_glob_compile(const char *pattern, unsigned flags, struct mmr_glob **out);
/* Not thread-safe on one glob: it keeps its matching state inside. */
bool mmr_glob_match(struct mmr_glob *g, const char *s);
void mmr_glob_free(struct mmr_glob *g);

#endif
