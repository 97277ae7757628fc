/* The scan walker: an iterative, link-refusing walk of a scan root that
 * applies the exclusions, the size limit and the filesystem rules before any
 * byte is read, and a small glob matcher that cannot backtrack. */
#include "agent/scan_walk.h"

#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/mem.h"

/* ---- globs ------------------------------------------------------------------ */

enum tok_kind { TOK_LIT, TOK_SEP, TOK_ANY, TOK_CLASS, TOK_STAR, TOK_DSTAR };

struct tok {
    enum tok_kind kind;
    bool negated;    /* TOK_CLASS */
    uint32_t cp;     /* TOK_LIT */
    size_t first, n; /* TOK_CLASS: ranges[first .. first + n) */
};

struct range {
    uint32_t lo, hi;
};

struct mmr_glob {
    struct tok *toks;
    size_t ntoks;
    struct range *ranges;
    size_t nranges;
    bool win;
    bool *cur, *next; /* NFA state sets, ntoks + 1 each */
};

/* One UTF-8 code point; a byte that does not start a valid sequence stands
 * for itself, shifted out of the Unicode range so that it matches only
 * itself. */
static uint32_t next_cp(const char **sp)
{
    const unsigned char *s = (const unsigned char *)*sp;
    unsigned len = s[0] < 0x80             ? 1
                   : (s[0] & 0xe0) == 0xc0 ? 2
                   : (s[0] & 0xf0) == 0xe0 ? 3
                   : (s[0] & 0xf8) == 0xf0 ? 4
                                           : 0;
    uint32_t cp = len == 1   ? s[0]
                  : len == 2 ? s[0] & 0x1fu
                  : len == 3 ? s[0] & 0x0fu
                             : s[0] & 0x07u;
    for (unsigned i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            len = 0;
            break;
        }
        cp = (cp << 6) | (s[i] & 0x3fu);
    }
    if (len == 0) {
        *sp += 1;
        return 0x110000u + s[0];
    }
    *sp += len;
    return cp;
}

