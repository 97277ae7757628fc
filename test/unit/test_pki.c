/* Tests for shared/pki.c: hashes and hex, P-256 keys, ECDSA signatures (with
 * a speed measurement), CSRs from untrusted input, issuing certificates,
 * reading them back, and chain verification with its refusal messages. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/ecp.h>
#include <mbedtls/pem.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_csr.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/pki.h"
#include "shared/pki_mbedtls.h"
#include "shared/platform.h"
#include "testutil.h"

#define DAY_MS (24LL * 3600 * 1000)

static char dir[512];

static void setup(void)
{
    mmr_test_mkdtemp("mmr-pki", dir, sizeof(dir));
}

static void teardown(void)
{
    mmr_test_rmtree(dir);
}

static struct mmr_key *new_key(void)
{
    struct mmr_key *k = NULL;
    cr_assert_eq(mmr_key_generate(&k), 0, "%s", mmr_err_msg());
    return k;
}

/* A PEM key on another curve, made with mbedTLS directly. */
static char *p384_key_pem(bool public_only)
{
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    cr_assert_eq(mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)), 0);
    cr_assert_eq(
        mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP384R1, mbedtls_pk_ec(pk), mmr_pki_random, NULL), 0);
    unsigned char buf[1024];
    int ret = public_only ? mbedtls_pk_write_pubkey_pem(&pk, buf, sizeof(buf))
                          : mbedtls_pk_write_key_pem(&pk, buf, sizeof(buf));
    cr_assert_eq(ret, 0);
    mbedtls_pk_free(&pk);
    return mmr_strdup((char *)buf);
}

/* ---- hashes and hex --------------------------------------------------------- */

