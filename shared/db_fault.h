/* Fault injection for SQLite, for tests: a VFS named "mmr-fault" that wraps
 * the default VFS and fails the n-th write or sync with a chosen SQLite code.
 * Open a database through it with mmr_db_opts.vfs = MMR_DB_FAULT_VFS. */
#ifndef MMR_DB_FAULT_H
#define MMR_DB_FAULT_H

#include <stdbool.h>

#define MMR_DB_FAULT_VFS "mmr-fault"

enum mmr_db_fault_op {
    MMR_FAULT_WRITE, /* xWrite on any file of the database (main, -wal, journals) */
    MMR_FAULT_SYNC,  /* xSync on any file */
};

/* Registers the "mmr-fault" VFS (not as the default). Idempotent. */
int mmr_db_fault_install(void);

/* From now on, counts op calls made through the fault VFS and fails the
 * nth one (1-based) and every later one with sqlite_err (e.g. SQLITE_FULL,
 * SQLITE_IOERR_WRITE, SQLITE_IOERR_FSYNC; SQLITE_OK means SQLITE_IOERR), as
 * a full disk stays full, until mmr_db_fault_disarm. Arming resets every
 * counter and disarms the other op. nth < 1 means 1. */
void mmr_db_fault_arm(enum mmr_db_fault_op op, int nth, int sqlite_err);

/* Stops failing; the counters keep counting. */
void mmr_db_fault_disarm(void);

/* Calls of op seen since the last arm (or since install when never armed),
 * and how many of them were failed. A test sweeping nth = 1, 2, ... stops
 * when an operation completes with failed == 0. */
int mmr_db_fault_calls(enum mmr_db_fault_op op);
int mmr_db_fault_failed(enum mmr_db_fault_op op);

/* Files opened from now on offer no shared memory, like a filesystem that
 * cannot map the -shm file, so SQLite cannot use WAL on them. */
void mmr_db_fault_without_shm(bool on);

#endif
