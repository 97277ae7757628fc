/* The scanner's archive walker: opens containers libarchive reads (zip, tar,
 * gzip and other compressed streams, 7z, rar, cpio, iso, ...) and hands each
 * member to a callback in memory, with depth, size, count and ratio limits. */
#ifndef MMR_SCAN_ARCHIVE_H
#define MMR_SCAN_ARCHIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MMR_SCAN_ARCHIVE_DEFAULT_DEPTH        3
#define MMR_SCAN_ARCHIVE_MAX_DEPTH            16 /* hard cap on any configured depth */
#define MMR_SCAN_ARCHIVE_DEFAULT_TOTAL_BYTES  ((uint64_t)256 * 1024 * 1024)
#define MMR_SCAN_ARCHIVE_DEFAULT_MEMBERS      10000
#define MMR_SCAN_ARCHIVE_DEFAULT_RATIO        100
#define MMR_SCAN_ARCHIVE_DEFAULT_MEMBER_BYTES ((uint64_t)64 * 1024 * 1024)
#define MMR_SCAN_ARCHIVE_DEFAULT_RATIO_SLACK  ((uint64_t)1024 * 1024)

/* Zero in any field means its default. */
struct mmr_scan_archive_limits {
    unsigned max_depth;        /* containers opened one inside another */
    uint64_t max_total_bytes;  /* bytes decompressed over the whole walk, all levels */
    uint64_t max_members;      /* members seen over the whole walk, all levels */
    uint64_t max_ratio;        /* a container's expanded bytes / its own size */
    uint64_t max_member_bytes; /* one member held in memory */
    uint64_t ratio_slack;      /* expanded bytes a container may produce before
                                * the ratio applies, so small files that compress
                                * well are not bombs */
};

enum mmr_scan_archive_reason {
    MMR_SCAN_ARCHIVE_DEPTH = 1,    /* an archive nested deeper than max_depth */
    MMR_SCAN_ARCHIVE_TOTAL,        /* max_total_bytes reached: the walk stops */
    MMR_SCAN_ARCHIVE_MEMBERS,      /* max_members reached: the walk stops */
    MMR_SCAN_ARCHIVE_RATIO,        /* a container expands too much: it is left */
    MMR_SCAN_ARCHIVE_MEMBER_SIZE,  /* one member over max_member_bytes: skipped */
    MMR_SCAN_ARCHIVE_ENCRYPTED,    /* a member (or the whole archive) is encrypted */
    MMR_SCAN_ARCHIVE_CORRUPT,      /* damaged or truncated: the container is left */
};

/* Stable lower-case name of a reason ("ratio"), for scan.error events. */
const char *mmr_scan_archive_reason_name(enum mmr_scan_archive_reason reason);

/* One regular member, whole, in memory (data is valid during the call only).
 * path is "<name>/<member>/<member>..." in UTF-8 (invalid bytes become '?');
 * depth is 1 for the members of the outermost archive. Members that are
 * archives themselves are passed too (rules may match the container bytes),
 * then walked. A non-zero return stops the walk, which returns that value. */
typedef int (*mmr_scan_archive_member_fn)(const char *path, unsigned depth, const void *data,
                                          size_t len, void *ud);

/* A problem; path names the member or container concerned, message says what
 * happened in English. */
typedef void (*mmr_scan_archive_problem_fn)(const char *path, unsigned depth,
                                            enum mmr_scan_archive_reason reason,
                                            const char *message, void *ud);

struct mmr_scan_archive_cb {
    mmr_scan_archive_member_fn member;   /* required */
    mmr_scan_archive_problem_fn problem; /* may be NULL */
    void *ud;
};

/* What a walk did. */
struct mmr_scan_archive_stats {
    uint64_t members;       /* regular members handed to the callback */
    uint64_t bytes;         /* bytes decompressed, all levels */
    uint64_t problems;      /* problem callbacks made */
    enum mmr_scan_archive_reason first_problem; /* 0 when none */
};

/* True when the first bytes of a file (up to 32774 to see an ISO image) carry
 * the signature of a container or compressed stream the walker opens. Cheap:
 * magic numbers only (a v7 tar header by its checksum). Self-extracting
 * executables are not recognised: they are scanned as plain files. */
bool mmr_scan_archive_sniff(const void *head, size_t len);

/* Walks the archive in data[0..len), calling cb for members and problems.
 * name is the first component of every path (e.g. the file's name). Returns
 * 0 when every member was read; MMR_EINVAL when data is not an archive (no
 * callback made); otherwise the code of the first problem (MMR_ETOOBIG for a
 * limit, MMR_EUNSUP for encryption, MMR_ECORRUPT) with its message, after
 * reporting every problem through cb->problem and walking what could be
 * walked; or the member callback's non-zero value. Policy on problems: a
 * member over its size or encrypted is skipped and the walk goes on (unless
 * skipping it would mean decompressing it anyway, then its container is left);
 * a corrupt or too-compressed container is left and its parent goes on; the
 * total-bytes and member-count limits end the whole walk. limits may be NULL. */
int mmr_scan_archive_walk(const char *name, const void *data, size_t len,
                          const struct mmr_scan_archive_limits *limits,
                          const struct mmr_scan_archive_cb *cb,
                          struct mmr_scan_archive_stats *stats);

/* The same for a file (UTF-8 path), read in bounded chunks rather than whole;
 * its members are held in memory under the limits. MMR_EIO/MMR_ENOENT when the
 * file cannot be read. stats may be NULL here and above. */
int mmr_scan_archive_walk_file(const char *path, const char *name,
                               const struct mmr_scan_archive_limits *limits,
                               const struct mmr_scan_archive_cb *cb,
                               struct mmr_scan_archive_stats *stats);

#endif
