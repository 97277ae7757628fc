/* POSIX directory listing for the scan walker (readdir with d_type, lstat
 * when the filesystem does not fill it in), the kind of filesystem holding a
 * path (statfs magic numbers), and the path spelling rules. */
#include "shared/platform.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "shared/err.h"
#include "shared/mem.h"

struct mmr_dir {
    DIR *dir;
    char *path;
};

static int dir_errno_code(int e)
{
    switch (e) {
    case ENOENT:
        return MMR_ENOENT;
    case EACCES:
    case EPERM:
        return MMR_EPERM;
    case ENOTDIR:
    case ELOOP: /* O_NOFOLLOW met a symbolic link */
        return MMR_EINVAL;
    case ENOMEM:
        return MMR_ENOMEM;
    default:
        return MMR_EIO;
    }
}

int mmr_dir_open(const char *path, bool follow_link, struct mmr_dir **out)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (follow_link ? 0 : O_NOFOLLOW));
    if (fd < 0) {
        int e = errno;
        return mmr_err_set(dir_errno_code(e), "cannot open directory '%s': %s", path, strerror(e));
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = errno;
        close(fd);
        return mmr_err_set(dir_errno_code(e), "cannot list directory '%s': %s", path, strerror(e));
    }
    struct mmr_dir *md = mmr_malloc(sizeof(*md));
    md->dir = d;
    md->path = mmr_strdup(path);
    *out = md;
    return 0;
}

static enum mmr_dirent_type type_of_mode(mode_t m)
{
    if (S_ISREG(m))
        return MMR_DIRENT_FILE;
    if (S_ISDIR(m))
        return MMR_DIRENT_DIR;
    if (S_ISLNK(m))
        return MMR_DIRENT_LINK;
    return MMR_DIRENT_OTHER;
}

int mmr_dir_next(struct mmr_dir *d, const char **name, enum mmr_dirent_type *type)
{
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d->dir);
        if (!e) {
            int err = errno;
            if (err == 0)
                return 0;
            return mmr_err_set(dir_errno_code(err), "cannot list directory '%s': %s", d->path,
                               strerror(err));
        }
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        switch (e->d_type) {
        case DT_REG:
            *type = MMR_DIRENT_FILE;
            break;
        case DT_DIR:
            *type = MMR_DIRENT_DIR;
            break;
        case DT_LNK:
            *type = MMR_DIRENT_LINK;
            break;
        case DT_UNKNOWN: {
            /* Some filesystems (older XFS, some FUSE) leave d_type empty. */
            struct stat st;
            if (fstatat(dirfd(d->dir), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
                if (errno == ENOENT)
                    continue; /* gone since it was listed */
                *type = MMR_DIRENT_OTHER;
                break;
            }
            *type = type_of_mode(st.st_mode);
            break;
        }
        default:
            *type = MMR_DIRENT_OTHER;
            break;
        }
        *name = e->d_name;
        return 1;
    }
}

void mmr_dir_close(struct mmr_dir *d)
{
    if (!d)
        return;
    closedir(d->dir);
    free(d->path);
    free(d);
}

/* statfs(2) f_type values, from the Linux man page and <linux/magic.h>;
 * spelled out here so that older headers do not drop any of them. */
static const unsigned long pseudo_magics[] = {
    0x9fa0,     /* proc */
    0x62656572, /* sysfs */
    0x1cd1,     /* devpts */
    0x27e0eb,   /* cgroup */
    0x63677270, /* cgroup2 */
    0x64626720, /* debugfs */
    0x73636673, /* securityfs */
    0x74726163, /* tracefs */
    0xcafe4a11, /* bpf */
    0x6165676c, /* pstore */
    0x62656570, /* configfs */
    0xde5e81e4, /* efivarfs */
    0xf97cff8c, /* selinuxfs */
    0x42494e4d, /* binfmt_misc */
    0x19800202, /* mqueue */
    0x6e736673, /* nsfs */
    0x0187,     /* autofs: listing it would trigger mounts, often remote ones */
};

static const unsigned long network_magics[] = {
    0x6969,     /* nfs */
    0x517b,     /* smb */
    0xff534d42, /* cifs */
    0xfe534d42, /* smb2 */
    0x01021997, /* 9p (v9fs) */
    0x00c36400, /* ceph */
    0x5346414f, /* afs */
    0x6b414653, /* kafs */
    0x73757245, /* coda */
    0x564c,     /* ncp */
    0x01161970, /* gfs2 */
    0x0bd00bd0, /* lustre */
};

#define FUSE_MAGIC 0x65735546UL

static bool in_list(unsigned long v, const unsigned long *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (list[i] == v)
            return true;
    return false;
}

int mmr_fs_kind(const char *path, enum mmr_fs_kind *out)
{
    struct statfs sf;
    if (statfs(path, &sf) != 0) {
        int e = errno;
        return mmr_err_set(dir_errno_code(e), "cannot read the filesystem of '%s': %s", path,
                           strerror(e));
    }
    /* f_type is signed on some ABIs: compare its low 32 bits. */
    unsigned long magic = (unsigned long)sf.f_type & 0xffffffffUL;
    if (in_list(magic, pseudo_magics, sizeof(pseudo_magics) / sizeof(pseudo_magics[0]))) {
        *out = MMR_FS_PSEUDO;
        return 0;
    }
    if (in_list(magic, network_magics, sizeof(network_magics) / sizeof(network_magics[0]))) {
        *out = MMR_FS_NETWORK;
        return 0;
    }
    if (magic == FUSE_MAGIC) {
        /* FUSE hides where files live. A block-device-backed mount (fuseblk:
         * ntfs-3g, exfat on a USB disk) has the device's own number; the
         * others (sshfs, rclone, s3fs, gvfs) get an anonymous device with
         * major 0 and are treated as remote. */
        struct stat st;
        if (stat(path, &st) != 0) {
            int e = errno;
            return mmr_err_set(dir_errno_code(e), "cannot stat '%s': %s", path, strerror(e));
        }
        *out = major(st.st_dev) != 0 ? MMR_FS_LOCAL : MMR_FS_NETWORK;
        return 0;
    }
    *out = MMR_FS_LOCAL;
    return 0;
}

bool mmr_path_fold_case(void)
{
    return false;
}

bool mmr_path_is_sep(char c)
{
    return c == '/';
}
