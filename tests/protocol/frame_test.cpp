// The yamux codec without sockets: wire constants, header round trips, incremental splitting.
#include "protocol/frame.hpp"

#include <ostream>  // before doctest: it prints std::error_code through operator<<
#include <doctest/doctest.h>

#include <vector>

#include "protocol/errors.hpp"

using namespace socketmaster;
using namespace socketmaster::yamux;

namespace {
std::vector<std::byte> bytes(std::initializer_list<int> v) {
  std::vector<std::byte> out;
  for (int b : v) out.push_back(std::byte(b));
  return out;
}
}  // namespace

TEST_CASE("wire constants match the yamux spec") {
  CHECK(header_size == 12);
  CHECK(initial_stream_window == 262144);
  CHECK(static_cast<int>(frame_type::window_update) == 1);
  CHECK(static_cast<int>(go_away_code::internal_error) == 2);
}

TEST_CASE("a header encodes big-endian in spec order") {
  const auto b = encode({0, frame_type::window_update, flags::syn | flags::ack, 0x01020304, 0xA0B0C0D0});
  const auto want = bytes({0, 1, 0, 3, 1, 2, 3, 4, 0xA0, 0xB0, 0xC0, 0xD0});
  CHECK(std::equal(b.begin(), b.end(), want.begin(), want.end()));
  CHECK(decode(b) == frame_header{0, frame_type::window_update, 3, 0x01020304, 0xA0B0C0D0});
}

TEST_CASE("the reader asks for more until a whole header is there") {
  frame_reader r;
  const auto b = encode({0, frame_type::ping, flags::syn, 0, 7});
  std::size_t used = 99;
  auto ev = r.next(std::span(b).first(11), used);
  CHECK(ev.what == frame_reader::kind::need_more);
  CHECK(used == 0);
  ev = r.next(b, used);
  REQUIRE(ev.what == frame_reader::kind::header);
  CHECK(used == 12);
  CHECK(ev.header.length == 7);
  CHECK(ev.header.has(flags::syn));
}

TEST_CASE("data payload comes out in chunks as it arrives") {
  frame_reader r;
  auto in = bytes({0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 6, 'a', 'b', 'c'});
  std::size_t used = 0;
  auto ev = r.next(in, used);
  REQUIRE(ev.what == frame_reader::kind::header);
  CHECK(ev.header.stream_id == 5);
  ev = r.next(std::span(in).subspan(used), used);
  REQUIRE(ev.what == frame_reader::kind::payload);
  CHECK(ev.data.size() == 3);
  CHECK(r.payload_remaining() == 3);
  auto rest = bytes({'d', 'e', 'f', 0, 2});
  ev = r.next(rest, used);
  REQUIRE(ev.what == frame_reader::kind::payload);
  CHECK(used == 3);
  CHECK(char(ev.data[2]) == 'f');
  ev = r.next(std::span(rest).subspan(3), used);
  CHECK(ev.what == frame_reader::kind::need_more);
}

TEST_CASE("a window update's length is a delta, not a payload") {
  frame_reader r;
  const auto b = encode({0, frame_type::window_update, 0, 1, 1 << 20});
  std::size_t used = 0;
  auto ev = r.next(b, used);
  REQUIRE(ev.what == frame_reader::kind::header);
  CHECK(r.payload_remaining() == 0);
}

TEST_CASE("a bad version or unknown type is an error, and stays one") {
  frame_reader r;
  auto bad_version = bytes({1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0});
  std::size_t used = 0;
  auto ev = r.next(bad_version, used);
  CHECK(ev.what == frame_reader::kind::error);
  CHECK(ev.error == errc::invalid_version);
  const auto good = encode({0, frame_type::ping, 0, 0, 0});
  CHECK(r.next(good, used).what == frame_reader::kind::error);

  frame_reader r2;
  auto bad_type = bytes({0, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0});
  ev = r2.next(bad_type, used);
  CHECK(ev.what == frame_reader::kind::error);
  CHECK(ev.error == errc::invalid_frame_type);
}