Test(hash, sha256_known_vectors)
{
    char hex[MMR_SHA256_HEX_SIZE];
    mmr_sha256_hex("abc", 3, hex);
    cr_expect_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    mmr_sha256_hex("", 0, hex);
    cr_expect_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

Test(hash, hex_round_trip_and_refusals)
{
    const uint8_t bytes[] = {0x00, 0x7f, 0x80, 0xff};
    char hex[9];
    mmr_hex_encode(bytes, sizeof(bytes), hex);
    cr_expect_str_eq(hex, "007f80ff");
    uint8_t back[4];
    cr_expect_eq(mmr_hex_decode("007F80fF", back, 4), 0);
    cr_expect_eq(memcmp(back, bytes, 4), 0);
    cr_expect_eq(mmr_hex_decode("007f80", back, 4), MMR_EINVAL, "too short");
    cr_expect_eq(mmr_hex_decode("007f80ff00", back, 4), MMR_EINVAL, "too long");
    cr_expect_eq(mmr_hex_decode("007g80ff", back, 4), MMR_EINVAL, "not hex");
    cr_expect_eq(mmr_hex_decode("", back, 0), 0);
}

/* ---- keys ------------------------------------------------------------------- */

TestSuite(key, .init = setup, .fini = teardown);

Test(key, save_load_round_trip_owner_only)
{
    struct mmr_key *k = new_key();
    cr_expect(mmr_key_has_private(k));
    char *path = mmr_path_join(dir, "device.key");
    cr_assert_eq(mmr_key_save(k, path), 0, "%s", mmr_err_msg());
    bool priv = false;
    cr_assert_eq(mmr_file_is_private(path, &priv), 0);
    cr_expect(priv, "key file must be owner-only");

    struct mmr_key *back = NULL;
    cr_assert_eq(mmr_key_load(path, &back), 0, "%s", mmr_err_msg());
    cr_expect(mmr_key_has_private(back));
    cr_expect(mmr_key_same_public(k, back));

    uint8_t sig[MMR_ECDSA_SIG_MAX];
    size_t sig_len;
    cr_assert_eq(mmr_ecdsa_sign(back, "policy", 6, sig, &sig_len), 0);
    cr_expect_eq(mmr_ecdsa_verify(k, "policy", 6, sig, sig_len), 0, "%s", mmr_err_msg());

    struct mmr_key *other = new_key();
    cr_expect_not(mmr_key_same_public(k, other));
    mmr_key_free(other);
    mmr_key_free(back);
    mmr_key_free(k);
    free(path);
}

Test(key, public_key_pem_round_trip)
{
    struct mmr_key *k = new_key();
    char *pem = NULL;
    cr_assert_eq(mmr_key_public_pem(k, &pem), 0);
    cr_expect_not_null(strstr(pem, "-----BEGIN PUBLIC KEY-----"));
    struct mmr_key *pub = NULL;
    cr_assert_eq(mmr_key_from_public_pem(pem, &pub), 0, "%s", mmr_err_msg());
    cr_expect_not(mmr_key_has_private(pub));
    cr_expect(mmr_key_same_public(k, pub));

    uint8_t sig[MMR_ECDSA_SIG_MAX];
    size_t sig_len;
    cr_expect_eq(mmr_ecdsa_sign(pub, "x", 1, sig, &sig_len), MMR_EINVAL, "no private part");
    char *path = mmr_path_join(dir, "pub.key");
    cr_expect_eq(mmr_key_save(pub, path), MMR_EINVAL);
    cr_expect_not(mmr_path_exists(path));
    struct mmr_key *priv = NULL;
    cr_expect_eq(mmr_key_from_pem(pem, &priv), MMR_EINVAL, "a public key is not a private key");
    cr_expect_null(priv);
    mmr_key_free(pub);
    free(path);
    free(pem);
    mmr_key_free(k);
}

Test(key, refuses_malformed_input)
{
    struct mmr_key *k = NULL;
    cr_expect_eq(mmr_key_from_pem("", &k), MMR_EINVAL);
    cr_expect_eq(mmr_key_from_pem("hello", &k), MMR_EINVAL);
    cr_expect_null(k);

    /* A real key cut in half, and one with damaged base64. */
    struct mmr_key *good = new_key();
    char *path = mmr_path_join(dir, "k.pem");
    cr_assert_eq(mmr_key_save(good, path), 0);
    char *text;
    size_t len;
    cr_assert_eq(mmr_file_read_all(path, 4096, &text, &len), 0);
    char *half = mmr_strndup(text, len / 2);
    cr_expect_eq(mmr_key_from_pem(half, &k), MMR_EINVAL);
    cr_expect_neq(mmr_err_msg()[0], '\0');
    char *bad = mmr_strdup(text);
    bad[len / 2] = bad[len / 2] == '!' ? '?' : '!';
    cr_expect_eq(mmr_key_from_pem(bad, &k), MMR_EINVAL);
    cr_expect_null(k);

    char *big = mmr_malloc(MMR_PEM_MAX + 2);
    memset(big, 'A', MMR_PEM_MAX + 1);
    big[MMR_PEM_MAX + 1] = '\0';
    cr_expect_eq(mmr_key_from_pem(big, &k), MMR_ETOOBIG);

    char *missing = mmr_path_join(dir, "missing.key");
    cr_expect_lt(mmr_key_load(missing, &k), 0);
    cr_expect_not_null(strstr(mmr_err_msg(), "missing.key"), "%s", mmr_err_msg());

    free(missing);
    free(big);
    free(bad);
    free(half);
    free(text);
    free(path);
    mmr_key_free(good);
}

Test(key, refuses_other_curves)
{
    struct mmr_key *k = NULL;
    char *priv = p384_key_pem(false);
    cr_expect_eq(mmr_key_from_pem(priv, &k), MMR_EINVAL);
    cr_expect_not_null(strstr(mmr_err_msg(), "P-256"), "%s", mmr_err_msg());
    char *pub = p384_key_pem(true);
    cr_expect_eq(mmr_key_from_public_pem(pub, &k), MMR_EINVAL);
    cr_expect_null(k);
    free(priv);
    free(pub);
}

/* ---- signatures --------------------------------------------------------------- */

Test(ecdsa, sign_verify_and_tamper_detection)
{
    struct mmr_key *k = new_key();
    const char doc[] = "{\"version\":7,\"scan\":{}}";
    uint8_t sig[MMR_ECDSA_SIG_MAX];
    size_t sig_len = 0;
    cr_assert_eq(mmr_ecdsa_sign(k, doc, strlen(doc), sig, &sig_len), 0, "%s", mmr_err_msg());
    cr_expect_gt(sig_len, 60);
    cr_expect_leq(sig_len, MMR_ECDSA_SIG_MAX);
    cr_expect_eq(sig[0], 0x30, "DER SEQUENCE");
    cr_expect_eq(mmr_ecdsa_verify(k, doc, strlen(doc), sig, sig_len), 0, "%s", mmr_err_msg());

    char *pub = NULL;
    cr_assert_eq(mmr_key_public_pem(k, &pub), 0);
    cr_expect_eq(mmr_ecdsa_verify_pem(pub, doc, strlen(doc), sig, sig_len), 0);

    /* Changed data. */
    char tampered[sizeof(doc)];
    memcpy(tampered, doc, sizeof(doc));
    tampered[11] = '8';
    cr_expect_eq(mmr_ecdsa_verify(k, tampered, strlen(tampered), sig, sig_len), MMR_EPERM);
    cr_expect_not_null(strstr(mmr_err_msg(), "does not match"), "%s", mmr_err_msg());
    cr_expect_eq(mmr_ecdsa_verify_pem(pub, tampered, strlen(tampered), sig, sig_len), MMR_EPERM);

    /* Changed signature: a value byte, then the encoding. */
    uint8_t bad[MMR_ECDSA_SIG_MAX];
    memcpy(bad, sig, sig_len);
    bad[sig_len - 1] ^= 0x01;
    cr_expect_eq(mmr_ecdsa_verify(k, doc, strlen(doc), bad, sig_len), MMR_EPERM);
    memcpy(bad, sig, sig_len);
    bad[1] ^= 0x40;
    cr_expect_eq(mmr_ecdsa_verify(k, doc, strlen(doc), bad, sig_len), MMR_EINVAL);
    cr_expect_eq(mmr_ecdsa_verify(k, doc, strlen(doc), sig, sig_len - 3), MMR_EINVAL);
    cr_expect_eq(mmr_ecdsa_verify(k, doc, strlen(doc), sig, 0), MMR_EINVAL);

    /* Another key. */
    struct mmr_key *other = new_key();
    cr_expect_eq(mmr_ecdsa_verify(other, doc, strlen(doc), sig, sig_len), MMR_EPERM);
    cr_expect_eq(mmr_ecdsa_verify_pem("not a key", doc, strlen(doc), sig, sig_len), MMR_EINVAL);

    mmr_key_free(other);
    free(pub);
    mmr_key_free(k);
}

Test(ecdsa, speed)
{
    struct mmr_key *k = new_key();
    uint8_t sig[MMR_ECDSA_SIG_MAX];
    size_t sig_len = 0;
    const char msg[] = "check-in body of a typical size, signed and verified";
    int signs = 0, verifies = 0;
    uint64_t start = mmr_time_mono_ms(), elapsed;
    do {
        cr_assert_eq(mmr_ecdsa_sign(k, msg, sizeof(msg), sig, &sig_len), 0);
        signs++;
        elapsed = mmr_time_mono_ms() - start;
    } while (elapsed < 400);
    double sign_rate = signs * 1000.0 / (double)elapsed;
    start = mmr_time_mono_ms();
    do {
        cr_assert_eq(mmr_ecdsa_verify(k, msg, sizeof(msg), sig, sig_len), 0);
        verifies++;
        elapsed = mmr_time_mono_ms() - start;
    } while (elapsed < 400);
    double verify_rate = verifies * 1000.0 / (double)elapsed;
    cr_log_info("ecdsa_p256_sign: %.0f ops/s", sign_rate);
    cr_log_info("ecdsa_p256_verify: %.0f ops/s", verify_rate);
    cr_expect_gt(signs, 0);
    cr_expect_gt(verifies, 0);
    mmr_key_free(k);
}

/* ---- certificate signing requests ------------------------------------------ */

/* PEM -> DER and back, to damage a request the way an attacker would. */
static size_t pem_to_der(const char *pem, const char *begin, const char *end, uint8_t *der,
                         size_t cap)
{
    mbedtls_pem_context ctx;
    mbedtls_pem_init(&ctx);
    size_t used = 0;
    cr_assert_eq(
        mbedtls_pem_read_buffer(&ctx, begin, end, (const unsigned char *)pem, NULL, 0, &used), 0);
    cr_assert_leq(ctx.buflen, cap);
    memcpy(der, ctx.buf, ctx.buflen);
    size_t n = ctx.buflen;
    mbedtls_pem_free(&ctx);
    return n;
}

static char *der_to_pem(const uint8_t *der, size_t len, const char *begin, const char *end)
{
    unsigned char buf[8192];
    size_t olen = 0;
    char b[64], e[64];
    snprintf(b, sizeof(b), "%s\n", begin);
    snprintf(e, sizeof(e), "%s\n", end);
    cr_assert_eq(mbedtls_pem_write_buffer(b, e, der, len, buf, sizeof(buf), &olen), 0);
    return mmr_strdup((char *)buf);
}

#define CSR_BEGIN "-----BEGIN CERTIFICATE REQUEST-----"
#define CSR_END   "-----END CERTIFICATE REQUEST-----"

/* A CSR made by mbedTLS directly, for inputs our own API refuses to make. */
static char *raw_csr(mbedtls_pk_context *pk, const char *subject)
{
    mbedtls_x509write_csr req;
    mbedtls_x509write_csr_init(&req);
    mbedtls_x509write_csr_set_md_alg(&req, MBEDTLS_MD_SHA256);
    mbedtls_x509write_csr_set_key(&req, pk);
    cr_assert_eq(mbedtls_x509write_csr_set_subject_name(&req, subject), 0);
    unsigned char buf[4096];
    cr_assert_eq(mbedtls_x509write_csr_pem(&req, buf, sizeof(buf), mmr_pki_random, NULL), 0);
    mbedtls_x509write_csr_free(&req);
    return mmr_strdup((char *)buf);
}

Test(csr, create_and_parse)
{
    struct mmr_key *k = new_key();
    const char *hwid = "4c4c4544-0042-3510-8052-b4c04f4e3232";
    char *pem = NULL;
    cr_assert_eq(mmr_csr_create(k, hwid, &pem), 0, "%s", mmr_err_msg());
    struct mmr_csr csr;
    cr_assert_eq(mmr_csr_parse(pem, &csr), 0, "%s", mmr_err_msg());
    cr_expect_str_eq(csr.cn, hwid);
    cr_expect_not(mmr_key_has_private(csr.key));
    cr_expect(mmr_key_same_public(k, csr.key));
    mmr_csr_free(&csr);
    free(pem);

    /* Commas and UTF-8 survive the name syntax. */
    cr_assert_eq(mmr_csr_create(k, "端末,1=x", &pem), 0, "%s", mmr_err_msg());
    cr_assert_eq(mmr_csr_parse(pem, &csr), 0, "%s", mmr_err_msg());
    cr_expect_str_eq(csr.cn, "端末,1=x");
    mmr_csr_free(&csr);
    free(pem);

    char longer[MMR_CERT_NAME_MAX + 2];
    memset(longer, 'a', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    cr_expect_eq(mmr_csr_create(k, longer, &pem), MMR_EINVAL);
    cr_expect_eq(mmr_csr_create(k, "", &pem), MMR_EINVAL);
    cr_expect_eq(mmr_csr_create(k, "a\\b", &pem), MMR_EINVAL);
    cr_expect_eq(mmr_csr_create(k, "a\nb", &pem), MMR_EINVAL);
    cr_expect_eq(mmr_csr_create(k, "\xff\xfe", &pem), MMR_EINVAL, "not UTF-8");
    cr_expect_null(pem);
    mmr_key_free(k);
}

Test(csr, bad_signature_is_refused)
{
    struct mmr_key *k = new_key();
    char *pem = NULL;
    cr_assert_eq(mmr_csr_create(k, "device-aaaa", &pem), 0);
    uint8_t der[2048];
    size_t len = pem_to_der(pem, CSR_BEGIN, CSR_END, der, sizeof(der));
    /* Change the requested name: the signature no longer covers the content. */
    uint8_t *at = NULL;
    for (size_t i = 0; i + 11 <= len && !at; i++)
        if (memcmp(der + i, "device-aaaa", 11) == 0)
            at = der + i;
    cr_assert_not_null(at);
    at[7] = 'b';
    char *forged = der_to_pem(der, len, CSR_BEGIN, CSR_END);
    struct mmr_csr csr;
    cr_expect_eq(mmr_csr_parse(forged, &csr), MMR_EPERM);
    cr_expect_not_null(strstr(mmr_err_msg(), "signature"), "%s", mmr_err_msg());
    cr_expect_null(csr.key);
    free(forged);
    free(pem);
    mmr_key_free(k);
}

Test(csr, refuses_malformed_and_foreign_requests)
{
    struct mmr_csr csr;
    cr_expect_eq(mmr_csr_parse("", &csr), MMR_EINVAL);
    cr_expect_eq(mmr_csr_parse("GET / HTTP/1.1\r\n\r\n", &csr), MMR_EINVAL);
    cr_expect_eq(mmr_csr_parse(CSR_BEGIN "\nAAAA\n" CSR_END "\n", &csr), MMR_EINVAL);

    struct mmr_key *k = new_key();
    char *pem = NULL;
    cr_assert_eq(mmr_csr_create(k, "device-1", &pem), 0);
    char *half = mmr_strndup(pem, strlen(pem) / 2);
    cr_expect_eq(mmr_csr_parse(half, &csr), MMR_EINVAL, "truncated");

    char *big = mmr_malloc(MMR_CSR_PEM_MAX + 64);
    snprintf(big, MMR_CSR_PEM_MAX + 64, "%s", pem);
    size_t used = strlen(big);
    memset(big + used, '\n', MMR_CSR_PEM_MAX + 8 - used);
    big[MMR_CSR_PEM_MAX + 8] = '\0';
    cr_expect_eq(mmr_csr_parse(big, &csr), MMR_ETOOBIG);

    /* A P-384 key, and a name with a control character. */
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    cr_assert_eq(mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)), 0);
    cr_assert_eq(
        mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP384R1, mbedtls_pk_ec(pk), mmr_pki_random, NULL), 0);
    char *p384 = raw_csr(&pk, "CN=device-2");
    cr_expect_eq(mmr_csr_parse(p384, &csr), MMR_EINVAL);
    cr_expect_not_null(strstr(mmr_err_msg(), "P-256"), "%s", mmr_err_msg());
    mbedtls_pk_free(&pk);

    mbedtls_pk_init(&pk);
    cr_assert_eq(mmr_pki_key_copy(k, &pk), 0);
    char *ctl = raw_csr(&pk, "CN=dev\x01ice");
    cr_expect_eq(mmr_csr_parse(ctl, &csr), MMR_EINVAL);
    char *no_cn = raw_csr(&pk, "O=Mamori");
    cr_expect_eq(mmr_csr_parse(no_cn, &csr), MMR_EINVAL);
    cr_expect_not_null(strstr(mmr_err_msg(), "CN"), "%s", mmr_err_msg());
    mbedtls_pk_free(&pk);

    free(no_cn);
    free(ctl);
    free(p384);
    free(big);
    free(half);
    free(pem);
    mmr_key_free(k);
}

