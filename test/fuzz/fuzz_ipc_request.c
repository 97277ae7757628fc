/* libFuzzer target: the agent's local IPC input path (line framing with a
 * limit, then the request envelope), as mamori-agent runs it on every byte a
 * local client sends. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/ipc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_line(const char *line, size_t len, void *ud)
{
    (void)ud;
    if (!line)
        return 0; /* oversized: the agent replies ETOOBIG */
    struct mmr_ipc_request req;
    if (mmr_ipc_request_parse(line, len, &req) == 0) {
        if (!req.cmd || !req.args)
            abort();
        char *reply = mmr_ipc_reply_ok(req.id, NULL);
        free(reply);
    } else {
        char *reply = mmr_ipc_reply_error(req.id, MMR_EINVAL, mmr_err_msg());
        free(reply);
    }
    mmr_ipc_request_free(&req);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The first byte picks a chunk size, so splits across reads are covered. */
    size_t chunk = size ? (size_t)data[0] % 17 + 1 : 1;
    struct mmr_linebuf lb;
    mmr_linebuf_init(&lb, 4096);
    for (size_t off = size ? 1 : 0; off < size; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        mmr_linebuf_feed(&lb, (const char *)data + off, n, on_line, NULL);
    }
    mmr_linebuf_free(&lb);
    return 0;
}
