/* The YARA engine core: libyara start-up, rule compilation from a directory
 * tree (or from a saved compiled file), per-thread scanners, and the match
 * list with our severity. See scan_engine.h for the contracts. */
#include "agent/scan_engine.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>
#include <yara.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"

/* Deeper rule trees than this are a mistake or a loop of bind mounts. */
#define MAX_RULE_DIR_DEPTH 32
/* Files are read in pieces of this size so a growing file cannot overrun. */
#define READ_CHUNK (1024 * 1024)

static const char *const external_names[] = {"filename", "filepath", "extension", "filetype",
                                             "owner"};
#define EXTERNAL_COUNT (sizeof(external_names) / sizeof(external_names[0]))

struct mmr_scan_rules {
    YR_RULES *yr;
    atomic_int refs;
    size_t count;
};

struct mmr_scanner {
    struct mmr_scan_rules *rules;
    YR_SCANNER *yr;
};

/* ---- engine start-up --------------------------------------------------------- */

static uv_once_t engine_once = UV_ONCE_INIT;
static uv_mutex_t engine_lock;
static int engine_users;

static void engine_lock_init(void)
{
    if (uv_mutex_init(&engine_lock) != 0)
        abort();
}

int mmr_scan_engine_init(void)
{
    uv_once(&engine_once, engine_lock_init);
    uv_mutex_lock(&engine_lock);
    int rc = 0;
    if (engine_users == 0) {
        int yr = yr_initialize();
        if (yr != ERROR_SUCCESS)
            rc = mmr_err_set(MMR_ENOMEM, "cannot start libyara (error %d)", yr);
    }
    if (rc == 0)
        engine_users++;
    uv_mutex_unlock(&engine_lock);
    return rc;
}

void mmr_scan_engine_shutdown(void)
{
    uv_once(&engine_once, engine_lock_init);
    uv_mutex_lock(&engine_lock);
    if (engine_users > 0 && --engine_users == 0)
        yr_finalize();
    uv_mutex_unlock(&engine_lock);
}

/* ---- severity ------------------------------------------------------------------ */

const char *mmr_scan_severity_name(int severity)
{
    static const char *const names[] = {"low", "medium", "high", "critical"};
    if (severity < MMR_SCAN_SEV_LOW || severity > MMR_SCAN_SEV_CRITICAL)
        return "unknown";
    return names[severity];
}

int mmr_scan_severity_from_score(int64_t score)
{
    if (score < 0)
        return -1;
    if (score < 40)
        return MMR_SCAN_SEV_LOW;
    if (score < 60)
        return MMR_SCAN_SEV_MEDIUM;
    if (score < 80)
        return MMR_SCAN_SEV_HIGH;
    return MMR_SCAN_SEV_CRITICAL;
}

/* A non-negative decimal string ("75"), or -1. */
static int64_t parse_decimal(const char *s)
{
    if (*s == '\0' || strlen(s) > 9)
        return -1;
    int64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

static bool ascii_iequal(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char ca = (*a >= 'A' && *a <= 'Z') ? (char)(*a + 32) : *a;
        if (ca != *b)
            return false;
    }
    return *a == *b;
}

/* The severity named by a `severity` meta, or -1. */
static int severity_from_meta(const struct mmr_scan_meta *m)
{
    int64_t v = -1;
    if (m->type == MMR_SCAN_META_INT) {
        v = m->num;
    } else if (m->type == MMR_SCAN_META_STRING) {
        for (int s = MMR_SCAN_SEV_LOW; s <= MMR_SCAN_SEV_CRITICAL; s++)
            if (ascii_iequal(m->str, mmr_scan_severity_name(s)))
                return s;
        v = parse_decimal(m->str);
    }
    return (v >= MMR_SCAN_SEV_LOW && v <= MMR_SCAN_SEV_CRITICAL) ? (int)v : -1;
}

static int score_from_meta(const struct mmr_scan_meta *m)
{
    if (m->type == MMR_SCAN_META_INT)
        return mmr_scan_severity_from_score(m->num);
    if (m->type == MMR_SCAN_META_STRING)
        return mmr_scan_severity_from_score(parse_decimal(m->str));
    return -1;
}

