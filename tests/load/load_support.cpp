// See load_support.hpp.
#include "tests/load/load_support.hpp"

#include <signal.h>

#include <sstream>
#include <stdexcept>

namespace socketmaster::load {

// --- wrk -----------------------------------------------------------------------------------------

wrk_report parse_wrk(std::string_view out) {
  wrk_report r;
  bool summary = false;
  std::istringstream in{std::string(out)};
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::string first;
    words >> first;
    if (line.find(" requests in ") != std::string::npos) {
      // "  123456 requests in 21.00s, 20.11MB read"
      std::string requests_word, in_word, seconds;
      std::istringstream(line) >> r.requests >> requests_word >> in_word >> seconds;
      r.seconds = std::stod(seconds);
      summary = true;
    } else if (line.find("Non-2xx or 3xx responses:") != std::string::npos) {
      r.non_success = std::stoull(line.substr(line.find(':') + 1));
    } else if (line.find("Socket errors:") != std::string::npos) {
      // "  Socket errors: connect 0, read 12, write 0, timeout 3"
      auto value = [&](std::string_view name) -> std::uint64_t {
        const auto at = line.find(std::string(name) + " ");
        return at == std::string::npos ? 0 : std::stoull(line.substr(at + name.size() + 1));
      };
      r.connect_errors = value("connect");
      r.read_errors = value("read");
      r.write_errors = value("write");
      r.timeouts = value("timeout");
    } else if (first == "body") {
      // "body <first line of the body, may contain spaces> <count>"
      const auto last_space = line.rfind(' ');
      r.by_first_line[line.substr(5, last_space - 5)] += std::stoull(line.substr(last_space + 1));
    } else if (first == "status") {
      int code = 0;
      std::uint64_t n = 0;
      words >> code >> n;
      r.by_status[code] += n;
    }
  }
  if (!summary) throw std::runtime_error("wrk printed no report:\n" + std::string(out));
  return r;
}

wrk_run::wrk_run(const std::string& url, int connections, std::chrono::seconds request_timeout,
                 const std::string& header, std::chrono::milliseconds pause)
    : process_([&] {
        std::vector<std::string> argv{"wrk", "-t1", "-c" + std::to_string(connections), "-d120s", "--timeout",
                                      std::to_string(request_timeout.count()) + "s", "-s",
                                      LOAD_SOURCE_DIR "/count_bodies.lua"};
        if (!header.empty()) argv.insert(argv.end(), {"-H", header});
        argv.push_back(url);
        return argv;
      }(),
               pause.count() > 0 ? std::vector<std::string>{"LOAD_WRK_DELAY_MS=" + std::to_string(pause.count())}
                                 : std::vector<std::string>{}) {}

wrk_report wrk_run::stop(duration timeout) {
  const auto deadline = clock::now() + timeout;
  if (!process_.wait(duration::zero())) ::kill(process_.pid(), SIGINT);
  std::string out;
  while (!process_.stdout_closed() && clock::now() < deadline)
    if (auto line = process_.read_line(deadline - clock::now())) out += *line + "\n";
  const auto status = process_.wait(std::max<duration>(deadline - clock::now(), duration::zero()));
  if (!status || !status->success()) {
    std::ostringstream what;
    what << "wrk did not end cleanly after SIGINT (";
    if (status)
      what << *status;
    else
      what << "still running";
    what << "); its output:\n" << out;
    throw std::runtime_error(what.str());
  }
  return parse_wrk(out);
}

// --- services ------------------------------------------------------------------------------------

sdk_service::sdk_service(std::vector<std::string> argv) : process_(std::move(argv)) { bound_ = next_listening(); }

std::string sdk_service::next_listening(duration timeout) {
  const auto deadline = clock::now() + timeout;
  for (;;) {
    auto line = process_.read_line(std::max<duration>(deadline - clock::now(), duration::zero()));
    if (!line)
      throw std::runtime_error(process_.stdout_closed() ? "the service ended without a 'listening' line"
                                                        : "the service printed no 'listening' line in time");
    if (line->starts_with("listening ")) return line->substr(10);
  }
}

void sdk_service::terminate() {
  if (running()) ::kill(process_.pid(), SIGTERM);
}

registered_service start_registered(e2e::master_process& m, std::vector<std::string> argv) {
  const auto from = m.mark();
  auto s = std::make_unique<sdk_service>(std::move(argv));
  const auto id = registration_id(m, from, s->bound());
  return {std::move(s), id};
}

test::exit_status drain(sdk_service& s, duration timeout) {
  s.terminate();
  const auto status = s.wait(timeout);
  if (!status) throw std::runtime_error("a draining service did not exit in time");
  return *status;
}

test::exit_status replace(e2e::master_process& m, registered_service& current,
                          const std::function<registered_service()>& start, std::optional<duration> gap,
                          stop_flag& pause, duration drain_timeout) {
  if (!gap) {
    auto next = start();
    const auto status = drain(*current.process, drain_timeout);
    current = std::move(next);
    return status;
  }
  const auto from = m.mark();
  const auto status = drain(*current.process, drain_timeout);
  m.wait_for_log("registration " + std::to_string(current.id) + " ended", from);
  pause.wait_for(*gap);
  current = start();
  return status;
}

// --- time and ports ------------------------------------------------------------------------------

void stop_flag::set() {
  {
    std::lock_guard lock(mutex_);
    set_ = true;
  }
  changed_.notify_all();
}

bool stop_flag::is_set() const {
  std::lock_guard lock(mutex_);
  return set_;
}

bool stop_flag::wait_until(clock::time_point t) {
  std::unique_lock lock(mutex_);
  return changed_.wait_until(lock, t, [&] { return set_; });
}

std::uint64_t registration_id(e2e::master_process& m, std::size_t from, const std::string& bound, duration timeout) {
  // "... registration 7 from same-host: 127.0.0.1:0 http */app on 127.0.0.1:41235"
  const auto line = m.wait_for_log(" on " + bound, from, timeout);
  const auto at = line.find("registration ");
  if (at == std::string::npos) throw std::runtime_error("not a registration line: " + line);
  return std::stoull(line.substr(at + 13));
}

std::uint64_t metric(const e2e::master_process& m, std::string_view name) {
  const auto body = e2e::admin_get(m, "/metrics");
  std::istringstream in(body);
  for (std::string line; std::getline(in, line);)
    if (line.size() > name.size() && line.starts_with(name) && line[name.size()] == ' ')
      return std::stoull(line.substr(name.size() + 1));
  throw std::runtime_error("no metric " + std::string(name) + " in /metrics:\n" + body);
}

}  // namespace socketmaster::load
