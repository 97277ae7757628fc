/* The "mmr-fault" SQLite VFS: a shim over the default VFS that counts writes
 * and syncs and fails the armed one, so tests can reach every I/O error path
 * of shared/db and its callers (SQLite's own test suite does the same). */
#include "shared/db_fault.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include <sqlite3.h>

#include "shared/err.h"

/* One counter set per op. nth == 0 means disarmed. */
struct fault_counter {
    atomic_int calls;
    atomic_int failed;
    atomic_int nth;
    atomic_int err;
};

static struct fault_counter counters[2];
static atomic_bool without_shm;
static sqlite3_vfs *real_vfs;
static sqlite3_vfs fault_vfs;

/* Our file: the wrapper's methods first, the real VFS's file right after. */
struct fault_file {
    sqlite3_file base;
    sqlite3_file *real;
};

static int fault_hit(enum mmr_db_fault_op op)
{
    struct fault_counter *c = &counters[op];
    int n = atomic_fetch_add(&c->calls, 1) + 1;
    int nth = atomic_load(&c->nth);
    if (nth > 0 && n >= nth) {
        atomic_fetch_add(&c->failed, 1);
        return atomic_load(&c->err);
    }
    return SQLITE_OK;
}

static sqlite3_file *real_of(sqlite3_file *f)
{
    return ((struct fault_file *)f)->real;
}

/* ---- file methods: all forward, xWrite and xSync may fail first ---------- */

static int ff_close(sqlite3_file *f)
{
    sqlite3_file *r = real_of(f);
    int rc = r->pMethods ? r->pMethods->xClose(r) : SQLITE_OK;
    f->pMethods = NULL;
    return rc;
}

static int ff_read(sqlite3_file *f, void *buf, int amt, sqlite3_int64 off)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xRead(r, buf, amt, off);
}

static int ff_write(sqlite3_file *f, const void *buf, int amt, sqlite3_int64 off)
{
    int rc = fault_hit(MMR_FAULT_WRITE);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_file *r = real_of(f);
    return r->pMethods->xWrite(r, buf, amt, off);
}

static int ff_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xTruncate(r, size);
}

static int ff_sync(sqlite3_file *f, int flags)
{
    int rc = fault_hit(MMR_FAULT_SYNC);
    if (rc != SQLITE_OK)
        return rc;
    sqlite3_file *r = real_of(f);
    return r->pMethods->xSync(r, flags);
}

static int ff_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xFileSize(r, size);
}

static int ff_lock(sqlite3_file *f, int level)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xLock(r, level);
}

static int ff_unlock(sqlite3_file *f, int level)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xUnlock(r, level);
}

static int ff_check_reserved_lock(sqlite3_file *f, int *out)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xCheckReservedLock(r, out);
}

static int ff_file_control(sqlite3_file *f, int op, void *arg)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xFileControl(r, op, arg);
}

static int ff_sector_size(sqlite3_file *f)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xSectorSize(r);
}

static int ff_device_characteristics(sqlite3_file *f)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xDeviceCharacteristics(r);
}

/* Shared memory (WAL index) and memory mapping exist from method version 2
 * and 3; the default VFSes have both, but a lesser one is refused politely. */
static int ff_shm_map(sqlite3_file *f, int page, int pgsz, int extend, void volatile **pp)
{
    sqlite3_file *r = real_of(f);
    if (r->pMethods->iVersion < 2)
        return SQLITE_IOERR_SHMMAP;
    return r->pMethods->xShmMap(r, page, pgsz, extend, pp);
}

static int ff_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    sqlite3_file *r = real_of(f);
    if (r->pMethods->iVersion < 2)
        return SQLITE_IOERR_SHMLOCK;
    return r->pMethods->xShmLock(r, offset, n, flags);
}

static void ff_shm_barrier(sqlite3_file *f)
{
    sqlite3_file *r = real_of(f);
    if (r->pMethods->iVersion >= 2)
        r->pMethods->xShmBarrier(r);
}

static int ff_shm_unmap(sqlite3_file *f, int delete_flag)
{
    sqlite3_file *r = real_of(f);
    if (r->pMethods->iVersion < 2)
        return SQLITE_OK;
    return r->pMethods->xShmUnmap(r, delete_flag);
}

static int ff_fetch(sqlite3_file *f, sqlite3_int64 off, int amt, void **pp)
{
    sqlite3_file *r = real_of(f);
    if (r->pMethods->iVersion < 3) {
        *pp = NULL;
        return SQLITE_OK;
    }
    return r->pMethods->xFetch(r, off, amt, pp);
}

static int ff_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    sqlite3_file *r = real_of(f);
    if (r->pMethods->iVersion < 3)
        return SQLITE_OK;
    return r->pMethods->xUnfetch(r, off, p);
}

static const sqlite3_io_methods fault_methods = {
    .iVersion = 3,
    .xClose = ff_close,
    .xRead = ff_read,
    .xWrite = ff_write,
    .xTruncate = ff_truncate,
    .xSync = ff_sync,
    .xFileSize = ff_file_size,
    .xLock = ff_lock,
    .xUnlock = ff_unlock,
    .xCheckReservedLock = ff_check_reserved_lock,
    .xFileControl = ff_file_control,
    .xSectorSize = ff_sector_size,
    .xDeviceCharacteristics = ff_device_characteristics,
    .xShmMap = ff_shm_map,
    .xShmLock = ff_shm_lock,
    .xShmBarrier = ff_shm_barrier,
    .xShmUnmap = ff_shm_unmap,
    .xFetch = ff_fetch,
    .xUnfetch = ff_unfetch,
};

