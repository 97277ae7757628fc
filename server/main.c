/* mamori-server: the management server. This build carries only its
 * command-line shell; enrollment, check-in and the admin API arrive with
 * issue 3 (docs/architecture.md, "Status of the tree"). */
#include <stdio.h>
#include <string.h>

#include "mamori_version.h"

static void usage(FILE *out)
{
    fprintf(out, "Usage: mamori-server [--version | --help]\n"
                 "The Mamori management server (enrollment, check-in, telemetry, policy).\n"
                 "No server commands are built in this version.\n");
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("mamori-server %s (%s)\n", MMR_VERSION, MMR_GIT_COMMIT);
        return 0;
    }
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    usage(stderr);
    return 1;
}
