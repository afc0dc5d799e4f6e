# Run by CTest (see CMakeLists.txt): install, then build an outside project against the install.
cmake_minimum_required(VERSION 3.25)
foreach(v BUILD_DIR STAGING CONSUMER_SOURCE CONSUMER_BUILD GENERATOR CXX PKG_CONFIG)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "package_test.cmake: -D${v}=... is required")
  endif()
endforeach()

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "${what} failed (${status}):\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

# 1. A clean staging install.
file(REMOVE_RECURSE ${STAGING} ${CONSUMER_BUILD})
run("cmake --install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${STAGING})
foreach(f include/socketmaster/client.hpp include/socketmaster/protocol/handshake.hpp
          include/socketmaster/protocol/detail/session_core.hpp
          lib/libsocketmaster-client.a lib/libsocketmaster-protocol.a
          lib/cmake/socketmaster/socketmasterConfig.cmake lib/cmake/socketmaster/socketmasterConfigVersion.cmake
          lib/cmake/socketmaster/socketmasterTargets.cmake lib/cmake/socketmaster/FindAsio.cmake
          lib/pkgconfig/socketmaster.pc)
  if(NOT EXISTS ${STAGING}/${f})
    message(FATAL_ERROR "the install has no ${f}")
  endif()
endforeach()
# Nothing of the build tree may leak into the installed CMake files.
file(READ ${STAGING}/lib/cmake/socketmaster/socketmasterTargets.cmake targets)
string(FIND "${targets}" "${BUILD_DIR}" leak)
if(NOT leak EQUAL -1)
  message(FATAL_ERROR "socketmasterTargets.cmake refers to the build tree ${BUILD_DIR}")
endif()

# 2. find_package(socketmaster) from an outside project; it runs what it built.
run("configuring the consumer" ${CMAKE_COMMAND} -S ${CONSUMER_SOURCE} -B ${CONSUMER_BUILD} -G ${GENERATOR}
    -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_PREFIX_PATH=${STAGING} -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON
    -DCMAKE_BUILD_TYPE=Release)
run("building the consumer" ${CMAKE_COMMAND} --build ${CONSUMER_BUILD})
run("running the consumer" ${CONSUMER_BUILD}/consumer)
if(NOT last_output MATCHES "socketmaster consumer: port 8000 path /a master 127.0.0.1:9999")
  message(FATAL_ERROR "unexpected consumer output: ${last_output}")
endif()

# 3. pkg-config: the flags it gives compile and link the same program.
set(ENV{PKG_CONFIG_PATH} ${STAGING}/lib/pkgconfig)
run("pkg-config --cflags --libs socketmaster" ${PKG_CONFIG} --cflags --libs socketmaster)
string(STRIP "${last_output}" flags)
message(STATUS "pkg-config socketmaster: ${flags}")
separate_arguments(flag_list UNIX_COMMAND "${flags}")
# The .pc locates the prefix from its own directory: its -I must lead to the staging include dir.
list(FILTER flag_list INCLUDE REGEX "^-I")
list(GET flag_list 0 first_include)
string(SUBSTRING "${first_include}" 2 -1 first_include)
file(REAL_PATH "${first_include}" first_include)
file(REAL_PATH "${STAGING}/include" staged_include)
if(NOT first_include STREQUAL staged_include OR NOT flags MATCHES "-lsocketmaster-client -lsocketmaster-protocol")
  message(FATAL_ERROR "pkg-config gave unexpected flags: ${flags}")
endif()
separate_arguments(flag_list UNIX_COMMAND "${flags}")
run("compiling with pkg-config flags" ${CXX} -std=c++20 -O1 ${CONSUMER_SOURCE}/main.cpp ${flag_list}
    -o ${CONSUMER_BUILD}/consumer-pkg-config)
run("running the pkg-config build" ${CONSUMER_BUILD}/consumer-pkg-config)
message(STATUS "package test passed: ${STAGING}")
