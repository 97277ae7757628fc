/* UTF-8 command-line arguments and console output on Windows: main()'s argv
 * is converted to the ANSI code page, which loses characters (テスト becomes
 * ??? on a non-Japanese system), so we rebuild it from the UTF-16 command line. */
#include "shared/platform.h"

#include <shellapi.h>
#include <stdlib.h>

#include "shared/mem.h"
#include "shared/platform/win32/win32.h"

void mmr_process_init(int *argc, char ***argv)
{
    SetConsoleOutputCP(CP_UTF8);
    int wargc = 0;
    wchar_t **wargv = CommandLineToArgvW(GetCommandLineW(), &wargc);
    if (!wargv)
        return; /* keep the ANSI argv: better than none */
    char **args = mmr_calloc((size_t)wargc + 1, sizeof(*args));
    for (int i = 0; i < wargc; i++) {
        args[i] = mmr_utf8_from_w(wargv[i]);
        if (!args[i]) {
            /* Unpaired surrogates cannot be UTF-8: keep the ANSI argv. */
            for (int j = 0; j < i; j++)
                free(args[j]);
            free(args);
            LocalFree(wargv);
            return;
        }
    }
    LocalFree(wargv);
    *argc = wargc;
    *argv = args; /* lives as long as the process, like the original argv */
}
