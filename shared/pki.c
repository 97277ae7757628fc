/* Keys, certificate requests, certificates, SHA-256 and ECDSA over mbedTLS:
 * the PKI that enrollment, mutual TLS and signed policies stand on.
 * See shared/pki.h for the API, shared/pki_mbedtls.h for what tls.c shares. */
#include "shared/pki.h"
#include "shared/pki_mbedtls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509_csr.h>
#include <uv.h>

#include "shared/err.h"
#include "shared/mem.h"
#include "shared/platform.h"

#define PEM_CERT_BEGIN "-----BEGIN CERTIFICATE-----"
#define PEM_CERT_END   "-----END CERTIFICATE-----"
#define PEM_CSR_BEGIN  "-----BEGIN CERTIFICATE REQUEST-----"

/* A key file is a few hundred bytes; anything much larger is not ours. */
#define KEY_FILE_MAX (16 * 1024)
/* Room for one PEM certificate with MMR_CERT_MAX_SANS long names. */
#define CERT_PEM_BUF (16 * 1024)

/* ---- the random generator ------------------------------------------------- */

static uv_once_t rng_once = UV_ONCE_INIT;
static struct {
    uv_mutex_t lock;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    int seed_ret;
    int64_t pid;
} rng;

static void rng_init(void)
{
    if (uv_mutex_init(&rng.lock) != 0)
        abort(); /* cannot happen short of resource exhaustion at start-up */
    mbedtls_entropy_init(&rng.entropy);
    mbedtls_ctr_drbg_init(&rng.drbg);
    static const unsigned char pers[] = "mamori pki";
    rng.seed_ret = mbedtls_ctr_drbg_seed(&rng.drbg, mbedtls_entropy_func, &rng.entropy, pers,
                                         sizeof(pers) - 1);
    rng.pid = mmr_process_id();
}

int mmr_pki_random(void *p_rng, unsigned char *buf, size_t len)
{
    (void)p_rng;
    uv_once(&rng_once, rng_init);
    if (rng.seed_ret != 0)
        return rng.seed_ret;
    uv_mutex_lock(&rng.lock);
    int ret = 0;
    int64_t pid = mmr_process_id();
    if (pid != rng.pid) {
        /* A forked child must not replay its parent's stream. */
        ret = mbedtls_ctr_drbg_reseed(&rng.drbg, (const unsigned char *)&pid, sizeof(pid));
        if (ret == 0)
            rng.pid = pid;
    }
    while (ret == 0 && len > 0) {
        size_t n = len < MBEDTLS_CTR_DRBG_MAX_REQUEST ? len : MBEDTLS_CTR_DRBG_MAX_REQUEST;
        ret = mbedtls_ctr_drbg_random(&rng.drbg, buf, n);
        buf += n;
        len -= n;
    }
    uv_mutex_unlock(&rng.lock);
    return ret;
}

/* ---- small helpers -------------------------------------------------------- */

const mbedtls_x509_crt_profile mmr_pki_profile = {
    MBEDTLS_X509_ID_FLAG(MBEDTLS_MD_SHA256),
    MBEDTLS_X509_ID_FLAG(MBEDTLS_PK_ECKEY) | MBEDTLS_X509_ID_FLAG(MBEDTLS_PK_ECDSA),
    MBEDTLS_X509_ID_FLAG(MBEDTLS_ECP_DP_SECP256R1),
    2048,
};

const char *mmr_pki_strerror(int ret, char *buf, size_t size)
{
    mbedtls_strerror(ret, buf, size);
    return buf;
}

/* Length of s if it ends within max bytes, else max + 1. Never reads past the
 * terminator. */
static size_t bounded_len(const char *s, size_t max)
{
    size_t n = 0;
    while (n <= max && s[n] != '\0')
        n++;
    return n;
}

static size_t count_substr(const char *s, const char *needle)
{
    size_t count = 0;
    size_t nlen = strlen(needle);
    for (const char *p = strstr(s, needle); p; p = strstr(p + nlen, needle))
        count++;
    return count;
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Leap years among 1..y-1 (y >= 1). */
static int64_t leaps_before(int64_t y)
{
    y -= 1;
    return y / 4 - y / 100 + y / 400;
}

static int64_t days_before_year(int64_t y)
{
    return 365 * (y - 1970) + leaps_before(y) - leaps_before(1970);
}

static const int month_start[12] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};

static int64_t days_from_date(int64_t y, int mon, int day)
{
    return days_before_year(y) + month_start[mon - 1] + (mon > 2 && is_leap(y)) + day - 1;
}

struct civil {
    int year, mon, day, hour, min, sec;
};

static void civil_from_seconds(int64_t secs, struct civil *c)
{
    int64_t days = secs / 86400;
    int64_t rem = secs % 86400;
    if (rem < 0) {
        rem += 86400;
        days -= 1;
    }
    int64_t year = 1970 + days / 366;
    while (days_before_year(year) > days)
        year--;
    while (days_before_year(year + 1) <= days)
        year++;
    int64_t doy = days - days_before_year(year);
    int mon = 12;
    while (mon > 1 && doy < month_start[mon - 1] + (mon > 2 && is_leap(year)))
        mon--;
    c->year = (int)year;
    c->mon = mon;
    c->day = (int)(doy - month_start[mon - 1] - (mon > 2 && is_leap(year))) + 1;
    c->hour = (int)(rem / 3600);
    c->min = (int)(rem / 60 % 60);
    c->sec = (int)(rem % 60);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* "YYYYMMDDhhmmss" as mbedtls_x509write_crt_set_validity wants it. X.509
 * times cover 1950..9999. */
static int x509_time_string(int64_t ms, char out[16], const char *what)
{
    struct civil c;
    civil_from_seconds(floor_div(ms, 1000), &c);
    if (c.year < 1950 || c.year > 9999)
        return mmr_err_set(MMR_EINVAL, "%s is outside the years 1950..9999", what);
    snprintf(out, 16, "%04d%02d%02d%02d%02d%02d", c.year, c.mon, c.day, c.hour, c.min, c.sec);
    return 0;
}

static int64_t x509_time_ms(const mbedtls_x509_time *t)
{
    int64_t days = days_from_date(t->year, t->mon, t->day);
    return (days * 86400 + t->hour * 3600 + t->min * 60 + t->sec) * 1000;
}

static bool utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t extra;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) {
            extra = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            extra = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            extra = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (len - i <= extra)
            return false;
        for (size_t k = 1; k <= extra; k++) {
            unsigned cc = s[i + k];
            if ((cc & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (cc & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += extra + 1;
    }
    return true;
}

/* A name we are willing to write into, or accept from, a certificate:
 * printable UTF-8 of 1..MMR_CERT_NAME_MAX bytes, no backslash (mbedTLS's
 * name syntax cannot carry one) and no leading space (it would be lost). */
static bool name_ok(const unsigned char *s, size_t len)
{
    if (len == 0 || len > MMR_CERT_NAME_MAX || s[0] == ' ')
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] < 0x20 || s[i] == 0x7f || s[i] == '\\')
            return false;
    return utf8_valid(s, len);
}

static int check_name(const char *field, const char *value)
{
    if (!name_ok((const unsigned char *)value, strlen(value)))
        return mmr_err_set(MMR_EINVAL,
                           "%s must be 1 to %d bytes of printable UTF-8 without '\\' or a "
                           "leading space",
                           field, MMR_CERT_NAME_MAX);
    return 0;
}

/* Appends ",KEY=value" to a distinguished-name string in mbedTLS's syntax,
 * where a comma inside a value is written "\,". */
static void dn_append(struct mmr_buf *dn, const char *key, const unsigned char *v, size_t len)
{
    if (dn->len > 0)
        mmr_buf_append(dn, ",", 1);
    mmr_buf_appendf(dn, "%s=", key);
    for (size_t i = 0; i < len; i++) {
        if (v[i] == ',')
            mmr_buf_append(dn, "\\", 1);
        mmr_buf_append(dn, &v[i], 1);
    }
}

/* Copies a name value for display: control bytes become '?', bytes of
 * invalid UTF-8 too, and the copy is cut on a character boundary. */
static void copy_display(char dst[MMR_CERT_NAME_MAX + 1], const unsigned char *v, size_t len)
{
    bool utf8 = utf8_valid(v, len);
    size_t n = len > MMR_CERT_NAME_MAX ? MMR_CERT_NAME_MAX : len;
    if (utf8 && n < len)
        while (n > 0 && (v[n] & 0xc0) == 0x80)
            n--;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = v[i];
        dst[i] = (char)((c < 0x20 || c == 0x7f || (!utf8 && c >= 0x80)) ? '?' : c);
    }
    dst[n] = '\0';
}