/* ---- certificates ------------------------------------------------------------ */

struct pki {
    struct mmr_key *root_key, *ca_key, *server_key, *device_key;
    char *root, *ca, *server, *device;
};

static char *issue(const struct mmr_cert_spec *spec, struct mmr_key *subject,
                   struct mmr_key *issuer_key, const char *issuer)
{
    char *pem = NULL;
    int rc = mmr_cert_issue(spec, subject, issuer_key, issuer, &pem);
    cr_assert_eq(rc, 0, "issuing %s: %s", spec->cn, mmr_err_msg());
    return pem;
}

static void make_pki(struct pki *p)
{
    int64_t now = mmr_time_now_ms();
    p->root_key = new_key();
    p->ca_key = new_key();
    p->server_key = new_key();
    p->device_key = new_key();
    struct mmr_cert_spec root = {.kind = MMR_CERT_CA,
                                 .cn = "Mamori Root CA",
                                 .org = "Mamori",
                                 .not_before_ms = now - DAY_MS,
                                 .not_after_ms = now + 3650 * DAY_MS,
                                 .max_path_len = 1};
    p->root = issue(&root, p->root_key, p->root_key, NULL);
    struct mmr_cert_spec ca = {.kind = MMR_CERT_CA,
                               .cn = "Mamori Issuing CA",
                               .org = "Mamori",
                               .org_unit = "Devices",
                               .not_before_ms = now - DAY_MS,
                               .not_after_ms = now + 1825 * DAY_MS,
                               .max_path_len = 0};
    p->ca = issue(&ca, p->ca_key, p->root_key, p->root);
    static const char *const sans[] = {"localhost", "127.0.0.1", "::1"};
    struct mmr_cert_spec server = {.kind = MMR_CERT_SERVER,
                                   .cn = "mamori-server",
                                   .not_before_ms = now - DAY_MS,
                                   .not_after_ms = now + 365 * DAY_MS,
                                   .san = sans,
                                   .san_count = 3};
    p->server = issue(&server, p->server_key, p->ca_key, p->ca);
    struct mmr_cert_spec device = {.kind = MMR_CERT_CLIENT,
                                   .cn = "device-0001",
                                   .org = "Example Corp",
                                   .not_before_ms = now - DAY_MS,
                                   .not_after_ms = now + 90 * DAY_MS};
    p->device = issue(&device, p->device_key, p->ca_key, p->ca);
}

