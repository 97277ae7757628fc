/* The helpdesk support bundle: gathers facts, finds problems, scrubs
 * secrets and packs everything into a .tar.gz in memory. */
#include "shared/compiler.h"
#include "agent/diag.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "agent/control.h"
#include "agent/status.h"
#include "drivers/power.h"
#include "mamori_version.h"
#include "shared/base64.h"
#include "shared/config.h"
#include "shared/db.h"
#include "shared/err.h"
#include "shared/json.h"
#include "shared/log.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "shared/targz.h"

#define LOG_TAIL_BYTES (2u * 1024 * 1024)
#define DISK_LOW_BYTES (512ull * 1024 * 1024)
#define DISK_LOW_PERCENT 5
#define BATTERY_LOW_PERCENT 20
#define REDACTED "<redacted>"
#define MIN_SECRET_LEN 6 /* shorter values would scrub ordinary words */

void mmr_diag_input_init(struct mmr_diag_input *in, const char *config_path,
                         const struct mmr_agent_config *cfg)
{
    memset(in, 0, sizeof(*in));
    in->sysfs_root = "/sys";
    in->config_path = mmr_strdup(config_path);
    in->data_dir = mmr_strdup(cfg->data_dir);
    in->log_file = mmr_strdup(cfg->log_file);
    in->config_text = mmr_config_dump(mmr_agent_config_schema, mmr_agent_config_nkeys, cfg);
    in->secrets = mmr_calloc(mmr_agent_config_nkeys, sizeof(char *));
    for (size_t i = 0; i < mmr_agent_config_nkeys; i++) {
        const struct mmr_cfg_key *k = &mmr_agent_config_schema[i];
        if (!k->secret)
            continue;
        const char *value = *(char *const *)((const char *)cfg + k->offset);
        if (value && strlen(value) >= MIN_SECRET_LEN)
            in->secrets[in->nsecrets++] = mmr_strdup(value);
    }
}

void mmr_diag_input_free(struct mmr_diag_input *in)
{
    free(in->data_dir);
    free(in->log_file);
    free(in->config_path);
    free(in->config_text);
    free(in->config_error);
    for (size_t i = 0; i < in->nsecrets; i++)
        free(in->secrets[i]);
    free(in->secrets);
    json_decref(in->status);
    free(in->status_error);
    memset(in, 0, sizeof(*in));
}

/* Replaces every occurrence of every secret with REDACTED. Allocated. */
static char *scrub(const struct mmr_diag_input *in, const char *text, size_t len)
{
    struct mmr_buf out = {0};
    size_t i = 0;
    while (i < len) {
        bool hit = false;
        for (size_t s = 0; s < in->nsecrets && !hit; s++) {
            size_t slen = strlen(in->secrets[s]);
            if (slen <= len - i && memcmp(text + i, in->secrets[s], slen) == 0) {
                mmr_buf_append(&out, REDACTED, strlen(REDACTED));
                i += slen;
                hit = true;
            }
        }
        if (!hit)
            mmr_buf_append(&out, text + i++, 1);
    }
    mmr_buf_append(&out, "", 0);
    return out.data;
}

struct bundle {
    const struct mmr_diag_input *in;
    struct mmr_targz *tgz;
    struct mmr_buf findings;
    int problems;
    int64_t now_ms;
};

static int add_text(struct bundle *b, const char *name, const char *text)
{
    char *clean = scrub(b->in, text, strlen(text));
    char *path = mmr_asprintf("mamori-diag/%s", name);
    int rc = mmr_targz_add(b->tgz, path, clean, strlen(clean), b->now_ms);
    free(path);
    free(clean);
    return rc;
}

static int add_json(struct bundle *b, const char *name, const json_t *doc)
{
    char *text = mmr_json_dump_pretty(doc);
    int rc = add_text(b, name, text);
    free(text);
    return rc;
}

MMR_PRINTF(3, 0) static void finding(struct bundle *b, const char *kind,
                                                         const char *fmt, va_list ap)
{
    char text[1024];
    vsnprintf(text, sizeof(text), fmt, ap);
    mmr_buf_appendf(&b->findings, "%s: %s\n", kind, text);
}

