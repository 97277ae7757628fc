/* Compiler attributes used across the tree. MMR_PRINTF marks printf-like
 * functions: mingw-w64 builds use its C99 stdio (__USE_MINGW_ANSI_STDIO), so
 * the checker must know %zu and %lld are fine there (gnu_printf), while
 * plain "printf" would mean Microsoft's older rules. */
#ifndef MMR_COMPILER_H
#define MMR_COMPILER_H

#if defined(__MINGW32__)
#define MMR_PRINTF(fmt_index, first_arg) __attribute__((format(gnu_printf, fmt_index, first_arg)))
#else
#define MMR_PRINTF(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#endif

#endif