static uint32_t fold(uint32_t c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static bool is_glob_sep(const struct mmr_glob *g, uint32_t c)
{
    return c == '/' || (g->win && c == '\\');
}

static void add_tok(struct mmr_glob *g, struct tok t)
{
    g->toks[g->ntoks++] = t;
}

/* Parses "[...]" at p (just after '['); false when it is not closed, and the
 * '[' is then an ordinary character. */
static bool parse_class(struct mmr_glob *g, const char **pp)
{
    const char *p = *pp;
    size_t first = g->nranges;
    struct tok t = {.kind = TOK_CLASS, .first = first};
    if (*p == '!' || *p == '^') {
        t.negated = true;
        p++;
    }
    bool leading = true;
    while (*p && (*p != ']' || leading)) {
        leading = false;
        if (!g->win && *p == '\\' && p[1])
            p++;
        uint32_t lo = next_cp(&p), hi = lo;
        if (p[0] == '-' && p[1] && p[1] != ']') {
            p++;
            if (!g->win && *p == '\\' && p[1])
                p++;
            hi = next_cp(&p);
        }
        g->ranges[g->nranges++] = (struct range){lo, hi};
    }
    if (*p != ']') {
        g->nranges = first;
        return false;
    }
    t.n = g->nranges - first;
    add_tok(g, t);
    *pp = p + 1;
    return true;
}

int mmr_glob_compile(const char *pattern, unsigned flags, struct mmr_glob **out)
{
    size_t len = strlen(pattern);
    if (len > MMR_GLOB_MAX_PATTERN)
        return mmr_err_set(MMR_EINVAL, "glob of %zu bytes is over the limit of %d", len,
                           MMR_GLOB_MAX_PATTERN);
    struct mmr_glob *g = mmr_calloc(1, sizeof(*g));
    g->win = (flags & MMR_GLOB_PATHS_WIN) != 0;
    /* Every token and every class range takes at least one byte. */
    g->toks = mmr_calloc(len + 1, sizeof(*g->toks));
    g->ranges = mmr_calloc(len + 1, sizeof(*g->ranges));
    const char *p = pattern;
    while (*p) {
        if (*p == '*') {
            size_t stars = 0;
            while (*p == '*') {
                stars++;
                p++;
            }
            add_tok(g, (struct tok){.kind = stars > 1 ? TOK_DSTAR : TOK_STAR});
        } else if (*p == '?') {
            p++;
            add_tok(g, (struct tok){.kind = TOK_ANY});
        } else if (*p == '[') {
            p++;
            if (!parse_class(g, &p))
                add_tok(g, (struct tok){.kind = TOK_LIT, .cp = '['});
        } else {
            if (!g->win && *p == '\\' && p[1]) {
                p++;
                uint32_t c = next_cp(&p);
                add_tok(g, (struct tok){.kind = TOK_LIT, .cp = c});
                continue;
            }
            uint32_t c = next_cp(&p);
            if (is_glob_sep(g, c))
                add_tok(g, (struct tok){.kind = TOK_SEP});
            else
                add_tok(g, (struct tok){.kind = TOK_LIT, .cp = g->win ? fold(c) : c});
        }
    }
    g->cur = mmr_calloc(g->ntoks + 1, sizeof(bool));
    g->next = mmr_calloc(g->ntoks + 1, sizeof(bool));
    *out = g;
    return 0;
}

void mmr_glob_free(struct mmr_glob *g)
{
    if (!g)
        return;
    free(g->toks);
    free(g->ranges);
    free(g->cur);
    free(g->next);
    free(g);
}

/* Adds the states reachable without reading: a star may match nothing, and
 * "**" followed by a separator may match no directory at all. Moves only go
 * forward, so one pass is enough. */
static void closure(const struct mmr_glob *g, bool *set)
{
    for (size_t i = 0; i < g->ntoks; i++) {
        if (!set[i])
            continue;
        enum tok_kind k = g->toks[i].kind;
        if (k == TOK_STAR || k == TOK_DSTAR)
            set[i + 1] = true;
        if (k == TOK_DSTAR && i + 1 < g->ntoks && g->toks[i + 1].kind == TOK_SEP &&
            (i == 0 || g->toks[i - 1].kind == TOK_SEP))
            set[i + 2] = true;
    }
}

static bool class_has(const struct mmr_glob *g, const struct tok *t, uint32_t c)
{
    for (size_t i = 0; i < t->n; i++) {
        const struct range *r = &g->ranges[t->first + i];
        if (c >= r->lo && c <= r->hi)
            return true;
        if (g->win && fold(c) != c && fold(c) >= r->lo && fold(c) <= r->hi)
            return true;
        if (g->win && c >= 'a' && c <= 'z' && c - ('a' - 'A') >= r->lo && c - ('a' - 'A') <= r->hi)
            return true;
    }
    return false;
}

bool mmr_glob_match(struct mmr_glob *g, const char *s)
{
    size_t n = g->ntoks;
    memset(g->cur, 0, n + 1);
    g->cur[0] = true;
    closure(g, g->cur);
    while (*s) {
        uint32_t c = next_cp(&s);
        bool sep = is_glob_sep(g, c);
        uint32_t fc = g->win ? fold(c) : c;
        memset(g->next, 0, n + 1);
        bool any = false;
        for (size_t i = 0; i < n; i++) {
            if (!g->cur[i])
                continue;
            const struct tok *t = &g->toks[i];
            bool adv = false, stay = false;
            switch (t->kind) {
            case TOK_LIT:
                adv = t->cp == fc;
                break;
            case TOK_SEP:
                adv = sep;
                break;
            case TOK_ANY:
                adv = !sep;
                break;
            case TOK_CLASS:
                adv = !sep && class_has(g, t, c) != t->negated;
                break;
            case TOK_STAR:
                stay = !sep;
                break;
            case TOK_DSTAR:
                stay = true;
                break;
            }
            if (adv)
                g->next[i + 1] = true;
            if (stay)
                g->next[i] = true;
            any = any || adv || stay;
        }
        if (!any)
            return false;
        closure(g, g->next);
        bool *tmp = g->cur;
        g->cur = g->next;
        g->next = tmp;
    }
    return g->cur[n];
}

/* ---- the walk ------------------------------------------------------------------ */

static const char *const skip_names[MMR_WALK_SKIP_COUNT] = {
    [MMR_WALK_EXCLUDED] = "excluded",   [MMR_WALK_TOO_BIG] = "too_big",
    [MMR_WALK_SPECIAL] = "special",     [MMR_WALK_SYMLINK] = "symlink",
    [MMR_WALK_OTHER_FS] = "other_fs",   [MMR_WALK_NETWORK_FS] = "network_fs",
    [MMR_WALK_PSEUDO_FS] = "pseudo_fs", [MMR_WALK_UNREADABLE] = "unreadable",
    [MMR_WALK_VANISHED] = "vanished",   [MMR_WALK_TOO_DEEP] = "too_deep",
    [MMR_WALK_TOO_LONG] = "too_long",   [MMR_WALK_LOOP] = "loop",
};

const char *mmr_walk_skip_name(enum mmr_walk_skip why)
{
    if ((unsigned)why >= MMR_WALK_SKIP_COUNT)
        return "unknown";
    return skip_names[why];
}

struct frame {
    struct mmr_dir *dir;
    char *path;
    uint64_t dev, ino;
    unsigned depth;
};

struct walk {
    const struct mmr_walk_opts *o;
    struct mmr_walk_stats *st;
    struct mmr_glob **globs;
    bool *glob_on_path; /* the pattern has a separator: match the whole path */
    bool icase;
    unsigned max_depth;
    size_t max_path;
    struct frame *stack;
    size_t depth; /* frames in use */
};

static void skip(struct walk *w, const char *path, enum mmr_walk_skip why, const char *detail)
{
    w->st->skipped[why]++;
    if (w->o->on_skip)
        w->o->on_skip(w->o->ctx, path, why, detail);
}

static bool same_char(const struct walk *w, char a, char b)
{
    if (mmr_path_is_sep(a) && mmr_path_is_sep(b))
        return true;
    if (w->icase)
        return fold((unsigned char)a) == fold((unsigned char)b);
    return a == b;
}

/* prefix covers path by whole components. */
static bool under_prefix(const struct walk *w, const char *path, const char *prefix)
{
    size_t plen = strlen(prefix);
    while (plen > 0 && mmr_path_is_sep(prefix[plen - 1]))
        plen--;
    if (plen == 0) /* "/" covers every absolute path */
        return prefix[0] != 0 && mmr_path_is_sep(path[0]);
    for (size_t i = 0; i < plen; i++)
        if (!path[i] || !same_char(w, path[i], prefix[i]))
            return false;
    return path[plen] == 0 || mmr_path_is_sep(path[plen]);
}

static bool ext_excluded(const struct walk *w, const char *name)
{
    size_t nlen = strlen(name);
    for (size_t i = 0; i < w->o->n_exclude_exts; i++) {
        const char *ext = w->o->exclude_exts[i];
        if (ext[0] == '.')
            ext++;
        size_t elen = strlen(ext);
        if (elen == 0 || nlen <= elen || name[nlen - elen - 1] != '.')
            continue;
        const char *tail = name + nlen - elen;
        size_t j = 0;
        while (j < elen && fold((unsigned char)tail[j]) == fold((unsigned char)ext[j]))
            j++;
        if (j == elen)
            return true;
    }
    return false;
}

static bool excluded(const struct walk *w, const char *path, const char *name, bool file)
{
    const struct mmr_walk_opts *o = w->o;
    for (size_t i = 0; i < o->n_own_dirs; i++)
        if (under_prefix(w, path, o->own_dirs[i]))
            return true;
    for (size_t i = 0; i < o->n_exclude_paths; i++)
        if (under_prefix(w, path, o->exclude_paths[i]))
            return true;
    for (size_t i = 0; i < o->n_exclude_globs; i++)
        if (mmr_glob_match(w->globs[i], w->glob_on_path[i] ? path : name))
            return true;
    return file && ext_excluded(w, name);
}

/* The reason to stay out of the filesystem holding path, or -1 to go in. */
static int fs_rule(struct walk *w, const char *path, uint64_t dev, uint64_t parent_dev)
{
    if (dev == parent_dev)
        return -1;
    enum mmr_fs_kind kind;
    if (mmr_fs_kind(path, &kind) != 0) {
        skip(w, path, MMR_WALK_UNREADABLE, mmr_err_msg());
        return MMR_WALK_SKIP_COUNT; /* already reported */
    }
    if (kind == MMR_FS_NETWORK)
        return MMR_WALK_NETWORK_FS;
    if (kind == MMR_FS_PSEUDO)
        return MMR_WALK_PSEUDO_FS;
    return w->o->cross_filesystems ? -1 : MMR_WALK_OTHER_FS;
}

static char *join(const char *dir, const char *name)
{
    size_t len = strlen(dir);
    if (len > 0 && mmr_path_is_sep(dir[len - 1]))
        return mmr_asprintf("%s%s", dir, name);
    return mmr_path_join(dir, name);
}

static int hand_out(struct walk *w, const char *path, const struct mmr_file_id *id)
{
    if (w->o->max_file_size && id->size > w->o->max_file_size) {
        skip(w, path, MMR_WALK_TOO_BIG, NULL);
        return 0;
    }
    w->st->files++;
    w->st->bytes += id->size;
    return w->o->on_file(w->o->ctx, path, id);
}

/* Identifies a listed entry; false (reported) when it is gone or unreadable. */
static bool identify(struct walk *w, const char *path, struct mmr_file_id *id)
{
    int rc = mmr_file_identify(path, false, id);
    if (rc == MMR_ENOENT)
        skip(w, path, MMR_WALK_VANISHED, NULL);
    else if (rc != 0)
        skip(w, path, MMR_WALK_UNREADABLE, mmr_err_msg());
    return rc == 0;
}

static void push(struct walk *w, struct mmr_dir *d, char *path, const struct mmr_file_id *id,
                 unsigned depth)
{
    w->stack[w->depth++] =
        (struct frame){.dir = d, .path = path, .dev = id->dev, .ino = id->ino, .depth = depth};
    w->st->dirs++;
}

/* Enters a listed directory; takes path. */
static void enter_dir(struct walk *w, const struct frame *parent, char *path)
{
    struct mmr_file_id id;
    if (!identify(w, path, &id))
        goto drop;
    if (id.regular) { /* replaced by a file since it was listed */
        skip(w, path, MMR_WALK_VANISHED, NULL);
        goto drop;
    }
    int why = fs_rule(w, path, id.dev, parent->dev);
    if (why >= 0) {
        if (why < MMR_WALK_SKIP_COUNT)
            skip(w, path, (enum mmr_walk_skip)why, NULL);
        goto drop;
    }
    for (size_t i = 0; i < w->depth; i++) {
        if (w->stack[i].dev == id.dev && w->stack[i].ino == id.ino) {
            skip(w, path, MMR_WALK_LOOP, NULL);
            goto drop;
        }
    }
    if (parent->depth + 1 > w->max_depth) {
        skip(w, path, MMR_WALK_TOO_DEEP, NULL);
        goto drop;
    }
    struct mmr_dir *d;
    int rc = mmr_dir_open(path, false, &d);
    if (rc == MMR_ENOENT || rc == MMR_EINVAL) {
        /* gone, or swapped for a link or a file: nothing of ours to list */
        skip(w, path, MMR_WALK_VANISHED, NULL);
        goto drop;
    }
    if (rc != 0) {
        skip(w, path, MMR_WALK_UNREADABLE, mmr_err_msg());
        goto drop;
    }
    push(w, d, path, &id, parent->depth + 1);
    return;
drop:
    free(path);
}

static int visit_file(struct walk *w, const struct frame *parent, const char *path)
{
    struct mmr_file_id id;
    if (!identify(w, path, &id))
        return 0;
    if (!id.regular) { /* replaced by something else since it was listed */
        skip(w, path, MMR_WALK_VANISHED, NULL);
        return 0;
    }
    int why = fs_rule(w, path, id.dev, parent->dev);
    if (why >= 0) {
        if (why < MMR_WALK_SKIP_COUNT)
            skip(w, path, (enum mmr_walk_skip)why, NULL);
        return 0;
    }
    return hand_out(w, path, &id);
}

static int visit(struct walk *w, const char *name, enum mmr_dirent_type type)
{
    /* Copied: entering a directory pushes a frame. */
    struct frame parent = w->stack[w->depth - 1];
    char *path = join(parent.path, name);
    int rc = 0;
    if (strlen(path) > w->max_path)
        skip(w, path, MMR_WALK_TOO_LONG, NULL);
    else if (type == MMR_DIRENT_LINK)
        skip(w, path, MMR_WALK_SYMLINK, NULL);
    else if (type == MMR_DIRENT_OTHER)
        skip(w, path, MMR_WALK_SPECIAL, NULL);
    else if (excluded(w, path, name, type == MMR_DIRENT_FILE))
        skip(w, path, MMR_WALK_EXCLUDED, NULL);
    else if (type == MMR_DIRENT_DIR) {
        enter_dir(w, &parent, path);
        return 0;
    } else
        rc = visit_file(w, &parent, path);
    free(path);
    return rc;
}

static void pop(struct walk *w)
{
    struct frame *f = &w->stack[--w->depth];
    mmr_dir_close(f->dir);
    free(f->path);
}

static bool cancelled(const struct walk *w)
{
    return w->o->cancel && atomic_load(w->o->cancel);
}

/* The root without trailing separators, except where they are the root
 * ("/", "C:\\"). */
static char *clean_root(const char *root)
{
    char *r = mmr_strdup(root);
    size_t len = strlen(r);
    while (len > 1 && mmr_path_is_sep(r[len - 1]) && r[len - 2] != ':')
        r[--len] = 0;
    return r;
}

static const char *base_name(const char *path)
{
    const char *b = path;
    for (const char *p = path; *p; p++)
        if (mmr_path_is_sep(*p) && p[1])
            b = p + 1;
    return b;
}

/* The root: a file is handed out, a directory becomes the first frame. */
static int start(struct walk *w, char *root)
{
    struct mmr_file_id id;
    int rc = mmr_file_identify(root, true, &id);
    if (rc == MMR_ENOENT)
        return rc;
    if (rc != 0) {
        skip(w, root, MMR_WALK_UNREADABLE, mmr_err_msg());
        return 0;
    }
    if (strlen(root) > w->max_path) {
        skip(w, root, MMR_WALK_TOO_LONG, NULL);
        return 0;
    }
    enum mmr_fs_kind kind;
    if (mmr_fs_kind(root, &kind) != 0) {
        skip(w, root, MMR_WALK_UNREADABLE, mmr_err_msg());
        return 0;
    }
    if (kind == MMR_FS_PSEUDO) {
        skip(w, root, MMR_WALK_PSEUDO_FS, NULL);
        return 0;
    }
    if (excluded(w, root, base_name(root), id.regular)) {
        skip(w, root, MMR_WALK_EXCLUDED, NULL);
        return 0;
    }
    if (id.regular)
        return hand_out(w, root, &id);
    struct mmr_dir *d;
    rc = mmr_dir_open(root, true, &d);
    if (rc == MMR_ENOENT)
        return rc;
    if (rc == MMR_EINVAL) {
        skip(w, root, MMR_WALK_SPECIAL, NULL);
        return 0;
    }
    if (rc != 0) {
        skip(w, root, MMR_WALK_UNREADABLE, mmr_err_msg());
        return 0;
    }
    push(w, d, mmr_strdup(root), &id, 0);
    return 0;
}

static int compile_globs(struct walk *w)
{
    const struct mmr_walk_opts *o = w->o;
    unsigned flags = mmr_path_fold_case() ? MMR_GLOB_PATHS_WIN : 0;
    w->globs = mmr_calloc(o->n_exclude_globs + 1, sizeof(*w->globs));
    w->glob_on_path = mmr_calloc(o->n_exclude_globs + 1, sizeof(bool));
    for (size_t i = 0; i < o->n_exclude_globs; i++) {
        const char *pat = o->exclude_globs[i];
        int rc = mmr_glob_compile(pat, flags, &w->globs[i]);
        if (rc != 0)
            return mmr_err_wrap(rc, "exclusion %zu", i + 1);
        for (const char *p = pat; *p; p++)
            if (mmr_path_is_sep(*p))
                w->glob_on_path[i] = true;
    }
    return 0;
}

int mmr_walk(const char *root, const struct mmr_walk_opts *opts, struct mmr_walk_stats *stats)
{
    struct mmr_walk_stats local;
    if (!stats)
        stats = &local;
    *stats = (struct mmr_walk_stats){0};
    if (!opts || !opts->on_file)
        return mmr_err_set(MMR_EINVAL, "scan walk without a file callback");
    struct walk w = {
        .o = opts,
        .st = stats,
        .icase = mmr_path_fold_case(),
        .max_depth = opts->max_depth ? opts->max_depth : MMR_WALK_DEFAULT_DEPTH,
        .max_path = opts->max_path ? opts->max_path : MMR_WALK_DEFAULT_PATH,
    };
    char *r = clean_root(root);
    int rc = compile_globs(&w);
    if (rc != 0)
        goto out;
    w.stack = mmr_calloc((size_t)w.max_depth + 1, sizeof(*w.stack));
    if (cancelled(&w)) {
        stats->cancelled = true;
        goto out;
    }
    rc = start(&w, r);
    while (rc == 0 && w.depth > 0) {
        if (cancelled(&w)) {
            stats->cancelled = true;
            break;
        }
        struct frame *f = &w.stack[w.depth - 1];
        const char *name;
        enum mmr_dirent_type type;
        int n = mmr_dir_next(f->dir, &name, &type);
        if (n == 0) {
            pop(&w);
        } else if (n < 0) {
            skip(&w, f->path, MMR_WALK_UNREADABLE, mmr_err_msg());
            if (n != MMR_EINVAL) /* only a bad name lets the listing go on */
                pop(&w);
        } else {
            rc = visit(&w, name, type);
        }
    }
out:
    while (w.depth > 0)
        pop(&w);
    free(w.stack);
    for (size_t i = 0; w.globs && i < opts->n_exclude_globs; i++)
        mmr_glob_free(w.globs[i]);
    free(w.globs);
    free(w.glob_on_path);
    free(r);
    return rc;
}
