/* Loading and saving the device's key and certificates. */
#include "agent/identity.h"

#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"

#define PEM_LIMIT (64 * 1024)

char *mmr_identity_path(const char *data_dir, const char *name)
{
    return mmr_path_join(data_dir, name);
}

static int read_pem(const char *data_dir, const char *name, char **out)
{
    char *path = mmr_identity_path(data_dir, name);
    size_t len;
    int rc = mmr_file_read_all(path, PEM_LIMIT, out, &len);
    free(path);
    return rc;
}

int mmr_identity_load(const char *data_dir, struct mmr_identity *out)
{
    memset(out, 0, sizeof(*out));
    char *path = mmr_identity_path(data_dir, "device.key");
    int rc = mmr_key_load(path, &out->key);
    free(path);
    if (rc == 0)
        rc = read_pem(data_dir, "device.crt", &out->cert_pem);
    if (rc == 0)
        rc = read_pem(data_dir, "ca.crt", &out->ca_pem);
    if (rc == 0)
        rc = read_pem(data_dir, "signing.crt", &out->signing_pem);
    if (rc == 0)
        rc = mmr_cert_read_info(out->cert_pem, &out->cert);
    if (rc < 0)
        mmr_identity_free(out);
    return rc;
}

void mmr_identity_free(struct mmr_identity *id)
{
    mmr_key_free(id->key);
    free(id->cert_pem);
    free(id->ca_pem);
    free(id->signing_pem);
    memset(id, 0, sizeof(*id));
}

int mmr_identity_save_certs(const char *data_dir, const char *cert_pem, const char *ca_pem,
                            const char *signing_pem)
{
    static const char *const names[] = {"device.crt", "ca.crt", "signing.crt"};
    const char *texts[] = {cert_pem, ca_pem, signing_pem};
    for (size_t i = 0; i < 3; i++) {
        if (!texts[i])
            continue;
        char *path = mmr_identity_path(data_dir, names[i]);
        int rc = mmr_file_write_atomic(path, texts[i], strlen(texts[i]));
        free(path);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int mmr_identity_tls_client(const struct mmr_identity *id, struct mmr_tls_client **out)
{
    struct mmr_tls_client_opts opts = {.ca_pem = id->ca_pem, .cert_chain_pem = id->cert_pem,
                                       .key = id->key};
    return mmr_tls_client_new(&opts, out);
}
