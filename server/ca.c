/* The server's certificate authority: PKI creation, loading, device
 * certificate issuance and policy signing. */
#include "server/ca.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "shared/base64.h"
#include "shared/err.h"
#include "shared/log.h"
#include "shared/mem.h"
#include "shared/platform.h"

#define YEAR_MS (365LL * 24 * 3600 * 1000)
#define PEM_LIMIT (64 * 1024)

struct mmr_ca {
    uv_mutex_t lock; /* the keys' random generators are not thread-safe */
    struct mmr_key *issuing_key;
    struct mmr_key *signing_key;
    char *root_pem;
    char *issuing_pem;
    char *server_chain_pem;
    char *server_key_pem;
    char *signing_pem;
    char root_pin[MMR_SHA256_HEX_SIZE];
};

static char *pki_path(const char *dir, const char *name)
{
    char *pki = mmr_path_join(dir, "pki");
    char *p = mmr_path_join(pki, name);
    free(pki);
    return p;
}

static int write_text(const char *dir, const char *name, const char *text)
{
    char *p = pki_path(dir, name);
    int rc = mmr_file_write_atomic(p, text, strlen(text));
    free(p);
    return rc;
}

static int read_text(const char *dir, const char *name, char **out)
{
    char *p = pki_path(dir, name);
    size_t len;
    int rc = mmr_file_read_all(p, PEM_LIMIT, out, &len);
    free(p);
    return rc;
}

/* Generates a key, issues its certificate with spec, saves both. */
static int make_identity(const char *dir, const char *name, const struct mmr_cert_spec *spec,
                         const struct mmr_key *issuer_key, const char *issuer_pem,
                         struct mmr_key **key_out, char **pem_out)
{
    struct mmr_key *key = NULL;
    char *pem = NULL;
    char *key_name = mmr_asprintf("%s.key", name);
    char *crt_name = mmr_asprintf("%s.crt", name);
    int rc = mmr_key_generate(&key);
    if (rc == 0)
        rc = mmr_cert_issue(spec, key, issuer_key ? issuer_key : key, issuer_pem, &pem);
    if (rc == 0) {
        char *key_path = pki_path(dir, key_name);
        rc = mmr_key_save(key, key_path);
        free(key_path);
    }
    if (rc == 0)
        rc = write_text(dir, crt_name, pem);
    free(key_name);
    free(crt_name);
    if (rc < 0) {
        mmr_key_free(key);
        free(pem);
        return rc;
    }
    *key_out = key;
    *pem_out = pem;
    return 0;
}

int mmr_ca_init(const char *dir, const struct mmr_ca_init_opts *opts)
{
    char *pki = mmr_path_join(dir, "pki");
    char *root_crt = pki_path(dir, "root.crt");
    int rc = 0;
    if (mmr_path_exists(root_crt)) {
        rc = mmr_err_set(MMR_EEXIST, "%s already holds a PKI; refusing to replace it (every "
                                     "enrolled device trusts it)", pki);
        goto out;
    }
    rc = mmr_mkdir_p(pki, true);
    if (rc < 0)
        goto out;

    int64_t now = mmr_time_now_ms();
    /* Backdated an hour so that laptops with a slightly slow clock accept it. */
    int64_t from = now - 3600 * 1000;
    const char *org = opts->org && opts->org[0] ? opts->org : "Mamori";
    struct mmr_key *root_key = NULL, *issuing_key = NULL, *server_key = NULL, *signing_key = NULL;
    char *root_pem = NULL, *issuing_pem = NULL, *server_pem = NULL, *signing_pem = NULL;

    struct mmr_cert_spec root = {.kind = MMR_CERT_CA, .cn = "Mamori Root CA", .org = org,
                                 .not_before_ms = from, .not_after_ms = now + 20 * YEAR_MS,
                                 .max_path_len = 1};
    struct mmr_cert_spec issuing = {.kind = MMR_CERT_CA, .cn = "Mamori Issuing CA", .org = org,
                                    .not_before_ms = from, .not_after_ms = now + 10 * YEAR_MS,
                                    .max_path_len = 0};
    struct mmr_cert_spec server = {.kind = MMR_CERT_SERVER, .cn = opts->server_names[0],
                                   .org = org, .org_unit = "server", .not_before_ms = from,
                                   .not_after_ms = now + 2 * YEAR_MS,
                                   .san = opts->server_names,
                                   .san_count = opts->server_name_count};
    struct mmr_cert_spec signing = {.kind = MMR_CERT_CLIENT, .cn = "Mamori Policy Signing",
                                    .org = org, .org_unit = "policy-signing",
                                    .not_before_ms = from, .not_after_ms = now + 5 * YEAR_MS};

    rc = make_identity(dir, "root", &root, NULL, NULL, &root_key, &root_pem);
    if (rc == 0)
        rc = make_identity(dir, "issuing", &issuing, root_key, root_pem, &issuing_key,
                           &issuing_pem);
    if (rc == 0)
        rc = make_identity(dir, "server", &server, issuing_key, issuing_pem, &server_key,
                           &server_pem);
    if (rc == 0)
        rc = make_identity(dir, "signing", &signing, issuing_key, issuing_pem, &signing_key,
                           &signing_pem);
    mmr_key_free(root_key);
    mmr_key_free(issuing_key);
    mmr_key_free(server_key);
    mmr_key_free(signing_key);
    free(root_pem);
    free(issuing_pem);
    free(server_pem);
    free(signing_pem);
out:
    free(pki);
    free(root_crt);
    return rc;
}

