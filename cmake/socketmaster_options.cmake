# Build options and the warning/sanitizer flags every socketmaster target shares.
option(SOCKETMASTER_BUILD_TESTS "Build the test suite" ON)
option(SOCKETMASTER_WERROR "Treat warnings as errors (CI turns this on)" OFF)
option(SOCKETMASTER_FUZZ "Build libFuzzer targets (needs clang)" OFF)
set(SOCKETMASTER_SANITIZE "" CACHE STRING "Sanitizers to build with: empty, 'address,undefined' or 'thread'")

add_library(socketmaster_warnings INTERFACE)
target_compile_options(socketmaster_warnings INTERFACE -Wall -Wextra -Wpedantic
  $<$<BOOL:${SOCKETMASTER_WERROR}>:-Werror>
  # g++ 12 misreads Asio's coroutine-frame allocator (operator new/delete of awaitable_frame_base)
  # as a mismatched pair in some coroutines; a known false positive (GCC PR 109224).
  $<$<COMPILE_LANG_AND_ID:CXX,GNU>:-Wno-mismatched-new-delete>
  # At -O3 (the Release build of the README's main job) g++ 12 flags std::string concatenations
  # with -Wrestrict inside libstdc++'s char_traits: a known false positive (GCC PR 105651).
  $<$<COMPILE_LANG_AND_ID:CXX,GNU>:-Wno-restrict>)

if(SOCKETMASTER_SANITIZE)
  add_compile_options(-fsanitize=${SOCKETMASTER_SANITIZE} -fno-omit-frame-pointer)
  if(SOCKETMASTER_SANITIZE MATCHES "thread" AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # libstdc++'s shared_ptr uses atomic_thread_fence, which g++ warns TSan cannot model; the
    # master is single-threaded, the fences are in library code we do not control.
    add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-Wno-tsan>)
  endif()
  add_link_options(-fsanitize=${SOCKETMASTER_SANITIZE})
endif()
