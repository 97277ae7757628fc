/* In-memory .tar.gz (pax, gzip) through libarchive: a writer that grows an
 * mmr_buf, and a bounded reader that checks names and limits before it
 * allocates anything for an entry. */
#include "shared/targz.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <archive.h>
#include <archive_entry.h>

#include "shared/err.h"
#include "shared/mem.h"

#define DEFAULT_MAX_ENTRIES     10000
#define DEFAULT_MAX_ENTRY_BYTES ((size_t)64 * 1024 * 1024)
#define DEFAULT_MAX_TOTAL_BYTES ((size_t)256 * 1024 * 1024)
#define NAME_MAX_BYTES          1024
#define FILE_MODE               0600

struct mmr_targz {
    struct archive *a;
    struct mmr_buf out;
};

/* A name is one or more '/'-separated components, none empty, "." or "..",
 * with no backslash, colon or control character (each would mean something
 * else to some extractor, on Windows in particular). */
static bool name_is_safe(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > NAME_MAX_BYTES)
        return false;
    const char *comp = name;
    for (const char *p = name;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '/' || c == '\0') {
            size_t n = (size_t)(p - comp);
            if (n == 0 || (n == 1 && comp[0] == '.') ||
                (n == 2 && comp[0] == '.' && comp[1] == '.'))
                return false;
            if (c == '\0')
                return true;
            comp = p + 1;
        } else if (c < 0x20 || c == 0x7f || c == '\\' || c == ':') {
            return false;
        }
    }
}

/* ---- writing -------------------------------------------------------------- */

static la_ssize_t write_cb(struct archive *a, void *ud, const void *data, size_t len)
{
    mmr_buf_append(ud, data, len);
    return (la_ssize_t)len;
}

int mmr_targz_new(struct mmr_targz **out)
{
    *out = NULL;
    struct mmr_targz *tgz = mmr_calloc(1, sizeof(*tgz));
    tgz->a = archive_write_new();
    if (!tgz->a) {
        free(tgz);
        return mmr_err_set(MMR_ENOMEM, "creating an archive: out of memory");
    }
    /* Without padding the last block, the gzip stream ends with the data.
     * Name encoding is chosen per entry in mmr_targz_add. */
    /* pax with hdrcharset=BINARY: names are UTF-8 already and are stored
     * byte for byte; converting from the process locale fails for non-ASCII
     * names under the C locale. (GNU tar notes the keyword with a harmless
     * "Ignoring unknown extended header keyword" line; bsdtar and 7-Zip know
     * it. ustar was tried: it cannot hold pre-1970 times or long names, and
     * it converts names from the locale too.) */
    if (archive_write_set_format_pax_restricted(tgz->a) != ARCHIVE_OK ||
        archive_write_set_format_option(tgz->a, "pax", "hdrcharset", "BINARY") != ARCHIVE_OK ||
        archive_write_add_filter_gzip(tgz->a) != ARCHIVE_OK ||
        archive_write_set_bytes_in_last_block(tgz->a, 1) != ARCHIVE_OK ||
        archive_write_open2(tgz->a, &tgz->out, NULL, write_cb, NULL, NULL) != ARCHIVE_OK) {
        int rc = mmr_err_set(MMR_EIO, "creating an archive: %s", archive_error_string(tgz->a));
        mmr_targz_free(tgz);
        return rc;
    }
    *out = tgz;
    return 0;
}

static int add_entry(struct mmr_targz *tgz, struct archive_entry *e, const char *name,
                     const void *data, size_t len)
{
    if (archive_write_header(tgz->a, e) != ARCHIVE_OK)
        return mmr_err_set(MMR_EIO, "adding '%s' to an archive: %s", name,
                           archive_error_string(tgz->a));
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        la_ssize_t n = archive_write_data(tgz->a, p, left);
        if (n <= 0)
            return mmr_err_set(MMR_EIO, "adding '%s' to an archive: %s", name,
                               n < 0 ? archive_error_string(tgz->a) : "no progress");
        p += n;
        left -= (size_t)n;
    }
    if (archive_write_finish_entry(tgz->a) != ARCHIVE_OK)
        return mmr_err_set(MMR_EIO, "adding '%s' to an archive: %s", name,
                           archive_error_string(tgz->a));
    return 0;
}

