# Finds llhttp, the HTTP/1 parser of Node.js, as Debian's node-llhttp package ships it: a header in
# /usr/share/include/llhttp and the C sources (llhttp.c, api.c, http.c) in /usr/share/llhttp, with
# no prebuilt library. We compile those sources in place (never copied into this repository) into
# a static library and provide the target llhttp::llhttp.
#
# llhttp is built in strict mode (LLHTTP_STRICT_MODE=1): it then insists on CRLF after the start
# line and the header section and rejects several loose spellings. Third-party code: built without
# our warning flags.
find_path(llhttp_INCLUDE_DIR NAMES llhttp.h PATH_SUFFIXES llhttp HINTS /usr/share/include)
find_path(llhttp_SOURCE_DIR NAMES llhttp.c PATHS /usr/share/llhttp NO_DEFAULT_PATH)
# The three sources, for targets that must compile them in themselves (the fuzz targets, so that
# llhttp's state machine is instrumented too).
set(llhttp_SOURCES)
foreach(_src llhttp.c api.c http.c)
  if(llhttp_SOURCE_DIR AND EXISTS "${llhttp_SOURCE_DIR}/${_src}")
    list(APPEND llhttp_SOURCES "${llhttp_SOURCE_DIR}/${_src}")
  endif()
endforeach()
list(LENGTH llhttp_SOURCES _llhttp_source_count)
if(NOT _llhttp_source_count EQUAL 3)
  set(llhttp_SOURCES)
endif()

if(llhttp_INCLUDE_DIR AND EXISTS "${llhttp_INCLUDE_DIR}/llhttp.h")
  file(STRINGS "${llhttp_INCLUDE_DIR}/llhttp.h" _llhttp_version_lines REGEX "^#define LLHTTP_VERSION_(MAJOR|MINOR|PATCH) ")
  foreach(_part MAJOR MINOR PATCH)
    string(REGEX REPLACE ".*#define LLHTTP_VERSION_${_part} ([0-9]+).*" "\\1" _llhttp_${_part} "${_llhttp_version_lines}")
  endforeach()
  set(llhttp_VERSION "${_llhttp_MAJOR}.${_llhttp_MINOR}.${_llhttp_PATCH}")
endif()

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(llhttp REQUIRED_VARS llhttp_INCLUDE_DIR llhttp_SOURCES VERSION_VAR llhttp_VERSION)

if(llhttp_FOUND AND NOT TARGET llhttp::llhttp)
  add_library(llhttp_static STATIC ${llhttp_SOURCES})
  set_target_properties(llhttp_static PROPERTIES
    LINKER_LANGUAGE C
    POSITION_INDEPENDENT_CODE ON
    C_STANDARD 99
    C_EXTENSIONS OFF)
  target_include_directories(llhttp_static SYSTEM PUBLIC ${llhttp_INCLUDE_DIR})
  target_compile_definitions(llhttp_static PUBLIC LLHTTP_STRICT_MODE=1)
  # Generated state-machine code: keep its diagnostics out of our builds, whatever the flags.
  target_compile_options(llhttp_static PRIVATE -w)
  add_library(llhttp::llhttp ALIAS llhttp_static)
endif()
mark_as_advanced(llhttp_INCLUDE_DIR llhttp_SOURCE_DIR)
