/* Windows stand-in for Criterion's <criterion/criterion.h>: the subset of its API that
 * Mamori's tests use (Test, TestSuite, cr_assert/cr_expect and their variants, cr_log_*),
 * run by test/wincrit/runner_win32.c with one child process per test. */
#ifndef WCR_CRITERION_H
#define WCR_CRITERION_H

/* Criterion's headers sit in /usr/include, so GCC keeps quiet about what its macros expand
 * to in the tests (e.g. comparing a size_t with an int constant). The tests are written
 * against that: behave the same here. */
#pragma GCC system_header

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* ---- tests and suites ---------------------------------------------------------------- */

/* What Test() and TestSuite() accept after the names. Zero means "not set": a test's
 * option falls back to its suite's, then to the runner's default. */
struct wcr_options {
    int wcr_unused_; /* lets an option list be empty: { .wcr_unused_ = 0, __VA_ARGS__ } */
    void (*init)(void);
    void (*fini)(void);
    double timeout; /* seconds */
    int signal;     /* only SIGABRT: the test passes when it aborts */
    int exit_code;  /* the test passes when it exits with this code */
    bool disabled;
    const char *description;
};

struct wcr_test {
    const char *suite;
    const char *name;
    void (*fn)(void);
    const char *file;
    int line;
    struct wcr_options opts;
    struct wcr_test *next;
};

struct wcr_suite {
    const char *name;
    struct wcr_options opts;
    struct wcr_suite *next;
};

void wcr_register_test(struct wcr_test *test);
void wcr_register_suite(struct wcr_suite *suite);

/* Registration runs from constructors (__attribute__((constructor)), which mingw-w64's
 * CRT calls before main): each test registers itself wherever it is defined, in any
 * order, with no linker script or section-ordering rules to get right, and the runner
 * sorts the list. The struct is declared first and defined last, so that the caller's
 * ';' after TestSuite(...) ends a declaration. */
#define Test(suite, name, ...)                                                                     \
    static void suite##_##name##_impl(void);                                                       \
    static struct wcr_test wcr_test_##suite##_##name;                                              \
    __attribute__((constructor)) static void wcr_register_##suite##_##name(void)                   \
    {                                                                                              \
        wcr_register_test(&wcr_test_##suite##_##name);                                             \
    }                                                                                              \
    static struct wcr_test wcr_test_##suite##_##name = {                                           \
        #suite, #name, suite##_##name##_impl, __FILE__, __LINE__, {.wcr_unused_ = 0, __VA_ARGS__}, \
        NULL};                                                                                     \
    static void suite##_##name##_impl(void)

