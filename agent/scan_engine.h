/* The YARA engine core of the scanner: compiles rule directories (or loads
 * them compiled), and scans buffers and files with per-thread scanners,
 * returning the matching rules with their tags, metadata and our severity. */
#ifndef MMR_SCAN_ENGINE_H
#define MMR_SCAN_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Starts libyara; calls nest (each init needs one shutdown), from any thread.
 * Every other function here needs the engine started. */
int mmr_scan_engine_init(void);
void mmr_scan_engine_shutdown(void);

/* ---- severity -------------------------------------------------------------
 * A rule's severity comes from its `severity` meta: "low", "medium", "high",
 * "critical" (any case) or the integers 0-3. Without a usable `severity`, a
 * `score` meta (integer or decimal string, 0-100) maps as 0-39 low, 40-59
 * medium, 60-79 high, 80 and above critical. Without either (or with values
 * out of range) the severity is MMR_SCAN_SEV_DEFAULT: high, because a rule
 * someone published to match malware should not be played down. */
enum mmr_scan_severity {
    MMR_SCAN_SEV_LOW = 0,
    MMR_SCAN_SEV_MEDIUM = 1,
    MMR_SCAN_SEV_HIGH = 2,
    MMR_SCAN_SEV_CRITICAL = 3,
};
#define MMR_SCAN_SEV_DEFAULT MMR_SCAN_SEV_HIGH

/* "low", "medium", "high", "critical" ("unknown" outside the range). */
const char *mmr_scan_severity_name(int severity);
/* The severity for a score (0-100; above 100 is critical), or -1 if negative. */
int mmr_scan_severity_from_score(int64_t score);

/* ---- rules ----------------------------------------------------------------- */

/* Compiled rules, shared read-only by any number of scanners and threads.
 * Reference counted: each scanner holds a reference, so the agent can switch
 * to new rules atomically and drop the old ones while scans still run. */
struct mmr_scan_rules;

struct mmr_scan_compile_limits {
    size_t max_files;       /* rule files in the directory tree */
    size_t max_file_bytes;  /* one rule file */
    size_t max_total_bytes; /* all rule files together */
};
#define MMR_SCAN_MAX_RULE_FILES       20000
#define MMR_SCAN_MAX_RULE_FILE_BYTES  (16u * 1024 * 1024)
#define MMR_SCAN_MAX_RULE_TOTAL_BYTES (512u * 1024 * 1024)

/* Compiles every *.yar and *.yara file (any case) under dir, recursively,
 * in byte order of their paths relative to dir ("a/b.yar"), each into its own
 * namespace named by that relative path, with the external variables
 * filename, filepath, extension, filetype and owner declared as strings.
 * Symbolic links are not followed; `include` is refused (every file is
 * compiled on its own). limits NULL: the MMR_SCAN_MAX_RULE_* defaults.
 * A syntax error fails with MMR_EINVAL and "relpath:line: message"; a
 * directory without rule files with MMR_ENOENT; over a limit MMR_ETOOBIG. */
int mmr_scan_rules_compile_dir(const char *dir, const struct mmr_scan_compile_limits *limits,
                               struct mmr_scan_rules **out);

/* Compiles one rule source held in memory, named name in error messages and
 * used as its namespace. Same externals and errors as above. */
int mmr_scan_rules_compile_string(const char *source, const char *name,
                                  struct mmr_scan_rules **out);

/* Saves compiled rules to path (atomically, owner-only) so that an agent can
 * load them later without compiling. The format belongs to the libyara
 * version that wrote it; only load files this agent wrote itself. */
int mmr_scan_rules_save(struct mmr_scan_rules *rules, const char *path);

/* Loads rules saved by mmr_scan_rules_save, refusing files over max_bytes.
 * MMR_EUNSUP when another libyara version wrote them (compile again),
 * MMR_ECORRUPT when the file is damaged or lacks our external variables. */
int mmr_scan_rules_load(const char *path, size_t max_bytes, struct mmr_scan_rules **out);

size_t mmr_scan_rules_count(const struct mmr_scan_rules *rules);

struct mmr_scan_rules *mmr_scan_rules_ref(struct mmr_scan_rules *rules);
/* Drops a reference; the rules are freed with the last one. NULL is allowed. */
void mmr_scan_rules_unref(struct mmr_scan_rules *rules);

/* ---- scanning ---------------------------------------------------------------- */

/* The agent's per-file external variables; NULL members mean "". */
struct mmr_scan_externals {
    const char *filename;  /* "invoice.pdf.exe" */
    const char *filepath;  /* full path, UTF-8 */
    const char *extension; /* "exe", lower case, without the dot */
    const char *filetype;  /* what the agent detected, e.g. "pe", "elf", "zip" */
    const char *owner;     /* the file owner's user name */
};

enum mmr_scan_meta_type {
    MMR_SCAN_META_INT,
    MMR_SCAN_META_STRING,
    MMR_SCAN_META_BOOL,
};

struct mmr_scan_meta {
    char *name;
    enum mmr_scan_meta_type type;
    char *str;   /* MMR_SCAN_META_STRING */
    int64_t num; /* MMR_SCAN_META_INT; 0 or 1 for MMR_SCAN_META_BOOL */
};

struct mmr_scan_match {
    char *rule;
    char *ns;
    char **tags;
    size_t tag_count;
    struct mmr_scan_meta *meta;
    size_t meta_count;
    int severity; /* enum mmr_scan_severity */
};

/* What one scan found. Owned by the caller: mmr_scan_result_free. */
struct mmr_scan_result {
    struct mmr_scan_match *matches;
    size_t count;
    /* Some string matched more often than libyara keeps count of; rules that
     * depend on counting that string's matches may be missed. */
    bool too_many_matches;
};

void mmr_scan_result_free(struct mmr_scan_result *result);

/* One scanner per thread; it holds a reference to its rules. */
struct mmr_scanner;

int mmr_scanner_create(struct mmr_scan_rules *rules, struct mmr_scanner **out);
void mmr_scanner_destroy(struct mmr_scanner *scanner);

/* Per-file time limit in seconds (0: none). libyara checks it periodically,
 * so a scan can overrun by a little. */
void mmr_scanner_set_timeout(struct mmr_scanner *scanner, unsigned seconds);

/* Sets the external variables for the next scans. */
int mmr_scanner_set_externals(struct mmr_scanner *scanner, const struct mmr_scan_externals *ext);

/* Scans a buffer. *out is always initialised and must be freed with
 * mmr_scan_result_free, also on failure: it then holds what matched before
 * the failure. MMR_ETIMEDOUT, MMR_ENOMEM, MMR_EBUSY (too many threads
 * scanning at once), MMR_EIO (any other libyara failure). */
int mmr_scanner_scan_mem(struct mmr_scanner *scanner, const void *data, size_t len,
                         struct mmr_scan_result *out);

/* Reads a regular file (UTF-8 path) of at most max_bytes into memory and
 * scans it: a file truncated under a memory map would crash the agent, a
 * copy cannot. MMR_ENOENT, MMR_EPERM, MMR_EINVAL (not a regular file),
 * MMR_ETOOBIG (over max_bytes), MMR_EIO (read failed), or the scan errors. */
int mmr_scanner_scan_file(struct mmr_scanner *scanner, const char *path, size_t max_bytes,
                          struct mmr_scan_result *out);

#endif
