/* IPC commands over the telemetry path: "selftest" (admin: enqueue test
 * events that travel the whole path to the server, so the helpdesk can prove
 * the pipeline), "events" (admin: the most recent events still queued) and
 * "sync" (admin: check in and upload now, not at the next cycle). */
#ifndef MMR_EVENTS_H
#define MMR_EVENTS_H

struct mmr_control;
struct mmr_agent;

void mmr_events_register(struct mmr_control *ctl, struct mmr_agent *agent);

#endif
