# Builds the Go programs used as reference peers (hashicorp/yamux from Debian's
# golang-github-hashicorp-yamux-dev), offline in GOPATH mode: no module download ever happens.
find_program(GO_EXECUTABLE go REQUIRED)

# socketmaster_add_go_program(target SOURCE_DIR dir)
function(socketmaster_add_go_program target)
  cmake_parse_arguments(G "" "SOURCE_DIR" "" ${ARGN})
  file(GLOB _sources CONFIGURE_DEPENDS ${G_SOURCE_DIR}/*.go)
  set(_out ${CMAKE_BINARY_DIR}/go-bin/${target})
  add_custom_command(OUTPUT ${_out}
    COMMAND ${CMAKE_COMMAND} -E env GO111MODULE=off GOPATH=/usr/share/gocode 
            GOCACHE=${CMAKE_BINARY_DIR}/gocache ${GO_EXECUTABLE} build -o ${_out} .
    WORKING_DIRECTORY ${G_SOURCE_DIR}
    DEPENDS ${_sources}
    COMMENT "go build ${target}")
  add_custom_target(${target} ALL DEPENDS ${_out})
  set_target_properties(${target} PROPERTIES OUTPUT_PATH ${_out})
endfunction()
