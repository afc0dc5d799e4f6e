// The receive buffer: wrap-around, growth, and freeing its storage when drained.
#include "protocol/detail/byte_ring.hpp"

#include <ostream>  // before doctest: it prints std::error_code through operator<<
#include <doctest/doctest.h>

#include <numeric>
#include <vector>

using socketmaster::yamux::detail::byte_ring;

TEST_CASE("bytes come out in order across wrap-around and growth") {
  byte_ring r;
  std::vector<std::byte> in(10000);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = std::byte(i * 7);
  std::vector<std::byte> out;
  std::size_t fed = 0;
  std::vector<std::byte> tmp(3000);
  while (out.size() < in.size()) {
    const std::size_t k = std::min<std::size_t>(2500, in.size() - fed);
    r.append(std::span(in).subspan(fed, k));
    fed += k;
    const std::size_t n = r.read(std::span(tmp).first(1700));
    out.insert(out.end(), tmp.begin(), tmp.begin() + static_cast<std::ptrdiff_t>(n));
    if (fed == in.size()) {
      while (!r.empty()) {
        const std::size_t m = r.read(tmp);
        out.insert(out.end(), tmp.begin(), tmp.begin() + static_cast<std::ptrdiff_t>(m));
      }
    }
  }
  CHECK(out == in);
}

TEST_CASE("a drained ring holds no storage") {
  byte_ring r;
  std::vector<std::byte> in(5000, std::byte{1});
  r.append(in);
  CHECK(r.capacity() >= 5000);
  std::vector<std::byte> out(5000);
  CHECK(r.read(out) == 5000);
  CHECK(r.capacity() == 0);
  CHECK(r.empty());
}
