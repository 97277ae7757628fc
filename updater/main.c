/* mamori-updater: verifies, stages and swaps agent updates, and rolls back.
 * This build carries only its command-line shell; the update machinery
 * arrives with issue 7 (docs/architecture.md, "Status of the tree"). */
#include <stdio.h>
#include <string.h>

#include "mamori_version.h"

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("mamori-updater %s (%s)\n", MMR_VERSION, MMR_GIT_COMMIT);
        return 0;
    }
    fprintf(argc == 2 && strcmp(argv[1], "--help") == 0 ? stdout : stderr,
            "Usage: mamori-updater [--version | --help]\n"
            "Installs signed Mamori agent updates; no update commands are built in this "
            "version.\n");
    return argc == 2 && strcmp(argv[1], "--help") == 0 ? 0 : 1;
}
