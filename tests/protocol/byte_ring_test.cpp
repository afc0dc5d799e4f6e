// The receive buffer: wrap-around, growth, and freeing its storage when drained.
#include "protocol/detail/byte_ring.hpp"

#include <ostream>  // before doctest: it prints std::error_code through operator<<
#include <doctest/doctest.h>

#include <algorithm>
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

TEST_CASE("contents() shows the bytes in place, in two pieces when they wrap; drop() removes from the front") {
  byte_ring r;
  std::vector<std::byte> in(4096);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = std::byte(i * 13);
  CHECK(r.contents()[0].empty());
  CHECK(r.contents()[1].empty());
  r.append(std::span(in).first(3000));
  r.drop(2500);  // head at 2500 of a 4096 ring
  r.append(std::span(in).subspan(3000, 1096));
  r.append(std::span(in).first(1000));  // wraps: 500 + 1096 before the end, 1000 after
  const auto parts = r.contents();
  REQUIRE(parts[0].size() == 1596);
  REQUIRE(parts[1].size() == 1000);
  CHECK(std::equal(parts[0].begin(), parts[0].end(), in.begin() + 2500));
  CHECK(std::equal(parts[1].begin(), parts[1].end(), in.begin()));
  r.drop(1600);  // past the wrap
  CHECK(r.size() == 996);
  const auto rest = r.contents();
  CHECK(rest[1].empty());
  CHECK(std::equal(rest[0].begin(), rest[0].end(), in.begin() + 4));
  r.drop(5000);  // more than it holds: all of it, and the storage with it
  CHECK(r.empty());
  CHECK(r.capacity() == 0);
}
