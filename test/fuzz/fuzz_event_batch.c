/* libFuzzer target: the event-batch parser the server runs on every
 * POST /v1/events body from an agent. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "server/event_batch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mmr_event_batch b;
    if (mmr_event_batch_parse((const char *)data, size, &b) == 0) {
        for (size_t i = 0; i < b.count; i++) {
            if (b.events[i].seq < 1 || b.events[i].severity < 0 || b.events[i].severity > 3 ||
                (i > 0 && b.events[i].seq <= b.events[i - 1].seq))
                abort();
        }
        mmr_event_batch_free(&b);
    }
    return 0;
}