static const mbedtls_x509_name *find_attr(const mbedtls_x509_name *name, const char *oid,
                                          size_t oid_len, int *count)
{
    const mbedtls_x509_name *found = NULL;
    *count = 0;
    for (; name; name = name->next) {
        if (name->oid.p && name->oid.len == oid_len && memcmp(name->oid.p, oid, oid_len) == 0) {
            if (!found)
                found = name;
            (*count)++;
        }
    }
    return found;
}

static void display_attr(const mbedtls_x509_name *name, const char *oid, size_t oid_len,
                         char dst[MMR_CERT_NAME_MAX + 1])
{
    int count;
    const mbedtls_x509_name *a = find_attr(name, oid, oid_len, &count);
    if (a)
        copy_display(dst, a->val.p, a->val.len);
    else
        dst[0] = '\0';
}

#define ATTR(oid) oid, MBEDTLS_OID_SIZE(oid)

/* Parses an IPv4 or IPv6 literal. */
static bool parse_ip(const char *s, uint8_t out[16], size_t *len)
{
    if (uv_inet_pton(AF_INET, s, out) == 0) {
        *len = 4;
        return true;
    }
    if (uv_inet_pton(AF_INET6, s, out) == 0) {
        *len = 16;
        return true;
    }
    return false;
}

static bool dns_name_ok(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && !(c == '-' && label > 0))
            return false;
        if (++label > 63)
            return false;
    }
    return label > 0 && s[len - 1] != '-';
}

/* mbedTLS 2.28 takes non-const contexts even where it only reads them. */
#define MUTABLE(p) ((void *)(uintptr_t)(p))

/* ---- hashes and hex --------------------------------------------------------- */

void mmr_sha256(const void *data, size_t len, uint8_t out[MMR_SHA256_LEN])
{
    mbedtls_sha256_ret(data, len, out, 0);
}

void mmr_sha256_hex(const void *data, size_t len, char out[MMR_SHA256_HEX_SIZE])
{
    uint8_t digest[MMR_SHA256_LEN];
    mmr_sha256(data, len, digest);
    mmr_hex_encode(digest, sizeof(digest), out);
}

