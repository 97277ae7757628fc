/* mamorictl: the local command line for the agent (status, diag, reload).
 * Talks to the running agent over its IPC endpoint; builds the support
 * bundle itself when the agent is not running. Exit codes in docs/cli.md. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent_config.h"
#include "agent/diag.h"
#include "mamori_version.h"
#include "shared/base64.h"
#include "shared/err.h"
#include "shared/ipc.h"
#include "shared/json.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "shared/targz.h"

enum exit_code {
    EXIT_OK = 0,
    EXIT_USAGE = 1,
    EXIT_NOT_RUNNING = 2,
    EXIT_DENIED = 3,
    EXIT_AGENT_ERROR = 4,
    EXIT_LOCAL_ERROR = 5,
};

#define STATUS_TIMEOUT_MS 5000
#define DIAG_TIMEOUT_MS 120000

struct ctl {
    const char *data_dir;
    const char *socket;
    const char *config;
    const char *output;
    long count;    /* --events / --tail */
    int severity;
    bool json;
    char *endpoint;
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: mamorictl [OPTIONS] COMMAND\n"
            "Talks to the Mamori agent on this computer.\n\n"
            "Commands:\n"
            "  status              agent state, enrollment, policy, check-in, modules\n"
            "  diag [-o FILE]      write a support bundle (.tar.gz) for the helpdesk;\n"
            "                      works even when the agent is not running (as root)\n"
            "  reload              make the agent re-read its configuration (admin)\n"
            "  selftest [--events N] [--severity 0-3]\n"
            "                      queue N test events (agent.selftest) and send them now,\n"
            "                      to prove the path to the server (admin)\n"
            "  events [--tail N]   the most recent events still queued on this computer (admin)\n"
            "  sync                check in and send queued events now (admin)\n\n"
            "Options:\n"
            "      --data-dir DIR  reach the agent that runs with this data directory\n"
            "      --socket PATH   reach the agent at this IPC endpoint\n"
            "      --config FILE   configuration file (for diag without a running agent)\n"
            "      --json          print machine-readable JSON\n"
            "  -o, --output FILE   where diag writes the bundle (default: current directory)\n"
            "      --version       print the version and exit\n"
            "  -h, --help          print this help and exit\n\n"
            "Exit codes: 0 success, 1 usage error, 2 agent not running or unreachable,\n"
            "3 permission denied, 4 the agent reported an error, 5 local error.\n");
}

static int exit_for(int rc)
{
    switch (rc) {
    case 0: return EXIT_OK;
    case MMR_ECONN:
    case MMR_ETIMEDOUT: return EXIT_NOT_RUNNING;
    case MMR_EPERM: return EXIT_DENIED;
    default: return EXIT_AGENT_ERROR;
    }
}

static int fail(int rc)
{
    fprintf(stderr, "mamorictl: %s\n", mmr_err_msg());
    return exit_for(rc);
}

static const char *text_or(const json_t *v, const char *fallback)
{
    return json_is_string(v) ? json_string_value(v) : fallback;
}

