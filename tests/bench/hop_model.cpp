// hop_model: the master's bulk hop without the master, to weigh a transport before writing it.
// Three processes move 1 GiB in 1 MiB pieces: a writer (the service), a relay (the master) and a
// reader on loopback TCP that reads 128 KiB at a time (curl). The writer hands its bytes over
//   direct  straight to the reader over TCP (no relay: the direct path);
//   unix    through a Unix socketpair the relay reads 1 MiB at a time and sends on (today's hop);
//   shm     through a shared ring of 8 slots of 1 MiB the relay sends from, each filled slot
//           announced and each freed one returned through an eventfd;
//   pipe    through a 1 MiB pipe the relay splices into the TCP socket (it copies nothing)
// (tests/bench/README.md, "Session 18", has the figures).
// Prints throughput and each process's CPU per GiB (user + system, from wait4), one line per mode
// and round, the modes alternating so that the machine's noise falls on all of them alike.
//
//   hop_model [--rounds 3] [direct|unix|shm|pipe ...]
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr std::size_t piece = std::size_t{1} << 20;
constexpr std::size_t slots = 8;
constexpr std::size_t reader_chunk = 128 << 10;
constexpr long long total = 1LL << 30;

[[noreturn]] void die(const char* what) {
  std::perror(what);
  std::_Exit(1);
}

void send_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) die("send");
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

void post(int efd) {
  const std::uint64_t one = 1;
  if (::write(efd, &one, sizeof one) != sizeof one) die("eventfd write");
}

void take(int efd) {
  std::uint64_t v = 0;
  if (::read(efd, &v, sizeof v) != sizeof v) die("eventfd read");
}

double cpu_seconds(const rusage& r) {
  return static_cast<double>(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
         static_cast<double>(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

// Forks `body` as a child that exits 0 when it returns.
template <class F>
pid_t spawn(F body) {
  const pid_t pid = ::fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    body();
    std::_Exit(0);
  }
  return pid;
}

void run_once(const std::string& mode) {
  const bool direct = mode == "direct", shm = mode == "shm", pipe_mode = mode == "pipe";
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0 || ::fcntl(pipe_fds[1], F_SETPIPE_SZ, static_cast<int>(piece)) < 0) die("pipe");
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener, 1) != 0 || ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    die("listen");
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) die("socketpair");
  void* mapped = ::mmap(nullptr, piece * slots, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) die("mmap");
  char* ring = static_cast<char*>(mapped);
  const int filled = ::eventfd(0, EFD_SEMAPHORE | EFD_CLOEXEC);
  const int freed = ::eventfd(slots, EFD_SEMAPHORE | EFD_CLOEXEC);
  if (filled < 0 || freed < 0) die("eventfd");

  const auto start = std::chrono::steady_clock::now();
  const pid_t reader = spawn([&] {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) die("connect");
    std::vector<char> buf(reader_chunk);
    long long got = 0;
    ssize_t r;
    while ((r = ::recv(fd, buf.data(), buf.size(), 0)) > 0) got += r;
    if (got != total) {
      std::fprintf(stderr, "hop_model: the reader got %lld bytes\n", got);
      std::_Exit(1);
    }
  });
  const pid_t writer = spawn([&] {
    std::vector<char> src(piece, 'x');
    const int out = direct ? ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC) : pair[1];
    if (out < 0) die("accept");
    for (long long i = 0; i < total / static_cast<long long>(piece); ++i) {
      if (shm) {
        take(freed);
        std::memcpy(ring + static_cast<std::size_t>(i) % slots * piece, src.data(), piece);
        post(filled);
      } else if (pipe_mode) {
        for (std::size_t done = 0; done < piece;) {
          const ssize_t w = ::write(pipe_fds[1], src.data() + done, piece - done);
          if (w <= 0) die("pipe write");
          done += static_cast<std::size_t>(w);
        }
      } else {
        send_all(out, src.data(), piece);
      }
    }
  });
  const pid_t relay = spawn([&] {
    if (direct) return;
    const int out = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    const int one = 1;
    if (out < 0 || ::setsockopt(out, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) die("accept");
    if (shm) {
      for (long long i = 0; i < total / static_cast<long long>(piece); ++i) {
        take(filled);
        send_all(out, ring + static_cast<std::size_t>(i) % slots * piece, piece);
        post(freed);
      }
    } else if (pipe_mode) {
      for (long long left = total; left > 0;) {
        const ssize_t r = ::splice(pipe_fds[0], nullptr, out, nullptr, piece, SPLICE_F_MOVE | SPLICE_F_MORE);
        if (r <= 0) die("splice");
        left -= r;
      }
    } else {
      std::vector<char> buf(piece);
      for (long long left = total; left > 0;) {
        const ssize_t r = ::read(pair[0], buf.data(), buf.size());
        if (r <= 0) die("read");
        send_all(out, buf.data(), static_cast<std::size_t>(r));
        left -= r;
      }
    }
  });

  double cpu_ms[3] = {};
  const pid_t children[3] = {writer, relay, reader};
  for (int k = 0; k < 3; ++k) {
    int status = 0;
    rusage usage{};
    if (::wait4(children[k], &status, 0, &usage) != children[k]) die("wait4");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::fprintf(stderr, "hop_model: a child failed in mode %s\n", mode.c_str());
      std::exit(1);
    }
    cpu_ms[k] = cpu_seconds(usage) * 1e3;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%-6s %5.2f GB/s   CPU ms per GiB: writer %4.0f  relay %4.0f  reader %4.0f\n", mode.c_str(),
              static_cast<double>(total) / seconds / 1e9, cpu_ms[0], cpu_ms[1], cpu_ms[2]);
  std::fflush(stdout);
  ::munmap(mapped, piece * slots);
  for (int fd : {listener, pair[0], pair[1], filled, freed, pipe_fds[0], pipe_fds[1]}) ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 3;
  std::vector<std::string> modes;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--rounds" && i + 1 < argc) {
      rounds = std::atoi(argv[++i]);
    } else if (a == "direct" || a == "unix" || a == "shm" || a == "pipe") {
      modes.push_back(a);
    } else {
      std::fprintf(stderr, "usage: hop_model [--rounds N] [direct|unix|shm|pipe ...]\n");
      return 2;
    }
  }
  if (rounds < 1) {
    std::fprintf(stderr, "hop_model: --rounds must be at least 1\n");
    return 2;
  }
  if (modes.empty()) modes = {"direct", "unix", "shm", "pipe"};
  for (int r = 0; r < rounds; ++r)
    for (const auto& m : modes) run_once(m);
  return 0;
}