static int match_severity(const struct mmr_scan_match *match)
{
    int from_score = -1;
    for (size_t i = 0; i < match->meta_count; i++) {
        const struct mmr_scan_meta *m = &match->meta[i];
        if (strcmp(m->name, "severity") == 0) {
            int s = severity_from_meta(m);
            if (s >= 0)
                return s;
        } else if (strcmp(m->name, "score") == 0 && from_score < 0) {
            from_score = score_from_meta(m);
        }
    }
    return from_score >= 0 ? from_score : MMR_SCAN_SEV_DEFAULT;
}

/* ---- compiling ------------------------------------------------------------------ */

struct compile_ctx {
    const char *cur_name; /* the source being compiled, for messages */
    char *first_error;
    char *refused_include;
};

static void compile_cb(int level, const char *file_name, int line, const YR_RULE *rule,
                       const char *message, void *user)
{
    (void)rule;
    struct compile_ctx *ctx = user;
    if (level != YARA_ERROR_LEVEL_ERROR || ctx->first_error)
        return;
    const char *name = file_name ? file_name : ctx->cur_name;
    if (ctx->refused_include)
        ctx->first_error = mmr_asprintf("%s:%d: include \"%s\" refused: every rule file is "
                                        "compiled on its own",
                                        name, line, ctx->refused_include);
    else
        ctx->first_error = mmr_asprintf("%s:%d: %s", name, line, message);
}

static const char *include_cb(const char *include_name, const char *calling_file,
                              const char *calling_ns, void *user)
{
    (void)calling_file;
    (void)calling_ns;
    struct compile_ctx *ctx = user;
    if (!ctx->refused_include)
        ctx->refused_include = mmr_strdup(include_name);
    return NULL;
}

static void include_free_cb(const char *result, void *user)
{
    (void)result;
    (void)user;
}

static void compile_ctx_free(struct compile_ctx *ctx)
{
    free(ctx->first_error);
    free(ctx->refused_include);
}

static int yara_code(int yr)
{
    switch (yr) {
    case ERROR_INSUFFICIENT_MEMORY:
        return MMR_ENOMEM;
    case ERROR_SCAN_TIMEOUT:
        return MMR_ETIMEDOUT;
    case ERROR_TOO_MANY_MATCHES:
        return MMR_ETOOBIG;
    case ERROR_TOO_MANY_SCAN_THREADS:
        return MMR_EBUSY;
    case ERROR_INVALID_FILE:
    case ERROR_CORRUPT_FILE:
        return MMR_ECORRUPT;
    case ERROR_UNSUPPORTED_FILE_VERSION:
        return MMR_EUNSUP;
    default:
        return MMR_EIO;
    }
}

static const char *yara_msg(int yr)
{
    switch (yr) {
    case ERROR_INSUFFICIENT_MEMORY:
        return "out of memory";
    case ERROR_SCAN_TIMEOUT:
        return "timed out";
    case ERROR_TOO_MANY_MATCHES:
        return "too many matches";
    case ERROR_TOO_MANY_SCAN_THREADS:
        return "too many threads scanning at once";
    case ERROR_INVALID_FILE:
    case ERROR_CORRUPT_FILE:
        return "damaged compiled rules";
    case ERROR_UNSUPPORTED_FILE_VERSION:
        return "compiled by another libyara version";
    case ERROR_EXEC_STACK_OVERFLOW:
        return "rule condition too deeply nested";
    case ERROR_TOO_MANY_RE_FIBERS:
        return "regular expression too complex for this data";
    default:
        return "libyara failure";
    }
}

static int yara_fail(int yr, const char *what)
{
    return mmr_err_set(yara_code(yr), "%s: %s (libyara error %d)", what, yara_msg(yr), yr);
}