int mmr_ca_load(const char *dir, struct mmr_ca **out)
{
    struct mmr_ca *ca = mmr_calloc(1, sizeof(*ca));
    uv_mutex_init(&ca->lock);
    char *server_pem = NULL, *issuing_key_pem = NULL, *signing_key_pem = NULL;
    int rc = read_text(dir, "root.crt", &ca->root_pem);
    if (rc == 0)
        rc = read_text(dir, "issuing.crt", &ca->issuing_pem);
    if (rc == 0)
        rc = read_text(dir, "server.crt", &server_pem);
    if (rc == 0)
        rc = read_text(dir, "server.key", &ca->server_key_pem);
    if (rc == 0)
        rc = read_text(dir, "signing.crt", &ca->signing_pem);
    if (rc == 0)
        rc = read_text(dir, "issuing.key", &issuing_key_pem);
    if (rc == 0)
        rc = read_text(dir, "signing.key", &signing_key_pem);
    if (rc == 0)
        rc = mmr_key_from_pem(issuing_key_pem, &ca->issuing_key);
    if (rc == 0)
        rc = mmr_key_from_pem(signing_key_pem, &ca->signing_key);
    struct mmr_cert_info root;
    if (rc == 0)
        rc = mmr_cert_read_info(ca->root_pem, &root);
    if (rc == 0) {
        memcpy(ca->root_pin, root.sha256_hex, sizeof(ca->root_pin));
        /* The root goes too: enrollment tokens pin it, and a client can only
         * match a pin against certificates the server presents. */
        ca->server_chain_pem = mmr_asprintf("%s%s%s", server_pem, ca->issuing_pem, ca->root_pem);
    }
    free(server_pem);
    if (issuing_key_pem)
        memset(issuing_key_pem, 0, strlen(issuing_key_pem));
    if (signing_key_pem)
        memset(signing_key_pem, 0, strlen(signing_key_pem));
    free(issuing_key_pem);
    free(signing_key_pem);
    if (rc < 0) {
        mmr_err_wrap(rc, "loading the server PKI from %s/pki (run 'mamori-server init' first?)",
                     dir);
        mmr_ca_free(ca);
        return rc;
    }
    *out = ca;
    return 0;
}

void mmr_ca_free(struct mmr_ca *ca)
{
    if (!ca)
        return;
    mmr_key_free(ca->issuing_key);
    mmr_key_free(ca->signing_key);
    free(ca->root_pem);
    free(ca->issuing_pem);
    free(ca->server_chain_pem);
    if (ca->server_key_pem)
        memset(ca->server_key_pem, 0, strlen(ca->server_key_pem));
    free(ca->server_key_pem);
    free(ca->signing_pem);
    uv_mutex_destroy(&ca->lock);
    free(ca);
}

const char *mmr_ca_root_pem(const struct mmr_ca *ca)
{
    return ca->root_pem;
}

const char *mmr_ca_issuing_pem(const struct mmr_ca *ca)
{
    return ca->issuing_pem;
}

const char *mmr_ca_server_chain_pem(const struct mmr_ca *ca)
{
    return ca->server_chain_pem;
}

const char *mmr_ca_server_key_pem(const struct mmr_ca *ca)
{
    return ca->server_key_pem;
}

const char *mmr_ca_signing_pem(const struct mmr_ca *ca)
{
    return ca->signing_pem;
}

const char *mmr_ca_root_pin(const struct mmr_ca *ca)
{
    return ca->root_pin;
}

int mmr_ca_issue_device(struct mmr_ca *ca, const struct mmr_csr *csr, const char *device_id,
                        const char *org, const char *group, int64_t lifetime_ms, char **pem,
                        struct mmr_cert_info *info)
{
    int64_t now = mmr_time_now_ms();
    /* Backdated for laptops whose clock is a little slow, by at most a tenth
     * of the lifetime so that renewal at two-thirds stays two-thirds. */
    int64_t backdate = lifetime_ms / 10 < 3600 * 1000 ? lifetime_ms / 10 : 3600 * 1000;
    struct mmr_cert_spec spec = {.kind = MMR_CERT_CLIENT, .cn = device_id, .org = org,
                                 .org_unit = group, .not_before_ms = now - backdate,
                                 .not_after_ms = now + lifetime_ms};
    uv_mutex_lock(&ca->lock);
    int rc = mmr_cert_issue(&spec, csr->key, ca->issuing_key, ca->issuing_pem, pem);
    uv_mutex_unlock(&ca->lock);
    if (rc == 0 && info && (rc = mmr_cert_read_info(*pem, info)) < 0) {
        free(*pem);
        *pem = NULL;
    }
    return rc;
}

int mmr_ca_sign(struct mmr_ca *ca, const void *data, size_t len, char **sig_b64)
{
    uint8_t sig[MMR_ECDSA_SIG_MAX];
    size_t sig_len;
    uv_mutex_lock(&ca->lock);
    int rc = mmr_ecdsa_sign(ca->signing_key, data, len, sig, &sig_len);
    uv_mutex_unlock(&ca->lock);
    if (rc == 0)
        *sig_b64 = mmr_base64_encode(sig, sig_len);
    return rc;
}