static void free_pki(struct pki *p)
{
    mmr_key_free(p->root_key);
    mmr_key_free(p->ca_key);
    mmr_key_free(p->server_key);
    mmr_key_free(p->device_key);
    free(p->root);
    free(p->ca);
    free(p->server);
    free(p->device);
}

static char *concat(const char *a, const char *b)
{
    return mmr_asprintf("%s%s", a, b);
}

#define CERT_BEGIN "-----BEGIN CERTIFICATE-----"
#define CERT_END   "-----END CERTIFICATE-----"

Test(cert, issue_and_read_back)
{
    struct pki p;
    make_pki(&p);
    struct mmr_cert_info info;
    cr_assert_eq(mmr_cert_read_info(p.root, &info), 0, "%s", mmr_err_msg());
    cr_expect_str_eq(info.cn, "Mamori Root CA");
    cr_expect_str_eq(info.org, "Mamori");
    cr_expect_str_eq(info.issuer_cn, "Mamori Root CA");
    cr_expect(info.is_ca);
    cr_expect_eq(info.max_path_len, 1);
    cr_expect_eq(strlen(info.serial_hex), 40, "20 random bytes: %s", info.serial_hex);

    cr_assert_eq(mmr_cert_read_info(p.ca, &info), 0);
    cr_expect_str_eq(info.org_unit, "Devices");
    cr_expect_str_eq(info.issuer_cn, "Mamori Root CA");
    cr_expect_eq(info.max_path_len, 0);

    cr_assert_eq(mmr_cert_read_info(p.device, &info), 0);
    cr_expect_str_eq(info.cn, "device-0001");
    cr_expect_str_eq(info.org, "Example Corp");
    cr_expect_str_eq(info.org_unit, "");
    cr_expect_str_eq(info.issuer_cn, "Mamori Issuing CA");
    cr_expect_not(info.is_ca);
    cr_expect_eq(info.max_path_len, -1);
    int64_t now = mmr_time_now_ms();
    cr_expect_lt(info.not_before_ms, now - DAY_MS + 1);
    cr_expect_gt(info.not_before_ms, now - DAY_MS - 2000);
    cr_expect_eq(info.not_before_ms % 1000, 0, "kept to the second");

    /* The fingerprint is SHA-256 of the DER inside the PEM. */
    uint8_t der[4096];
    size_t len = pem_to_der(p.device, CERT_BEGIN, CERT_END, der, sizeof(der));
    char hex[MMR_SHA256_HEX_SIZE];
    mmr_sha256_hex(der, len, hex);
    cr_expect_str_eq(info.sha256_hex, hex);
    struct mmr_cert_info from_der;
    cr_assert_eq(mmr_cert_read_info_der(der, len, &from_der), 0);
    cr_expect_eq(memcmp(&from_der, &info, sizeof(info)), 0);
    char *again = NULL;
    cr_assert_eq(mmr_cert_der_to_pem(der, len, &again), 0);
    cr_expect_str_eq(again, p.device);
    free(again);
    cr_expect_eq(mmr_cert_read_info_der(der, len - 10, &from_der), MMR_EINVAL);
    free_pki(&p);
}