int mmr_targz_add(struct mmr_targz *tgz, const char *name, const void *data, size_t len,
                  int64_t mtime_ms)
{
    if (!name_is_safe(name))
        return mmr_err_set(MMR_EINVAL,
                           "adding '%s' to an archive: names must be relative, without '.' or "
                           "'..' parts, empty parts, backslashes, colons or control characters",
                           name);
    if (len > (size_t)INT64_MAX)
        return mmr_err_set(MMR_ETOOBIG, "adding '%s' to an archive: too large", name);

    /* Floor division keeps times before 1970 right: -1 ms is -1 s + 999 ms. */
    int64_t sec = mtime_ms / 1000;
    int64_t ms = mtime_ms % 1000;
    if (ms < 0) {
        sec -= 1;
        ms += 1000;
    }
    struct archive_entry *e = archive_entry_new();
    if (!e)
        return mmr_err_set(MMR_ENOMEM, "adding '%s' to an archive: out of memory", name);
    archive_entry_copy_pathname(e, name);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, FILE_MODE);
    archive_entry_set_size(e, (la_int64_t)len);
    archive_entry_set_mtime(e, (time_t)sec, (long)(ms * 1000000));
    int rc = add_entry(tgz, e, name, data, len);
    archive_entry_free(e);
    return rc;
}

int mmr_targz_finish(struct mmr_targz *tgz, char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    int rc = 0;
    if (archive_write_close(tgz->a) != ARCHIVE_OK)
        rc = mmr_err_set(MMR_EIO, "finishing an archive: %s", archive_error_string(tgz->a));
    if (rc == 0) {
        *out = tgz->out.data;
        *out_len = tgz->out.len;
        tgz->out = (struct mmr_buf){0};
    }
    mmr_targz_free(tgz);
    return rc;
}

void mmr_targz_free(struct mmr_targz *tgz)
{
    if (!tgz)
        return;
    if (tgz->a)
        archive_write_free(tgz->a);
    mmr_buf_free(&tgz->out);
    free(tgz);
}

/* ---- reading -------------------------------------------------------------- */

struct read_state {
    struct archive *a;
    size_t max_entries;
    size_t max_entry_bytes;
    size_t max_total_bytes;
    size_t entries;
    size_t total;
    char last[NAME_MAX_BYTES + 1]; /* the last good entry, for messages */
};

/* Reads the data of one regular file, already checked against the limits. */
static int read_data(struct read_state *st, const char *name, size_t size, char **out)
{
    char *data = mmr_malloc(size);
    size_t got = 0;
    while (got < size) {
        la_ssize_t n = archive_read_data(st->a, data + got, size - got);
        if (n < 0) {
            free(data);
            return mmr_err_set(MMR_ECORRUPT, "reading archive entry '%s': %s", name,
                               archive_error_string(st->a));
        }
        if (n == 0) {
            free(data);
            return mmr_err_set(MMR_ECORRUPT,
                               "reading archive entry '%s': truncated after %zu of %zu bytes", name,
                               got, size);
        }
        got += (size_t)n;
    }
    *out = data;
    return 0;
}

