// The receive buffer: order across blocks, in-place contents, and giving storage up as it drains.
#include "protocol/detail/byte_ring.hpp"

#include <ostream>  // before doctest: it prints std::error_code through operator<<
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <numeric>
#include <vector>

using socketmaster::yamux::detail::byte_ring;

TEST_CASE("bytes come out in order across blocks as the ring grows and drains") {
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

namespace {
std::vector<std::byte> pattern(std::size_t n, unsigned mul) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = std::byte(static_cast<unsigned char>(i * mul + i / 251));
  return v;
}
}  // namespace

TEST_CASE("contents() shows the bytes in place, a piece per block; drop() removes from the front") {
  byte_ring r;
  std::span<const std::byte> none[1];
  CHECK(r.contents(none) == 0);
  const auto in = pattern(byte_ring::first_block_size + 2 * byte_ring::block_size + 100, 13);
  r.append(std::span(in).first(3000));
  r.append(std::span(in).subspan(3000));  // fills the first block, two more, and starts a fourth
  CHECK(r.size() == in.size());
  CHECK(r.capacity() == byte_ring::first_block_size + 3 * byte_ring::block_size);
  std::span<const std::byte> parts[8];
  REQUIRE(r.contents(parts) == 4);
  CHECK(parts[0].size() == byte_ring::first_block_size);
  CHECK(parts[1].size() == byte_ring::block_size);
  CHECK(parts[3].size() == 100);
  std::vector<std::byte> joined;
  for (std::size_t i = 0; i < 4; ++i) joined.insert(joined.end(), parts[i].begin(), parts[i].end());
  CHECK(joined == in);
  // Fewer slots than blocks: the oldest pieces.
  REQUIRE(r.contents(std::span(parts).first(2)) == 2);
  CHECK(std::equal(parts[1].begin(), parts[1].end(), in.begin() + byte_ring::first_block_size));
  // drop() past the first block frees it; the rest starts mid-block.
  r.drop(byte_ring::first_block_size + 10);
  CHECK(r.size() == in.size() - byte_ring::first_block_size - 10);
  CHECK(r.capacity() == 3 * byte_ring::block_size);
  REQUIRE(r.contents(parts) == 3);
  CHECK(parts[0].size() == byte_ring::block_size - 10);
  CHECK(std::equal(parts[0].begin(), parts[0].end(), in.begin() + byte_ring::first_block_size + 10));
  // peek() copies across block boundaries and leaves the bytes.
  std::vector<std::byte> out(byte_ring::block_size + 50);
  CHECK(r.peek(out) == out.size());
  CHECK(std::equal(out.begin(), out.end(), in.begin() + byte_ring::first_block_size + 10));
  CHECK(r.size() == in.size() - byte_ring::first_block_size - 10);
  r.drop(in.size());  // more than it holds: all of it, and the storage with it
  CHECK(r.empty());
  CHECK(r.capacity() == 0);
  CHECK(r.contents(parts) == 0);
}

TEST_CASE("appending to a ring that holds bytes never moves them") {
  // A contiguous ring doubled into fresh memory and copied what it held (issue 6); blocks do not.
  byte_ring r;
  const auto in = pattern(1 << 20, 7);
  r.append(std::span(in).first(100));
  std::span<const std::byte> first[1];
  REQUIRE(r.contents(first) == 1);
  const std::byte* where = first[0].data();
  r.append(std::span(in).subspan(100));
  REQUIRE(r.contents(first) == 1);
  CHECK(first[0].data() == where);
  std::vector<std::byte> out(in.size());
  CHECK(r.read(out) == in.size());
  CHECK(out == in);
}

TEST_CASE("a moved ring hands its bytes over and a moved-to ring frees what it held") {
  const auto in = pattern(100000, 3);
  byte_ring a;
  a.append(in);
  byte_ring b;
  b.append(std::span(in).first(10));
  b = std::move(a);
  CHECK(a.empty());
  CHECK(a.capacity() == 0);
  byte_ring c(std::move(b));
  CHECK(b.empty());
  std::vector<std::byte> out(in.size());
  CHECK(c.read(out) == in.size());
  CHECK(out == in);
  CHECK(c.capacity() == 0);
}

namespace {
struct recording_owner final : socketmaster::yamux::detail::span_owner {
  std::vector<std::uint64_t> let_go;
  void unhold(std::uint64_t token) override { let_go.push_back(token); }
};
}  // namespace

TEST_CASE("held bytes are read in place, in order with copied ones, and their owner hears when each is let go") {
  recording_owner owner;
  std::vector<std::byte> a(100, std::byte{'a'}), b(50, std::byte{'b'}), c(30, std::byte{'c'});
  {
    byte_ring r;
    r.append(std::span(a).first(10));
    r.append_held(b, owner, 7);
    r.append(c);  // after a held block: a fresh one of its own
    CHECK(r.holds_external());
    CHECK(r.size() == 90);
    std::array<std::span<const std::byte>, 4> parts;
    REQUIRE(r.contents(parts) == 3);
    CHECK(parts[1].data() == b.data());  // in place, not copied
    std::vector<std::byte> out(40);
    CHECK(r.read(out) == 40);
    CHECK(owner.let_go.empty());  // 30 of b's 50 bytes still to read
    CHECK(out[9] == std::byte{'a'});
    CHECK(out[10] == std::byte{'b'});
    r.drop(30);
    CHECK(owner.let_go == std::vector<std::uint64_t>{7});
    CHECK_FALSE(r.holds_external());
    CHECK(r.size() == 20);
  }
  {
    byte_ring r;
    r.append_held(b, owner, 8);
    r.append_held(a, owner, 9);
    r.drop(5);
    r.internalize();  // copies what is left in and lets both go, in order
    CHECK(owner.let_go == std::vector<std::uint64_t>{7, 8, 9});
    CHECK_FALSE(r.holds_external());
    std::vector<std::byte> out(200);
    REQUIRE(r.read(out) == 145);
    CHECK(out[0] == std::byte{'b'});
    CHECK(out[44] == std::byte{'b'});
    CHECK(out[45] == std::byte{'a'});
    r.append_held(c, owner, 10);
  }  // destroyed holding c
  CHECK(owner.let_go.back() == 10);
}