MMR_PRINTF(2, 3) static void problem(struct bundle *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    finding(b, "PROBLEM", fmt, ap);
    va_end(ap);
    b->problems++;
}

MMR_PRINTF(2, 3) static void note(struct bundle *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    finding(b, "NOTE", fmt, ap);
    va_end(ap);
}

static void check_status(struct bundle *b)
{
    const json_t *st = b->in->status;
    if (!st) {
        problem(b, "the agent is not running or does not answer (%s). Start the Mamori service "
                   "(Linux: systemctl start mamori-agent) and look at agent.log below.",
                b->in->status_error ? b->in->status_error : "no status");
        return;
    }
    json_t *enrolled = json_object_get(json_object_get(st, "enrollment"), "enrolled");
    if (!json_is_true(enrolled))
        note(b, "not enrolled with a management server: policy and updates do not arrive.");
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(st, "modules"), i, m)
    {
        const char *state = json_string_value(json_object_get(m, "state"));
        if (!state || strcmp(state, "ok") == 0 || strcmp(state, "disabled") == 0)
            continue;
        char *line = mmr_asprintf("%s is %s%s%s", json_string_value(json_object_get(m, "module")),
                                  state, json_object_get(m, "detail") ? ": " : "",
                                  json_object_get(m, "detail")
                                      ? json_string_value(json_object_get(m, "detail"))
                                      : "");
        problem(b, "module %s.", line);
        free(line);
    }
}

static json_t *system_facts(struct bundle *b)
{
    json_t *sys = json_object();
    struct mmr_sysinfo si;
    mmr_sysinfo_get(&si);
    json_object_set_new(sys, "os", json_string(si.os_name));
    json_object_set_new(sys, "kernel", json_string(si.os_version));
    json_object_set_new(sys, "arch", json_string(si.arch));
    json_object_set_new(sys, "hostname", json_string(si.hostname));
    json_object_set_new(sys, "uptime_s", json_integer((json_int_t)si.uptime_s));
    json_object_set_new(sys, "memory_total", json_integer((json_int_t)si.mem_total));
    json_object_set_new(sys, "memory_free", json_integer((json_int_t)si.mem_free));

    uint64_t free_bytes = 0, total = 0;
    if (mmr_disk_space(b->in->data_dir, &free_bytes, &total) == 0) {
        json_object_set_new(sys, "disk_free", json_integer((json_int_t)free_bytes));
        json_object_set_new(sys, "disk_total", json_integer((json_int_t)total));
        if (free_bytes < DISK_LOW_BYTES || (total && free_bytes * 100 / total < DISK_LOW_PERCENT))
            problem(b, "the disk holding %s is almost full: telemetry and updates may fail.",
                    b->in->data_dir);
    } else {
        json_object_set_new(sys, "disk_error", json_string(mmr_err_msg()));
    }

    struct mmr_power pw;
    if (mmr_power_read(b->in->sysfs_root, &pw) == 0) {
        json_t *p = json_object();
        json_object_set_new(p, "on_ac", json_boolean(pw.on_ac));
        json_object_set_new(p, "has_battery", json_boolean(pw.has_battery));
        if (pw.battery_percent >= 0)
            json_object_set_new(p, "battery_percent", json_integer(pw.battery_percent));
        json_object_set_new(sys, "power", p);
        if (!pw.on_ac && pw.battery_percent >= 0 && pw.battery_percent < BATTERY_LOW_PERCENT)
            note(b, "on battery below %d %%: scheduled scans and updates wait for power.",
                 BATTERY_LOW_PERCENT);
    }
    return sys;
}