static void print_duration(int64_t s)
{
    if (s >= 86400)
        printf("%lldd %02lldh", (long long)(s / 86400), (long long)(s % 86400 / 3600));
    else if (s >= 3600)
        printf("%lldh %02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
    else
        printf("%lldm %02llds", (long long)(s / 60), (long long)(s % 60));
}

static void print_status(const json_t *st)
{
    const json_t *agent = json_object_get(st, "agent");
    const json_t *enr = json_object_get(st, "enrollment");
    const json_t *pol = json_object_get(st, "policy");
    const json_t *chk = json_object_get(st, "checkin");

    printf("Mamori agent %s (%s)\n", text_or(json_object_get(agent, "version"), "?"),
           text_or(json_object_get(agent, "commit"), "?"));
    printf("  %-14s running, pid %lld, up ", "State",
           (long long)json_integer_value(json_object_get(agent, "pid")));
    print_duration(json_integer_value(json_object_get(agent, "uptime_s")));
    printf("\n");
    if (json_is_true(json_object_get(enr, "enrolled")))
        printf("  %-14s enrolled as %s\n", "Enrollment",
               text_or(json_object_get(enr, "device_id"), "?"));
    else
        printf("  %-14s not enrolled\n", "Enrollment");
    printf("  %-14s %s\n", "Server", text_or(json_object_get(enr, "server"), "(not configured)"));
    if (json_is_integer(json_object_get(pol, "version")))
        printf("  %-14s version %lld\n", "Policy",
               (long long)json_integer_value(json_object_get(pol, "version")));
    else
        printf("  %-14s none\n", "Policy");
    printf("  %-14s %s", "Last check-in", text_or(json_object_get(chk, "last"), "never"));
    if (json_is_string(json_object_get(chk, "result")))
        printf(" (%s)", json_string_value(json_object_get(chk, "result")));
    printf("\n");
    const json_t *q = json_object_get(st, "queue");
    if (json_is_object(q)) {
        const json_t *by = json_object_get(q, "by_severity");
        const json_t *dr = json_object_get(q, "dropped");
        printf("  %-14s %lld events (low %lld, medium %lld, high %lld, critical %lld), "
               "%lld bytes\n",
               "Queue", (long long)json_integer_value(json_object_get(q, "depth")),
               (long long)json_integer_value(json_object_get(by, "low")),
               (long long)json_integer_value(json_object_get(by, "medium")),
               (long long)json_integer_value(json_object_get(by, "high")),
               (long long)json_integer_value(json_object_get(by, "critical")),
               (long long)json_integer_value(json_object_get(q, "bytes")));
        long long dropped = json_integer_value(json_object_get(dr, "low")) +
                            json_integer_value(json_object_get(dr, "medium")) +
                            json_integer_value(json_object_get(dr, "high"));
        if (dropped)
            printf("  %-14s %lld events dropped when the queue was full (low %lld, medium %lld, "
                   "high %lld)\n",
                   "", dropped, (long long)json_integer_value(json_object_get(dr, "low")),
                   (long long)json_integer_value(json_object_get(dr, "medium")),
                   (long long)json_integer_value(json_object_get(dr, "high")));
    }
    printf("  %-14s %s\n", "Certificate",
           text_or(json_object_get(enr, "certificate_expires"), "(none)"));
    printf("  %-14s %s\n", "Data dir", text_or(json_object_get(agent, "data_dir"), "?"));
    printf("  Modules\n");
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(st, "modules"), i, m)
    {
        printf("    %-12s %-9s %s\n", text_or(json_object_get(m, "module"), "?"),
               text_or(json_object_get(m, "state"), "?"),
               text_or(json_object_get(m, "detail"), ""));
    }
}

static void print_json(const json_t *doc)
{
    char *text = mmr_json_dump_pretty(doc);
    printf("%s\n", text);
    free(text);
}

static int cmd_status(struct ctl *c)
{
    json_t *st = NULL;
    int rc = mmr_ipc_call(c->endpoint, "status", NULL, STATUS_TIMEOUT_MS, &st);
    if (rc < 0)
        return fail(rc);
    if (c->json)
        print_json(st);
    else
        print_status(st);
    json_decref(st);
    return EXIT_OK;
}

static int cmd_selftest(struct ctl *c)
{
    json_t *args = json_pack("{s:I,s:i}", "events", (json_int_t)(c->count > 0 ? c->count : 1),
                             "severity", c->severity >= 0 ? c->severity : 0);
    json_t *res = NULL;
    int rc = mmr_ipc_call(c->endpoint, "selftest", args, DIAG_TIMEOUT_MS, &res);
    json_decref(args);
    if (rc < 0)
        return fail(rc);
    if (c->json) {
        print_json(res);
    } else {
        printf("%lld test events stored (seq %lld..%lld) and on their way to the server.\n"
               "The console counts them as type agent.selftest for this device.\n",
               (long long)json_integer_value(json_object_get(res, "queued")),
               (long long)json_integer_value(json_object_get(res, "first_seq")),
               (long long)json_integer_value(json_object_get(res, "last_seq")));
    }
    json_decref(res);
    return EXIT_OK;
}