Test(cert, given_serial_dates_and_names_round_trip)
{
    struct mmr_key *k = new_key();
    const uint8_t serial[] = {0x00, 0x9a, 0xbc, 0xde};
    /* 2049-12-31T23:59:59Z (UTCTime) to 2050-01-01T00:00:00Z (GeneralizedTime),
     * and a leap day. */
    struct mmr_cert_spec spec = {.kind = MMR_CERT_CA,
                                 .cn = "CA, with a comma",
                                 .org = "株式会社マモリ",
                                 .org_unit = "a=b+c",
                                 .serial = serial,
                                 .serial_len = sizeof(serial),
                                 .not_before_ms = 951782400000LL, /* 2000-02-29 */
                                 .not_after_ms = 2524607999000LL,
                                 .max_path_len = -1};
    char *pem = issue(&spec, k, k, NULL);
    struct mmr_cert_info info;
    cr_assert_eq(mmr_cert_read_info(pem, &info), 0);
    cr_expect_str_eq(info.serial_hex, "9abcde");
    cr_expect_str_eq(info.cn, "CA, with a comma");
    cr_expect_str_eq(info.org, "株式会社マモリ");
    cr_expect_str_eq(info.org_unit, "a=b+c");
    cr_expect_eq(info.not_before_ms, 951782400000LL);
    cr_expect_eq(info.not_after_ms, 2524607999000LL);
    cr_expect_eq(info.max_path_len, -1);
    free(pem);
    spec.not_after_ms = 2524608000000LL;
    pem = issue(&spec, k, k, NULL);
    cr_assert_eq(mmr_cert_read_info(pem, &info), 0);
    cr_expect_eq(info.not_after_ms, 2524608000000LL);

    /* A CA whose name holds a comma can still issue: its name is rebuilt exactly. */
    struct mmr_key *leaf_key = new_key();
    struct mmr_cert_spec leaf = {.kind = MMR_CERT_CLIENT,
                                 .cn = "leaf",
                                 .not_before_ms = mmr_time_now_ms() - 1000,
                                 .not_after_ms = mmr_time_now_ms() + DAY_MS};
    char *leaf_pem = issue(&leaf, leaf_key, k, pem);
    cr_expect_eq(mmr_cert_verify(leaf_pem, pem, NULL), 0, "%s", mmr_err_msg());
    free(leaf_pem);
    mmr_key_free(leaf_key);
    free(pem);
    mmr_key_free(k);
}

