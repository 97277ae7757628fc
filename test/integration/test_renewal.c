/* Integration: device certificate renewal at two-thirds of its life, over
 * mTLS, with a real server issuing one-minute certificates. */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fleet.h"
#include "proc.h"
#include "shared/mem.h"
#include "shared/platform.h"

static struct fleet f;
static struct fleet_server srv;

static void setup(void)
{
    fleet_init(&f);
    /* One-minute certificates: the agent renews after ~40 s (two-thirds,
     * with a 6 s backdate). */
    fleet_server_init(&f, &srv, "[pki]\ndevice_cert_lifetime = 60s\n");
    fleet_server_start(&srv);
}

static void teardown(void)
{
    fleet_server_stop(&srv);
    fleet_cleanup(&f);
}

TestSuite(renewal, .init = setup, .fini = teardown);

static char *serial_on_server(const char *device)
{
    json_t *d = fleet_adm_json(&srv, "device", "show", device, NULL);
    cr_assert(d, "device show failed");
    char *serial = mmr_strdup(fleet_json_str(d, "cert_serial"));
    json_decref(d);
    return serial;
}

Test(renewal, renews_at_two_thirds_and_keeps_working)
{
    char *token = fleet_token_create(&srv, "City", "staff", 1, NULL);
    struct fleet_agent a;
    fleet_agent_init(&f, &a, "renewer", &srv, NULL, token, NULL);
    fleet_agent_start_enrolled(&a);
    json_t *st = fleet_agent_status(&a);
    cr_assert(st);
    char *device = mmr_strdup(fleet_json_str(st, "enrollment.device_id"));
    char *first_expiry = mmr_strdup(fleet_json_str(st, "enrollment.certificate_expires"));
    json_decref(st);
    char *first_serial = serial_on_server(device);

    /* Before two-thirds: a check-in does not renew. */
    struct proc_result res;
    cr_assert_eq(fleet_ctl(&a, &res, "sync", NULL), 0, "%s", res.err);
    proc_result_free(&res);
    sleep(2);
    char *same = serial_on_server(device);
    cr_expect_str_eq(same, first_serial, "renewed too early");
    free(same);

    /* Past two-thirds: the next check-in renews, and the new certificate is
     * the one in use (the server promotes it at its first use). */
    sleep(40);
    bool renewed = false;
    char *expiry = NULL;
    for (int i = 0; i < 20 && !renewed; i++) {
        cr_assert_eq(fleet_ctl(&a, &res, "sync", NULL), 0, "%s", res.err);
        proc_result_free(&res);
        sleep(1);
        st = fleet_agent_status(&a);
        free(expiry);
        expiry = mmr_strdup(fleet_json_str(st, "enrollment.certificate_expires"));
        json_decref(st);
        char *now_serial = serial_on_server(device);
        renewed = strcmp(expiry, first_expiry) != 0 && strcmp(now_serial, first_serial) != 0;
        free(now_serial);
    }
    cr_expect(renewed, "certificate not renewed; expiry still %s", expiry);

    /* The agent keeps checking in with its new certificate. */
    cr_assert_eq(fleet_ctl(&a, &res, "sync", NULL), 0, "%s", res.err);
    proc_result_free(&res);
    sleep(1);
    st = fleet_agent_status(&a);
    cr_expect_str_eq(fleet_json_str(st, "checkin.result"), "ok");
    json_decref(st);

    fleet_agent_stop(&a);
    free(expiry);
    free(first_expiry);
    free(first_serial);
    free(device);
    free(token);
}