static int read_entry(struct read_state *st, struct archive_entry *e, mmr_targz_entry_cb cb,
                      void *ud)
{
    if (++st->entries > st->max_entries)
        return mmr_err_set(MMR_ETOOBIG, "archive has more than %zu entries", st->max_entries);
    /* Directories, links and devices carry no data we hand out. */
    if (archive_entry_filetype(e) != AE_IFREG || archive_entry_hardlink(e))
        return 0;

    /* The raw header bytes first: ours are UTF-8, written with
     * hdrcharset=BINARY, and the _utf8 accessor would decode them again from
     * the process's code page (double-encoding them on Windows). Archives
     * whose names libarchive had to convert come back through _utf8. */
    const char *name = archive_entry_pathname(e);
    if (!name)
        name = archive_entry_pathname_utf8(e);
    if (!name || !name_is_safe(name))
        return mmr_err_set(MMR_ECORRUPT, "archive entry after '%s' has an unsafe name '%s'",
                           st->last, name ? name : "(none)");
    if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0)
        return mmr_err_set(MMR_ECORRUPT, "archive entry '%s' has no size", name);
    uint64_t size = (uint64_t)archive_entry_size(e);
    if (size > st->max_entry_bytes)
        return mmr_err_set(MMR_ETOOBIG, "archive entry '%s' has %llu bytes, over the limit of %zu",
                           name, (unsigned long long)size, st->max_entry_bytes);
    if (size > st->max_total_bytes - st->total)
        return mmr_err_set(MMR_ETOOBIG,
                           "archive entry '%s' takes the archive over its limit of %zu bytes", name,
                           st->max_total_bytes);
    st->total += (size_t)size;

    char *data = NULL;
    int rc = read_data(st, name, (size_t)size, &data);
    if (rc < 0)
        return rc;
    snprintf(st->last, sizeof(st->last), "%s", name);
    rc = cb(name, data, (size_t)size, ud);
    free(data);
    return rc;
}

static int read_all(struct read_state *st, mmr_targz_entry_cb cb, void *ud)
{
    for (;;) {
        struct archive_entry *e;
        int r = archive_read_next_header(st->a, &e);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK)
            return mmr_err_set(MMR_ECORRUPT, "reading an archive after entry '%s': %s", st->last,
                               archive_error_string(st->a));
        /* Only the gzip filter is enabled, but "none" always is: refuse a
         * plain tar, as the caller asked for .tar.gz. */
        if (st->entries == 0 && archive_filter_code(st->a, 0) != ARCHIVE_FILTER_GZIP)
            return mmr_err_set(MMR_ECORRUPT, "reading an archive: not gzip-compressed");
        int rc = read_entry(st, e, cb, ud);
        if (rc != 0)
            return rc;
    }
    /* An archive of nothing but end-of-archive blocks never reports a filter
     * above; it must still be gzip. */
    if (st->entries == 0 && archive_filter_code(st->a, 0) != ARCHIVE_FILTER_GZIP)
        return mmr_err_set(MMR_ECORRUPT, "reading an archive: not gzip-compressed");
    return 0;
}

int mmr_targz_read(const void *data, size_t len, const struct mmr_targz_limits *limits,
                   mmr_targz_entry_cb cb, void *ud)
{
    static const struct mmr_targz_limits none;
    if (!limits)
        limits = &none;
    if (!data || len == 0)
        return mmr_err_set(MMR_ECORRUPT, "reading an archive: it is empty");
    struct read_state st = {
        .max_entries = limits->max_entries ? limits->max_entries : DEFAULT_MAX_ENTRIES,
        .max_entry_bytes =
            limits->max_entry_bytes ? limits->max_entry_bytes : DEFAULT_MAX_ENTRY_BYTES,
        .max_total_bytes =
            limits->max_total_bytes ? limits->max_total_bytes : DEFAULT_MAX_TOTAL_BYTES,
        .last = "(start)",
    };
    st.a = archive_read_new();
    if (!st.a)
        return mmr_err_set(MMR_ENOMEM, "reading an archive: out of memory");
    int rc;
    if (archive_read_support_filter_gzip(st.a) != ARCHIVE_OK ||
        archive_read_support_format_tar(st.a) != ARCHIVE_OK) {
        rc = mmr_err_set(MMR_EUNSUP, "reading an archive: %s", archive_error_string(st.a));
        goto out;
    }
    if (archive_read_open_memory(st.a, data, len) != ARCHIVE_OK) {
        rc = mmr_err_set(MMR_ECORRUPT, "reading an archive: %s", archive_error_string(st.a));
        goto out;
    }
    rc = read_all(&st, cb, ud);
out:
    archive_read_free(st.a);
    return rc;
}
