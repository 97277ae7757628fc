/* mamoriadm: the administrators' command line over the server's admin API
 * (/admin/v1): enrollment tokens, devices, policies, event counts. It reads
 * the admin token and the root CA from the server directory (--dir), or takes
 * them as --token-file / --ca. Exit codes are in docs/cli.md. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mamori_version.h"
#include "server/server.h"
#include "shared/config.h"
#include "shared/err.h"
#include "shared/https.h"
#include "shared/json.h"
#include "shared/mem.h"
#include "shared/platform.h"
#include "shared/policy.h"

enum exit_code {
    EXIT_OK = 0,
    EXIT_USAGE = 1,
    EXIT_UNREACHABLE = 2,
    EXIT_DENIED = 3,
    EXIT_REFUSED = 4,
    EXIT_LOCAL = 5,
};

struct adm {
    const char *server;
    const char *dir;
    const char *token_file;
    const char *ca_file;
    const char *org, *group, *device, *type, *to, *expires;
    long uses;
    int severity;
    bool json;
    char *auth;
    struct mmr_tls_client *tls;
    struct mmr_https *https;
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: mamoriadm [--server URL] --dir DIR [--json] COMMAND ...\n\n"
            "  token create --org ORG --group GROUP [--uses N] [--expires 7d]\n"
            "  token list | token revoke ID\n"
            "  device list [--org ORG] [--group GROUP] | device show ID | device revoke ID\n"
            "  policy validate FILE | policy publish --group G FILE\n"
            "  policy show --group G | policy history --group G | policy rollback --group G --to V\n"
            "  events count [--device ID] [--type T] [--severity 0-3]\n"
            "  events summary [--device ID]\n\n"
            "--dir DIR is the server directory: its admin.token and pki/root.crt are used,\n"
            "and its server.conf gives the URL unless --server says otherwise.\n"
            "--token-file FILE and --ca FILE replace them when the directory is elsewhere.\n"
            "Exit codes: 0 ok, 1 usage, 2 server unreachable, 3 not authorised,\n"
            "4 refused by the server (message says why), 5 local error.\n");
}

static int fail(int code, const char *what)
{
    fprintf(stderr, "mamoriadm: %s%s%s\n", what ? what : "", what ? ": " : "", mmr_err_msg());
    return code;
}

static char *read_trimmed(const char *path, size_t max)
{
    char *text;
    size_t len;
    if (mmr_file_read_all(path, max, &text, &len) < 0)
        return NULL;
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
        text[--len] = '\0';
    return text;
}

/* The public URL from <dir>/server.conf when --server is not given. */
static char *server_url(const struct adm *a)
{
    if (a->server || !a->dir)
        return mmr_strdup(a->server ? a->server : "https://127.0.0.1:8443");
    struct mmr_server_config cfg;
    if (mmr_server_config_load(a->dir, &cfg) < 0) {
        fprintf(stderr, "mamoriadm: %s; trying https://127.0.0.1:8443\n", mmr_err_msg());
        return mmr_strdup("https://127.0.0.1:8443");
    }
    char *url = mmr_strdup(cfg.public_url);
    mmr_server_config_free(&cfg);
    return url;
}

