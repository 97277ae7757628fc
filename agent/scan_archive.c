/* The scanner's archive walker over libarchive: every member is decompressed
 * into memory under the walk's limits, checked as each chunk arrives, and
 * members that are archives themselves are walked in turn up to a depth. */
#include "agent/scan_archive.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h> /* first: on Windows it brings winsock2.h, which must precede windows.h */

#include <archive.h>
#include <archive_entry.h>

#include "shared/err.h"
#include "shared/mem.h"

#define CHUNK_BYTES    ((size_t)64 * 1024)
#define SNIFF_BYTES    32774 /* "CD001" of an ISO 9660 image ends here */
#define MESSAGE_BYTES  512
#define TAR_BLOCK      512

/* libarchive's ARCHIVE_ERRNO_FILE_FORMAT, from its private headers: what it
 * sets for "Unrecognized archive format". */
#ifdef EFTYPE
#define UNRECOGNIZED_ERRNO EFTYPE
#else
#define UNRECOGNIZED_ERRNO EILSEQ
#endif

/* Formats and filters are named one by one rather than through the _all
 * calls: mtree reads the files its text names from the local disk, and the
 * _all filters fall back to running external programs (lrzip, lzop, ...)
 * where the library lacks a codec. Each is kept only if libarchive supports
 * it in-process (ARCHIVE_OK; ARCHIVE_WARN means an external program). */
typedef int (*support_fn)(struct archive *);

static const support_fn formats[] = {
    archive_read_support_format_7zip,    archive_read_support_format_ar,
    archive_read_support_format_cab,     archive_read_support_format_cpio,
    archive_read_support_format_iso9660, archive_read_support_format_lha,
    archive_read_support_format_rar,     archive_read_support_format_rar5,
    archive_read_support_format_tar,     archive_read_support_format_xar,
    archive_read_support_format_zip,
};

static const support_fn filters[] = {
    archive_read_support_filter_gzip,  archive_read_support_filter_bzip2,
    archive_read_support_filter_compress, archive_read_support_filter_xz,
    archive_read_support_filter_lzma,  archive_read_support_filter_lzip,
    archive_read_support_filter_zstd,  archive_read_support_filter_lz4,
};

#define N_FORMATS (sizeof(formats) / sizeof(formats[0]))
#define N_FILTERS (sizeof(filters) / sizeof(filters[0]))

/* A file read through libuv (UTF-8 paths on every system) one chunk at a time. */
struct file_src {
    uv_file fd;
    int64_t size;
    int64_t off;
    char *buf;
};

/* What a container is read from: memory, or the outermost file. */
struct source {
    const void *data;
    size_t len;
    struct file_src *file;
};

struct walk {
    struct mmr_scan_archive_limits lim;
    const struct mmr_scan_archive_cb *cb;
    struct mmr_scan_archive_stats stats;
    uint64_t entries;
    bool format_ok[N_FORMATS];
    bool filter_ok[N_FILTERS];
    bool stop;          /* the whole walk ends */
    int cb_rc;          /* the member callback's non-zero return */
    int first_code;
    char *first_msg;
};

const char *mmr_scan_archive_reason_name(enum mmr_scan_archive_reason reason)
{
    switch (reason) {
    case MMR_SCAN_ARCHIVE_DEPTH: return "depth";
    case MMR_SCAN_ARCHIVE_TOTAL: return "total_bytes";
    case MMR_SCAN_ARCHIVE_MEMBERS: return "members";
    case MMR_SCAN_ARCHIVE_RATIO: return "ratio";
    case MMR_SCAN_ARCHIVE_MEMBER_SIZE: return "member_size";
    case MMR_SCAN_ARCHIVE_ENCRYPTED: return "encrypted";
    case MMR_SCAN_ARCHIVE_CORRUPT: return "corrupt";
    }
    return "unknown";
}

/* ---- recognising archives ------------------------------------------------- */

static bool has_at(const unsigned char *p, size_t len, size_t off, const void *magic, size_t n)
{
    return len >= off + n && memcmp(p + off, magic, n) == 0;
}

