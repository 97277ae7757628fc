/* Enrollment token encoding and defensive decoding. */
#include "shared/token.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "shared/base64.h"
#include "shared/err.h"
#include "shared/json.h"
#include "shared/mem.h"

#define PREFIX "mmr1."

char *mmr_token_encode(const struct mmr_token *t)
{
    json_t *doc = json_pack("{s:s,s:s,s:s,s:s}", "url", t->url, "id", t->id, "secret", t->secret,
                            "pin", t->pin);
    if (t->org)
        json_object_set_new(doc, "org", json_string(t->org));
    if (t->group)
        json_object_set_new(doc, "group", json_string(t->group));
    char *body = mmr_json_dump_line(doc);
    json_decref(doc);
    char *b64 = mmr_base64_encode(body, strlen(body));
    free(body);
    /* base64 -> base64url without padding: safe in URLs, shells and INI. */
    size_t n = 0;
    for (char *p = b64; *p; p++) {
        if (*p == '=')
            break;
        b64[n++] = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    }
    b64[n] = '\0';
    char *out = mmr_asprintf(PREFIX "%s", b64);
    free(b64);
    return out;
}

static int copy_field(const json_t *doc, const char *key, bool required, char **out)
{
    const char *v = NULL;
    int rc = mmr_json_get_str(doc, "token", key, required, &v);
    if (rc < 0)
        return rc;
    if (v && strlen(v) > 1024)
        return mmr_err_set(MMR_ETOOBIG, "token.%s is too long", key);
    *out = v ? mmr_strdup(v) : NULL;
    return 0;
}

static bool is_hex64(const char *s)
{
    if (strlen(s) != 64)
        return false;
    for (; *s; s++)
        if (!isxdigit((unsigned char)*s))
            return false;
    return true;
}

int mmr_token_decode(const char *text, struct mmr_token *out)
{
    memset(out, 0, sizeof(*out));
    while (isspace((unsigned char)*text))
        text++;
    size_t len = strlen(text);
    while (len > 0 && isspace((unsigned char)text[len - 1]))
        len--;
    if (len > MMR_TOKEN_MAX_LEN)
        return mmr_err_set(MMR_ETOOBIG, "enrollment token is %zu characters, over the limit of %d",
                           len, MMR_TOKEN_MAX_LEN);
    if (len < strlen(PREFIX) || strncmp(text, PREFIX, strlen(PREFIX)) != 0)
        return mmr_err_set(MMR_EINVAL, "not a Mamori enrollment token (it must start with '%s')",
                           PREFIX);
    const char *b = text + strlen(PREFIX);
    size_t blen = len - strlen(PREFIX);
    char *std = mmr_malloc(blen + 4);
    size_t n = 0;
    for (size_t i = 0; i < blen; i++) {
        char c = b[i];
        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
        else if (!isalnum((unsigned char)c)) {
            free(std);
            return mmr_err_set(MMR_EINVAL, "enrollment token has a character that does not "
                                           "belong (was it cut or wrapped?)");
        }
        std[n++] = c;
    }
    while (n % 4)
        std[n++] = '=';
    unsigned char *json = NULL;
    size_t jlen = 0;
    int rc = mmr_base64_decode(std, n, &json, &jlen);
    free(std);
    if (rc < 0)
        return mmr_err_set(MMR_EINVAL, "enrollment token is damaged (was it cut short?)");
    json_t *doc = NULL;
    rc = mmr_json_parse_object((const char *)json, jlen, 4, &doc);
    free(json);
    if (rc < 0)
        return mmr_err_set(MMR_EINVAL, "enrollment token is damaged (not a token document)");
    if ((rc = copy_field(doc, "url", true, &out->url)) < 0 ||
        (rc = copy_field(doc, "id", true, &out->id)) < 0 ||
        (rc = copy_field(doc, "secret", true, &out->secret)) < 0 ||
        (rc = copy_field(doc, "pin", true, &out->pin)) < 0 ||
        (rc = copy_field(doc, "org", false, &out->org)) < 0 ||
        (rc = copy_field(doc, "group", false, &out->group)) < 0)
        goto fail;
    if (!is_hex64(out->pin)) {
        rc = mmr_err_set(MMR_EINVAL, "token.pin: expected 64 hex digits (SHA-256 of the CA)");
        goto fail;
    }
    char *host = NULL, *port = NULL;
    if ((rc = mmr_url_split(out->url, &host, &port)) < 0)
        goto fail;
    free(host);
    free(port);
    json_decref(doc);
    return 0;
fail:
    json_decref(doc);
    mmr_token_free(out);
    return rc;
}

void mmr_token_free(struct mmr_token *t)
{
    free(t->url);
    if (t->secret)
        memset(t->secret, 0, strlen(t->secret));
    free(t->secret);
    free(t->id);
    free(t->pin);
    free(t->org);
    free(t->group);
    memset(t, 0, sizeof(*t));
}

int mmr_url_split(const char *url, char **host, char **port)
{
    static const char scheme[] = "https://";
    if (strncmp(url, scheme, strlen(scheme)) != 0)
        return mmr_err_set(MMR_EINVAL, "server URL '%s' must start with https://", url);
    const char *h = url + strlen(scheme);
    size_t hlen = strcspn(h, "/");
    const char *end = h + hlen;
    const char *colon = NULL;
    if (*h == '[') { /* [::1]:8443 */
        const char *close = memchr(h, ']', hlen);
        if (!close)
            return mmr_err_set(MMR_EINVAL, "server URL '%s': unclosed '['", url);
        colon = close + 1 < end && close[1] == ':' ? close + 1 : NULL;
        *host = mmr_strndup(h + 1, (size_t)(close - h - 1));
    } else {
        colon = memchr(h, ':', hlen);
        *host = mmr_strndup(h, (size_t)((colon ? colon : end) - h));
    }
    if (!**host) {
        free(*host);
        *host = NULL;
        return mmr_err_set(MMR_EINVAL, "server URL '%s' has no host", url);
    }
    if (colon) {
        *port = mmr_strndup(colon + 1, (size_t)(end - colon - 1));
        char *stop;
        long p = strtol(*port, &stop, 10);
        if (!**port || *stop || p < 1 || p > 65535) {
            free(*host);
            free(*port);
            *host = *port = NULL;
            return mmr_err_set(MMR_EINVAL, "server URL '%s' has a bad port", url);
        }
    } else {
        *port = mmr_strdup("8443");
    }
    return 0;
}