static int connect_admin(struct adm *a)
{
    char *token_path = a->token_file ? mmr_strdup(a->token_file)
                       : a->dir      ? mmr_path_join(a->dir, "admin.token")
                                     : NULL;
    char *ca_path = NULL;
    if (a->ca_file) {
        ca_path = mmr_strdup(a->ca_file);
    } else if (a->dir) {
        char *pki = mmr_path_join(a->dir, "pki");
        ca_path = mmr_path_join(pki, "root.crt");
        free(pki);
    }
    if (!token_path || !ca_path) {
        free(token_path);
        free(ca_path);
        fprintf(stderr, "mamoriadm: give --dir (the server directory), or --token-file and "
                        "--ca\n");
        return EXIT_USAGE;
    }
    char *token = read_trimmed(token_path, 4096);
    char *ca = token ? read_trimmed(ca_path, 64 * 1024) : NULL;
    free(token_path);
    free(ca_path);
    if (!token || !ca) {
        free(token);
        return fail(EXIT_LOCAL, "cannot read admin credentials");
    }
    a->auth = mmr_asprintf("Bearer %s", token);
    memset(token, 0, strlen(token));
    free(token);
    struct mmr_tls_client_opts topts = {.ca_pem = ca};
    int rc = mmr_tls_client_new(&topts, &a->tls);
    free(ca);
    if (rc < 0)
        return fail(EXIT_LOCAL, "bad CA certificate");
    char *url = server_url(a);
    struct mmr_https_opts hopts = {.url = url, .tls = a->tls, .timeout_ms = 30000};
    rc = mmr_https_new(&hopts, &a->https);
    free(url);
    return rc < 0 ? fail(EXIT_USAGE, "bad server URL") : EXIT_OK;
}

/* Calls the admin API; prints errors; returns an exit code and the reply. */
static int call(struct adm *a, const char *method, const char *target, const char *body,
                size_t len, json_t **reply)
{
    *reply = NULL;
    struct mmr_http_header h[2] = {{"Authorization", a->auth},
                                   {"Content-Type", "application/json"}};
    struct mmr_http_message resp;
    int rc = mmr_https_request(a->https, method, target, h, body ? 2 : 1, body, len, &resp);
    if (rc < 0)
        return fail(rc == MMR_EPERM ? EXIT_DENIED : EXIT_UNREACHABLE, "cannot reach the server");
    mmr_json_parse(resp.body, resp.body_len, MMR_JSON_MAX_DEPTH, reply);
    int status = resp.status;
    mmr_http_message_free(&resp);
    if (status >= 200 && status < 300)
        return EXIT_OK;
    fprintf(stderr, "mamoriadm: %s (HTTP %d)\n", mmr_https_error_message(*reply, "refused"),
            status);
    json_decref(*reply);
    *reply = NULL;
    return status == 401 || status == 403 ? EXIT_DENIED : EXIT_REFUSED;
}

static int call_json(struct adm *a, const char *method, const char *target, json_t *body,
                     json_t **reply)
{
    char *text = body ? mmr_json_dump_line(body) : NULL;
    int rc = call(a, method, target, text, text ? strlen(text) : 0, reply);
    free(text);
    json_decref(body);
    return rc;
}

static void print_json(const json_t *v)
{
    char *text = mmr_json_dump_pretty(v);
    printf("%s\n", text);
    free(text);
}

static const char *s(const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v ? v : "-";
}

/* Appends ?k=v&... for the non-NULL values, percent-encoding them. */
static void add_query(struct mmr_buf *b, const char *key, const char *value)
{
    if (!value)
        return;
    mmr_buf_appendf(b, "%c%s=", strchr(b->data, '?') ? '&' : '?', key);
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~", *p))
            mmr_buf_appendf(b, "%c", *p);
        else
            mmr_buf_appendf(b, "%%%02X", *p);
    }
}