static int compiler_new(struct compile_ctx *ctx, YR_COMPILER **out)
{
    YR_COMPILER *c;
    int yr = yr_compiler_create(&c);
    if (yr != ERROR_SUCCESS)
        return yara_fail(yr, "creating the rule compiler");
    yr_compiler_set_callback(c, compile_cb, ctx);
    yr_compiler_set_include_callback(c, include_cb, include_free_cb, ctx);
    for (size_t i = 0; i < EXTERNAL_COUNT; i++) {
        yr = yr_compiler_define_string_variable(c, external_names[i], "");
        if (yr != ERROR_SUCCESS) {
            yr_compiler_destroy(c);
            return yara_fail(yr, "declaring the external variables");
        }
    }
    *out = c;
    return 0;
}

static int compiler_add(YR_COMPILER *c, struct compile_ctx *ctx, const char *source,
                        const char *name)
{
    ctx->cur_name = name;
    if (yr_compiler_add_string(c, source, name) == 0)
        return 0;
    if (ctx->first_error)
        return mmr_err_set(MMR_EINVAL, "%s", ctx->first_error);
    return mmr_err_set(MMR_EINVAL, "%s: does not compile", name);
}

static size_t count_rules(YR_RULES *yr)
{
    size_t n = 0;
    YR_RULE *rule;
    yr_rules_foreach(yr, rule)
    {
        n++;
    }
    return n;
}

static struct mmr_scan_rules *rules_wrap(YR_RULES *yr)
{
    struct mmr_scan_rules *r = mmr_calloc(1, sizeof(*r));
    r->yr = yr;
    atomic_init(&r->refs, 1);
    r->count = count_rules(yr);
    return r;
}

static int compiler_finish(YR_COMPILER *c, struct mmr_scan_rules **out)
{
    YR_RULES *yr_rules;
    int yr = yr_compiler_get_rules(c, &yr_rules);
    if (yr != ERROR_SUCCESS)
        return yara_fail(yr, "building the compiled rules");
    *out = rules_wrap(yr_rules);
    return 0;
}

int mmr_scan_rules_compile_string(const char *source, const char *name, struct mmr_scan_rules **out)
{
    struct compile_ctx ctx = {0};
    YR_COMPILER *c;
    int rc = compiler_new(&ctx, &c);
    if (rc != 0)
        return rc;
    rc = compiler_add(c, &ctx, source, name);
    if (rc == 0)
        rc = compiler_finish(c, out);
    yr_compiler_destroy(c);
    compile_ctx_free(&ctx);
    return rc;
}

/* ---- the rule directory ----------------------------------------------------------- */

struct rule_file {
    char *rel;  /* "sub/x.yar": '/' everywhere, the namespace and message name */
    char *path; /* with the system's separators, for opening */
};

struct rule_list {
    struct rule_file *files;
    size_t len;
    size_t cap;
};

static void rule_list_free(struct rule_list *l)
{
    for (size_t i = 0; i < l->len; i++) {
        free(l->files[i].rel);
        free(l->files[i].path);
    }
    free(l->files);
}

static bool is_rule_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && dot != name && (ascii_iequal(dot, ".yar") || ascii_iequal(dot, ".yara"));
}

static int uv_code(int uverr)
{
    switch (uverr) {
    case UV_ENOENT:
    case UV_ENOTDIR:
        return MMR_ENOENT;
    case UV_EACCES:
    case UV_EPERM:
        return MMR_EPERM;
    case UV_ENOMEM:
        return MMR_ENOMEM;
    case UV_EISDIR:
        return MMR_EINVAL;
    default:
        return MMR_EIO;
    }
}

/* The entry's type, asking the filesystem when readdir could not tell. */
static uv_dirent_type_t entry_type(const char *path, uv_dirent_type_t type)
{
    if (type != UV_DIRENT_UNKNOWN)
        return type;
    uv_fs_t req;
    int rc = uv_fs_lstat(NULL, &req, path, NULL);
    uint64_t mode = req.statbuf.st_mode;
    uv_fs_req_cleanup(&req);
    if (rc < 0)
        return UV_DIRENT_UNKNOWN;
    if ((mode & S_IFMT) == S_IFDIR)
        return UV_DIRENT_DIR;
    if ((mode & S_IFMT) == S_IFREG)
        return UV_DIRENT_FILE;
    return UV_DIRENT_UNKNOWN;
}

