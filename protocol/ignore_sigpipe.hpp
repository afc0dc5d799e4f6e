// Every program of ours starts with this: its stdout and stderr often go to a pipe whose reader may
// leave first (a script that read the "listening" line, `socketmaster 2>&1 | grep -m1 ...`). With
// SIGPIPE at its default the next line written (a log line, "listening" after a master restart,
// "draining" on SIGTERM) would kill the process mid-work, cutting every connection it holds. Ignored,
// such a write just fails. Sockets need nothing: Asio sends with MSG_NOSIGNAL.
#pragma once

#include <csignal>

namespace socketmaster {

inline void ignore_sigpipe() { std::signal(SIGPIPE, SIG_IGN); }

}  // namespace socketmaster