static char *database_report(struct bundle *b)
{
    struct mmr_buf r = {0};
    char *path = mmr_path_join(b->in->data_dir, "agent.db");
    mmr_buf_appendf(&r, "file: %s\n", path);
    int64_t size = mmr_file_size(path);
    if (size < 0) {
        mmr_buf_appendf(&r, "missing: %s\n", mmr_err_msg());
        if (b->in->status)
            problem(b, "%s is missing although the agent runs.", path);
        free(path);
        return r.data;
    }
    mmr_buf_appendf(&r, "size: %lld bytes\n", (long long)size);
    struct mmr_db_opts opts = {.read_only = true};
    struct mmr_db *db = NULL;
    int rc = mmr_db_open(path, &opts, NULL, 0, &db);
    if (rc < 0 && rc != MMR_EINVAL) {
        mmr_buf_appendf(&r, "open: failed: %s\n", mmr_err_msg());
        problem(b, "the agent database cannot be opened: %s", mmr_err_msg());
    } else if (db) {
        char check[1024];
        mmr_buf_appendf(&r, "schema_version: %d\n", mmr_db_schema_version(db));
        rc = mmr_db_check(db, false, check, sizeof(check));
        mmr_buf_appendf(&r, "quick_check: %s\n", rc == 0 ? "ok" : check);
        if (rc < 0)
            problem(b, "the agent database is damaged: %s", check);
        mmr_db_close(db);
    } else {
        mmr_buf_appendf(&r, "open: %s\n", mmr_err_msg());
    }
    free(path);
    return r.data;
}

static char *log_report(struct bundle *b)
{
    char *tail = NULL;
    size_t len = 0;
    if (mmr_file_read_tail(b->in->log_file, LOG_TAIL_BYTES, &tail, &len) < 0) {
        note(b, "no log file: %s", mmr_err_msg());
        return mmr_asprintf("(no log: %s)\n", mmr_err_msg());
    }
    return tail;
}

static const char *const listed_files[] = {"agent.db", "agent.db-wal", "agent.db-shm",
                                           "agent.lock", "agent.conf", "device.key",
                                           "device.crt", "ca.crt"};

/* Names, sizes and privacy of the data directory's known files: never their
 * contents (keys live here). */
static char *files_report(struct bundle *b)
{
    struct mmr_buf r = {0};
    mmr_buf_appendf(&r, "data directory: %s\n", b->in->data_dir);
    for (size_t i = 0; i < sizeof(listed_files) / sizeof(listed_files[0]); i++) {
        char *path = mmr_path_join(b->in->data_dir, listed_files[i]);
        int64_t size = mmr_file_size(path);
        bool priv = false;
        if (size >= 0 && mmr_file_is_private(path, &priv) == 0) {
            mmr_buf_appendf(&r, "%-14s %10lld bytes  %s\n", listed_files[i], (long long)size,
                            priv ? "owner-only" : "READABLE BY OTHERS");
            if (!priv && strcmp(listed_files[i], "agent.lock") != 0)
                problem(b, "%s is readable by other users; it must be owner-only (0600).",
                        listed_files[i]);
        }
        free(path);
    }
    return r.data;
}

static json_t *build_facts(void)
{
    return json_pack("{s:s,s:s,s:s,s:s,s:s}", "version", MMR_VERSION, "commit", MMR_GIT_COMMIT,
                     "build_type", MMR_BUILD_TYPE, "compiler", MMR_COMPILER, "target_os",
                     MMR_TARGET_OS);
}