static int token_cmd(struct adm *a, int argc, char **argv)
{
    json_t *r = NULL;
    int rc;
    if (argc >= 1 && strcmp(argv[0], "create") == 0) {
        if (!a->org || !a->group) {
            fprintf(stderr, "mamoriadm: token create needs --org and --group\n");
            return EXIT_USAGE;
        }
        int64_t ms = 7LL * 86400 * 1000;
        if (a->expires && mmr_parse_duration_ms(a->expires, &ms) < 0)
            return fail(EXIT_USAGE, "--expires");
        rc = call_json(a, "POST", "/admin/v1/tokens",
                       json_pack("{s:s,s:s,s:I,s:I}", "org", a->org, "group", a->group, "uses",
                                 (json_int_t)(a->uses > 0 ? a->uses : 1), "expires_in_s",
                                 (json_int_t)(ms / 1000)),
                       &r);
        if (rc == EXIT_OK) {
            if (a->json)
                print_json(r);
            else
                printf("%s\n", s(r, "token"));
        }
    } else if (argc >= 1 && strcmp(argv[0], "list") == 0) {
        rc = call_json(a, "GET", "/admin/v1/tokens", NULL, &r);
        if (rc == EXIT_OK && a->json) {
            print_json(r);
        } else if (rc == EXIT_OK) {
            printf("%-12s %-8s %-20s %-16s %7s  %s\n", "ID", "STATE", "ORG", "GROUP", "USES",
                   "EXPIRES");
            size_t i;
            json_t *t;
            json_array_foreach(json_object_get(r, "tokens"), i, t)
            {
                printf("%-12s %-8s %-20s %-16s %3lld/%-3lld  %s\n", s(t, "id"), s(t, "state"),
                       s(t, "org"), s(t, "group"),
                       (long long)json_integer_value(json_object_get(t, "uses")),
                       (long long)json_integer_value(json_object_get(t, "uses_allowed")),
                       s(t, "expires_at"));
            }
        }
    } else if (argc >= 2 && strcmp(argv[0], "revoke") == 0) {
        char *target = mmr_asprintf("/admin/v1/tokens/%s/revoke", argv[1]);
        rc = call_json(a, "POST", target, json_object(), &r);
        free(target);
        if (rc == EXIT_OK)
            printf("token %s revoked\n", argv[1]);
    } else {
        usage(stderr);
        return EXIT_USAGE;
    }
    json_decref(r);
    return rc;
}

static int device_cmd(struct adm *a, int argc, char **argv)
{
    json_t *r = NULL;
    int rc;
    if (argc >= 1 && strcmp(argv[0], "list") == 0) {
        struct mmr_buf target = {0};
        mmr_buf_appendf(&target, "/admin/v1/devices");
        add_query(&target, "org", a->org);
        add_query(&target, "group", a->group);
        add_query(&target, "limit", "1000");
        rc = call_json(a, "GET", target.data, NULL, &r);
        mmr_buf_free(&target);
        if (rc == EXIT_OK && a->json) {
            print_json(r);
        } else if (rc == EXIT_OK) {
            printf("%-36s %-16s %-10s %-8s %-24s %6s %s\n", "DEVICE", "HOSTNAME", "GROUP",
                   "VERSION", "LAST CHECK-IN", "QUEUE", "STATE");
            size_t i;
            json_t *d;
            json_array_foreach(json_object_get(r, "devices"), i, d)
            {
                json_t *q = json_object_get(d, "queue_depth");
                printf("%-36s %-16s %-10s %-8s %-24s %6lld %s\n", s(d, "id"), s(d, "hostname"),
                       s(d, "group"), s(d, "agent_version"), s(d, "last_checkin"),
                       q ? (long long)json_integer_value(q) : -1LL,
                       json_is_true(json_object_get(d, "revoked")) ? "revoked" : "active");
            }
            printf("%lld device(s)\n", (long long)json_integer_value(json_object_get(r, "total")));
        }
    } else if (argc >= 2 && strcmp(argv[0], "show") == 0) {
        char *target = mmr_asprintf("/admin/v1/devices/%s", argv[1]);
        rc = call_json(a, "GET", target, NULL, &r);
        free(target);
        if (rc == EXIT_OK)
            print_json(r);
    } else if (argc >= 2 && strcmp(argv[0], "revoke") == 0) {
        char *target = mmr_asprintf("/admin/v1/devices/%s/revoke", argv[1]);
        rc = call_json(a, "POST", target, json_object(), &r);
        free(target);
        if (rc == EXIT_OK)
            printf("device %s revoked: its certificate is refused from its next connection\n",
                   argv[1]);
    } else {
        usage(stderr);
        return EXIT_USAGE;
    }
    json_decref(r);
    return rc;
}

