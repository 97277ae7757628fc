# Finds every external library through pkg-config (or by hand for mbedTLS,
# which ships no .pc file in Debian 12) and names the Debian package to install
# when one is missing.
find_package(PkgConfig REQUIRED)

function(mmr_require_pkg target module debian_pkg)
    pkg_check_modules(${target} QUIET IMPORTED_TARGET ${module})
    if(NOT ${target}_FOUND)
        message(FATAL_ERROR "Missing dependency '${module}': install the Debian package "
                            "'${debian_pkg}' (or run scripts/install-deps as root).")
    endif()
endfunction()

mmr_require_pkg(LIBUV libuv libuv1-dev)
mmr_require_pkg(SQLITE sqlite3 libsqlite3-dev)
mmr_require_pkg(LIBARCHIVE libarchive libarchive-dev)
mmr_require_pkg(YARA yara libyara-dev)
mmr_require_pkg(JANSSON jansson libjansson-dev)
mmr_require_pkg(ZLIB zlib zlib1g-dev)

find_path(MBEDTLS_INCLUDE_DIR mbedtls/ssl.h)
find_library(MBEDTLS_LIB mbedtls)
find_library(MBEDX509_LIB mbedx509)
find_library(MBEDCRYPTO_LIB mbedcrypto)
if(NOT MBEDTLS_INCLUDE_DIR OR NOT MBEDTLS_LIB OR NOT MBEDX509_LIB OR NOT MBEDCRYPTO_LIB)
    message(FATAL_ERROR "Missing dependency 'mbedtls': install the Debian package "
                        "'libmbedtls-dev' (or run scripts/install-deps as root).")
endif()
add_library(mmr_mbedtls INTERFACE)
target_include_directories(mmr_mbedtls INTERFACE ${MBEDTLS_INCLUDE_DIR})
target_link_libraries(mmr_mbedtls INTERFACE ${MBEDTLS_LIB} ${MBEDX509_LIB} ${MBEDCRYPTO_LIB})

# http-parser ships no .pc file either.
find_path(HTTP_PARSER_INCLUDE_DIR http_parser.h)
find_library(HTTP_PARSER_LIB http_parser)
if(NOT HTTP_PARSER_INCLUDE_DIR OR NOT HTTP_PARSER_LIB)
    message(FATAL_ERROR "Missing dependency 'http-parser': install the Debian package "
                        "'libhttp-parser-dev' (or run scripts/install-deps as root).")
endif()

# libuv's .pc file names the Windows system libraries it needs; the rest are
# ours (platform layer) and the static libraries' (bcrypt for mbedTLS's RNG,
# advapi32 for yara and SQLite).
if(WIN32)
    set(MMR_WIN32_SYSTEM_LIBS ws2_32 iphlpapi userenv psapi dbghelp ole32 uuid shell32
        user32 advapi32 bcrypt)
else()
    set(MMR_WIN32_SYSTEM_LIBS)
endif()

# Windows tests use our own runner (test/wincrit) instead of Criterion.
if(MMR_TESTS AND NOT WIN32)
    mmr_require_pkg(CRITERION criterion libcriterion-dev)
endif()