/* An old (v7) tar header has no magic, only a checksum over its 512 bytes
 * with the checksum field itself counted as spaces. */
static bool tar_checksum_ok(const unsigned char *p, size_t len)
{
    if (len < TAR_BLOCK || p[0] == '\0')
        return false;
    unsigned long stored = 0;
    size_t i = 148;
    while (i < 156 && p[i] == ' ')
        i++;
    size_t digits = 0;
    for (; i < 156 && p[i] >= '0' && p[i] <= '7'; i++, digits++)
        stored = stored * 8 + (unsigned long)(p[i] - '0');
    if (digits == 0 || (i < 156 && p[i] != ' ' && p[i] != '\0'))
        return false;
    unsigned long sum = 0;
    for (i = 0; i < TAR_BLOCK; i++)
        sum += (i >= 148 && i < 156) ? ' ' : p[i];
    return sum == stored;
}

bool mmr_scan_archive_sniff(const void *head, size_t len)
{
    const unsigned char *p = head;
    static const struct {
        size_t off;
        const char *magic;
        size_t n;
    } sigs[] = {
        {0, "PK\003\004", 4},       {0, "PK\005\006", 4},      {0, "PK\007\010", 4},
        {0, "\037\213", 2},         {0, "\037\235", 2},        /* gzip, compress */
        {0, "\3757zXZ\0", 6},       {0, "LZIP", 4},            {0, "\050\265\057\375", 4},
        {0, "\004\042\115\030", 4}, {0, "7z\274\257\047\034", 6},
        {0, "Rar!\032\007", 6},     {0, "070707", 6},          {0, "070701", 6},
        {0, "070702", 6},           {0, "\307\161", 2},        {0, "\161\307", 2},
        {0, "!<arch>\n", 8},        {0, "MSCF\0\0\0\0", 8},    {0, "xar!", 4},
        {257, "ustar", 5},          {32769, "CD001", 5},
    };
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        if (has_at(p, len, sigs[i].off, sigs[i].magic, sigs[i].n))
            return true;
    /* bzip2: "BZh", a block size, then a block or end-of-stream magic. */
    if (len >= 10 && memcmp(p, "BZh", 3) == 0 && p[3] >= '1' && p[3] <= '9' &&
        (memcmp(p + 4, "1AY&SY", 6) == 0 || memcmp(p + 4, "\027\162\105\070\120\220", 6) == 0))
        return true;
    /* lzma_alone: the usual properties byte, then a size that is unknown
     * (all ones) or below 2^56. */
    if (len >= 13 && p[0] == 0x5d && p[1] == 0 && (p[12] == 0 || p[12] == 0xff))
        return true;
    /* LHA: "-lh?-" or "-lz?-" at offset 2. */
    if (len >= 7 && p[2] == '-' && p[3] == 'l' && (p[4] == 'h' || p[4] == 'z') && p[6] == '-')
        return true;
    return tar_checksum_ok(p, len);
}

/* ---- names ---------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 if invalid. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    if (p[0] < 0x80)
        return 1;
    size_t need;
    uint32_t cp;
    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        need = 2;
        cp = p[0] & 0x1f;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        need = 3;
        cp = p[0] & 0x0f;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        need = 4;
        cp = p[0] & 0x07;
    } else {
        return 0;
    }
    if (n < need)
        return 0;
    for (size_t i = 1; i < need; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((need == 3 && cp < 0x800) || (need == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return need;
}

static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(p + i, n - i);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

/* Appends name to path as one more component: leading slashes dropped,
 * invalid UTF-8 and control characters replaced by '?'. */
static void append_name(struct mmr_buf *path, const char *name)
{
    while (*name == '/')
        name++;
    if (*name == '\0')
        name = "?";
    mmr_buf_append(path, "/", 1);
    const unsigned char *p = (const unsigned char *)name;
    size_t n = strlen(name);
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(p + i, n - i);
        if (k == 0 || p[i] < 0x20 || p[i] == 0x7f) {
            mmr_buf_append(path, "?", 1);
            i += k ? k : 1;
        } else {
            mmr_buf_append(path, p + i, k);
            i += k;
        }
    }
}