static int read_policy_file(const char *path, char **text, size_t *len)
{
    if (mmr_file_read_all(path, MMR_POLICY_MAX_BYTES, text, len) < 0)
        return fail(EXIT_LOCAL, "cannot read the policy");
    return EXIT_OK;
}

static int policy_cmd(struct adm *a, int argc, char **argv)
{
    json_t *r = NULL;
    int rc;
    char *text = NULL;
    size_t len = 0;
    bool needs_group = argc >= 1 && strcmp(argv[0], "validate") != 0;
    if (needs_group && !a->group) {
        fprintf(stderr, "mamoriadm: policy %s needs --group\n", argv[0]);
        return EXIT_USAGE;
    }
    if (argc >= 2 && strcmp(argv[0], "validate") == 0) {
        /* Checked here first, so it works offline; the server checks again. */
        if ((rc = read_policy_file(argv[1], &text, &len)) != EXIT_OK)
            return rc;
        struct mmr_policy p;
        if (mmr_policy_parse(text, len, &p) < 0) {
            fprintf(stderr, "mamoriadm: %s: %s\n", argv[1], mmr_err_msg());
            rc = EXIT_REFUSED;
        } else {
            printf("%s: valid (profile %s)\n", argv[1], p.profile);
            mmr_policy_free(&p);
            rc = EXIT_OK;
        }
    } else if (argc >= 2 && strcmp(argv[0], "publish") == 0) {
        if ((rc = read_policy_file(argv[1], &text, &len)) != EXIT_OK)
            return rc;
        char *target = mmr_asprintf("/admin/v1/policies/%s", a->group);
        rc = call(a, "POST", target, text, len, &r);
        free(target);
        if (rc == EXIT_OK)
            printf("published version %lld for group %s\n",
                   (long long)json_integer_value(json_object_get(r, "version")), a->group);
    } else if (argc >= 1 && (strcmp(argv[0], "history") == 0 || strcmp(argv[0], "show") == 0)) {
        bool history = strcmp(argv[0], "history") == 0;
        char *target = mmr_asprintf("/admin/v1/policies/%s%s", a->group, history ? "/history" : "");
        rc = call_json(a, "GET", target, NULL, &r);
        free(target);
        if (rc == EXIT_OK && (a->json || !history)) {
            print_json(r);
        } else if (rc == EXIT_OK) {
            printf("%-9s %-8s %-8s %-10s %s\n", "ACTION", "VERSION", "FROM", "BY", "AT");
            size_t i;
            json_t *c;
            json_array_foreach(json_object_get(r, "history"), i, c)
            {
                printf("%-9s %-8lld %-8lld %-10s %s\n", s(c, "action"),
                       (long long)json_integer_value(json_object_get(c, "version")),
                       (long long)json_integer_value(json_object_get(c, "previous")), s(c, "by"),
                       s(c, "at"));
            }
        }
    } else if (argc >= 1 && strcmp(argv[0], "rollback") == 0) {
        char *end = NULL;
        long long v = a->to ? strtoll(a->to, &end, 10) : 0;
        if (!a->to || *end || v < 1) {
            fprintf(stderr, "mamoriadm: policy rollback needs --to VERSION\n");
            return EXIT_USAGE;
        }
        char *target = mmr_asprintf("/admin/v1/policies/%s/rollback", a->group);
        rc = call_json(a, "POST", target, json_pack("{s:I}", "version", (json_int_t)v), &r);
        free(target);
        if (rc == EXIT_OK)
            printf("group %s now uses policy version %lld\n", a->group, v);
    } else {
        usage(stderr);
        return EXIT_USAGE;
    }
    free(text);
    json_decref(r);
    return rc;
}