void mmr_hex_encode(const void *data, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 0x0f];
    }
    out[2 * len] = '\0';
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int mmr_hex_decode(const char *hex, uint8_t *out, size_t out_len)
{
    size_t len = bounded_len(hex, 2 * out_len);
    if (len != 2 * out_len)
        return mmr_err_set(MMR_EINVAL, "expected %zu hex digits", 2 * out_len);
    for (size_t i = 0; i < out_len; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return mmr_err_set(MMR_EINVAL, "'%c%c' is not a hex byte", hex[2 * i], hex[2 * i + 1]);
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

/* ---- keys ------------------------------------------------------------------- */

struct mmr_key {
    mbedtls_pk_context pk;
    bool priv;
};

static struct mmr_key *key_new(void)
{
    struct mmr_key *k = mmr_calloc(1, sizeof(*k));
    mbedtls_pk_init(&k->pk);
    return k;
}

void mmr_key_free(struct mmr_key *key)
{
    if (!key)
        return;
    mbedtls_pk_free(&key->pk); /* zeroizes the secret */
    free(key);
}

static int check_p256(const mbedtls_pk_context *pk, const char *what)
{
    if (mbedtls_pk_get_type(pk) != MBEDTLS_PK_ECKEY)
        return mmr_err_set(MMR_EINVAL, "%s is a %s key; only ECDSA P-256 keys are accepted", what,
                           mbedtls_pk_get_name(pk));
    if (mbedtls_pk_ec(*pk)->grp.id != MBEDTLS_ECP_DP_SECP256R1)
        return mmr_err_set(MMR_EINVAL, "%s is not on curve P-256 (secp256r1)", what);
    return 0;
}

int mmr_key_generate(struct mmr_key **out)
{
    *out = NULL;
    struct mmr_key *k = key_new();
    char err[128];
    int ret = mbedtls_pk_setup(&k->pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
    if (ret == 0)
        ret = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(k->pk), mmr_pki_random,
                                  NULL);
    if (ret != 0) {
        mmr_key_free(k);
        return mmr_err_set(MMR_EIO, "cannot generate a P-256 key: %s",
                           mmr_pki_strerror(ret, err, sizeof(err)));
    }
    k->priv = true;
    *out = k;
    return 0;
}

static int key_parse(const char *pem, bool priv, struct mmr_key **out)
{
    *out = NULL;
    const char *what = priv ? "private key" : "public key";
    size_t len = bounded_len(pem, MMR_PEM_MAX);
    if (len > MMR_PEM_MAX)
        return mmr_err_set(MMR_ETOOBIG, "%s PEM is larger than %d bytes", what, MMR_PEM_MAX);
    if (!strstr(pem, "-----BEGIN "))
        return mmr_err_set(MMR_EINVAL, "%s is not PEM", what);
    struct mmr_key *k = key_new();
    const unsigned char *buf = (const unsigned char *)pem;
    /* PEM parsing in mbedTLS wants the terminating NUL counted. */
    int ret = priv ? mbedtls_pk_parse_key(&k->pk, buf, len + 1, NULL, 0)
                   : mbedtls_pk_parse_public_key(&k->pk, buf, len + 1);
    if (ret != 0) {
        char err[128];
        mmr_key_free(k);
        return mmr_err_set(MMR_EINVAL, "malformed %s PEM: %s", what,
                           mmr_pki_strerror(ret, err, sizeof(err)));
    }
    int rc = check_p256(&k->pk, what);
    if (rc < 0) {
        mmr_key_free(k);
        return rc;
    }
    k->priv = priv;
    *out = k;
    return 0;
}

int mmr_key_from_pem(const char *pem, struct mmr_key **out)
{
    return key_parse(pem, true, out);
}

int mmr_key_from_public_pem(const char *pem, struct mmr_key **out)
{
    return key_parse(pem, false, out);
}

int mmr_key_load(const char *path, struct mmr_key **out)
{
    *out = NULL;
    char *text = NULL;
    size_t len = 0;
    int rc = mmr_file_read_all(path, KEY_FILE_MAX, &text, &len);
    if (rc < 0)
        return mmr_err_wrap(rc, "reading key %s", path);
    rc = mmr_key_from_pem(text, out);
    mbedtls_platform_zeroize(text, len);
    free(text);
    if (rc < 0)
        return mmr_err_wrap(rc, "key %s", path);
    return 0;
}

int mmr_key_save(const struct mmr_key *key, const char *path)
{
    if (!key->priv)
        return mmr_err_set(MMR_EINVAL, "cannot save %s: the key has no private part", path);
    unsigned char buf[1024];
    int ret = mbedtls_pk_write_key_pem(MUTABLE(&key->pk), buf, sizeof(buf));
    if (ret != 0) {
        char err[128];
        return mmr_err_set(MMR_EIO, "cannot encode key: %s",
                           mmr_pki_strerror(ret, err, sizeof(err)));
    }
    int rc = mmr_file_write_atomic(path, buf, strlen((const char *)buf));
    mbedtls_platform_zeroize(buf, sizeof(buf));
    return rc;
}

int mmr_key_public_pem(const struct mmr_key *key, char **out)
{
    *out = NULL;
    unsigned char buf[512];
    int ret = mbedtls_pk_write_pubkey_pem(MUTABLE(&key->pk), buf, sizeof(buf));
    if (ret != 0) {
        char err[128];
        return mmr_err_set(MMR_EIO, "cannot encode public key: %s",
                           mmr_pki_strerror(ret, err, sizeof(err)));
    }
    *out = mmr_strdup((const char *)buf);
    return 0;
}

bool mmr_key_has_private(const struct mmr_key *key)
{
    return key->priv;
}

/* The public key as DER at the end of buf; returns its length or < 0. */
static int public_der(const struct mmr_key *key, unsigned char *buf, size_t size,
                      unsigned char **der)
{
    int n = mbedtls_pk_write_pubkey_der(MUTABLE(&key->pk), buf, size);
    if (n > 0)
        *der = buf + size - (size_t)n;
    return n;
}

bool mmr_key_same_public(const struct mmr_key *a, const struct mmr_key *b)
{
    unsigned char ba[256], bb[256];
    unsigned char *da = NULL, *db = NULL;
    int na = public_der(a, ba, sizeof(ba), &da);
    int nb = public_der(b, bb, sizeof(bb), &db);
    return na > 0 && na == nb && memcmp(da, db, (size_t)na) == 0;
}

int mmr_pki_key_copy(const struct mmr_key *key, mbedtls_pk_context *pk)
{
    unsigned char buf[512];
    int n = key->priv ? mbedtls_pk_write_key_der(MUTABLE(&key->pk), buf, sizeof(buf))
                      : mbedtls_pk_write_pubkey_der(MUTABLE(&key->pk), buf, sizeof(buf));
    int ret = n;
    if (n > 0) {
        const unsigned char *der = buf + sizeof(buf) - (size_t)n;
        ret = key->priv ? mbedtls_pk_parse_key(pk, der, (size_t)n, NULL, 0)
                        : mbedtls_pk_parse_public_key(pk, der, (size_t)n);
    }
    mbedtls_platform_zeroize(buf, sizeof(buf));
    if (ret != 0) {
        char err[128];
        return mmr_err_set(MMR_EIO, "cannot copy key: %s", mmr_pki_strerror(ret, err, sizeof(err)));
    }
    return 0;
}

/* ---- signatures --------------------------------------------------------------- */

int mmr_ecdsa_sign(const struct mmr_key *key, const void *data, size_t len,
                   uint8_t sig[MMR_ECDSA_SIG_MAX], size_t *sig_len)
{
    *sig_len = 0;
    if (!key->priv)
        return mmr_err_set(MMR_EINVAL, "cannot sign: the key has no private part");
    uint8_t hash[MMR_SHA256_LEN];
    mmr_sha256(data, len, hash);
    unsigned char buf[MBEDTLS_PK_SIGNATURE_MAX_SIZE];
    size_t n = 0;
    int ret = mbedtls_pk_sign(MUTABLE(&key->pk), MBEDTLS_MD_SHA256, hash, sizeof(hash), buf, &n,
                              mmr_pki_random, NULL);
    if (ret != 0 || n > MMR_ECDSA_SIG_MAX) {
        char err[128];
        return mmr_err_set(MMR_EIO, "cannot sign: %s",
                           ret ? mmr_pki_strerror(ret, err, sizeof(err)) : "signature too long");
    }
    memcpy(sig, buf, n);
    *sig_len = n;
    return 0;
}

static int verify_pk(mbedtls_pk_context *pk, const void *data, size_t len, const uint8_t *sig,
                     size_t sig_len)
{
    uint8_t hash[MMR_SHA256_LEN];
    mmr_sha256(data, len, hash);
    int ret = mbedtls_pk_verify(pk, MBEDTLS_MD_SHA256, hash, sizeof(hash), sig, sig_len);
    if (ret == 0)
        return 0;
    if (ret == MBEDTLS_ERR_ECP_VERIFY_FAILED)
        return mmr_err_set(MMR_EPERM, "signature does not match the data and key");
    char err[128];
    return mmr_err_set(MMR_EINVAL, "malformed signature: %s",
                       mmr_pki_strerror(ret, err, sizeof(err)));
}

int mmr_ecdsa_verify(const struct mmr_key *key, const void *data, size_t len, const uint8_t *sig,
                     size_t sig_len)
{
    return verify_pk(MUTABLE(&key->pk), data, len, sig, sig_len);
}

int mmr_ecdsa_verify_pem(const char *public_pem, const void *data, size_t len, const uint8_t *sig,
                         size_t sig_len)
{
    struct mmr_key *key;
    int rc = mmr_key_from_public_pem(public_pem, &key);
    if (rc < 0)
        return rc;
    rc = mmr_ecdsa_verify(key, data, len, sig, sig_len);
    mmr_key_free(key);
    return rc;
}

/* ---- certificate signing requests ------------------------------------------ */

int mmr_csr_create(const struct mmr_key *key, const char *cn, char **out_pem)
{
    *out_pem = NULL;
    if (!key->priv)
        return mmr_err_set(MMR_EINVAL, "cannot sign a request: the key has no private part");
    int rc = check_name("CN", cn);
    if (rc < 0)
        return rc;
    struct mmr_buf dn = {0};
    dn_append(&dn, "CN", (const unsigned char *)cn, strlen(cn));
    mbedtls_x509write_csr req;
    mbedtls_x509write_csr_init(&req);
    mbedtls_x509write_csr_set_md_alg(&req, MBEDTLS_MD_SHA256);
    mbedtls_x509write_csr_set_key(&req, MUTABLE(&key->pk));
    unsigned char buf[4096];
    int ret = mbedtls_x509write_csr_set_subject_name(&req, dn.data);
    if (ret == 0)
        ret = mbedtls_x509write_csr_pem(&req, buf, sizeof(buf), mmr_pki_random, NULL);
    mbedtls_x509write_csr_free(&req);
    mmr_buf_free(&dn);
    if (ret != 0) {
        char err[128];
        return mmr_err_set(MMR_EIO, "cannot create a certificate request: %s",
                           mmr_pki_strerror(ret, err, sizeof(err)));
    }
    *out_pem = mmr_strdup((const char *)buf);
    return 0;
}

void mmr_csr_free(struct mmr_csr *csr)
{
    mmr_key_free(csr->key);
    memset(csr, 0, sizeof(*csr));
}

static int public_key_from_pk(mbedtls_pk_context *pk, struct mmr_key **out)
{
    unsigned char buf[256];
    unsigned char *der;
    int n = mbedtls_pk_write_pubkey_der(pk, buf, sizeof(buf));
    if (n <= 0)
        return mmr_err_set(MMR_EINVAL, "cannot encode the request's public key");
    der = buf + sizeof(buf) - (size_t)n;
    struct mmr_key *k = key_new();
    if (mbedtls_pk_parse_public_key(&k->pk, der, (size_t)n) != 0) {
        mmr_key_free(k);
        return mmr_err_set(MMR_EINVAL, "cannot decode the request's public key");
    }
    *out = k;
    return 0;
}

int mmr_csr_parse(const char *pem, struct mmr_csr *out)
{
    memset(out, 0, sizeof(*out));
    size_t len = bounded_len(pem, MMR_CSR_PEM_MAX);
    if (len > MMR_CSR_PEM_MAX)
        return mmr_err_set(MMR_ETOOBIG, "certificate request is larger than %d bytes",
                           MMR_CSR_PEM_MAX);
    if (!strstr(pem, PEM_CSR_BEGIN))
        return mmr_err_set(MMR_EINVAL, "not a PEM certificate request (no '%s' line)",
                           PEM_CSR_BEGIN);
    mbedtls_x509_csr csr;
    mbedtls_x509_csr_init(&csr);
    char err[128];
    int rc = 0;
    int ret = mbedtls_x509_csr_parse(&csr, (const unsigned char *)pem, len + 1);
    if (ret != 0) {
        rc = mmr_err_set(MMR_EINVAL, "malformed certificate request: %s",
                         mmr_pki_strerror(ret, err, sizeof(err)));
        goto out;
    }
    rc = check_p256(&csr.pk, "the request's key");
    if (rc < 0)
        goto out;
    if (csr.sig_md != MBEDTLS_MD_SHA256 || csr.sig_pk != MBEDTLS_PK_ECDSA) {
        rc = mmr_err_set(MMR_EINVAL, "certificate request is not signed with ECDSA-SHA256");
        goto out;
    }
    /* mbedTLS parses a request without checking its signature: do it here. */
    uint8_t hash[MMR_SHA256_LEN];
    mmr_sha256(csr.cri.p, csr.cri.len, hash);
    ret = mbedtls_pk_verify(&csr.pk, MBEDTLS_MD_SHA256, hash, sizeof(hash), csr.sig.p, csr.sig.len);
    if (ret != 0) {
        rc = mmr_err_set(MMR_EPERM, "certificate request signature does not verify: %s",
                         mmr_pki_strerror(ret, err, sizeof(err)));
        goto out;
    }
    int count;
    const mbedtls_x509_name *cn = find_attr(&csr.subject, ATTR(MBEDTLS_OID_AT_CN), &count);
    if (count != 1) {
        rc = mmr_err_set(MMR_EINVAL, "certificate request must name exactly one CN, not %d", count);
        goto out;
    }
    if (!name_ok(cn->val.p, cn->val.len)) {
        rc = mmr_err_set(MMR_EINVAL,
                         "certificate request CN must be 1 to %d bytes of printable UTF-8",
                         MMR_CERT_NAME_MAX);
        goto out;
    }
    memcpy(out->cn, cn->val.p, cn->val.len);
    out->cn[cn->val.len] = '\0';
    rc = public_key_from_pk(&csr.pk, &out->key);
out:
    mbedtls_x509_csr_free(&csr);
    if (rc < 0)
        mmr_csr_free(out);
    return rc;
}

/* ---- certificates: parsing and information -------------------------------- */

int mmr_pki_parse_chain(mbedtls_x509_crt *chain, const char *pem, const char *what)
{
    size_t len = bounded_len(pem, MMR_PEM_MAX);
    if (len > MMR_PEM_MAX)
        return mmr_err_set(MMR_ETOOBIG, "%s is larger than %d bytes", what, MMR_PEM_MAX);
    size_t expected = count_substr(pem, PEM_CERT_BEGIN);
    if (expected == 0)
        return mmr_err_set(MMR_EINVAL, "%s holds no PEM certificate", what);
    int ret = mbedtls_x509_crt_parse(chain, (const unsigned char *)pem, len + 1);
    if (ret < 0) {
        char err[128];
        return mmr_err_set(MMR_EINVAL, "%s: malformed certificate: %s", what,
                           mmr_pki_strerror(ret, err, sizeof(err)));
    }
    size_t parsed = 0;
    for (const mbedtls_x509_crt *c = chain; c && c->raw.p; c = c->next)
        parsed++;
    /* mbedTLS skips a block whose END line is missing: count to notice. */
    if (ret > 0 || parsed != expected)
        return mmr_err_set(MMR_EINVAL, "%s: %zu of %zu certificates are truncated or malformed",
                           what, expected - (parsed < expected ? parsed : expected), expected);
    return 0;
}

void mmr_pki_crt_info(const mbedtls_x509_crt *crt, struct mmr_cert_info *out)
{
    memset(out, 0, sizeof(*out));
    display_attr(&crt->subject, ATTR(MBEDTLS_OID_AT_CN), out->cn);
    display_attr(&crt->subject, ATTR(MBEDTLS_OID_AT_ORGANIZATION), out->org);
    display_attr(&crt->subject, ATTR(MBEDTLS_OID_AT_ORG_UNIT), out->org_unit);
    display_attr(&crt->issuer, ATTR(MBEDTLS_OID_AT_CN), out->issuer_cn);
    const unsigned char *s = crt->serial.p;
    size_t n = crt->serial.len;
    while (n > 1 && s[0] == 0) {
        s++;
        n--;
    }
    if (n > MMR_CERT_SERIAL_MAX)
        n = MMR_CERT_SERIAL_MAX;
    mmr_hex_encode(s, n, out->serial_hex);
    out->not_before_ms = x509_time_ms(&crt->valid_from);
    out->not_after_ms = x509_time_ms(&crt->valid_to);
    mmr_sha256_hex(crt->raw.p, crt->raw.len, out->sha256_hex);
    out->is_ca = crt->ca_istrue != 0;
    /* mbedTLS keeps pathLenConstraint + 1, with 0 for "none". */
    out->max_path_len = out->is_ca && crt->max_pathlen > 0 ? crt->max_pathlen - 1 : -1;
}

int mmr_cert_read_info(const char *pem, struct mmr_cert_info *out)
{
    memset(out, 0, sizeof(*out));
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    int rc = mmr_pki_parse_chain(&crt, pem, "certificate");
    if (rc == 0)
        mmr_pki_crt_info(&crt, out);
    mbedtls_x509_crt_free(&crt);
    return rc;
}

int mmr_cert_public_key(const char *pem, struct mmr_key **out)
{
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    int rc = mmr_pki_parse_chain(&crt, pem, "certificate");
    if (rc == 0)
        rc = check_p256(&crt.pk, "the certificate's key");
    if (rc == 0)
        rc = public_key_from_pk(&crt.pk, out);
    mbedtls_x509_crt_free(&crt);
    return rc;
}

int mmr_cert_read_info_der(const uint8_t *der, size_t len, struct mmr_cert_info *out)
{
    memset(out, 0, sizeof(*out));
    if (len > MMR_PEM_MAX)
        return mmr_err_set(MMR_ETOOBIG, "certificate is larger than %d bytes", MMR_PEM_MAX);
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    int ret = mbedtls_x509_crt_parse_der(&crt, der, len);
    int rc = 0;
    if (ret != 0) {
        char err[128];
        rc = mmr_err_set(MMR_EINVAL, "malformed certificate: %s",
                         mmr_pki_strerror(ret, err, sizeof(err)));
    } else {
        mmr_pki_crt_info(&crt, out);
    }
    mbedtls_x509_crt_free(&crt);
    return rc;
}

int mmr_cert_der_to_pem(const uint8_t *der, size_t len, char **out_pem)
{
    *out_pem = NULL;
    if (len > MMR_PEM_MAX)
        return mmr_err_set(MMR_ETOOBIG, "certificate is larger than %d bytes", MMR_PEM_MAX);
    size_t size = len * 2 + 128;
    unsigned char *buf = mmr_malloc(size);
    size_t olen = 0;
    int ret = mbedtls_pem_write_buffer(PEM_CERT_BEGIN "\n", PEM_CERT_END "\n", der, len, buf, size,
                                       &olen);
    if (ret != 0) {
        free(buf);
        char err[128];
        return mmr_err_set(MMR_EIO, "cannot encode certificate: %s",
                           mmr_pki_strerror(ret, err, sizeof(err)));
    }
    *out_pem = (char *)buf;
    return 0;
}

/* ---- certificates: issuing ---------------------------------------------------- */

/* Helpers building DER backwards, as mbedtls_asn1_write_* do. */
static int asn1_add(size_t *len, int ret)
{
    if (ret < 0)
        return ret;
    *len += (size_t)ret;
    return 0;
}

static int write_general_name(unsigned char **p, unsigned char *start, const char *name,
                              size_t *len)
{
    uint8_t ip[16];
    size_t ip_len;
    size_t n = 0;
    int ret;
    unsigned char tag;
    if (parse_ip(name, ip, &ip_len)) {
        ret = asn1_add(&n, mbedtls_asn1_write_raw_buffer(p, start, ip, ip_len));
        tag = MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7; /* iPAddress */
    } else {
        ret = asn1_add(
            &n, mbedtls_asn1_write_raw_buffer(p, start, (const unsigned char *)name, strlen(name)));
        tag = MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2; /* dNSName */
    }
    if (ret == 0)
        ret = asn1_add(&n, mbedtls_asn1_write_len(p, start, n));
    if (ret == 0)
        ret = asn1_add(&n, mbedtls_asn1_write_tag(p, start, tag));
    *len += n;
    return ret;
}

static int set_san(mbedtls_x509write_cert *crt, const struct mmr_cert_spec *spec)
{
    unsigned char buf[MMR_CERT_MAX_SANS * 264 + 16];
    unsigned char *p = buf + sizeof(buf);
    size_t len = 0;
    int ret = 0;
    for (size_t i = spec->san_count; i-- > 0 && ret == 0;)
        ret = write_general_name(&p, buf, spec->san[i], &len);
    if (ret == 0)
        ret = asn1_add(&len, mbedtls_asn1_write_len(&p, buf, len));
    if (ret == 0)
        ret = asn1_add(&len, mbedtls_asn1_write_tag(
                                 &p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE));
    if (ret == 0)
        ret =
            mbedtls_x509write_crt_set_extension(crt, ATTR(MBEDTLS_OID_SUBJECT_ALT_NAME), 0, p, len);
    return ret;
}

static int set_ext_key_usage(mbedtls_x509write_cert *crt, const char *oid, size_t oid_len)
{
    unsigned char buf[32];
    unsigned char *p = buf + sizeof(buf);
    size_t len = 0;
    int ret = asn1_add(&len, mbedtls_asn1_write_oid(&p, buf, oid, oid_len));
    if (ret == 0)
        ret = asn1_add(&len, mbedtls_asn1_write_len(&p, buf, len));
    if (ret == 0)
        ret = asn1_add(&len, mbedtls_asn1_write_tag(
                                 &p, buf, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE));
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_extension(crt, ATTR(MBEDTLS_OID_EXTENDED_KEY_USAGE), 0, p,
                                                  len);
    return ret;
}

static int check_spec(const struct mmr_cert_spec *spec)
{
    if (spec->kind != MMR_CERT_CA && spec->kind != MMR_CERT_SERVER && spec->kind != MMR_CERT_CLIENT)
        return mmr_err_set(MMR_EINVAL, "certificate kind must be CA, server or client");
    if (!spec->cn)
        return mmr_err_set(MMR_EINVAL, "certificate needs a CN");
    int rc = check_name("CN", spec->cn);
    if (rc == 0 && spec->org && spec->org[0])
        rc = check_name("O", spec->org);
    if (rc == 0 && spec->org_unit && spec->org_unit[0])
        rc = check_name("OU", spec->org_unit);
    if (rc < 0)
        return rc;
    if (spec->not_after_ms <= spec->not_before_ms)
        return mmr_err_set(MMR_EINVAL, "certificate must end (not_after) after it begins");
    if (spec->serial) {
        size_t n = spec->serial_len;
        bool nonzero = false;
        for (size_t i = 0; i < n; i++)
            nonzero |= spec->serial[i] != 0;
        /* DER adds a zero byte before a set top bit: 20 bytes would become 21. */
        if (n == 0 || n > 20 || !nonzero || (n == 20 && (spec->serial[0] & 0x80)))
            return mmr_err_set(MMR_EINVAL,
                               "serial must be a positive number of at most 20 bytes encoded");
    }
    if (spec->kind == MMR_CERT_CA && spec->max_path_len < -1)
        return mmr_err_set(MMR_EINVAL, "max_path_len must be -1 (no limit) or more");
    if (spec->kind == MMR_CERT_SERVER && spec->san_count == 0)
        return mmr_err_set(MMR_EINVAL, "a server certificate needs at least one name (SAN)");
    if (spec->kind != MMR_CERT_SERVER && spec->san_count > 0)
        return mmr_err_set(MMR_EINVAL, "only server certificates carry SANs");
    if (spec->san_count > MMR_CERT_MAX_SANS)
        return mmr_err_set(MMR_ETOOBIG, "more than %d SANs", MMR_CERT_MAX_SANS);
    for (size_t i = 0; i < spec->san_count; i++) {
        uint8_t ip[16];
        size_t ip_len;
        if (!spec->san[i] || (!parse_ip(spec->san[i], ip, &ip_len) && !dns_name_ok(spec->san[i])))
            return mmr_err_set(MMR_EINVAL, "SAN '%s' is neither an IP address nor a DNS name",
                               spec->san[i] ? spec->san[i] : "(null)");
    }
    return 0;
}

/* The distinguished name of a spec, in mbedTLS's string syntax. */
static void spec_dn(const struct mmr_cert_spec *spec, struct mmr_buf *dn)
{
    dn_append(dn, "CN", (const unsigned char *)spec->cn, strlen(spec->cn));
    if (spec->org && spec->org[0])
        dn_append(dn, "O", (const unsigned char *)spec->org, strlen(spec->org));
    if (spec->org_unit && spec->org_unit[0])
        dn_append(dn, "OU", (const unsigned char *)spec->org_unit, strlen(spec->org_unit));
}

/* Rebuilds an issuer's subject in mbedTLS's string syntax, in its own order.
 * Only names we could have written (CN, O, OU, printable) are reproducible. */
static int issuer_dn(const mbedtls_x509_name *subject, struct mmr_buf *dn)
{
    for (const mbedtls_x509_name *n = subject; n; n = n->next) {
        const char *key = NULL;
        if (MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) == 0)
            key = "CN";
        else if (MBEDTLS_OID_CMP(MBEDTLS_OID_AT_ORGANIZATION, &n->oid) == 0)
            key = "O";
        else if (MBEDTLS_OID_CMP(MBEDTLS_OID_AT_ORG_UNIT, &n->oid) == 0)
            key = "OU";
        if (!key || !name_ok(n->val.p, n->val.len))
            return mmr_err_set(MMR_EINVAL,
                               "issuer certificate's subject is not one this PKI writes "
                               "(CN, O, OU)");
        dn_append(dn, key, n->val.p, n->val.len);
    }
    return 0;
}

static int random_serial(mbedtls_mpi *serial)
{
    uint8_t bytes[20];
    int ret = mmr_pki_random(NULL, bytes, sizeof(bytes));
    if (ret != 0)
        return ret;
    /* Positive and a full 20 bytes: top bit clear, next bit set. */
    bytes[0] = (uint8_t)((bytes[0] & 0x7f) | 0x40);
    return mbedtls_mpi_read_binary(serial, bytes, sizeof(bytes));
}

static int load_issuer(const char *issuer_cert_pem, const struct mmr_key *issuer_key,
                       mbedtls_x509_crt *issuer, struct mmr_buf *dn)
{
    int rc = mmr_pki_parse_chain(issuer, issuer_cert_pem, "issuer certificate");
    if (rc < 0)
        return rc;
    struct mmr_cert_info info;
    mmr_pki_crt_info(issuer, &info);
    if (!issuer->ca_istrue ||
        mbedtls_x509_crt_check_key_usage(issuer, MBEDTLS_X509_KU_KEY_CERT_SIGN) != 0)
        return mmr_err_set(MMR_EINVAL, "issuer certificate '%s' is not a CA", info.cn);
    if (mbedtls_pk_check_pair(&issuer->pk, MUTABLE(&issuer_key->pk)) != 0)
        return mmr_err_set(MMR_EINVAL, "the issuer key does not belong to certificate '%s'",
                           info.cn);
    return issuer_dn(&issuer->subject, dn);
}

static int write_cert(mbedtls_x509write_cert *crt, const struct mmr_cert_spec *spec,
                      const char *subject, const char *issuer, char *pem)
{
    char from[16], to[16];
    int rc = x509_time_string(spec->not_before_ms, from, "not_before");
    if (rc == 0)
        rc = x509_time_string(spec->not_after_ms, to, "not_after");
    if (rc < 0)
        return rc;
    mbedtls_mpi serial;
    mbedtls_mpi_init(&serial);
    int ret = spec->serial ? mbedtls_mpi_read_binary(&serial, spec->serial, spec->serial_len)
                           : random_serial(&serial);
    bool ca = spec->kind == MMR_CERT_CA;
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_serial(crt, &serial);
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_subject_name(crt, subject);
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_issuer_name(crt, issuer);
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_validity(crt, from, to);
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_basic_constraints(crt, ca, ca ? spec->max_path_len : -1);
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_subject_key_identifier(crt);
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_authority_key_identifier(crt);
    if (ret == 0)
        ret = mbedtls_x509write_crt_set_key_usage(crt, ca ? MBEDTLS_X509_KU_KEY_CERT_SIGN |
                                                                MBEDTLS_X509_KU_CRL_SIGN
                                                          : MBEDTLS_X509_KU_DIGITAL_SIGNATURE);
    if (ret == 0 && spec->kind == MMR_CERT_SERVER)
        ret = set_ext_key_usage(crt, ATTR(MBEDTLS_OID_SERVER_AUTH));
    if (ret == 0 && spec->kind == MMR_CERT_CLIENT)
        ret = set_ext_key_usage(crt, ATTR(MBEDTLS_OID_CLIENT_AUTH));
    if (ret == 0 && spec->kind == MMR_CERT_SERVER)
        ret = set_san(crt, spec);
    if (ret == 0)
        ret = mbedtls_x509write_crt_pem(crt, (unsigned char *)pem, CERT_PEM_BUF, mmr_pki_random,
                                        NULL);
    mbedtls_mpi_free(&serial);
    if (ret != 0) {
        char err[128];
        return mmr_err_set(MMR_EIO, "cannot write certificate '%s': %s", spec->cn,
                           mmr_pki_strerror(ret, err, sizeof(err)));
    }
    return 0;
}

int mmr_cert_issue(const struct mmr_cert_spec *spec, const struct mmr_key *subject_key,
                   const struct mmr_key *issuer_key, const char *issuer_cert_pem, char **out_pem)
{
    *out_pem = NULL;
    int rc = check_spec(spec);
    if (rc < 0)
        return mmr_err_wrap(rc, "certificate '%s'", spec->cn ? spec->cn : "");
    if (!issuer_key->priv)
        return mmr_err_set(MMR_EINVAL, "the issuer key has no private part");
    if (!issuer_cert_pem && !mmr_key_same_public(subject_key, issuer_key))
        return mmr_err_set(MMR_EINVAL, "a self-signed certificate is signed by its own key");
    if (!issuer_cert_pem && spec->kind != MMR_CERT_CA)
        return mmr_err_set(MMR_EINVAL, "only a CA certificate may be self-signed");

    mbedtls_x509_crt issuer;
    mbedtls_x509_crt_init(&issuer);
    mbedtls_x509write_cert crt;
    mbedtls_x509write_crt_init(&crt);
    struct mmr_buf subject = {0}, issuer_name = {0};
    char *pem = NULL;
    spec_dn(spec, &subject);
    if (issuer_cert_pem) {
        rc = load_issuer(issuer_cert_pem, issuer_key, &issuer, &issuer_name);
        if (rc < 0)
            goto out;
    } else {
        spec_dn(spec, &issuer_name);
    }
    mbedtls_x509write_crt_set_version(&crt, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&crt, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&crt, MUTABLE(&subject_key->pk));
    mbedtls_x509write_crt_set_issuer_key(&crt, MUTABLE(&issuer_key->pk));
    pem = mmr_malloc(CERT_PEM_BUF);
    rc = write_cert(&crt, spec, subject.data, issuer_name.data, pem);
    if (rc < 0)
        goto out;
    if (issuer_cert_pem) {
        /* Chains are built by comparing names: make sure ours match exactly. */
        mbedtls_x509_crt made;
        mbedtls_x509_crt_init(&made);
        rc = mmr_pki_parse_chain(&made, pem, "issued certificate");
        if (rc == 0 && (made.issuer_raw.len != issuer.subject_raw.len ||
                        memcmp(made.issuer_raw.p, issuer.subject_raw.p, made.issuer_raw.len)))
            rc = mmr_err_set(MMR_EIO, "issued certificate does not name its issuer exactly");
        mbedtls_x509_crt_free(&made);
    }
out:
    mbedtls_x509_crt_free(&issuer);
    mbedtls_x509write_crt_free(&crt);
    mmr_buf_free(&subject);
    mmr_buf_free(&issuer_name);
    if (rc < 0) {
        free(pem);
        return rc;
    }
    *out_pem = mmr_realloc(pem, strlen(pem) + 1);
    return 0;
}

/* ---- certificates: verification ------------------------------------------- */

static int flag_rank(uint32_t f)
{
    if (f & MBEDTLS_X509_BADCERT_NOT_TRUSTED)
        return 5;
    if (f & (MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE))
        return 4;
    if (f &
        (MBEDTLS_X509_BADCERT_BAD_MD | MBEDTLS_X509_BADCERT_BAD_PK | MBEDTLS_X509_BADCERT_BAD_KEY))
        return 3;
    if (f & (MBEDTLS_X509_BADCERT_KEY_USAGE | MBEDTLS_X509_BADCERT_EXT_KEY_USAGE |
             MBEDTLS_X509_BADCERT_NS_CERT_TYPE))
        return 2;
    return f ? 1 : 0;
}

void mmr_pki_trace_init(struct mmr_pki_trace *t)
{
    memset(t, 0, sizeof(*t));
    t->depth = -1;
}

int mmr_pki_trace_cb(void *trace, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
    struct mmr_pki_trace *t = trace;
    if (depth == 0) {
        display_attr(&crt->subject, ATTR(MBEDTLS_OID_AT_CN), t->leaf_cn);
        t->have_leaf = true;
    }
    int rank = flag_rank(*flags);
    /* mbedTLS reports from the top of the chain down: on a tie, the
     * certificate nearer the leaf wins. */
    if (rank > 0 && (rank > t->rank || (rank == t->rank && depth < t->depth))) {
        t->rank = rank;
        t->depth = depth;
        t->flags = *flags;
        mmr_pki_crt_info(crt, &t->cert);
    }
    return 0;
}

int mmr_pki_explain(const struct mmr_pki_trace *t, uint32_t flags, const mbedtls_x509_crt *leaf,
                    const char *what, const char *anchor)
{
    struct mmr_cert_info info;
    int depth = 0;
    uint32_t f = flags;
    const char *leaf_cn;
    if (t && t->depth >= 0) {
        info = t->cert;
        depth = t->depth;
        f = t->flags;
        leaf_cn = t->have_leaf ? t->leaf_cn : info.cn;
    } else {
        if (leaf)
            mmr_pki_crt_info(leaf, &info);
        else
            memset(&info, 0, sizeof(info));
        leaf_cn = info.cn;
    }
    char who[3 * MMR_CERT_NAME_MAX + 64];
    if (depth == 0)
        snprintf(who, sizeof(who), "%s '%s'", what, info.cn);
    else
        snprintf(who, sizeof(who), "CA certificate '%s' in the chain of %s '%s'", info.cn, what,
                 leaf_cn);
    char when[32];
    if ((f & MBEDTLS_X509_BADCERT_NOT_TRUSTED) && depth == 0)
        return mmr_err_set(MMR_EPERM, "%s is not signed by %s", who, anchor);
    if (f & MBEDTLS_X509_BADCERT_NOT_TRUSTED)
        return mmr_err_set(MMR_EPERM, "%s '%s' is not signed by %s (its chain ends at '%s')", what,
                           leaf_cn, anchor, info.cn);
    if (f & MBEDTLS_X509_BADCERT_EXPIRED) {
        mmr_time_format(info.not_after_ms, when);
        return mmr_err_set(MMR_EPERM, "%s expired at %s", who, when);
    }
    if (f & MBEDTLS_X509_BADCERT_FUTURE) {
        mmr_time_format(info.not_before_ms, when);
        return mmr_err_set(MMR_EPERM, "%s is not valid before %s", who, when);
    }
    if (f &
        (MBEDTLS_X509_BADCERT_BAD_MD | MBEDTLS_X509_BADCERT_BAD_PK | MBEDTLS_X509_BADCERT_BAD_KEY))
        return mmr_err_set(MMR_EPERM,
                           "%s uses an algorithm or key we do not accept (only ECDSA P-256 "
                           "with SHA-256)",
                           who);
    if (f & (MBEDTLS_X509_BADCERT_KEY_USAGE | MBEDTLS_X509_BADCERT_EXT_KEY_USAGE |
             MBEDTLS_X509_BADCERT_NS_CERT_TYPE))
        return mmr_err_set(MMR_EPERM, "%s is not issued for this use", who);
    if (f & MBEDTLS_X509_BADCERT_MISSING)
        return mmr_err_set(MMR_EPERM, "no %s was presented", what);
    return mmr_err_set(MMR_EPERM, "%s was refused (verification flags 0x%x)", who, (unsigned)f);
}

static int check_use(const mbedtls_x509_crt *crt, enum mmr_cert_kind kind, const char *what)
{
    const char *oid = NULL;
    size_t oid_len = 0;
    const char *name = "";
    switch (kind) {
    case MMR_CERT_ANY:
        return 0;
    case MMR_CERT_CA:
        if (crt->ca_istrue)
            return 0;
        name = "a CA";
        break;
    case MMR_CERT_SERVER:
        oid = MBEDTLS_OID_SERVER_AUTH;
        oid_len = MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH);
        name = "a TLS server";
        break;
    case MMR_CERT_CLIENT:
        oid = MBEDTLS_OID_CLIENT_AUTH;
        oid_len = MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH);
        name = "a TLS client";
        break;
    }
    if (oid && !crt->ca_istrue &&
        mbedtls_x509_crt_check_key_usage(crt, MBEDTLS_X509_KU_DIGITAL_SIGNATURE) == 0 &&
        mbedtls_x509_crt_check_extended_key_usage(crt, oid, oid_len) == 0)
        return 0;
    char cn[MMR_CERT_NAME_MAX + 1];
    display_attr(&crt->subject, ATTR(MBEDTLS_OID_AT_CN), cn);
    return mmr_err_set(MMR_EPERM, "%s '%s' is not a certificate for %s", what, cn, name);
}

