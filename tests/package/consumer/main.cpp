// Builds against the installed SDK only: the options and a socket definition are constructed, and
// functions from both installed libraries are linked: the options' validation (client), the PROXY
// header encoder and the handshake encoder (protocol, which needs Cap'n Proto at link time). It
// connects to nothing.
#include <socketmaster/client.hpp>

#include <iostream>

#include "protocol/proxy_header.hpp"

int main() {
  socketmaster::client::options opts;
  opts.master_address = "127.0.0.1:9999";
  socketmaster::socket_definition def{.port = 8000, .http = socketmaster::http_route{"", "/a"}};
  if (auto ec = opts.validate()) {
    std::cerr << "options do not validate: " << ec.message() << "\n";
    return 1;
  }
  const auto header = socketmaster::encode_proxy_v2({asio::ip::make_address("192.0.2.1"), 1234},
                                                    {asio::ip::make_address("192.0.2.2"), 8000});
  if (header.size() != 28) return 1;
  if (socketmaster::encode(socketmaster::handshake_request{.token = {}, .socket = def}).empty()) return 1;
  std::cout << "socketmaster consumer: port " << def.port << " path " << def.http->path_prefix << " master "
            << opts.master_address << "\n";
  return 0;
}