#define TestSuite(suite, ...)                                                                      \
    static struct wcr_suite wcr_suite_##suite;                                                     \
    __attribute__((constructor)) static void wcr_register_suite_##suite(void)                      \
    {                                                                                              \
        wcr_register_suite(&wcr_suite_##suite);                                                    \
    }                                                                                              \
    static struct wcr_suite wcr_suite_##suite = {#suite, {.wcr_unused_ = 0, __VA_ARGS__}, NULL}

/* ---- failure reports ----------------------------------------------------------------- */

/* A value on one side of a failed comparison, kept for printing. */
enum wcr_kind { WCR_OTHER, WCR_SIGNED, WCR_UNSIGNED, WCR_FLOAT, WCR_POINTER };

struct wcr_value {
    enum wcr_kind kind;
    long long i;
    unsigned long long u;
    long double f;
    const volatile void *p;
};

static inline struct wcr_value wcr_signed_(long long v)
{
    return (struct wcr_value){.kind = WCR_SIGNED, .i = v};
}

static inline struct wcr_value wcr_unsigned_(unsigned long long v)
{
    return (struct wcr_value){.kind = WCR_UNSIGNED, .u = v};
}

static inline struct wcr_value wcr_float_(long double v)
{
    return (struct wcr_value){.kind = WCR_FLOAT, .f = v};
}

static inline struct wcr_value wcr_pointer_(const volatile void *v)
{
    return (struct wcr_value){.kind = WCR_POINTER, .p = v};
}

/* Anything that == accepts and is not arithmetic is a pointer. */
#define WCR_VALUE_(x)                                                                              \
    _Generic((x), _Bool                                                                            \
             : wcr_unsigned_, char                                                                 \
             : wcr_signed_, signed char                                                            \
             : wcr_signed_, short                                                                  \
             : wcr_signed_, int                                                                    \
             : wcr_signed_, long                                                                   \
             : wcr_signed_, long long                                                              \
             : wcr_signed_, unsigned char                                                          \
             : wcr_unsigned_, unsigned short                                                       \
             : wcr_unsigned_, unsigned int                                                         \
             : wcr_unsigned_, unsigned long                                                        \
             : wcr_unsigned_, unsigned long long                                                   \
             : wcr_unsigned_, float                                                                \
             : wcr_float_, double                                                                  \
             : wcr_float_, long double                                                             \
             : wcr_float_, default                                                                 \
             : wcr_pointer_)(x)

/* The format strings of the reports start with one space that the runner drops: it lets
 * "" __VA_ARGS__ be empty without an empty format string (which -Wformat rejects). */
#define WCR_PRINTF_(fmt, args) __attribute__((format(gnu_printf, fmt, args)))

void wcr_report_(const char *file, int line, const char *expr, const char *fmt, ...)
    WCR_PRINTF_(4, 5);
void wcr_report_cmp_(const char *file, int line, const char *expr, struct wcr_value actual,
                     struct wcr_value expected, const char *fmt, ...) WCR_PRINTF_(6, 7);
void wcr_report_str_(const char *file, int line, const char *expr, const char *actual,
                     const char *expected, const char *fmt, ...) WCR_PRINTF_(6, 7);
/* Ends the current test after a failed cr_assert: back to the runner, which runs .fini. */
_Noreturn void wcr_abort_test_(void);
/* 0 for strcmp(a, b) == 0, else nonzero; NULL equals nothing, not even NULL. */
int wcr_strcmp_(const char *a, const char *b);

/* fatal is a constant: with 1, the compiler sees that a failed cr_assert does not
 * return, as it does with Criterion's. */
#define wcr_check_(fatal, cond, expr, ...)                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            wcr_report_(__FILE__, __LINE__, expr, " " __VA_ARGS__);                                \
            if (fatal)                                                                             \
                wcr_abort_test_();                                                                 \
        }                                                                                          \
    } while (0)

/* Each side is evaluated once, then compared with the operator itself, as Criterion does:
 * the usual C conversions apply. */
#define wcr_cmp_(fatal, op, a, b, ...)                                                             \
    do {                                                                                           \
        __auto_type wcr_a_ = (a);                                                                  \
        __auto_type wcr_b_ = (b);                                                                  \
        if (!(wcr_a_ op wcr_b_)) {                                                                 \
            wcr_report_cmp_(__FILE__, __LINE__, "(" #a ") " #op " (" #b ")", WCR_VALUE_(wcr_a_),   \
                            WCR_VALUE_(wcr_b_), " " __VA_ARGS__);                                  \
            if (fatal)                                                                             \
                wcr_abort_test_();                                                                 \
        }                                                                                          \
    } while (0)

#define wcr_str_(fatal, op, a, b, ...)                                                             \
    do {                                                                                           \
        const char *wcr_a_ = (a);                                                                  \
        const char *wcr_b_ = (b);                                                                  \
        if (!(wcr_a_ && wcr_b_ && wcr_strcmp_(wcr_a_, wcr_b_) op 0)) {                             \
            wcr_report_str_(__FILE__, __LINE__, "(" #a ") " #op " (" #b ")", wcr_a_, wcr_b_,       \
                            " " __VA_ARGS__);                                                      \
            if (fatal)                                                                             \
                wcr_abort_test_();                                                                 \
        }                                                                                          \
    } while (0)

