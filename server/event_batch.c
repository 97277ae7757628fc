/* Parsing and validation of event batches sent by agents. */
#include "server/event_batch.h"

#include <stdlib.h>
#include <string.h>

#include "shared/err.h"
#include "shared/json.h"
#include "shared/mem.h"

static bool printable_type(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MMR_STORE_NAME_MAX)
        return false;
    for (; *s; s++)
        if (*s <= 0x20 || *s >= 0x7f)
            return false;
    return true;
}

static int parse_event(json_t *e, size_t i, int64_t prev_seq, struct mmr_store_event_in *out,
                       char **data_out)
{
    char path[48];
    snprintf(path, sizeof(path), "$.events[%zu]", i);
    if (!json_is_object(e))
        return mmr_err_set(MMR_EINVAL, "%s: expected an object", path);
    int64_t seq, time, sev;
    const char *type;
    json_t *data = NULL;
    int rc;
    if ((rc = mmr_json_get_int(e, path, "seq", true, 1, INT64_MAX, &seq)) < 0 ||
        (rc = mmr_json_get_int(e, path, "time", true, 0, INT64_MAX, &time)) < 0 ||
        (rc = mmr_json_get_int(e, path, "severity", true, 0, 3, &sev)) < 0 ||
        (rc = mmr_json_get_str(e, path, "type", true, &type)) < 0 ||
        (rc = mmr_json_get_object(e, path, "data", false, &data)) < 0)
        return rc;
    if (seq <= prev_seq)
        return mmr_err_set(MMR_EINVAL, "%s.seq: %lld does not follow %lld (seqs must increase)",
                           path, (long long)seq, (long long)prev_seq);
    if (!printable_type(type))
        return mmr_err_set(MMR_EINVAL, "%s.type: expected 1..%d printable ASCII characters", path,
                           MMR_STORE_NAME_MAX);
    char *text = data ? mmr_json_dump_line(data) : mmr_strdup("{}");
    if (strlen(text) > MMR_STORE_EVENT_DATA_MAX) {
        free(text);
        return mmr_err_set(MMR_ETOOBIG, "%s.data: over %d bytes", path, MMR_STORE_EVENT_DATA_MAX);
    }
    out->seq = seq;
    out->time = time;
    out->severity = (int)sev;
    out->type = type;
    out->data = text;
    *data_out = text;
    return 0;
}

int mmr_event_batch_parse(const char *body, size_t len, struct mmr_event_batch *out)
{
    memset(out, 0, sizeof(*out));
    json_t *doc;
    int rc = mmr_json_parse_object(body, len, 8, &doc);
    if (rc < 0)
        return rc;
    out->doc_ = doc;
    out->after = -1;
    json_t *events;
    if ((rc = mmr_json_get_int(doc, "$", "after", false, -1, INT64_MAX, &out->after)) < 0 ||
        (rc = mmr_json_get_array(doc, "$", "events", true, &events)) < 0)
        goto fail;
    size_t n = json_array_size(events);
    if (n > MMR_STORE_EVENTS_MAX) {
        rc = mmr_err_set(MMR_ETOOBIG, "$.events: %zu events, over the limit of %d", n,
                         MMR_STORE_EVENTS_MAX);
        goto fail;
    }
    out->events = mmr_calloc(n, sizeof(*out->events));
    out->data_ = mmr_calloc(n, sizeof(char *));
    int64_t prev = 0;
    for (size_t i = 0; i < n; i++) {
        rc = parse_event(json_array_get(events, i), i, prev, &out->events[i], &out->data_[i]);
        if (rc < 0)
            goto fail;
        out->count++;
        prev = out->events[i].seq;
    }
    return 0;
fail:
    mmr_event_batch_free(out);
    return rc;
}

void mmr_event_batch_free(struct mmr_event_batch *b)
{
    if (b->data_)
        for (size_t i = 0; i < b->count; i++)
            free(b->data_[i]);
    free(b->data_);
    free(b->events);
    json_decref(b->doc_);
    memset(b, 0, sizeof(*b));
}
