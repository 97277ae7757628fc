/* TLS 1.2 for Mamori over mbedTLS (ECDHE-ECDSA with AES-GCM, P-256 only):
 * server and client configurations, one connection engine that runs over
 * memory for both ends (the caller moves the ciphertext: a libuv loop on the
 * server, a load generator, a test), and a blocking client stream on top. */
#ifndef MMR_TLS_H
#define MMR_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shared/pki.h"

/* The largest TLS 1.2 record on the wire (header, 16 KiB of data, expansion). */
#define MMR_TLS_MAX_RECORD (5 + 16384 + 2048)
/* Ciphertext a connection holds before its plaintext is read: feeding more
 * is refused (MMR_ETOOBIG), so a peer cannot make us buffer without bound. */
#define MMR_TLS_MAX_INPUT (64 * 1024 + MMR_TLS_MAX_RECORD)

/* ---- server configuration --------------------------------------------------- */

enum mmr_tls_client_auth {
    /* No client certificate is asked for. */
    MMR_TLS_CLIENT_CERT_NONE,
    /* One is asked for, and the handshake succeeds with none, a valid one or
     * an invalid one: mmr_tls_conn_peer_cert() tells which. This lets one
     * listener serve enrollment (no certificate yet) and everything else. */
    MMR_TLS_CLIENT_CERT_OPTIONAL,
    /* The handshake fails unless the client presents a valid certificate. */
    MMR_TLS_CLIENT_CERT_REQUIRED,
};

struct mmr_tls_server_opts {
    const char *cert_chain_pem; /* the server certificate, then the CAs sent with it */
    const struct mmr_key *key;  /* the server certificate's key (copied) */
    const char *client_ca_pem;  /* CAs that issue client certificates (unless NONE) */
    enum mmr_tls_client_auth client_auth;
    uint32_t ticket_lifetime_s; /* session tickets: lifetime and key rotation; 0: 1 day */
};

/* Shared by all server connections; read-only once made. */
struct mmr_tls_server;

int mmr_tls_server_new(const struct mmr_tls_server_opts *opts, struct mmr_tls_server **out);
void mmr_tls_server_free(struct mmr_tls_server *srv);

/* ---- client configuration --------------------------------------------------- */

/* How a client trusts the server: exactly one of ca_pem and pin_sha256.
 * Either way the server certificate must be for a TLS server and name the
 * host connected to (DNS name or IP address in its subjectAltName). */
struct mmr_tls_client_opts {
    /* The server's chain must lead to one of these CA certificates. */
    const char *ca_pem;
    /* The server's presented chain must contain the CA certificate whose
     * SHA-256 fingerprint (of its DER) is this (64 hex digits, "sha256:"
     * prefix allowed), and the server certificate must verify up to it. */
    const char *pin_sha256;
    /* Optional client certificate (then its chain) and its key. */
    const char *cert_chain_pem;
    const struct mmr_key *key;
};

/* Trust, identity, and the last session (offered again for resumption).
 * One client may serve connections on several threads at once. */
struct mmr_tls_client;

int mmr_tls_client_new(const struct mmr_tls_client_opts *opts, struct mmr_tls_client **out);
void mmr_tls_client_free(struct mmr_tls_client *cli);
/* Drops the saved session: the next connection makes a full handshake. */
void mmr_tls_client_forget_session(struct mmr_tls_client *cli);

/* ---- the connection engine ---------------------------------------------------- */

/* One TLS connection over memory. The caller feeds ciphertext received from
 * the peer, reads plaintext, writes plaintext, and sends whatever
 * mmr_tls_conn_take_output() hands back. No sockets, no blocking. */
struct mmr_tls_conn;

/* A server-side connection; srv must outlive it. */
int mmr_tls_conn_new(struct mmr_tls_server *srv, struct mmr_tls_conn **out);
/* A client-side connection to host (a DNS name or an IP literal, checked
 * against the server certificate). Offers cli's saved session for host; cli
 * must outlive the connection. Call mmr_tls_conn_handshake() to start. */
int mmr_tls_conn_new_client(struct mmr_tls_client *cli, const char *host,
                            struct mmr_tls_conn **out);
void mmr_tls_conn_free(struct mmr_tls_conn *c);

/* What handshake and read report besides an error (errors are negative
 * MMR_E* codes with the message set; after one, every call repeats it). */
enum mmr_tls_status {
    MMR_TLS_OK = 0,         /* done: the handshake finished, or bytes were read */
    MMR_TLS_WANT_INPUT = 1, /* send pending output, feed more ciphertext, call again */
    MMR_TLS_EOF = 2,        /* the peer closed the session cleanly (close_notify) */
};