/* The member's name. Names stored as raw bytes (pax hdrcharset=BINARY, most
 * tar and cpio) come back unchanged through archive_entry_pathname, and the
 * _utf8 accessor would decode them again from the process's code page,
 * double-encoding them on Windows; names libarchive converted (zip's UTF-8
 * flag, ISO Joliet) fail the locale conversion under C or a Western code
 * page and are then asked for as UTF-8. A name that is UTF-8 either way is
 * taken as is. */
static const char *entry_name(struct archive_entry *e)
{
    const char *name = archive_entry_pathname(e);
    if (name && utf8_valid(name))
        return name;
    const char *utf8 = archive_entry_pathname_utf8(e);
    if (utf8)
        return utf8;
    return name ? name : "?";
}

/* A raw stream's member is named after the stream, without its last
 * extension ("notes.txt.gz" holds "notes.txt"). */
static void append_raw_name(struct mmr_buf *path, size_t parent_len)
{
    const char *base = path->data;
    for (size_t i = 0; i < parent_len; i++)
        if (path->data[i] == '/')
            base = path->data + i + 1;
    size_t n = (size_t)(path->data + parent_len - base);
    const char *dot = NULL;
    for (size_t i = 1; i < n; i++)
        if (base[i] == '.')
            dot = base + i;
    char *stem = dot ? mmr_strndup(base, (size_t)(dot - base)) : mmr_strdup("data");
    append_name(path, stem);
    free(stem);
}

/* ---- problems ------------------------------------------------------------- */

static int reason_code(enum mmr_scan_archive_reason reason)
{
    switch (reason) {
    case MMR_SCAN_ARCHIVE_ENCRYPTED: return MMR_EUNSUP;
    case MMR_SCAN_ARCHIVE_CORRUPT: return MMR_ECORRUPT;
    default: return MMR_ETOOBIG;
    }
}

static void report(struct walk *w, const char *path, unsigned depth,
                   enum mmr_scan_archive_reason reason, const char *fmt, ...) MMR_PRINTF(5, 6);

