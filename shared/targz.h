/* In-memory .tar.gz archives through libarchive: writing (diagnostic
 * bundles) and bounded reading (tests, bundle inspection). Extraction to disk
 * of untrusted archives is a separate, stricter module. */
#ifndef MMR_TARGZ_H
#define MMR_TARGZ_H

#include <stddef.h>
#include <stdint.h>

struct mmr_targz;

int mmr_targz_new(struct mmr_targz **out);

/* Adds a regular file (mode 0600) named name with the given contents.
 * Names must be relative and contain no "..". */
int mmr_targz_add(struct mmr_targz *tgz, const char *name, const void *data, size_t len,
                  int64_t mtime_ms);

/* Finishes the archive and hands over its bytes (allocated). Frees tgz
 * whatever the result. */
int mmr_targz_finish(struct mmr_targz *tgz, char **out, size_t *out_len);

/* Frees an unfinished archive. */
void mmr_targz_free(struct mmr_targz *tgz);

struct mmr_targz_limits {
    size_t max_entries;     /* 0: 10,000 */
    size_t max_entry_bytes; /* 0: 64 MiB */
    size_t max_total_bytes; /* 0: 256 MiB */
};

/* Calls cb for each regular file of a .tar.gz in memory. Anything over a
 * limit, a truncated or corrupt archive gives an error naming the entry.
 * A non-zero return from cb stops the walk and is returned. */
typedef int (*mmr_targz_entry_cb)(const char *name, const void *data, size_t len, void *ud);
int mmr_targz_read(const void *data, size_t len, const struct mmr_targz_limits *limits,
                   mmr_targz_entry_cb cb, void *ud);

#endif
