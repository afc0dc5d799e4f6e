// child_process against real programs: output lines, exit codes and signals, deadlines, the extra
// environment, a program that cannot start, and no inherited descriptors.
#include "tests/support/child_process.hpp"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <system_error>

using socketmaster::test::child_process;
using socketmaster::test::exit_status;
using namespace std::chrono_literals;

TEST_CASE("stdout is read line by line, and the exit code is reported") {
  child_process p({"/bin/sh", "-c", "echo one; printf 'two\\nthree'; exit 3"});
  CHECK(p.read_line(10s) == "one");
  CHECK(p.read_line(10s) == "two");
  CHECK(p.read_line(10s) == "three");  // a last line without '\n' still counts
  CHECK_FALSE(p.read_line(10s));
  CHECK(p.stdout_closed());
  CHECK(p.wait(10s) == exit_status{3, 0});
}

TEST_CASE("read_line and wait give up at their deadline; kill ends the child") {
  child_process p({"tail", "-f", "/dev/null"});  // runs until killed, printing nothing
  CHECK_FALSE(p.read_line(50ms));
  CHECK_FALSE(p.stdout_closed());
  CHECK_FALSE(p.wait(50ms));
  p.kill();
  CHECK(p.wait(0s) == exit_status{-1, SIGKILL});
}

TEST_CASE("the destructor kills and reaps a child that still runs") {
  pid_t pid = 0;
  {
    child_process p({"tail", "-f", "/dev/null"});
    pid = p.pid();
  }
  CHECK(::kill(pid, 0) == -1);  // no such process, not even a zombie
}

TEST_CASE("extra environment entries are added or replace ours") {
  ::setenv("CHILD_PROCESS_TEST_A", "old", 1);
  child_process p({"/bin/sh", "-c", "echo \"$CHILD_PROCESS_TEST_A $CHILD_PROCESS_TEST_B\""},
                  {"CHILD_PROCESS_TEST_A=new", "CHILD_PROCESS_TEST_B=added"});
  CHECK(p.read_line(10s) == "new added");
  CHECK(p.wait(10s) == exit_status{0, 0});
}

TEST_CASE("a program that cannot be started throws") {
  CHECK_THROWS_AS(child_process({"/nonexistent/program"}), std::system_error);
}

TEST_CASE("the child inherits none of our descriptors beyond stdin, stdout and stderr") {
  const int fd = ::open("/dev/null", O_RDONLY);  // not O_CLOEXEC, like Asio's sockets
  REQUIRE(fd >= 3);
  child_process p({"/bin/sh", "-c", "test -e /proc/self/fd/" + std::to_string(fd) + " && echo leaked || echo clean"});
  CHECK(p.read_line(10s) == "clean");
  CHECK(p.wait(10s) == exit_status{0, 0});
  ::close(fd);
}