/* Hands ciphertext from the peer to the connection. MMR_ETOOBIG when more
 * than MMR_TLS_MAX_INPUT bytes would wait unread. */
int mmr_tls_conn_feed(struct mmr_tls_conn *c, const void *data, size_t len);

/* Advances the handshake: MMR_TLS_OK once finished, MMR_TLS_WANT_INPUT, or
 * an error explaining the refusal ("client certificate 'x' is not signed by
 * our CA", "client sent plain text instead of TLS (it begins "GET /")", "server
 * certificate chain does not contain the pinned CA sha256:..."). A refusal
 * may leave an alert in the output: send it before closing. */
int mmr_tls_conn_handshake(struct mmr_tls_conn *c);

/* Reads plaintext (finishing the handshake first if needed): MMR_TLS_OK with
 * *n > 0 bytes, MMR_TLS_WANT_INPUT, MMR_TLS_EOF, or an error. Call until it
 * stops returning MMR_TLS_OK: one feed may hold several records. */
int mmr_tls_conn_read(struct mmr_tls_conn *c, void *buf, size_t cap, size_t *n);

/* Encrypts all of data into the output. Only after the handshake. */
int mmr_tls_conn_write(struct mmr_tls_conn *c, const void *data, size_t len);

/* Takes the ciphertext waiting to be sent (allocated; the caller frees it
 * after sending), or NULL with *len == 0 when there is none. */
char *mmr_tls_conn_take_output(struct mmr_tls_conn *c, size_t *len);

/* Queues a close_notify alert in the output; no more writes afterwards. */
int mmr_tls_conn_close_notify(struct mmr_tls_conn *c);

bool mmr_tls_conn_handshake_done(const struct mmr_tls_conn *c);
/* True when the handshake resumed an earlier session (no certificates or
 * signatures exchanged). */
bool mmr_tls_conn_resumed(const struct mmr_tls_conn *c);
/* The negotiated cipher suite's name, or "" before the handshake. */
const char *mmr_tls_conn_cipher(const struct mmr_tls_conn *c);

/* The peer's certificate after the handshake. Returns 0 when it presented
 * one that verified (for a resumed session: it verified then, and it has not
 * expired since); MMR_ENOENT when it presented none; MMR_EPERM when it
 * presented one that did not verify, with the reason ("client certificate
 * 'dev-1' expired at ..."). *out is filled whenever a certificate was
 * presented, zeroed otherwise. On the server, also check the certificate
 * against the device table (revocation) on every connection, resumed or not. */
int mmr_tls_conn_peer_cert(const struct mmr_tls_conn *c, struct mmr_cert_info *out);

/* The certificates the peer presented, leaf first, as PEM (allocated). After
 * a resumed handshake only the leaf is known. MMR_ENOENT when none. */
int mmr_tls_conn_peer_chain_pem(const struct mmr_tls_conn *c, char **out);

/* Client with a pin, after a full handshake: the pinned CA certificate found
 * in the server's chain, as PEM (allocated), for the enrollment to keep as its
 * CA. MMR_ENOENT otherwise. */
int mmr_tls_conn_pinned_ca_pem(const struct mmr_tls_conn *c, char **out);

/* ---- blocking client stream (shared/tls_client.c) ------------------------------ */

/* A TLS connection over TCP for a worker thread: every call blocks until done,
 * failed or out of time. Runs a private libuv loop, so it is portable.
 * A process using it must ignore SIGPIPE (writes to a closed socket). */
struct mmr_tls_stream;

/* Resolves host, connects to port, and completes the handshake and the
 * server's verification within timeout_ms (name resolution itself is bounded
 * by the system resolver's own timeout). Messages start with "host:port: ". */
int mmr_tls_stream_connect(struct mmr_tls_client *cli, const char *host, uint16_t port,
                           int timeout_ms, struct mmr_tls_stream **out);
/* Sends all of data within timeout_ms. */
int mmr_tls_stream_write_all(struct mmr_tls_stream *s, const void *data, size_t len,
                             int timeout_ms);
/* Waits up to timeout_ms for plaintext: 0 with *n > 0 bytes, or 0 with
 * *n == 0 when the server closed the session cleanly. MMR_ETIMEDOUT, or
 * MMR_ECONN when the connection ends without close_notify. */
int mmr_tls_stream_read(struct mmr_tls_stream *s, void *buf, size_t cap, int timeout_ms, size_t *n);
/* The connection engine, for mmr_tls_conn_resumed, _peer_cert, _pinned_ca_pem. */
struct mmr_tls_conn *mmr_tls_stream_conn(struct mmr_tls_stream *s);
/* Sends close_notify (briefly, best effort), closes the socket and frees. */
void mmr_tls_stream_close(struct mmr_tls_stream *s);

#endif