static int walk(const char *path, const char *rel, int depth, size_t max_files,
                struct rule_list *out)
{
    if (depth > MAX_RULE_DIR_DEPTH)
        return mmr_err_set(MMR_ETOOBIG, "'%s' is nested deeper than %d directories", path,
                           MAX_RULE_DIR_DEPTH);
    uv_fs_t req;
    int n = uv_fs_scandir(NULL, &req, path, 0, NULL);
    if (n < 0) {
        uv_fs_req_cleanup(&req);
        return mmr_err_set(uv_code(n), "cannot list '%s': %s", path, uv_strerror(n));
    }
    int rc = 0;
    uv_dirent_t ent;
    /* After a failure the loop still runs to the end: libuv frees each entry
     * on the next call, and would leak the rest if we stopped early. */
    while (uv_fs_scandir_next(&req, &ent) != UV_EOF) {
        if (rc != 0)
            continue;
        char *child = mmr_path_join(path, ent.name);
        char *child_rel = rel ? mmr_asprintf("%s/%s", rel, ent.name) : mmr_strdup(ent.name);
        uv_dirent_type_t type = entry_type(child, ent.type);
        if (type == UV_DIRENT_DIR) {
            rc = walk(child, child_rel, depth + 1, max_files, out);
        } else if (type == UV_DIRENT_FILE && is_rule_name(ent.name)) {
            if (out->len == max_files) {
                rc = mmr_err_set(MMR_ETOOBIG, "more than %zu rule files", max_files);
            } else {
                if (out->len == out->cap) {
                    out->cap = out->cap ? out->cap * 2 : 16;
                    out->files = mmr_realloc(out->files, out->cap * sizeof(*out->files));
                }
                out->files[out->len++] = (struct rule_file){child_rel, child};
                child = child_rel = NULL;
            }
        }
        free(child);
        free(child_rel);
    }
    uv_fs_req_cleanup(&req);
    return rc;
}

static int rule_file_cmp(const void *a, const void *b)
{
    return strcmp(((const struct rule_file *)a)->rel, ((const struct rule_file *)b)->rel);
}

int mmr_scan_rules_compile_dir(const char *dir, const struct mmr_scan_compile_limits *limits,
                               struct mmr_scan_rules **out)
{
    struct mmr_scan_compile_limits lim = {MMR_SCAN_MAX_RULE_FILES, MMR_SCAN_MAX_RULE_FILE_BYTES,
                                          MMR_SCAN_MAX_RULE_TOTAL_BYTES};
    if (limits)
        lim = *limits;
    struct rule_list list = {0};
    struct compile_ctx ctx = {0};
    YR_COMPILER *c = NULL;
    int rc = walk(dir, NULL, 0, lim.max_files, &list);
    if (rc != 0)
        goto out;
    if (list.len == 0) {
        rc = mmr_err_set(MMR_ENOENT, "no .yar or .yara files under '%s'", dir);
        goto out;
    }
    qsort(list.files, list.len, sizeof(*list.files), rule_file_cmp);
    rc = compiler_new(&ctx, &c);
    if (rc != 0)
        goto out;
    size_t total = 0;
    for (size_t i = 0; i < list.len && rc == 0; i++) {
        char *src;
        size_t len;
        rc = mmr_file_read_all(list.files[i].path, lim.max_file_bytes, &src, &len);
        if (rc != 0) {
            rc = mmr_err_wrap(rc, "rule file %s", list.files[i].rel);
            break;
        }
        total += len;
        if (total > lim.max_total_bytes)
            rc = mmr_err_set(MMR_ETOOBIG, "rule files under '%s' exceed %zu bytes in total", dir,
                             lim.max_total_bytes);
        else
            rc = compiler_add(c, &ctx, src, list.files[i].rel);
        free(src);
    }
    if (rc == 0)
        rc = compiler_finish(c, out);
out:
    if (c)
        yr_compiler_destroy(c);
    compile_ctx_free(&ctx);
    rule_list_free(&list);
    return rc;
}

