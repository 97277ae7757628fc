/* In-memory .tar.gz archives through libarchive: writing (diagnostic
 * bundles) and bounded reading (tests, bundle inspection). Extraction to disk
 * of untrusted archives is a separate, stricter module. */
#ifndef MMR_TARGZ_H
#define MMR_TARGZ_H

#include <stddef.h>
#include <stdint.h>

struct mmr_targz;

int mmr_targz_new(struct mmr_targz **out);

/* Adds a regular file (mode 0600, mtime kept to the second) named name with
 * the given contents. A name is one or more '/'-separated parts, none empty,
 * "." or "..", with no backslash, colon or control character, at most 1024
 * bytes (MMR_EINVAL otherwise, and the archive stays usable). Names are
 * stored as their UTF-8 bytes, whatever the process locale. */
int mmr_targz_add(struct mmr_targz *tgz, const char *name, const void *data, size_t len,
                  int64_t mtime_ms);

/* Finishes the archive and hands over its bytes (allocated: the caller
 * frees them). Frees tgz whatever the result. */
int mmr_targz_finish(struct mmr_targz *tgz, char **out, size_t *out_len);

/* Frees an unfinished archive. */
void mmr_targz_free(struct mmr_targz *tgz);

struct mmr_targz_limits {
    size_t max_entries;     /* 0: 10,000 */
    size_t max_entry_bytes; /* 0: 64 MiB */
    size_t max_total_bytes; /* 0: 256 MiB */
};

/* Calls cb for each regular file of a .tar.gz in memory; data is valid only
 * during the call. limits may be NULL for the defaults. Directories, links
 * and other entries are skipped but count towards max_entries. Sizes are
 * checked against the limits before anything is allocated (MMR_ETOOBIG); a
 * truncated, corrupt or uncompressed archive, or an entry whose name breaks
 * the rules of mmr_targz_add, gives MMR_ECORRUPT. Messages name the entry.
 * A non-zero return from cb stops the walk and is returned. */
typedef int (*mmr_targz_entry_cb)(const char *name, const void *data, size_t len, void *ud);
int mmr_targz_read(const void *data, size_t len, const struct mmr_targz_limits *limits,
                   mmr_targz_entry_cb cb, void *ud);

#endif
