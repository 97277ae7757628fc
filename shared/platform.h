/* The platform layer: every operating-system call that Mamori makes outside
 * drivers/ goes through here. Implementations live in platform/posix/ and
 * (later) platform/win32/; nothing above this header may include an OS header.
 * All paths are UTF-8. */
#ifndef MMR_PLATFORM_H
#define MMR_PLATFORM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/* ---- well-known locations ---------------------------------------------- */

/* Default data directory (/var/lib/mamori; %ProgramData%\Mamori on Windows). */
const char *mmr_default_data_dir(void);
/* Default directory for the agent's IPC endpoint (/run/mamori). */
const char *mmr_default_run_dir(void);
/* Default agent configuration file (/etc/mamori/agent.conf). */
const char *mmr_default_config_path(void);

/* Path of the agent's IPC endpoint inside run_dir (a Unix socket path, or a
 * named pipe name derived from run_dir on Windows). Allocated; caller frees.
 * Fails with MMR_ETOOBIG when the path cannot fit a socket address. */
int mmr_ipc_endpoint(const char *run_dir, char **out);

/* ---- paths and files ---------------------------------------------------- */

/* Joins two path parts with the platform separator. Allocated. */
char *mmr_path_join(const char *dir, const char *name);

/* Creates a directory and its parents. Private directories get owner-only
 * access (0700); others 0755. An existing private directory is tightened. */
int mmr_mkdir_p(const char *path, bool private_dir);

bool mmr_path_exists(const char *path);

/* Reads a whole file, refusing files larger than max_bytes (MMR_ETOOBIG).
 * *out is NUL-terminated and allocated; *len excludes the NUL. */
int mmr_file_read_all(const char *path, size_t max_bytes, char **out, size_t *len);

/* Reads at most max_bytes from the end of a file, starting at a line boundary
 * when the file is longer. */
int mmr_file_read_tail(const char *path, size_t max_bytes, char **out, size_t *len);

/* Replaces a file atomically with owner-only permissions: temporary file,
 * fsync, rename, fsync of the directory. A crash leaves the old or new file. */
int mmr_file_write_atomic(const char *path, const void *data, size_t len);

/* Creates the file if missing and restricts it to the owner (0600). */
int mmr_file_make_private(const char *path);

/* Owner-only check: true when group and others have no access. */
int mmr_file_is_private(const char *path, bool *is_private);

int mmr_file_remove(const char *path);

/* An open file, for logs and other append-only writers. */
struct mmr_file;

/* Opens for appending, creating with owner-only permissions. */
int mmr_file_open_append(const char *path, struct mmr_file **out);
int mmr_file_append(struct mmr_file *f, const void *data, size_t len);
int mmr_file_sync(struct mmr_file *f);
void mmr_file_close(struct mmr_file *f);
/* Size in bytes, or a negative MMR_E* code. */
int64_t mmr_file_size(const char *path);
int mmr_file_rename(const char *from, const char *to);

/* Free and total bytes on the filesystem holding path. */
int mmr_disk_space(const char *path, uint64_t *free_bytes, uint64_t *total_bytes);

/* Call first in main(): on Windows, replaces argv (which holds the ANSI code
 * page's lossy conversion) with UTF-8 arguments from the UTF-16 command line,
 * and sets the console to UTF-8 so that Japanese messages print. The new argv
 * lives until the process exits. Nothing to do on POSIX. */
void mmr_process_init(int *argc, char ***argv);

/* Writes to a socket the peer closed fail with an error instead of killing
 * the process (SIGPIPE on POSIX; nothing to do on Windows). */
void mmr_process_ignore_sigpipe(void);

/* Makes files this process creates private by default (umask 077). */
void mmr_process_private_files(void);

/* ---- file identity --------------------------------------------------------- */

