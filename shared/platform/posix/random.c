/* POSIX secure random bytes from the kernel (getrandom). */
#include "shared/platform.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "shared/err.h"

int mmr_random_bytes(void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return mmr_err_set(MMR_EIO, "cannot read random bytes: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return 0;
}