/* ---- saved rules --------------------------------------------------------------------- */

struct mem_stream {
    struct mmr_buf buf; /* written */
    const char *data;   /* read */
    size_t len;
    size_t pos;
};

static size_t stream_write(const void *ptr, size_t size, size_t count, void *user)
{
    struct mem_stream *s = user;
    if (size == 0 || count == 0)
        return 0;
    mmr_buf_append(&s->buf, ptr, size * count);
    return count;
}

static size_t stream_read(void *ptr, size_t size, size_t count, void *user)
{
    struct mem_stream *s = user;
    if (size == 0)
        return 0;
    size_t items = (s->len - s->pos) / size;
    if (items > count)
        items = count;
    memcpy(ptr, s->data + s->pos, items * size);
    s->pos += items * size;
    return items;
}

int mmr_scan_rules_save(struct mmr_scan_rules *rules, const char *path)
{
    struct mem_stream s = {0};
    YR_STREAM stream = {.user_data = &s, .read = stream_read, .write = stream_write};
    int yr = yr_rules_save_stream(rules->yr, &stream);
    int rc = 0;
    if (yr != ERROR_SUCCESS)
        rc = yara_fail(yr, "saving compiled rules");
    else
        rc = mmr_file_write_atomic(path, s.buf.data, s.buf.len);
    mmr_buf_free(&s.buf);
    return rc;
}

/* Compiled rules without our externals would fail every scan: refuse them now. */
static int check_externals(struct mmr_scan_rules *rules, const char *path)
{
    YR_SCANNER *s;
    int yr = yr_scanner_create(rules->yr, &s);
    if (yr != ERROR_SUCCESS)
        return yara_fail(yr, "checking loaded rules");
    int rc = 0;
    for (size_t i = 0; i < EXTERNAL_COUNT && rc == 0; i++)
        if (yr_scanner_define_string_variable(s, external_names[i], "") != ERROR_SUCCESS)
            rc = mmr_err_set(MMR_ECORRUPT, "'%s' lacks the external variable '%s'", path,
                             external_names[i]);
    yr_scanner_destroy(s);
    return rc;
}

int mmr_scan_rules_load(const char *path, size_t max_bytes, struct mmr_scan_rules **out)
{
    char *data;
    size_t len;
    int rc = mmr_file_read_all(path, max_bytes, &data, &len);
    if (rc != 0)
        return rc;
    struct mem_stream s = {.data = data, .len = len};
    YR_STREAM stream = {.user_data = &s, .read = stream_read, .write = stream_write};
    YR_RULES *yr_rules;
    int yr = yr_rules_load_stream(&stream, &yr_rules);
    free(data);
    if (yr != ERROR_SUCCESS) {
        if (yr == ERROR_INSUFFICIENT_MEMORY || yr == ERROR_UNSUPPORTED_FILE_VERSION)
            return mmr_err_set(yara_code(yr), "loading '%s': %s", path, yara_msg(yr));
        return mmr_err_set(MMR_ECORRUPT,
                           "loading '%s': not compiled rules or damaged "
                           "(libyara error %d)",
                           path, yr);
    }
    struct mmr_scan_rules *rules = rules_wrap(yr_rules);
    rc = check_externals(rules, path);
    if (rc != 0) {
        mmr_scan_rules_unref(rules);
        return rc;
    }
    *out = rules;
    return 0;
}

size_t mmr_scan_rules_count(const struct mmr_scan_rules *rules)
{
    return rules->count;
}

struct mmr_scan_rules *mmr_scan_rules_ref(struct mmr_scan_rules *rules)
{
    atomic_fetch_add(&rules->refs, 1);
    return rules;
}

void mmr_scan_rules_unref(struct mmr_scan_rules *rules)
{
    if (!rules || atomic_fetch_sub(&rules->refs, 1) != 1)
        return;
    yr_rules_destroy(rules->yr);
    free(rules);
}