/* What tells, without reading a file, whether its contents may have changed:
 * the scan cache keys verdicts on it. A write changes size or mtime, a
 * rename over the file gives a new (dev, ino), and anything that resets
 * mtime (utime, tar -x) still moves ctime, which no user call can set. */
struct mmr_file_id {
    uint64_t dev;     /* st_dev; the volume serial number on Windows */
    uint64_t ino;     /* st_ino; the 64-bit file index on Windows */
    uint64_t size;
    int64_t mtime_ns; /* last write, nanoseconds since the Unix epoch */
    int64_t ctime_ns; /* last change of contents or metadata (ChangeTime) */
    bool regular;     /* not a directory, link/reparse point, device or pipe */
};

/* Identifies path; a symbolic link (reparse point) itself unless
 * follow_symlinks. A missing file gives MMR_ENOENT. */
int mmr_file_identify(const char *path, bool follow_symlinks, struct mmr_file_id *out);

/* ---- directories and filesystems (the scan walker) ---------------------- */

/* What a directory entry is, as listed, without following it. */
enum mmr_dirent_type {
    MMR_DIRENT_FILE,  /* a regular file */
    MMR_DIRENT_DIR,
    MMR_DIRENT_LINK,  /* a symbolic link; any reparse point (junction...) on Windows */
    MMR_DIRENT_OTHER, /* device, FIFO, socket */
};

struct mmr_dir;

/* Opens a directory for listing. Unless follow_link, POSIX refuses a
 * symbolic link as the last component (MMR_EINVAL, like a non-directory), so
 * that a directory swapped for a link after it was listed is not entered;
 * Windows opens by name and cannot refuse (a race window the caller's listing
 * narrows). A missing path is MMR_ENOENT, a denied one MMR_EPERM. */
int mmr_dir_open(const char *path, bool follow_link, struct mmr_dir **out);
/* The next entry other than "." and "..": 1 with *name (UTF-8, valid until
 * the next call) and *type, 0 at the end. A name that is not valid UTF-16
 * (Windows) gives MMR_EINVAL for that entry and the listing may go on; any
 * other error ends it. */
int mmr_dir_next(struct mmr_dir *d, const char **name, enum mmr_dirent_type *type);
void mmr_dir_close(struct mmr_dir *d);

/* Where the filesystem holding a path keeps its files. */
enum mmr_fs_kind {
    MMR_FS_LOCAL,   /* disks, removable media, tmpfs, block-backed FUSE (ntfs-3g) */
    MMR_FS_NETWORK, /* NFS, SMB/CIFS, 9p, Ceph, AFS...; other FUSE (sshfs); UNC */
    MMR_FS_PSEUDO,  /* kernel views: proc, sysfs, cgroup, debugfs, devpts... */
};

int mmr_fs_kind(const char *path, enum mmr_fs_kind *out);

/* Path spelling rules: names compare ignoring (ASCII) case on Windows, where
 * '\\' is a separator as well as '/'. */
bool mmr_path_fold_case(void);
bool mmr_path_is_sep(char c);

/* ---- single-instance lock ------------------------------------------------ */

struct mmr_lock;

/* Takes an exclusive lock on a lock file, held until release or process exit
 * (the OS drops it even on kill -9). MMR_EBUSY names the holder's pid. */
int mmr_lock_acquire(const char *path, struct mmr_lock **out);
void mmr_lock_release(struct mmr_lock *lock);

/* ---- time --------------------------------------------------------------- */

/* Wall-clock time, UTC, milliseconds since the Unix epoch. */
int64_t mmr_time_now_ms(void);
/* Monotonic milliseconds, for durations and timeouts. */
uint64_t mmr_time_mono_ms(void);
/* "2026-11-22T00:07:27.123Z"; buf must hold 32 bytes. */
void mmr_time_format(int64_t ms, char buf[32]);

/* ---- users and local IPC peers ------------------------------------------ */

/* True when this process runs with administrative rights (root, or a member
 * of Administrators with an elevated token). */