static void report(struct walk *w, const char *path, unsigned depth,
                   enum mmr_scan_archive_reason reason, const char *fmt, ...)
{
    char msg[MESSAGE_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    w->stats.problems++;
    if (w->stats.first_problem == 0) {
        w->stats.first_problem = reason;
        w->first_code = reason_code(reason);
        w->first_msg = mmr_asprintf("%s: %s", path, msg);
    }
    if (w->cb->problem)
        w->cb->problem(path, depth, reason, msg, w->cb->ud);
}

/* ---- reading -------------------------------------------------------------- */

static la_ssize_t file_read(struct archive *a, void *ud, const void **buf)
{
    struct file_src *f = ud;
    uv_fs_t req;
    uv_buf_t iov = uv_buf_init(f->buf, (unsigned)CHUNK_BYTES);
    int n = uv_fs_read(NULL, &req, f->fd, &iov, 1, f->off, NULL);
    uv_fs_req_cleanup(&req);
    if (n < 0) {
        archive_set_error(a, EIO, "reading: %s", uv_strerror(n));
        return ARCHIVE_FATAL;
    }
    f->off += n;
    *buf = f->buf;
    return n;
}

static la_int64_t file_seek(struct archive *a, void *ud, la_int64_t offset, int whence)
{
    struct file_src *f = ud;
    int64_t base = whence == SEEK_CUR ? f->off : whence == SEEK_END ? f->size : 0;
    if ((offset > 0 && base > INT64_MAX - offset) || base + offset < 0) {
        archive_set_error(a, EINVAL, "seeking outside the file");
        return ARCHIVE_FATAL;
    }
    f->off = base + offset;
    return f->off;
}

static la_int64_t file_skip(struct archive *a, void *ud, la_int64_t request)
{
    (void)a;
    struct file_src *f = ud;
    int64_t left = f->size > f->off ? f->size - f->off : 0;
    int64_t n = request < left ? request : left;
    if (n < 0)
        n = 0;
    f->off += n;
    return n;
}

/* A reader over src with the formats, or the raw format, and the filters. */
static int open_reader(struct walk *w, const struct source *src, bool raw, struct archive **out)
{
    struct archive *a = archive_read_new();
    if (!a)
        return mmr_err_set(MMR_ENOMEM, "creating an archive reader: out of memory");
    if (raw) {
        archive_read_support_format_raw(a);
    } else {
        for (size_t i = 0; i < N_FORMATS; i++)
            if (w->format_ok[i])
                formats[i](a);
    }
    for (size_t i = 0; i < N_FILTERS; i++)
        if (w->filter_ok[i])
            filters[i](a);
    int r;
    if (src->file) {
        src->file->off = 0;
        archive_read_set_read_callback(a, file_read);
        archive_read_set_seek_callback(a, file_seek);
        archive_read_set_skip_callback(a, file_skip);
        archive_read_set_callback_data(a, src->file);
        r = archive_read_open1(a);
    } else {
        r = archive_read_open_memory(a, src->data, src->len);
    }
    *out = a;
    if (r == ARCHIVE_OK || r == ARCHIVE_WARN)
        return 0;
    return archive_errno(a) == UNRECOGNIZED_ERRNO ? MMR_EINVAL : MMR_ECORRUPT;
}

/* Skipping a member is free when its bytes are stored in an uncompressed
 * stream (zip's members know their compressed size); elsewhere libarchive
 * would decompress what it skips, which the limits would not see. */
static bool skip_is_cheap(struct archive *a)
{
    int fmt = archive_format(a) & ARCHIVE_FORMAT_BASE_MASK;
    return archive_filter_count(a) == 1 &&
           (fmt == ARCHIVE_FORMAT_ZIP || fmt == ARCHIVE_FORMAT_TAR || fmt == ARCHIVE_FORMAT_CPIO ||
            fmt == ARCHIVE_FORMAT_ISO9660 || fmt == ARCHIVE_FORMAT_AR);
}

enum member_result {
    MEMBER_READ,     /* all of it is in buf */
    MEMBER_SKIPPED,  /* left unread; the container may go on */
    MEMBER_LEAVE,    /* the container cannot be read further */
};

/* Reads the current member into buf, checking the limits after every chunk
 * so that nothing is decompressed much past a limit. */
static enum member_result read_member(struct walk *w, struct archive *a, struct archive_entry *e,
                                      const char *path, unsigned depth, size_t src_len,
                                      uint64_t *expanded, struct mmr_buf *buf)
{
    /* A member left unread ends a container whose skipping would decompress. */
    const char *tail = skip_is_cheap(a) ? ""
                                        : "; the rest of the container is not read (skipping "
                                          "the member would mean decompressing it)";
    if (archive_entry_is_data_encrypted(e)) {
        report(w, path, depth, MMR_SCAN_ARCHIVE_ENCRYPTED, "the member is encrypted%s", tail);
        return MEMBER_SKIPPED;
    }
    if (archive_entry_size_is_set(e) && archive_entry_size(e) > 0 &&
        (uint64_t)archive_entry_size(e) > w->lim.max_member_bytes) {
        report(w, path, depth, MMR_SCAN_ARCHIVE_MEMBER_SIZE,
               "the member is %lld bytes, over the limit of %llu%s",
               (long long)archive_entry_size(e), (unsigned long long)w->lim.max_member_bytes,
               tail);
        return MEMBER_SKIPPED;
    }
    char *chunk = mmr_malloc(CHUNK_BYTES);
    enum member_result res = MEMBER_READ;
    for (;;) {
        la_ssize_t n = archive_read_data(a, chunk, CHUNK_BYTES);
        if (n == 0)
            break;
        if (n < 0) {
            const char *why = archive_error_string(a) ? archive_error_string(a) : "no reason";
            if (archive_entry_is_encrypted(e) || archive_read_has_encrypted_entries(a) > 0)
                report(w, path, depth, MMR_SCAN_ARCHIVE_ENCRYPTED,
                       "the member is encrypted: %s%s", why, tail);
            else
                report(w, path, depth, MMR_SCAN_ARCHIVE_CORRUPT, "reading the member: %s%s",
                       why, n == ARCHIVE_FATAL ? "" : tail);
            res = n == ARCHIVE_FATAL ? MEMBER_LEAVE : MEMBER_SKIPPED;
            break;
        }
        uint64_t un = (uint64_t)n;
        w->stats.bytes += un;
        *expanded += un;
        if (w->stats.bytes > w->lim.max_total_bytes) {
            report(w, path, depth, MMR_SCAN_ARCHIVE_TOTAL,
                   "more than %llu bytes decompressed in all",
                   (unsigned long long)w->lim.max_total_bytes);
            w->stop = true;
            res = MEMBER_LEAVE;
            break;
        }
        if (*expanded > w->lim.ratio_slack && *expanded / w->lim.max_ratio > src_len) {
            report(w, path, depth, MMR_SCAN_ARCHIVE_RATIO,
                   "%llu bytes expanded from a container of %zu bytes (over %llu:1)",
                   (unsigned long long)*expanded, src_len,
                   (unsigned long long)w->lim.max_ratio);
            res = MEMBER_LEAVE;
            break;
        }
        if (buf->len + un > w->lim.max_member_bytes) {
            report(w, path, depth, MMR_SCAN_ARCHIVE_MEMBER_SIZE,
                   "the member is over the limit of %llu bytes%s",
                   (unsigned long long)w->lim.max_member_bytes, tail);
            res = MEMBER_SKIPPED;
            break;
        }
        mmr_buf_append(buf, chunk, un);
    }
    free(chunk);
    return res;
}

static int walk_container(struct walk *w, struct mmr_buf *path, unsigned depth,
                          const struct source *src);

static void path_truncate(struct mmr_buf *path, size_t len)
{
    path->len = len;
    path->data[len] = '\0';
}

/* Hands a member read whole to the callback, then walks it if it is an
 * archive itself. */
static void deliver(struct walk *w, struct mmr_buf *path, unsigned depth, const struct mmr_buf *m)
{
    w->stats.members++;
    int rc = w->cb->member(path->data, depth, m->data ? m->data : "", m->len, w->cb->ud);
    if (rc != 0) {
        w->cb_rc = rc;
        w->stop = true;
        return;
    }
    if (m->len == 0 || !mmr_scan_archive_sniff(m->data, m->len))
        return;
    if (depth >= w->lim.max_depth) {
        report(w, path->data, depth, MMR_SCAN_ARCHIVE_DEPTH,
               "an archive nested deeper than %u levels is not opened", w->lim.max_depth);
        return;
    }
    struct source inner = {.data = m->data, .len = m->len, .file = NULL};
    walk_container(w, path, depth + 1, &inner);
}

/* Walks the members of the container at path (their depth is depth).
 * Returns MMR_EINVAL, reporting nothing, when it is no archive after all (a
 * member that is one was passed to the callback as plain data already). */
static int walk_container(struct walk *w, struct mmr_buf *path, unsigned depth,
                          const struct source *src)
{
    size_t src_len = src->file ? (size_t)src->file->size : src->len;
    struct archive *a = NULL;
    bool raw = false;
    int rc = open_reader(w, src, false, &a);
    if (rc == MMR_EINVAL) {
        archive_read_free(a);
        raw = true;
        rc = open_reader(w, src, true, &a);
        /* The raw format takes anything: it counts only through a filter. */
        if (rc == 0 && archive_filter_count(a) < 2)
            rc = MMR_EINVAL;
    }
    if (rc != 0) {
        if (rc != MMR_EINVAL)
            report(w, path->data, depth - 1, MMR_SCAN_ARCHIVE_CORRUPT, "opening: %s",
                   a && archive_error_string(a) ? archive_error_string(a) : mmr_err_msg());
        archive_read_free(a);
        return rc == MMR_EINVAL ? MMR_EINVAL : 0;
    }

    size_t parent_len = path->len;
    uint64_t expanded = 0;
    struct mmr_buf member = {0};
    while (!w->stop) {
        path_truncate(path, parent_len);
        struct archive_entry *e;
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            const char *why = archive_error_string(a) ? archive_error_string(a) : "no reason";
            /* Only 7z and rar encrypt their headers; elsewhere an encryption
             * flag next to a broken header is noise in a corrupt archive. */
            int fmt = archive_format(a) & ARCHIVE_FORMAT_BASE_MASK;
            if ((fmt == ARCHIVE_FORMAT_7ZIP || fmt == ARCHIVE_FORMAT_RAR ||
                 fmt == ARCHIVE_FORMAT_RAR_V5) &&
                archive_read_has_encrypted_entries(a) > 0)
                report(w, path->data, depth - 1, MMR_SCAN_ARCHIVE_ENCRYPTED,
                       "the archive is encrypted: %s", why);
            else
                report(w, path->data, depth - 1, MMR_SCAN_ARCHIVE_CORRUPT,
                       "reading the next member: %s", why);
            break;
        }
        if (++w->entries > w->lim.max_members) {
            report(w, path->data, depth - 1, MMR_SCAN_ARCHIVE_MEMBERS,
                   "more than %llu members in all", (unsigned long long)w->lim.max_members);
            w->stop = true;
            break;
        }
        if (archive_entry_filetype(e) != AE_IFREG)
            continue;
        if (raw)
            append_raw_name(path, parent_len);
        else
            append_name(path, entry_name(e));

        member.len = 0;
        enum member_result res = read_member(w, a, e, path->data, depth, src_len, &expanded,
                                             &member);
        if (res == MEMBER_READ)
            deliver(w, path, depth, &member);
        else if (res == MEMBER_SKIPPED && !skip_is_cheap(a))
            res = MEMBER_LEAVE;
        mmr_buf_free(&member);
        member = (struct mmr_buf){0};
        if (res == MEMBER_LEAVE)
            break;
    }
    path_truncate(path, parent_len);
    archive_read_free(a);
    return 0;
}