int mmr_diag_build(const struct mmr_diag_input *in, char **out, size_t *len, char **name)
{
    struct bundle b = {.in = in, .now_ms = mmr_time_now_ms()};
    int rc = mmr_targz_new(&b.tgz);
    if (rc < 0)
        return rc;

    check_status(&b);
    json_t *sys = system_facts(&b);
    char *db_text = database_report(&b);
    char *files_text = files_report(&b);
    char *log_text = log_report(&b);
    json_t *build = build_facts();
    json_t *status = in->status ? json_incref(in->status)
                                : json_pack("{s:s}", "error", in->status_error ? in->status_error
                                                                               : "unavailable");
    char *config = in->config_text ? mmr_strdup(in->config_text)
                                   : mmr_asprintf("; configuration %s did not load: %s\n",
                                                  in->config_path,
                                                  in->config_error ? in->config_error : "?");
    char ts[32];
    mmr_time_format(b.now_ms, ts);
    const char *host = json_string_value(json_object_get(sys, "hostname"));
    struct mmr_buf summary = {0};
    mmr_buf_appendf(&summary, "Mamori diagnostic bundle\nhost: %s\ncreated: %s\nagent: %s (%s)\n\n",
                    host ? host : "?", ts, MMR_VERSION, MMR_GIT_COMMIT);
    if (b.findings.len)
        mmr_buf_append(&summary, b.findings.data, b.findings.len);
    if (b.problems == 0)
        mmr_buf_appendf(&summary, "No problems found.\n");
    mmr_buf_appendf(&summary,
                    "\nFiles: status.json (agent status and module health), system.json, "
                    "config.ini (secrets redacted), agent.log (recent lines), database.txt, "
                    "files.txt, build.json\n");

    rc = add_text(&b, "summary.txt", summary.data);
    if (rc == 0)
        rc = add_json(&b, "status.json", status);
    if (rc == 0)
        rc = add_json(&b, "system.json", sys);
    if (rc == 0)
        rc = add_json(&b, "build.json", build);
    if (rc == 0)
        rc = add_text(&b, "config.ini", config);
    if (rc == 0)
        rc = add_text(&b, "agent.log", log_text);
    if (rc == 0)
        rc = add_text(&b, "database.txt", db_text);
    if (rc == 0)
        rc = add_text(&b, "files.txt", files_text);
    if (rc == 0) {
        rc = mmr_targz_finish(b.tgz, out, len);
        b.tgz = NULL;
    }
    if (rc == 0) {
        char stamp[32];
        /* 2026-11-22T00:15:03.123Z -> 20261122T001503Z */
        snprintf(stamp, sizeof(stamp), "%.4s%.2s%.2sT%.2s%.2s%.2sZ", ts, ts + 5, ts + 8, ts + 11,
                 ts + 14, ts + 17);
        *name = mmr_asprintf("mamori-diag-%s-%s.tar.gz", host && host[0] ? host : "host", stamp);
    }

    mmr_targz_free(b.tgz);
    mmr_buf_free(&summary);
    mmr_buf_free(&b.findings);
    json_decref(sys);
    json_decref(build);
    json_decref(status);
    free(db_text);
    free(files_text);
    free(log_text);
    free(config);
    return rc;
}

/* ---- the "diag" IPC command, served on the thread pool ------------------- */

struct diag_job {
    uv_work_t work;
    struct mmr_control_call *call;
    struct mmr_diag_input in;
    char *bundle;
    size_t len;
    char *name;
    int rc;
    char error[512];
};

static void diag_work(uv_work_t *w)
{
    struct diag_job *job = w->data;
    job->rc = mmr_diag_build(&job->in, &job->bundle, &job->len, &job->name);
    if (job->rc < 0)
        snprintf(job->error, sizeof(job->error), "%s", mmr_err_msg());
}

static void diag_done(uv_work_t *w, int status)
{
    struct diag_job *job = w->data;
    if (status < 0 || job->rc < 0) {
        mmr_control_fail(job->call, job->rc < 0 ? job->rc : MMR_EIO,
                         job->rc < 0 ? job->error : "diagnostic job cancelled");
    } else {
        char *b64 = mmr_base64_encode(job->bundle, job->len);
        json_t *result = json_object();
        json_object_set_new(result, "name", json_string(job->name));
        json_object_set_new(result, "size", json_integer((json_int_t)job->len));
        json_object_set_new(result, "bundle", json_string(b64));
        free(b64);
        mmr_info("diag", "support bundle built", "bytes=%zu", job->len);
        mmr_control_reply(job->call, result);
    }
    mmr_diag_input_free(&job->in);
    free(job->bundle);
    free(job->name);
    free(job);
}

static void handle_diag(struct mmr_control_call *call, json_t *args, void *ud)
{
    struct mmr_agent *agent = ud;
    struct diag_job *job = mmr_calloc(1, sizeof(*job));
    job->call = call;
    job->work.data = job;
    mmr_diag_input_init(&job->in, agent->config_path, &agent->cfg);
    job->in.status = mmr_status_collect(agent);
    int rc = uv_queue_work(agent->loop, &job->work, diag_work, diag_done);
    if (rc < 0) {
        mmr_control_fail(call, MMR_EIO, uv_strerror(rc));
        mmr_diag_input_free(&job->in);
        free(job);
    }
}

void mmr_diag_register(struct mmr_control *ctl, struct mmr_agent *agent)
{
    mmr_control_register(ctl, "diag", true, handle_diag, agent);
}