static int cmd_events(struct ctl *c)
{
    json_t *args = json_pack("{s:I}", "tail", (json_int_t)(c->count > 0 ? c->count : 20));
    json_t *res = NULL;
    int rc = mmr_ipc_call(c->endpoint, "events", args, STATUS_TIMEOUT_MS, &res);
    json_decref(args);
    if (rc < 0)
        return fail(rc);
    if (c->json) {
        print_json(res);
    } else {
        static const char *const sev[] = {"low", "medium", "high", "critical"};
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(res, "events"), i, e)
        {
            json_int_t s = json_integer_value(json_object_get(e, "severity"));
            char *data = mmr_json_dump_line(json_object_get(e, "data"));
            printf("%8lld  %s  %-8s  %-20s %s\n",
                   (long long)json_integer_value(json_object_get(e, "seq")),
                   text_or(json_object_get(e, "time"), "?"), s >= 0 && s < 4 ? sev[s] : "?",
                   text_or(json_object_get(e, "type"), "?"), data);
            free(data);
        }
        if (json_array_size(json_object_get(res, "events")) == 0)
            printf("no events waiting to be sent\n");
    }
    json_decref(res);
    return EXIT_OK;
}

static int cmd_reload(struct ctl *c)
{
    json_t *res = NULL;
    int rc = mmr_ipc_call(c->endpoint, "reload", NULL, STATUS_TIMEOUT_MS, &res);
    if (rc < 0)
        return fail(rc);
    printf("configuration reloaded from %s\n", text_or(json_object_get(res, "config"), "?"));
    json_decref(res);
    return EXIT_OK;
}

/* Prints the PROBLEM and NOTE lines of the bundle's summary. */
static int print_finding(const char *name, const void *data, size_t len, void *ud)
{
    int *printed = ud;
    if (strcmp(name, "mamori-diag/summary.txt") != 0)
        return 0;
    const char *p = data, *end = p + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if ((n >= 8 && strncmp(p, "PROBLEM:", 8) == 0) ||
            (n >= 5 && strncmp(p, "NOTE:", 5) == 0)) {
            printf("  %.*s\n", (int)n, p);
            (*printed)++;
        }
        p += n + 1;
    }
    return 0;
}

/* Without a running agent: read the data directory ourselves. */
static int build_offline(struct ctl *c, const char *why, char **bundle, size_t *len, char **name)
{
    bool explicit_;
    char *config_path = mmr_agent_config_path(c->config, c->data_dir, &explicit_);
    struct mmr_agent_config cfg;
    struct mmr_diag_input in;
    char *why_copy = mmr_strdup(why);
    if (mmr_agent_config_load(config_path, !explicit_, c->data_dir, &cfg) == 0) {
        mmr_diag_input_init(&in, config_path, &cfg);
    } else {
        char *err = mmr_strdup(mmr_err_msg());
        mmr_agent_config_load(NULL, true, c->data_dir, &cfg); /* defaults */
        mmr_diag_input_init(&in, config_path, &cfg);
        free(in.config_text);
        in.config_text = NULL;
        in.config_error = err;
    }
    in.status_error = why_copy;
    fprintf(stderr, "mamorictl: the agent does not answer (%s); building the bundle locally\n",
            why);
    int rc = mmr_diag_build(&in, bundle, len, name);
    mmr_diag_input_free(&in);
    mmr_agent_config_free(&cfg);
    free(config_path);
    return rc;
}