/* ---- entry points --------------------------------------------------------- */

static void init_walk(struct walk *w, const struct mmr_scan_archive_limits *limits,
                      const struct mmr_scan_archive_cb *cb)
{
    memset(w, 0, sizeof(*w));
    if (limits)
        w->lim = *limits;
    if (w->lim.max_depth == 0)
        w->lim.max_depth = MMR_SCAN_ARCHIVE_DEFAULT_DEPTH;
    if (w->lim.max_depth > MMR_SCAN_ARCHIVE_MAX_DEPTH)
        w->lim.max_depth = MMR_SCAN_ARCHIVE_MAX_DEPTH;
    if (w->lim.max_total_bytes == 0)
        w->lim.max_total_bytes = MMR_SCAN_ARCHIVE_DEFAULT_TOTAL_BYTES;
    if (w->lim.max_members == 0)
        w->lim.max_members = MMR_SCAN_ARCHIVE_DEFAULT_MEMBERS;
    if (w->lim.max_ratio == 0)
        w->lim.max_ratio = MMR_SCAN_ARCHIVE_DEFAULT_RATIO;
    if (w->lim.max_member_bytes == 0)
        w->lim.max_member_bytes = MMR_SCAN_ARCHIVE_DEFAULT_MEMBER_BYTES;
    if (w->lim.ratio_slack == 0)
        w->lim.ratio_slack = MMR_SCAN_ARCHIVE_DEFAULT_RATIO_SLACK;
    w->cb = cb;
    for (size_t i = 0; i < N_FORMATS + N_FILTERS; i++) {
        struct archive *probe = archive_read_new();
        if (!probe)
            continue;
        if (i < N_FORMATS)
            w->format_ok[i] = formats[i](probe) == ARCHIVE_OK;
        else
            w->filter_ok[i - N_FORMATS] = filters[i - N_FORMATS](probe) == ARCHIVE_OK;
        archive_read_free(probe);
    }
}

