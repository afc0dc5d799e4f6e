// The Go reference peer (go/yamux_peer: hashicorp/yamux from Debian) as a child process of a test:
// started with its flags, its "ADDR host:port" line parsed when it listens, its last line ("OK ..."
// or "FAIL ...") and exit status collected when it ends.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include <asio/ip/tcp.hpp>

#include "tests/support/child_process.hpp"

namespace socketmaster::interop {

// What a finished Go peer printed and how it ended.
struct go_result {
  test::exit_status status;
  std::vector<std::string> lines;  // every stdout line
  std::string last_line;           // "OK ..." or "FAIL ..." (empty if it printed nothing)
};

class go_peer {
 public:
  // The peer gives up by itself after this (-timeout: "FAIL timeout", exit 3). A bound against
  // hangs, not a speed target: sanitizer builds (TSan ~5-15x slower) get four times as long.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  static constexpr std::chrono::seconds run_limit{240};
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
  static constexpr std::chrono::seconds run_limit{240};
#else
  static constexpr std::chrono::seconds run_limit{60};
#endif
#else
  static constexpr std::chrono::seconds run_limit{60};
#endif

  // Starts yamux_peer with `args` and -timeout run_limit.
  explicit go_peer(std::vector<std::string> args);

  // For -listen: the address from the peer's "ADDR host:port" line. Throws if none comes.
  asio::ip::tcp::endpoint listening_endpoint();

  // Reads the rest of the output and waits for the peer to end; kills it if it takes more than
  // `limit` (then the status says so).
  go_result finish(std::chrono::seconds limit = std::chrono::seconds(30));

 private:
  test::child_process process_;
  std::vector<std::string> lines_;
};

}  // namespace socketmaster::interop
