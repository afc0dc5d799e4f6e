// go_peer; see go_peer.hpp.
#include "go_peer.hpp"

#include <stdexcept>

#include <asio/ip/address.hpp>

namespace socketmaster::interop {

go_peer::go_peer(std::vector<std::string> args)
    : process_([&] {
        std::vector<std::string> argv{YAMUX_PEER_PATH, "-timeout", std::to_string(run_limit.count()) + "s"};
        argv.insert(argv.end(), args.begin(), args.end());
        return argv;
      }()) {}

asio::ip::tcp::endpoint go_peer::listening_endpoint() {
  while (auto line = process_.read_line(std::chrono::seconds(10))) {
    lines_.push_back(*line);
    if (line->starts_with("ADDR ")) {
      const auto hostport = line->substr(5);
      const auto colon = hostport.rfind(':');
      return {asio::ip::make_address(hostport.substr(0, colon)),
              static_cast<asio::ip::port_type>(std::stoi(hostport.substr(colon + 1)))};
    }
  }
  throw std::runtime_error("yamux_peer printed no ADDR line" +
                           (lines_.empty() ? std::string() : " (last line: " + lines_.back() + ")"));
}

go_result go_peer::finish(std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (auto line = process_.read_line(deadline - std::chrono::steady_clock::now())) lines_.push_back(*line);
  auto status = process_.wait(deadline - std::chrono::steady_clock::now());
  if (!status) {
    process_.kill();
    status = process_.wait(std::chrono::seconds(0));
  }
  go_result r{*status, lines_, lines_.empty() ? std::string() : lines_.back()};
  return r;
}

}  // namespace socketmaster::interop