/* Walks src as the outermost container and turns the outcome into the
 * return value. */
static int run_walk(struct walk *w, const char *name, const struct source *src,
                    struct mmr_scan_archive_stats *stats)
{
    struct mmr_buf path = {0};
    mmr_buf_append(&path, name, strlen(name));
    int rc = walk_container(w, &path, 1, src);
    mmr_buf_free(&path);
    if (stats)
        *stats = w->stats;
    if (rc == MMR_EINVAL)
        rc = mmr_err_set(MMR_EINVAL, "%s: not an archive libarchive reads", name);
    else if (w->cb_rc != 0)
        rc = w->cb_rc;
    else if (w->first_msg)
        rc = mmr_err_set(w->first_code, "%s", w->first_msg);
    free(w->first_msg);
    return rc;
}

int mmr_scan_archive_walk(const char *name, const void *data, size_t len,
                          const struct mmr_scan_archive_limits *limits,
                          const struct mmr_scan_archive_cb *cb,
                          struct mmr_scan_archive_stats *stats)
{
    if (stats)
        memset(stats, 0, sizeof(*stats));
    if (!mmr_scan_archive_sniff(data, len))
        return mmr_err_set(MMR_EINVAL, "%s: not an archive", name);
    struct walk w;
    init_walk(&w, limits, cb);
    struct source src = {.data = data, .len = len, .file = NULL};
    return run_walk(&w, name, &src, stats);
}

