/* Windows secure random bytes from the system's preferred generator
 * (BCryptGenRandom). */
#include "shared/platform.h"

#include "shared/err.h"
#include "shared/platform/win32/win32.h"

#include <bcrypt.h>

int mmr_random_bytes(void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        ULONG n = len > 0x40000000u ? 0x40000000u : (ULONG)len;
        NTSTATUS st = BCryptGenRandom(NULL, p, n, BCRYPT_USE_SYSTEM_PREFERRED_RNG);
        if (!BCRYPT_SUCCESS(st))
            return mmr_err_set(MMR_EIO,
                               "cannot read random bytes: BCryptGenRandom failed "
                               "(status 0x%08lx)",
                               (unsigned long)st);
        p += n;
        len -= n;
    }
    return 0;
}
