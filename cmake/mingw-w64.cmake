# CMake toolchain file for cross-building Mamori (and its dependencies) for 64-bit Windows
# with Debian's mingw-w64; MMR_WIN64_DEPS (cache or environment variable) names the prefix
# that scripts/windows/build-deps printed.
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)

set(MMR_WIN64_HOST x86_64-w64-mingw32)
set(CMAKE_C_COMPILER ${MMR_WIN64_HOST}-gcc)
set(CMAKE_CXX_COMPILER ${MMR_WIN64_HOST}-g++)
set(CMAKE_RC_COMPILER ${MMR_WIN64_HOST}-windres)
set(CMAKE_AR ${MMR_WIN64_HOST}-ar CACHE FILEPATH "archiver")
set(CMAKE_RANLIB ${MMR_WIN64_HOST}-ranlib CACHE FILEPATH "ranlib")

# The toolchain file is read again for every try_compile: carry the prefix through the
# environment and the try_compile platform variables.
if(NOT MMR_WIN64_DEPS AND DEFINED ENV{MMR_WIN64_DEPS})
    set(MMR_WIN64_DEPS "$ENV{MMR_WIN64_DEPS}")
endif()
set(MMR_WIN64_DEPS "${MMR_WIN64_DEPS}" CACHE PATH "prefix of the Windows dependency build")
set(ENV{MMR_WIN64_DEPS} "${MMR_WIN64_DEPS}")
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES MMR_WIN64_DEPS)

set(CMAKE_FIND_ROOT_PATH /usr/${MMR_WIN64_HOST})
if(MMR_WIN64_DEPS)
    list(PREPEND CMAKE_FIND_ROOT_PATH "${MMR_WIN64_DEPS}")
    # pkg-config must see only the Windows .pc files, never the host's.
    set(ENV{PKG_CONFIG_LIBDIR} "${MMR_WIN64_DEPS}/lib/pkgconfig")
    set(ENV{PKG_CONFIG_PATH} "")
endif()
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# Static libraries only: the programs must need nothing but system DLLs.
set(CMAKE_FIND_LIBRARY_SUFFIXES .a)

# try_run checks (libarchive's among them) and ctest run Windows programs under Wine;
# CMake 3.25 crashes in such checks without an emulator. Wine need not be installed yet.
find_program(MMR_WINE NAMES wine64 wine)
if(MMR_WINE)
    set(CMAKE_CROSSCOMPILING_EMULATOR "${MMR_WINE}")
else()
    set(CMAKE_CROSSCOMPILING_EMULATOR wine)
endif()