static void san_list(const mbedtls_x509_crt *crt, char *out, size_t size)
{
    size_t used = 0;
    out[0] = '\0';
    for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s && s->buf.p; s = s->next) {
        char name[256];
        if (s->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2)) {
            copy_display(name, s->buf.p, s->buf.len < 64 ? s->buf.len : 64);
        } else if (s->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) &&
                   (s->buf.len == 4 || s->buf.len == 16)) {
            if (uv_inet_ntop(s->buf.len == 4 ? AF_INET : AF_INET6, s->buf.p, name, sizeof(name)) !=
                0)
                continue;
        } else {
            continue;
        }
        int n = snprintf(out + used, size - used, "%s%s", used ? ", " : "", name);
        if (n < 0 || (size_t)n >= size - used)
            break;
        used += (size_t)n;
    }
}

static bool ascii_case_eq(const unsigned char *a, const char *b, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char x = a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z')
            x = (unsigned char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z')
            y = (unsigned char)(y - 'A' + 'a');
        if (x != y)
            return false;
    }
    return true;
}

static int check_host(const mbedtls_x509_crt *crt, const char *host, const char *what)
{
    uint8_t ip[16];
    size_t ip_len = 0;
    bool is_ip = parse_ip(host, ip, &ip_len);
    size_t host_len = strlen(host);
    for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s && s->buf.p; s = s->next) {
        if (is_ip && s->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) && s->buf.len == ip_len &&
            memcmp(s->buf.p, ip, ip_len) == 0)
            return 0;
        if (!is_ip && s->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2) && s->buf.len == host_len &&
            ascii_case_eq(s->buf.p, host, host_len))
            return 0;
    }
    char cn[MMR_CERT_NAME_MAX + 1], names[512];
    display_attr(&crt->subject, ATTR(MBEDTLS_OID_AT_CN), cn);
    san_list(crt, names, sizeof(names));
    return mmr_err_set(MMR_EPERM, "%s '%s' is not valid for '%s' (it names: %s)", what, cn, host,
                       names[0] ? names : "nothing");
}