static int cmd_diag(struct ctl *c)
{
    json_t *res = NULL;
    char *bundle = NULL, *name = NULL;
    size_t len = 0;
    int rc = mmr_ipc_call(c->endpoint, "diag", NULL, DIAG_TIMEOUT_MS, &res);
    if (rc == MMR_ECONN || rc == MMR_ETIMEDOUT) {
        char *why = mmr_strdup(mmr_err_msg());
        rc = build_offline(c, why, &bundle, &len, &name);
        free(why);
        if (rc < 0) {
            fprintf(stderr, "mamorictl: cannot build the bundle: %s\n", mmr_err_msg());
            return rc == MMR_EPERM ? EXIT_DENIED : EXIT_LOCAL_ERROR;
        }
    } else if (rc < 0) {
        return fail(rc);
    } else {
        const char *b64 = text_or(json_object_get(res, "bundle"), "");
        name = mmr_strdup(text_or(json_object_get(res, "name"), "mamori-diag.tar.gz"));
        rc = mmr_base64_decode(b64, strlen(b64), (unsigned char **)&bundle, &len);
        json_decref(res);
        if (rc < 0) {
            free(name);
            fprintf(stderr, "mamorictl: the agent sent a damaged bundle: %s\n", mmr_err_msg());
            return EXIT_AGENT_ERROR;
        }
    }
    const char *path = c->output ? c->output : name;
    rc = mmr_file_write_atomic(path, bundle, len);
    if (rc < 0) {
        fprintf(stderr, "mamorictl: cannot write the bundle: %s\n", mmr_err_msg());
    } else {
        printf("Support bundle written to %s (%zu bytes). Findings:\n", path, len);
        int printed = 0;
        mmr_targz_read(bundle, len, NULL, print_finding, &printed);
        if (printed == 0)
            printf("  no problems found\n");
    }
    free(bundle);
    free(name);
    return rc < 0 ? EXIT_LOCAL_ERROR : EXIT_OK;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"data-dir", required_argument, NULL, 'd'}, {"socket", required_argument, NULL, 's'},
        {"config", required_argument, NULL, 'c'},   {"json", no_argument, NULL, 'j'},
        {"output", required_argument, NULL, 'o'},   {"version", no_argument, NULL, 'V'},
        {"events", required_argument, NULL, 'n'},   {"tail", required_argument, NULL, 'n'},
        {"severity", required_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    mmr_process_init(&argc, &argv);
    struct ctl c;
    memset(&c, 0, sizeof(c));
    c.severity = -1;
    int opt;
    /* "+" would stop at the command; we accept options on both sides of it. */
    while ((opt = getopt_long(argc, argv, "o:h", options, NULL)) != -1) {
        switch (opt) {
        case 'd': c.data_dir = optarg; break;
        case 's': c.socket = optarg; break;
        case 'c': c.config = optarg; break;
        case 'j': c.json = true; break;
        case 'o': c.output = optarg; break;
        case 'n': c.count = strtol(optarg, NULL, 10); break;
        case 'S': c.severity = (int)strtol(optarg, NULL, 10); break;
        case 'V': printf("mamorictl %s (%s)\n", MMR_VERSION, MMR_GIT_COMMIT); return EXIT_OK;
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, optind >= argc ? "mamorictl: no command given\n"
                                       : "mamorictl: one command at a time\n");
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[optind];

    int rc;
    if (c.socket)
        c.endpoint = mmr_strdup(c.socket);
    else if (mmr_ipc_endpoint(c.data_dir ? c.data_dir : mmr_default_run_dir(), &c.endpoint) < 0) {
        fprintf(stderr, "mamorictl: %s\n", mmr_err_msg());
        return EXIT_USAGE;
    }

    if (strcmp(cmd, "status") == 0) {
        rc = cmd_status(&c);
    } else if (strcmp(cmd, "diag") == 0) {
        rc = cmd_diag(&c);
    } else if (strcmp(cmd, "selftest") == 0) {
        rc = cmd_selftest(&c);
    } else if (strcmp(cmd, "events") == 0) {
        rc = cmd_events(&c);
    } else if (strcmp(cmd, "sync") == 0) {
        json_t *res = NULL;
        rc = mmr_ipc_call(c.endpoint, "sync", NULL, STATUS_TIMEOUT_MS, &res);
        json_decref(res);
        if (rc < 0)
            rc = fail(rc);
        else
            printf("check-in started\n");
    } else if (strcmp(cmd, "reload") == 0) {
        rc = cmd_reload(&c);
    } else {
        fprintf(stderr, "mamorictl: unknown command '%s'\n", cmd);
        usage(stderr);
        rc = EXIT_USAGE;
    }
    free(c.endpoint);
    return rc;
}