Test(cert, refuses_bad_specs)
{
    struct pki p;
    make_pki(&p);
    int64_t now = mmr_time_now_ms();
    static const char *const sans[] = {"localhost"};
    static const char *const bad_sans[] = {"exa mple.org"};
    static const uint8_t long_serial[21] = {1};
    static const uint8_t top_bit[20] = {0x80};
    static const uint8_t zero[2] = {0, 0};
    struct mmr_cert_spec good = {.kind = MMR_CERT_SERVER,
                                 .cn = "s",
                                 .not_before_ms = now,
                                 .not_after_ms = now + DAY_MS,
                                 .san = sans,
                                 .san_count = 1};
    struct mmr_cert_spec s;
    char *pem = NULL;

#define REFUSED(mutation, code)                                                                    \
    do {                                                                                           \
        s = good;                                                                                  \
        mutation;                                                                                  \
        cr_expect_eq(mmr_cert_issue(&s, p.server_key, p.ca_key, p.ca, &pem), code, "%s: %s",       \
                     #mutation, mmr_err_msg());                                                    \
        cr_expect_null(pem);                                                                       \
    } while (0)

    REFUSED(s.kind = MMR_CERT_ANY, MMR_EINVAL);
    REFUSED(s.cn = NULL, MMR_EINVAL);
    REFUSED(s.cn = "", MMR_EINVAL);
    REFUSED(s.org = "tab\there", MMR_EINVAL);
    REFUSED(s.not_after_ms = s.not_before_ms, MMR_EINVAL);
    REFUSED(s.not_after_ms = 253402300800000LL, MMR_EINVAL); /* year 10000 */
    REFUSED((s.serial = long_serial, s.serial_len = sizeof(long_serial)), MMR_EINVAL);
    REFUSED((s.serial = top_bit, s.serial_len = sizeof(top_bit)), MMR_EINVAL);
    REFUSED((s.serial = zero, s.serial_len = sizeof(zero)), MMR_EINVAL);
    REFUSED(s.san_count = 0, MMR_EINVAL);
    REFUSED(s.san = bad_sans, MMR_EINVAL);
    REFUSED(s.san_count = MMR_CERT_MAX_SANS + 1, MMR_ETOOBIG);
    REFUSED(s.kind = MMR_CERT_CLIENT, MMR_EINVAL); /* a client with SANs */
#undef REFUSED

    /* Issuers: not a CA, wrong key, public-only key; self-signed rules. */
    cr_expect_eq(mmr_cert_issue(&good, p.server_key, p.server_key, p.server, &pem), MMR_EINVAL);
    cr_expect_not_null(strstr(mmr_err_msg(), "not a CA"), "%s", mmr_err_msg());
    cr_expect_eq(mmr_cert_issue(&good, p.server_key, p.root_key, p.ca, &pem), MMR_EINVAL);
    cr_expect_not_null(strstr(mmr_err_msg(), "does not belong"), "%s", mmr_err_msg());
    cr_expect_eq(mmr_cert_issue(&good, p.server_key, p.server_key, NULL, &pem), MMR_EINVAL);
    struct mmr_cert_spec root = {
        .kind = MMR_CERT_CA, .cn = "r", .not_before_ms = now, .not_after_ms = now + DAY_MS};
    cr_expect_eq(mmr_cert_issue(&root, p.server_key, p.root_key, NULL, &pem), MMR_EINVAL);
    char *pub_pem;
    struct mmr_key *pub;
    cr_assert_eq(mmr_key_public_pem(p.ca_key, &pub_pem), 0);
    cr_assert_eq(mmr_key_from_public_pem(pub_pem, &pub), 0);
    cr_expect_eq(mmr_cert_issue(&good, p.server_key, pub, p.ca, &pem), MMR_EINVAL);
    cr_expect_eq(mmr_cert_issue(&good, p.server_key, p.ca_key, "garbage", &pem), MMR_EINVAL);
    cr_expect_null(pem);
    mmr_key_free(pub);
    free(pub_pem);
    free_pki(&p);
}

Test(cert, verify_chains_and_names)
{
    struct pki p;
    make_pki(&p);
    char *device_chain = concat(p.device, p.ca);
    char *server_chain = concat(p.server, p.ca);

    cr_expect_eq(mmr_cert_verify(device_chain, p.root, NULL), 0, "%s", mmr_err_msg());
    cr_expect_eq(mmr_cert_verify(p.device, p.ca, NULL), 0, "%s", mmr_err_msg());
    cr_expect_eq(mmr_cert_verify(p.ca, p.root, NULL), 0, "%s", mmr_err_msg());

    struct mmr_cert_verify_opts o = {.kind = MMR_CERT_SERVER, .expect_host = "127.0.0.1"};
    cr_expect_eq(mmr_cert_verify(server_chain, p.root, &o), 0, "%s", mmr_err_msg());
    o.expect_host = "LocalHost";
    cr_expect_eq(mmr_cert_verify(server_chain, p.root, &o), 0, "%s", mmr_err_msg());
    o.expect_host = "::1";
    cr_expect_eq(mmr_cert_verify(server_chain, p.root, &o), 0, "%s", mmr_err_msg());
    o.expect_host = "10.1.2.3";
    cr_expect_eq(mmr_cert_verify(server_chain, p.root, &o), MMR_EPERM);
    cr_expect_str_eq(mmr_err_msg(), "certificate 'mamori-server' is not valid for '10.1.2.3' "
                                    "(it names: localhost, 127.0.0.1, ::1)");
    o.expect_host = "evil.example";
    cr_expect_eq(mmr_cert_verify(server_chain, p.root, &o), MMR_EPERM);

    /* Usage: a device certificate is not a server's, and the reverse. */
    o.expect_host = NULL;
    cr_expect_eq(mmr_cert_verify(device_chain, p.root, &o), MMR_EPERM);
    cr_expect_not_null(strstr(mmr_err_msg(), "not a certificate for a TLS server"), "%s",
                       mmr_err_msg());
    o.kind = MMR_CERT_CLIENT;
    cr_expect_eq(mmr_cert_verify(device_chain, p.root, &o), 0, "%s", mmr_err_msg());
    cr_expect_eq(mmr_cert_verify(server_chain, p.root, &o), MMR_EPERM);
    o.kind = MMR_CERT_CA;
    cr_expect_eq(mmr_cert_verify(p.ca, p.root, &o), 0, "%s", mmr_err_msg());
    cr_expect_eq(mmr_cert_verify(device_chain, p.root, &o), MMR_EPERM);

    o.kind = MMR_CERT_CLIENT;
    o.expect_cn = "device-0001";
    cr_expect_eq(mmr_cert_verify(device_chain, p.root, &o), 0);
    o.expect_cn = "device-0002";
    cr_expect_eq(mmr_cert_verify(device_chain, p.root, &o), MMR_EPERM);
    cr_expect_str_eq(mmr_err_msg(), "certificate is for 'device-0001', not 'device-0002'");

    /* Without the intermediate, the root alone cannot vouch for the leaf. */
    cr_expect_eq(mmr_cert_verify(p.device, p.root, NULL), MMR_EPERM);
    cr_expect_str_eq(mmr_err_msg(), "certificate 'device-0001' is not signed by a trusted CA");

    free(device_chain);
    free(server_chain);
    free_pki(&p);
}

Test(cert, verify_refusals_name_the_reason)
{
    struct pki p, other;
    make_pki(&p);
    make_pki(&other);
    int64_t now = mmr_time_now_ms();

    /* Another PKI's CA. */
    cr_expect_eq(mmr_cert_verify(p.device, other.ca, NULL), MMR_EPERM);
    cr_expect_str_eq(mmr_err_msg(), "certificate 'device-0001' is not signed by a trusted CA");

    /* Expired, and not yet valid. */
    struct mmr_key *k = new_key();
    struct mmr_cert_spec old = {.kind = MMR_CERT_CLIENT,
                                .cn = "old-device",
                                .not_before_ms = 1600000000000LL,
                                .not_after_ms = 1700000000000LL};
    char *expired = issue(&old, k, p.ca_key, p.ca);
    cr_expect_eq(mmr_cert_verify(expired, p.ca, NULL), MMR_EPERM);
    cr_expect_str_eq(mmr_err_msg(), "certificate 'old-device' expired at 2023-11-14T22:13:20.000Z");
    struct mmr_cert_spec future = {.kind = MMR_CERT_CLIENT,
                                   .cn = "future-device",
                                   .not_before_ms = now + DAY_MS,
                                   .not_after_ms = now + 2 * DAY_MS};
    char *early = issue(&future, k, p.ca_key, p.ca);
    cr_expect_eq(mmr_cert_verify(early, p.ca, NULL), MMR_EPERM);
    cr_expect_not_null(strstr(mmr_err_msg(), "'future-device' is not valid before"), "%s",
                       mmr_err_msg());

    /* An expired intermediate is named as such. */
    struct mmr_key *ca_key = new_key();
    struct mmr_cert_spec old_ca = {.kind = MMR_CERT_CA,
                                   .cn = "Old Issuing CA",
                                   .not_before_ms = 1600000000000LL,
                                   .not_after_ms = 1700000000000LL};
    char *old_ca_pem = issue(&old_ca, ca_key, p.root_key, p.root);
    struct mmr_cert_spec leaf = {.kind = MMR_CERT_CLIENT,
                                 .cn = "dev",
                                 .not_before_ms = now - DAY_MS,
                                 .not_after_ms = now + DAY_MS};
    char *leaf_pem = issue(&leaf, k, ca_key, old_ca_pem);
    char *chain = concat(leaf_pem, old_ca_pem);
    cr_expect_eq(mmr_cert_verify(chain, p.root, NULL), MMR_EPERM);
    cr_expect_str_eq(mmr_err_msg(), "CA certificate 'Old Issuing CA' in the chain of certificate "
                                    "'dev' expired at 2023-11-14T22:13:20.000Z");

    /* The issuing CA has path length 0: a sub-CA below it is not trusted. */
    struct mmr_cert_spec sub = {.kind = MMR_CERT_CA,
                                .cn = "Sub CA",
                                .not_before_ms = now - DAY_MS,
                                .not_after_ms = now + DAY_MS,
                                .max_path_len = -1};
    char *sub_pem = issue(&sub, ca_key, p.ca_key, p.ca);
    char *below = issue(&leaf, k, ca_key, sub_pem);
    char *long_chain = mmr_asprintf("%s%s%s", below, sub_pem, p.ca);
    cr_expect_eq(mmr_cert_verify(long_chain, p.root, NULL), MMR_EPERM, "%s", mmr_err_msg());

    free(long_chain);
    free(below);
    free(sub_pem);
    free(chain);
    free(leaf_pem);
    free(old_ca_pem);
    mmr_key_free(ca_key);
    free(early);
    free(expired);
    mmr_key_free(k);
    free_pki(&other);
    free_pki(&p);
}

Test(cert, truncated_and_corrupt_pem)
{
    struct pki p;
    make_pki(&p);
    struct mmr_cert_info info;
    char *half = mmr_strndup(p.device, strlen(p.device) / 2);
    cr_expect_eq(mmr_cert_read_info(half, &info), MMR_EINVAL);
    cr_expect_eq(mmr_cert_read_info("", &info), MMR_EINVAL);
    cr_expect_eq(mmr_cert_read_info("-----BEGIN CERTIFICATE-----\n!!!!\n"
                                    "-----END CERTIFICATE-----\n",
                                    &info),
                 MMR_EINVAL);

    /* A bundle whose second certificate lost its END line: not silently shorter. */
    char *chain = concat(p.device, p.ca);
    char *cut = mmr_strndup(chain, strlen(chain) - 30);
    cr_expect_eq(mmr_cert_verify(cut, p.root, NULL), MMR_EINVAL);
    cr_expect_not_null(strstr(mmr_err_msg(), "truncated"), "%s", mmr_err_msg());
    cr_expect_eq(mmr_cert_verify(chain, cut, NULL), MMR_EINVAL);

    /* A flipped byte in the body: either unparseable or a bad signature. */
    char *bent = mmr_strdup(p.device);
    bent[200] = bent[200] == 'A' ? 'B' : 'A';
    int rc = mmr_cert_verify(bent, p.ca, NULL);
    cr_expect(rc == MMR_EINVAL || rc == MMR_EPERM, "rc %d: %s", rc, mmr_err_msg());

    char *big = mmr_malloc(MMR_PEM_MAX + 2);
    memset(big, '\n', MMR_PEM_MAX + 1);
    big[MMR_PEM_MAX + 1] = '\0';
    memcpy(big, p.device, strlen(p.device));
    cr_expect_eq(mmr_cert_read_info(big, &info), MMR_ETOOBIG);

    free(big);
    free(bent);
    free(cut);
    free(chain);
    free(half);
    free_pki(&p);
}
