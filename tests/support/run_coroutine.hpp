// Runs a test's body, a coroutine taking the io_context, on a fresh single-threaded io_context and
// fails the test if it has not finished within `limit`. The io_context is stopped when the body
// ends, since sessions' housekeeping and the SDK's reconnect supervisors would keep it busy; an
// exception from the body is rethrown in the test.
#pragma once

#include <chrono>
#include <exception>

#include <ostream>  // before doctest: it prints std::error_code through operator<<
#include <doctest/doctest.h>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>

namespace socketmaster::test {

template <class Body>
void run_coroutine(Body body, std::chrono::seconds limit) {
  asio::io_context io(1);
  bool done = false;
  std::exception_ptr error;
  asio::co_spawn(io, body(io), [&](std::exception_ptr e) {
    done = true;
    error = e;
    io.stop();
  });
  io.run_for(limit);
  REQUIRE_MESSAGE(done, "test body did not finish within ", limit.count(), " s");
  if (error) std::rethrow_exception(error);
}

}  // namespace socketmaster::test