/* ---- results ---------------------------------------------------------------------------- */

void mmr_scan_result_free(struct mmr_scan_result *result)
{
    for (size_t i = 0; i < result->count; i++) {
        struct mmr_scan_match *m = &result->matches[i];
        free(m->rule);
        free(m->ns);
        for (size_t t = 0; t < m->tag_count; t++)
            free(m->tags[t]);
        free(m->tags);
        for (size_t k = 0; k < m->meta_count; k++) {
            free(m->meta[k].name);
            free(m->meta[k].str);
        }
        free(m->meta);
    }
    free(result->matches);
    memset(result, 0, sizeof(*result));
}

static void add_match(struct mmr_scan_result *res, const YR_RULE *rule)
{
    res->matches = mmr_realloc(res->matches, (res->count + 1) * sizeof(*res->matches));
    struct mmr_scan_match *m = &res->matches[res->count++];
    memset(m, 0, sizeof(*m));
    m->rule = mmr_strdup(rule->identifier);
    m->ns = mmr_strdup(rule->ns->name);
    const char *tag;
    yr_rule_tags_foreach(rule, tag)
    {
        m->tags = mmr_realloc(m->tags, (m->tag_count + 1) * sizeof(*m->tags));
        m->tags[m->tag_count++] = mmr_strdup(tag);
    }
    const YR_META *meta;
    yr_rule_metas_foreach(rule, meta)
    {
        m->meta = mmr_realloc(m->meta, (m->meta_count + 1) * sizeof(*m->meta));
        struct mmr_scan_meta *out = &m->meta[m->meta_count++];
        memset(out, 0, sizeof(*out));
        out->name = mmr_strdup(meta->identifier);
        if (meta->type == META_TYPE_STRING) {
            out->type = MMR_SCAN_META_STRING;
            out->str = mmr_strdup(meta->string);
        } else if (meta->type == META_TYPE_BOOLEAN) {
            out->type = MMR_SCAN_META_BOOL;
            out->num = meta->integer != 0;
        } else {
            out->type = MMR_SCAN_META_INT;
            out->num = meta->integer;
        }
    }
    m->severity = match_severity(m);
}

static int scan_cb(YR_SCAN_CONTEXT *context, int message, void *data, void *user)
{
    (void)context;
    struct mmr_scan_result *res = user;
    if (message == CALLBACK_MSG_RULE_MATCHING) {
        const YR_RULE *rule = data;
        if (!RULE_IS_PRIVATE(rule))
            add_match(res, rule);
    } else if (message == CALLBACK_MSG_TOO_MANY_MATCHES) {
        res->too_many_matches = true;
    }
    return CALLBACK_CONTINUE;
}

/* ---- scanners ------------------------------------------------------------------------------ */

int mmr_scanner_create(struct mmr_scan_rules *rules, struct mmr_scanner **out)
{
    YR_SCANNER *yr_scanner;
    int yr = yr_scanner_create(rules->yr, &yr_scanner);
    if (yr != ERROR_SUCCESS)
        return yara_fail(yr, "creating a scanner");
    yr_scanner_set_flags(yr_scanner, SCAN_FLAGS_REPORT_RULES_MATCHING);
    struct mmr_scanner *s = mmr_calloc(1, sizeof(*s));
    s->rules = mmr_scan_rules_ref(rules);
    s->yr = yr_scanner;
    *out = s;
    return 0;
}

void mmr_scanner_destroy(struct mmr_scanner *scanner)
{
    if (!scanner)
        return;
    yr_scanner_destroy(scanner->yr);
    mmr_scan_rules_unref(scanner->rules);
    free(scanner);
}

void mmr_scanner_set_timeout(struct mmr_scanner *scanner, unsigned seconds)
{
    yr_scanner_set_timeout(scanner->yr, seconds > 86400 ? 86400 : (int)seconds);
}