static int events_cmd(struct adm *a, int argc, char **argv)
{
    json_t *r = NULL;
    int rc;
    struct mmr_buf target = {0};
    if (argc >= 1 && (strcmp(argv[0], "count") == 0 || strcmp(argv[0], "summary") == 0)) {
        bool count = strcmp(argv[0], "count") == 0;
        mmr_buf_appendf(&target, "/admin/v1/events/%s", argv[0]);
        add_query(&target, "device", a->device);
        if (count) {
            add_query(&target, "type", a->type);
            if (a->severity >= 0) {
                char sev[8];
                snprintf(sev, sizeof(sev), "%d", a->severity);
                add_query(&target, "severity", sev);
            }
        }
        rc = call_json(a, "GET", target.data, NULL, &r);
        if (rc == EXIT_OK && count && !a->json)
            printf("%lld\n", (long long)json_integer_value(json_object_get(r, "count")));
        else if (rc == EXIT_OK)
            print_json(r);
    } else {
        usage(stderr);
        rc = EXIT_USAGE;
    }
    mmr_buf_free(&target);
    json_decref(r);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"server", required_argument, NULL, 'S'},  {"dir", required_argument, NULL, 'D'},
        {"token-file", required_argument, NULL, 'T'}, {"ca", required_argument, NULL, 'C'},
        {"org", required_argument, NULL, 'o'},     {"group", required_argument, NULL, 'g'},
        {"uses", required_argument, NULL, 'u'},    {"expires", required_argument, NULL, 'e'},
        {"device", required_argument, NULL, 'd'},  {"type", required_argument, NULL, 't'},
        {"severity", required_argument, NULL, 's'}, {"to", required_argument, NULL, 'r'},
        {"json", no_argument, NULL, 'j'},          {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    mmr_process_init(&argc, &argv);
    struct adm a;
    memset(&a, 0, sizeof(a));
    a.severity = -1;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (opt) {
        case 'S': a.server = optarg; break;
        case 'D': a.dir = optarg; break;
        case 'T': a.token_file = optarg; break;
        case 'C': a.ca_file = optarg; break;
        case 'o': a.org = optarg; break;
        case 'g': a.group = optarg; break;
        case 'u': a.uses = strtol(optarg, NULL, 10); break;
        case 'e': a.expires = optarg; break;
        case 'd': a.device = optarg; break;
        case 't': a.type = optarg; break;
        case 's': a.severity = (int)strtol(optarg, NULL, 10); break;
        case 'r': a.to = optarg; break;
        case 'j': a.json = true; break;
        case 'V': printf("mamoriadm %s (%s)\n", MMR_VERSION, MMR_GIT_COMMIT); return EXIT_OK;
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *noun = argv[optind];
    int sub_argc = argc - optind - 1;
    char **sub_argv = argv + optind + 1;
    /* policy validate works offline: no credentials needed. */
    bool offline = strcmp(noun, "policy") == 0 && sub_argc >= 1 &&
                   strcmp(sub_argv[0], "validate") == 0;
    int rc = offline ? EXIT_OK : connect_admin(&a);
    if (rc == EXIT_OK) {
        if (strcmp(noun, "token") == 0)
            rc = token_cmd(&a, sub_argc, sub_argv);
        else if (strcmp(noun, "device") == 0)
            rc = device_cmd(&a, sub_argc, sub_argv);
        else if (strcmp(noun, "policy") == 0)
            rc = policy_cmd(&a, sub_argc, sub_argv);
        else if (strcmp(noun, "events") == 0)
            rc = events_cmd(&a, sub_argc, sub_argv);
        else {
            fprintf(stderr, "mamoriadm: unknown command '%s'\n", noun);
            usage(stderr);
            rc = EXIT_USAGE;
        }
    }
    mmr_https_free(a.https);
    mmr_tls_client_free(a.tls);
    if (a.auth)
        memset(a.auth, 0, strlen(a.auth));
    free(a.auth);
    return rc;
}