#define wcr_null_(fatal, op, v, ...)                                                               \
    do {                                                                                           \
        const volatile void *wcr_v_ = (v);                                                         \
        if (!(wcr_v_ op NULL)) {                                                                   \
            wcr_report_cmp_(__FILE__, __LINE__, "(" #v ") " #op " NULL", wcr_pointer_(wcr_v_),     \
                            wcr_pointer_(NULL), " " __VA_ARGS__);                                  \
            if (fatal)                                                                             \
                wcr_abort_test_();                                                                 \
        }                                                                                          \
    } while (0)

/* ---- assertions: cr_assert_* end the test, cr_expect_* mark it failed and go on ----- */

#define cr_assert(cond, ...)     wcr_check_(1, cond, #cond, __VA_ARGS__)
#define cr_expect(cond, ...)     wcr_check_(0, cond, #cond, __VA_ARGS__)
#define cr_assert_not(cond, ...) wcr_check_(1, !(cond), "!(" #cond ")", __VA_ARGS__)
#define cr_expect_not(cond, ...) wcr_check_(0, !(cond), "!(" #cond ")", __VA_ARGS__)

#define cr_assert_fail(...)                                                                        \
    do {                                                                                           \
        wcr_report_(__FILE__, __LINE__, NULL, " " __VA_ARGS__);                                    \
        wcr_abort_test_();                                                                         \
    } while (0)
#define cr_expect_fail(...) wcr_report_(__FILE__, __LINE__, NULL, " " __VA_ARGS__)

#define cr_assert_eq(a, b, ...)  wcr_cmp_(1, ==, a, b, __VA_ARGS__)
#define cr_expect_eq(a, b, ...)  wcr_cmp_(0, ==, a, b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...) wcr_cmp_(1, !=, a, b, __VA_ARGS__)
#define cr_expect_neq(a, b, ...) wcr_cmp_(0, !=, a, b, __VA_ARGS__)
#define cr_assert_lt(a, b, ...)  wcr_cmp_(1, <, a, b, __VA_ARGS__)
#define cr_expect_lt(a, b, ...)  wcr_cmp_(0, <, a, b, __VA_ARGS__)
#define cr_assert_leq(a, b, ...) wcr_cmp_(1, <=, a, b, __VA_ARGS__)
#define cr_expect_leq(a, b, ...) wcr_cmp_(0, <=, a, b, __VA_ARGS__)
#define cr_assert_gt(a, b, ...)  wcr_cmp_(1, >, a, b, __VA_ARGS__)
#define cr_expect_gt(a, b, ...)  wcr_cmp_(0, >, a, b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...) wcr_cmp_(1, >=, a, b, __VA_ARGS__)
#define cr_expect_geq(a, b, ...) wcr_cmp_(0, >=, a, b, __VA_ARGS__)

#define cr_assert_str_eq(a, b, ...)  wcr_str_(1, ==, a, b, __VA_ARGS__)
#define cr_expect_str_eq(a, b, ...)  wcr_str_(0, ==, a, b, __VA_ARGS__)
#define cr_assert_str_neq(a, b, ...) wcr_str_(1, !=, a, b, __VA_ARGS__)
#define cr_expect_str_neq(a, b, ...) wcr_str_(0, !=, a, b, __VA_ARGS__)

#define cr_assert_null(v, ...)     wcr_null_(1, ==, v, __VA_ARGS__)
#define cr_expect_null(v, ...)     wcr_null_(0, ==, v, __VA_ARGS__)
#define cr_assert_not_null(v, ...) wcr_null_(1, !=, v, __VA_ARGS__)
#define cr_expect_not_null(v, ...) wcr_null_(0, !=, v, __VA_ARGS__)

/* ---- logging ------------------------------------------------------------------------- */

enum wcr_log_level { WCR_LOG_INFO, WCR_LOG_WARN, WCR_LOG_ERROR };

void wcr_log_(enum wcr_log_level level, const char *fmt, ...) WCR_PRINTF_(2, 3);

#define cr_log_info(...)  wcr_log_(WCR_LOG_INFO, __VA_ARGS__)
#define cr_log_warn(...)  wcr_log_(WCR_LOG_WARN, __VA_ARGS__)
#define cr_log_error(...) wcr_log_(WCR_LOG_ERROR, __VA_ARGS__)

#endif