int mmr_pki_verify_chain(mbedtls_x509_crt *chain, mbedtls_x509_crt *trust,
                         const struct mmr_cert_verify_opts *opts, const char *what,
                         const char *anchor)
{
    struct mmr_pki_trace t;
    mmr_pki_trace_init(&t);
    uint32_t flags = 0;
    int ret = mbedtls_x509_crt_verify_with_profile(chain, trust, NULL, &mmr_pki_profile, NULL,
                                                   &flags, mmr_pki_trace_cb, &t);
    if (ret != 0 && ret != MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        char err[128];
        return mmr_err_set(MMR_EPERM, "cannot verify %s: %s", what,
                           mmr_pki_strerror(ret, err, sizeof(err)));
    }
    if (flags != 0)
        return mmr_pki_explain(&t, flags, chain, what, anchor);
    if (!opts)
        return 0;
    int rc = check_use(chain, opts->kind, what);
    if (rc < 0)
        return rc;
    if (opts->expect_cn) {
        char cn[MMR_CERT_NAME_MAX + 1];
        display_attr(&chain->subject, ATTR(MBEDTLS_OID_AT_CN), cn);
        if (strcmp(cn, opts->expect_cn) != 0)
            return mmr_err_set(MMR_EPERM, "%s is for '%s', not '%s'", what, cn, opts->expect_cn);
    }
    if (opts->expect_host)
        return check_host(chain, opts->expect_host, what);
    return 0;
}

int mmr_cert_verify(const char *chain_pem, const char *trusted_pem,
                    const struct mmr_cert_verify_opts *opts)
{
    mbedtls_x509_crt chain, trust;
    mbedtls_x509_crt_init(&chain);
    mbedtls_x509_crt_init(&trust);
    int rc = mmr_pki_parse_chain(&chain, chain_pem, "certificate chain");
    if (rc == 0)
        rc = mmr_pki_parse_chain(&trust, trusted_pem, "trusted CA certificates");
    if (rc == 0)
        rc = mmr_pki_verify_chain(&chain, &trust, opts, "certificate", "a trusted CA");
    mbedtls_x509_crt_free(&chain);
    mbedtls_x509_crt_free(&trust);
    return rc;
}