/* Version 1 methods have no shared memory: SQLite then refuses WAL, as on a
 * filesystem that cannot map the -shm file. */
static const sqlite3_io_methods fault_methods_v1 = {
    .iVersion = 1,
    .xClose = ff_close,
    .xRead = ff_read,
    .xWrite = ff_write,
    .xTruncate = ff_truncate,
    .xSync = ff_sync,
    .xFileSize = ff_file_size,
    .xLock = ff_lock,
    .xUnlock = ff_unlock,
    .xCheckReservedLock = ff_check_reserved_lock,
    .xFileControl = ff_file_control,
    .xSectorSize = ff_sector_size,
    .xDeviceCharacteristics = ff_device_characteristics,
};

/* ---- VFS methods: only xOpen wraps, the rest forward --------------------- */

static int fv_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    struct fault_file *ff = (struct fault_file *)f;
    ff->real = (sqlite3_file *)(ff + 1);
    memset(ff->real, 0, (size_t)real_vfs->szOsFile);
    int rc = real_vfs->xOpen(real_vfs, name, ff->real, flags, out_flags);
    /* SQLite calls xClose only when pMethods is set, so a failed open must
     * leave it NULL here too. */
    if (!ff->real->pMethods)
        f->pMethods = NULL;
    else
        f->pMethods = atomic_load(&without_shm) ? &fault_methods_v1 : &fault_methods;
    return rc;
}

static int fv_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    return real_vfs->xDelete(real_vfs, name, sync_dir);
}

static int fv_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    return real_vfs->xAccess(real_vfs, name, flags, out);
}

static int fv_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    return real_vfs->xFullPathname(real_vfs, name, n, out);
}

static void *fv_dl_open(sqlite3_vfs *vfs, const char *name)
{
    return real_vfs->xDlOpen(real_vfs, name);
}

static void fv_dl_error(sqlite3_vfs *vfs, int n, char *msg)
{
    real_vfs->xDlError(real_vfs, n, msg);
}

static void (*fv_dl_sym(sqlite3_vfs *vfs, void *handle, const char *sym))(void)
{
    return real_vfs->xDlSym(real_vfs, handle, sym);
}

static void fv_dl_close(sqlite3_vfs *vfs, void *handle)
{
    real_vfs->xDlClose(real_vfs, handle);
}

static int fv_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    return real_vfs->xRandomness(real_vfs, n, out);
}

static int fv_sleep(sqlite3_vfs *vfs, int us)
{
    return real_vfs->xSleep(real_vfs, us);
}

static int fv_current_time(sqlite3_vfs *vfs, double *out)
{
    return real_vfs->xCurrentTime(real_vfs, out);
}

static int fv_get_last_error(sqlite3_vfs *vfs, int n, char *out)
{
    return real_vfs->xGetLastError(real_vfs, n, out);
}

static int fv_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    return real_vfs->xCurrentTimeInt64(real_vfs, out);
}

int mmr_db_fault_install(void)
{
    if (real_vfs)
        return 0;
    sqlite3_vfs *base = sqlite3_vfs_find(NULL);
    if (!base)
        return mmr_err_set(MMR_EDB, "installing the fault VFS: SQLite has no default VFS");
    /* The optional methods of later versions are left out: SQLite then
     * falls back to xCurrentTime and does without system-call overrides. */
    if (base->iVersion < 2 || !base->xCurrentTimeInt64)
        return mmr_err_set(MMR_EUNSUP,
                           "installing the fault VFS: the default VFS '%s' "
                           "is too old (version %d)",
                           base->zName, base->iVersion);
    fault_vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(struct fault_file) + base->szOsFile,
        .mxPathname = base->mxPathname,
        .zName = MMR_DB_FAULT_VFS,
        .xOpen = fv_open,
        .xDelete = fv_delete,
        .xAccess = fv_access,
        .xFullPathname = fv_full_pathname,
        .xDlOpen = fv_dl_open,
        .xDlError = fv_dl_error,
        .xDlSym = fv_dl_sym,
        .xDlClose = fv_dl_close,
        .xRandomness = fv_randomness,
        .xSleep = fv_sleep,
        .xCurrentTime = fv_current_time,
        .xGetLastError = fv_get_last_error,
        .xCurrentTimeInt64 = fv_current_time_int64,
    };
    real_vfs = base;
    int rc = sqlite3_vfs_register(&fault_vfs, 0);
    if (rc != SQLITE_OK) {
        real_vfs = NULL;
        return mmr_err_set(MMR_EDB, "installing the fault VFS: %s", sqlite3_errstr(rc));
    }
    return 0;
}

void mmr_db_fault_arm(enum mmr_db_fault_op op, int nth, int sqlite_err)
{
    for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
        atomic_store(&counters[i].nth, 0);
        atomic_store(&counters[i].calls, 0);
        atomic_store(&counters[i].failed, 0);
    }
    atomic_store(&counters[op].err, sqlite_err != SQLITE_OK ? sqlite_err : SQLITE_IOERR);
    atomic_store(&counters[op].nth, nth > 0 ? nth : 1);
}

void mmr_db_fault_disarm(void)
{
    for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
        atomic_store(&counters[i].nth, 0);
}

int mmr_db_fault_calls(enum mmr_db_fault_op op)
{
    return atomic_load(&counters[op].calls);
}

int mmr_db_fault_failed(enum mmr_db_fault_op op)
{
    return atomic_load(&counters[op].failed);
}

void mmr_db_fault_without_shm(bool on)
{
    atomic_store(&without_shm, on);
}
