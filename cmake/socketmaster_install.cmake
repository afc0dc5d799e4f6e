# `cmake --install`: the client SDK as a package. Layout under the prefix:
#   include/socketmaster/client.hpp            the SDK's public header
#   include/socketmaster/protocol/...          the protocol headers it includes as "protocol/x.hpp"
#                                              (so include/socketmaster is an include directory too)
#   lib/libsocketmaster-client.a, lib/libsocketmaster-protocol.a
#   lib/cmake/socketmaster/                    socketmasterConfig.cmake (+ Version, Targets, FindAsio)
#   lib/pkgconfig/socketmaster.pc
#   bin/socketmaster, bin/socketmaster-connect (installed by their own directories)
# Consumers: find_package(socketmaster) and link socketmaster::client, or pkg-config socketmaster.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(SOCKETMASTER_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/socketmaster)

# Installed names: socketmaster::protocol, libsocketmaster-protocol.a (next to -client).
set_target_properties(socketmaster_protocol PROPERTIES EXPORT_NAME protocol OUTPUT_NAME socketmaster-protocol)

install(TARGETS socketmaster_client socketmaster_protocol
  EXPORT socketmasterTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} ${CMAKE_INSTALL_INCLUDEDIR}/socketmaster)

install(DIRECTORY ${PROJECT_SOURCE_DIR}/client-sdk/include/socketmaster
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.hpp")
install(DIRECTORY ${PROJECT_SOURCE_DIR}/protocol/
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/socketmaster/protocol
  FILES_MATCHING PATTERN "*.hpp")

install(EXPORT socketmasterTargets
  NAMESPACE socketmaster::
  DESTINATION ${SOCKETMASTER_INSTALL_CMAKEDIR})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/socketmasterConfig.cmake.in
  ${PROJECT_BINARY_DIR}/socketmasterConfig.cmake
  INSTALL_DESTINATION ${SOCKETMASTER_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/socketmasterConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)  # 0.x: minor versions may break the API
install(FILES
    ${PROJECT_BINARY_DIR}/socketmasterConfig.cmake
    ${PROJECT_BINARY_DIR}/socketmasterConfigVersion.cmake
    ${CMAKE_CURRENT_LIST_DIR}/FindAsio.cmake  # Debian's libasio-dev ships no CMake package
  DESTINATION ${SOCKETMASTER_INSTALL_CMAKEDIR})

# The .pc finds its prefix from its own location, so the package can be installed anywhere
# (`cmake --install build --prefix DIR`) and moved.
file(RELATIVE_PATH SOCKETMASTER_PC_TO_PREFIX
  /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
string(REGEX REPLACE "/$" "" SOCKETMASTER_PC_TO_PREFIX "${SOCKETMASTER_PC_TO_PREFIX}")
configure_file(${CMAKE_CURRENT_LIST_DIR}/socketmaster.pc.in ${PROJECT_BINARY_DIR}/socketmaster.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/socketmaster.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
