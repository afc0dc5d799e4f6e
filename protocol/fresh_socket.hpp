// TCP sockets we open or accept ourselves and hand to Asio, told what Asio would otherwise find out
// with system calls of its own (issue 6: a few of the ten or so system calls a Connection: close
// request costs the master, and the sidecar's connection to its backend).
#pragma once

#include <asio/ip/tcp.hpp>

#include <system_error>

namespace socketmaster {

// Tells Asio that `s` (just made by accept4() or socket() with SOCK_NONBLOCK, and never duplicated)
// is non-blocking already, so its first asynchronous operation need not say so with
// ioctl(FIONBIO), and that closing it needs no epoll_ctl(DEL) first (Asio assumes any descriptor
// it did not open itself may share its open file with a dup).
void mark_fresh(asio::ip::tcp::socket& s);

enum class connect_progress { connected, in_progress, failed };

// Opens `s` (closed before) as a non-blocking TCP socket, with TCP_NODELAY when asked, and connects
// it to `to`. On loopback the handshake usually completes within connect() itself, which a poll()
// without waiting then confirms: `connected`, with no turn of the event loop and no EPOLLOUT
// registration, where Asio's async_connect waits for writability. `in_progress`: wait until
// `s` is writable, then call finish_connect(). `failed`: `ec` says why (refused, unreachable...).
connect_progress start_connect(asio::ip::tcp::socket& s, const asio::ip::tcp::endpoint& to, bool no_delay,
                               std::error_code& ec);

// The outcome of a connect that was in progress, once its socket is writable (SO_ERROR).
std::error_code finish_connect(asio::ip::tcp::socket& s);

}  // namespace socketmaster