int mmr_scanner_set_externals(struct mmr_scanner *scanner, const struct mmr_scan_externals *ext)
{
    const char *values[EXTERNAL_COUNT] = {ext->filename, ext->filepath, ext->extension,
                                          ext->filetype, ext->owner};
    for (size_t i = 0; i < EXTERNAL_COUNT; i++) {
        int yr = yr_scanner_define_string_variable(scanner->yr, external_names[i],
                                                   values[i] ? values[i] : "");
        if (yr != ERROR_SUCCESS)
            return yara_fail(yr, "setting the external variables");
    }
    return 0;
}

int mmr_scanner_scan_mem(struct mmr_scanner *scanner, const void *data, size_t len,
                         struct mmr_scan_result *out)
{
    memset(out, 0, sizeof(*out));
    yr_scanner_set_callback(scanner->yr, scan_cb, out);
    /* libyara reads nothing from an empty buffer but wants a valid pointer. */
    static const uint8_t empty[1];
    int yr = yr_scanner_scan_mem(scanner->yr, len ? data : empty, len);
    if (yr != ERROR_SUCCESS)
        return yara_fail(yr, "scanning");
    return 0;
}

/* Reads a regular file of at most max_bytes; *out has len + 1 bytes. A file
 * that grows while read is cut at its size when opened (max_bytes at most). */
static int read_bounded(const char *path, size_t max_bytes, uint8_t **out, size_t *len)
{
    uv_fs_t req;
    int fd = uv_fs_open(NULL, &req, path, UV_FS_O_RDONLY, 0, NULL);
    uv_fs_req_cleanup(&req);
    if (fd < 0)
        return mmr_err_set(uv_code(fd), "cannot open '%s': %s", path, uv_strerror(fd));
    int rc = 0;
    uint8_t *buf = NULL;
    int r = uv_fs_fstat(NULL, &req, fd, NULL);
    uint64_t mode = req.statbuf.st_mode, size = req.statbuf.st_size;
    uv_fs_req_cleanup(&req);
    if (r < 0) {
        rc = mmr_err_set(uv_code(r), "cannot stat '%s': %s", path, uv_strerror(r));
        goto out;
    }
    if ((mode & S_IFMT) != S_IFREG) {
        rc = mmr_err_set(MMR_EINVAL, "'%s' is not a regular file", path);
        goto out;
    }
    if (size > max_bytes) {
        rc = mmr_err_set(MMR_ETOOBIG, "'%s' is %llu bytes, over the limit of %zu", path,
                         (unsigned long long)size, max_bytes);
        goto out;
    }
    buf = mmr_malloc((size_t)size + 1);
    size_t got = 0;
    while (got < size) {
        size_t want = size - got < READ_CHUNK ? size - got : READ_CHUNK;
        uv_buf_t iov = uv_buf_init((char *)buf + got, (unsigned)want);
        r = uv_fs_read(NULL, &req, fd, &iov, 1, (int64_t)got, NULL);
        uv_fs_req_cleanup(&req);
        if (r < 0) {
            rc = mmr_err_set(uv_code(r) == MMR_ENOMEM ? MMR_ENOMEM : MMR_EIO,
                             "cannot read '%s': %s", path, uv_strerror(r));
            goto out;
        }
        if (r == 0)
            break; /* shrank while we read: scan what is there */
        got += (size_t)r;
    }
    *out = buf;
    *len = got;
    buf = NULL;
out:
    free(buf);
    uv_fs_close(NULL, &req, fd, NULL);
    uv_fs_req_cleanup(&req);
    return rc;
}

int mmr_scanner_scan_file(struct mmr_scanner *scanner, const char *path, size_t max_bytes,
                          struct mmr_scan_result *out)
{
    memset(out, 0, sizeof(*out));
    uint8_t *data;
    size_t len;
    int rc = read_bounded(path, max_bytes, &data, &len);
    if (rc != 0)
        return rc;
    rc = mmr_scanner_scan_mem(scanner, data, len, out);
    free(data);
    if (rc != 0)
        return mmr_err_wrap(rc, "'%s'", path);
    return 0;
}