bool mmr_user_is_admin(void);

/* Who is at the other end of an accepted local IPC connection. */
struct mmr_peer {
    uint32_t uid;  /* numeric user id (RID of the SID on Windows) */
    int64_t pid;
    bool admin;    /* administrator, or the same user the agent runs as */
    char name[64]; /* user name, or the numeric id when it has none */
};

int mmr_peer_identify(uv_pipe_t *pipe, struct mmr_peer *out);

/* Who serves the endpoint a client has connected to, so that the client can
 * refuse an impostor: on Windows any local user who can open a pipe may also
 * create another instance of its name. admin means the server is an
 * administrator (on Windows also: a service in session 0 whose token we may
 * not read) or runs as the same user as the caller. */
int mmr_peer_identify_server(uv_pipe_t *client, struct mmr_peer *out);

/* Sets who may connect to a bound endpoint: every local user may connect,
 * and admin verbs are checked per request with mmr_peer_identify. Takes the
 * server handle: a named pipe's ACL is set through one of its instances. */
int mmr_ipc_endpoint_open_to_all(uv_pipe_t *server);

/* ---- the system ---------------------------------------------------------- */

struct mmr_sysinfo {
    char os_name[64];     /* "Debian GNU/Linux 12 (bookworm)", "Windows 11 Pro" */
    char os_version[64];  /* kernel release / build number */
    char arch[32];
    char hostname[256];
    uint64_t uptime_s;
    uint64_t mem_total;
    uint64_t mem_free;
};

int mmr_sysinfo_get(struct mmr_sysinfo *out);

/* A stable identifier of this computer's hardware: the SMBIOS product UUID
 * when the firmware has a real one, else the OS installation's machine id.
 * Lower-case, at most 64 characters. Re-enrolling the same hardware keeps the
 * same identifier, so the server replaces the old record. */
int mmr_hardware_id(char *buf, size_t len);

int64_t mmr_process_id(void);

/* Cryptographically secure random bytes from the OS. */
int mmr_random_bytes(void *buf, size_t len);

/* ---- service glue --------------------------------------------------------- */

/* True when started by the service manager (systemd, Windows SCM). */
bool mmr_service_managed(void);
/* Tells the service manager we are ready / stopping / reloading. No-ops when
 * not managed. */
void mmr_service_notify(const char *state);

/* Detaches from the terminal (classic double fork) and writes pidfile.
 * Not used under a service manager. On Windows there is no terminal to
 * leave: it returns MMR_EUNSUP and the caller stays in the foreground. */
int mmr_daemonize(const char *pidfile);

/* Runs the program's body under the service manager. On Windows, when the
 * Service Control Manager started us, this connects to it and calls run(ctx)
 * on the service thread, reporting START_PENDING, RUNNING and STOPPED around
 * it; a stop or shutdown request calls stop(ctx) from another thread (stop
 * must only signal, e.g. uv_async_send). Everywhere else run(ctx) is called
 * directly. Returns run's result. */
int mmr_service_run(const char *name, int (*run)(void *ctx), void (*stop)(void *ctx), void *ctx);

/* What `mamori-agent service install` registers. */
struct mmr_service_spec {
    const char *name;         /* "mamori-agent" */
    const char *display_name; /* "Mamori Agent" */
    const char *description;
    const char *exe_path;     /* UTF-8; NULL: this program */
    const char *args;         /* extra command-line arguments, or NULL */
};

/* Registers an automatically started service running as LocalSystem, with
 * recovery actions (restart after 5 s, 30 s, 60 s; reset after a day).
 * Installing again updates the registration. MMR_EUNSUP where the package's
 * service unit does this instead (systemd). */
int mmr_service_install(const struct mmr_service_spec *spec);
/* Stops (waiting up to 10 s) and removes the service. Removing a service
 * that is not installed succeeds. */
int mmr_service_uninstall(const char *name);

#endif
