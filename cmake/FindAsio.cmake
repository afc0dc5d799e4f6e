# Finds standalone (non-Boost) Asio, a header-only library (Debian: libasio-dev).
# Provides the imported target Asio::asio.
find_path(Asio_INCLUDE_DIR NAMES asio.hpp asio/version.hpp)
if(Asio_INCLUDE_DIR AND EXISTS "${Asio_INCLUDE_DIR}/asio/version.hpp")
  file(STRINGS "${Asio_INCLUDE_DIR}/asio/version.hpp" _asio_version_line REGEX "^#define ASIO_VERSION [0-9]+")
  string(REGEX REPLACE "^#define ASIO_VERSION ([0-9]+).*" "\\1" _asio_version "${_asio_version_line}")
  math(EXPR _major "${_asio_version} / 100000")
  math(EXPR _minor "${_asio_version} / 100 % 1000")
  math(EXPR _patch "${_asio_version} % 100")
  set(Asio_VERSION "${_major}.${_minor}.${_patch}")
endif()
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Asio REQUIRED_VARS Asio_INCLUDE_DIR VERSION_VAR Asio_VERSION)
if(Asio_FOUND AND NOT TARGET Asio::asio)
  add_library(Asio::asio INTERFACE IMPORTED)
  set_target_properties(Asio::asio PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${Asio_INCLUDE_DIR}"
    # Asio 1.22 only recognises clang's coroutines through libc++'s <experimental/coroutine>; clang 14
    # with libstdc++'s <coroutine> works, so say so.
    # Asio 1.22 decides between aligned_alloc/free and operator new/delete for its recycled handler
    # and coroutine-frame memory from a libstdc++ macro that is only defined once a standard header
    # has been included: a file that includes Asio first gets the other pair, so memory allocated
    # in one file is freed with the wrong function in another (ASan: alloc-dealloc-mismatch). One
    # choice for every file: operator new/delete.
    # Asio recycles the memory of handlers, coroutine frames and posted functions through a
    # per-thread cache of 2 blocks per kind by default; a proxied request keeps more than 2 of each
    # alive at once (frames of nested coroutines, a socket op, a yamux op, its posted completion),
    # so the rest went to malloc on every request. 32 keeps them all recycled. It must be the same
    # in every file (the cache layout depends on it), hence here, for every target. (Issue 6.)
    INTERFACE_COMPILE_DEFINITIONS "ASIO_RECYCLING_ALLOCATOR_CACHE_SIZE=32;ASIO_NO_DEPRECATED;ASIO_DISABLE_STD_ALIGNED_ALLOC;$<$<CXX_COMPILER_ID:Clang>:ASIO_HAS_CO_AWAIT=1>"
    INTERFACE_LINK_LIBRARIES Threads::Threads)
endif()
mark_as_advanced(Asio_INCLUDE_DIR)