int mmr_scan_archive_walk_file(const char *path, const char *name,
                               const struct mmr_scan_archive_limits *limits,
                               const struct mmr_scan_archive_cb *cb,
                               struct mmr_scan_archive_stats *stats)
{
    if (stats)
        memset(stats, 0, sizeof(*stats));
    uv_fs_t req;
    int fd = uv_fs_open(NULL, &req, path, UV_FS_O_RDONLY, 0, NULL);
    uv_fs_req_cleanup(&req);
    if (fd < 0)
        return mmr_err_set(fd == UV_ENOENT ? MMR_ENOENT : MMR_EIO, "opening '%s': %s", path,
                           uv_strerror(fd));
    struct file_src f = {.fd = fd, .size = 0, .off = 0, .buf = NULL};
    int rc = uv_fs_fstat(NULL, &req, fd, NULL);
    if (rc == 0)
        f.size = (int64_t)req.statbuf.st_size;
    uv_fs_req_cleanup(&req);
    if (rc < 0) {
        rc = mmr_err_set(MMR_EIO, "reading '%s': %s", path, uv_strerror(rc));
        goto out;
    }
    /* The head for the signature check, read into the chunk buffer. */
    f.buf = mmr_malloc(SNIFF_BYTES > CHUNK_BYTES ? SNIFF_BYTES : CHUNK_BYTES);
    size_t head = 0;
    while (head < SNIFF_BYTES) {
        uv_buf_t iov = uv_buf_init(f.buf + head, (unsigned)(SNIFF_BYTES - head));
        int n = uv_fs_read(NULL, &req, fd, &iov, 1, (int64_t)head, NULL);
        uv_fs_req_cleanup(&req);
        if (n < 0) {
            rc = mmr_err_set(MMR_EIO, "reading '%s': %s", path, uv_strerror(n));
            goto out;
        }
        if (n == 0)
            break;
        head += (size_t)n;
    }
    if (!mmr_scan_archive_sniff(f.buf, head)) {
        rc = mmr_err_set(MMR_EINVAL, "%s: not an archive", name);
        goto out;
    }
    struct walk w;
    init_walk(&w, limits, cb);
    struct source src = {.data = NULL, .len = 0, .file = &f};
    rc = run_walk(&w, name, &src, stats);
out:
    free(f.buf);
    uv_fs_close(NULL, &req, fd, NULL);
    uv_fs_req_cleanup(&req);
    return rc;
}
