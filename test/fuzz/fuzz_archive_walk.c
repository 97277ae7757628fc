/* libFuzzer target for agent/scan_archive.c: hostile bytes through the archive
 * walker under tight limits; every member and problem is checked for sanity. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/scan_archive.h"
#include "shared/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_MEMBER_BYTES (256 * 1024)

static void check(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_archive_walk: %s (%s)\n", what, mmr_err_msg());
        abort();
    }
}

static int on_member(const char *path, unsigned depth, const void *data, size_t len, void *ud)
{
    (void)ud;
    check(strncmp(path, "in/", 3) == 0, "path outside the container");
    check(depth >= 1 && depth <= 3, "member deeper than the limit");
    check(len <= MAX_MEMBER_BYTES, "member over its limit");
    /* Touch every byte so that ASan sees a short buffer. */
    const unsigned char *p = data;
    unsigned sum = 0;
    for (size_t i = 0; i < len; i++)
        sum += p[i];
    return sum == 0xffffffffu; /* never: keeps the loop */
}

static void on_problem(const char *path, unsigned depth, enum mmr_scan_archive_reason reason,
                       const char *message, void *ud)
{
    (void)ud;
    check(path[0] != '\0' && message[0] != '\0', "empty problem");
    check(depth <= 3, "problem deeper than the limit");
    check(strcmp(mmr_scan_archive_reason_name(reason), "unknown") != 0, "unknown reason");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mmr_scan_archive_limits lim = {
        .max_depth = 3,
        .max_total_bytes = 4 * 1024 * 1024,
        .max_members = 200,
        .max_ratio = 100,
        .max_member_bytes = MAX_MEMBER_BYTES,
        .ratio_slack = 64 * 1024,
    };
    struct mmr_scan_archive_cb cb = {.member = on_member, .problem = on_problem, .ud = NULL};
    struct mmr_scan_archive_stats st;
    mmr_err_clear();
    int rc = mmr_scan_archive_walk("in", data, size, &lim, &cb, &st);
    check(rc == 0 || rc == MMR_EINVAL || rc == MMR_ETOOBIG || rc == MMR_ECORRUPT ||
              rc == MMR_EUNSUP,
          "unexpected result");
    check(st.bytes <= lim.max_total_bytes + 64 * 1024, "decompressed past the total limit");
    check((rc == 0 || rc == MMR_EINVAL) == (st.problems == 0), "problems and result disagree");
    if (rc != 0)
        check(mmr_err_msg()[0] != '\0', "error without a message");
    return 0;
}
