/* The scan verdict cache: (device, inode) → the file's size, times and the
 * rules version it was scanned with, and what the scan found, so that a
 * rescan of an unchanged tree costs one stat per file. Lives in agent.db. */
#ifndef MMR_SCAN_CACHE_H
#define MMR_SCAN_CACHE_H

#include <stdint.h>

#include "shared/platform.h"

/* The table, created by an agent.db migration. */
extern const char mmr_scan_cache_schema_sql[];

/* One connection of its own and a mutex: scan threads may share it. */
struct mmr_scan_cache;

struct mmr_scan_cache_opts {
    uint64_t max_rows;  /* 0: 1,000,000; the oldest scans are evicted beyond it */
    unsigned batch;     /* stores written per transaction; 0: 256 */
    unsigned purge_max; /* rows of other rules versions deleted per write; 0: 1000 */
    /* A file whose mtime or ctime is less than this before the store (or in
     * the future) is not cached: a write within the file system's timestamp
     * granularity could leave size and times as they were. 0: 2000 ms;
     * negative: cache it anyway (tests). */
    int64_t fresh_ms;
};

/* Opens agent.db at path (migrating it) for the cache. opts may be NULL. */
int mmr_scan_cache_open(const char *path, const struct mmr_scan_cache_opts *opts,
                        struct mmr_scan_cache **out);
/* Writes the pending stores (errors are logged) and closes. NULL is fine. */
void mmr_scan_cache_close(struct mmr_scan_cache *c);

enum mmr_scan_cache_result {
    MMR_SCAN_CACHE_MISS = 0,
    MMR_SCAN_CACHE_CLEAN = 1,
    MMR_SCAN_CACHE_DETECTED = 2,
};

/* The cached verdict for a file as identified now: a hit only when device,
 * inode, size, mtime, ctime and rules version all match what was stored.
 * Returns an mmr_scan_cache_result or a negative MMR_E* code; for
 * DETECTED, *rule (when rule is not NULL) is the rule name, allocated. */
int mmr_scan_cache_lookup(struct mmr_scan_cache *c, const struct mmr_file_id *id,
                          const char *rules_version, char **rule);

/* Records a verdict: rule NULL for clean, else the rule that matched. Pass
 * the identity taken before the scan, so that a change during the scan
 * makes the next lookup miss. Stores are batched (lookups see them at once);
 * a store with a new rules version starts a bounded purge of the rows of
 * other versions at each write. Files that are not regular or changed too
 * recently (opts.fresh_ms) are silently not cached. */
int mmr_scan_cache_store(struct mmr_scan_cache *c, const struct mmr_file_id *id,
                         const char *rules_version, const char *rule);

/* Writes pending stores now (in one transaction), then evicts and purges. */
int mmr_scan_cache_flush(struct mmr_scan_cache *c);

/* Rows in the table, after a flush of the pending stores. */
int mmr_scan_cache_count(struct mmr_scan_cache *c, uint64_t *out);

#endif
