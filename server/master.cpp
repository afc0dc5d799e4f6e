// See master.hpp.
#include "master.hpp"

#include "admin.hpp"
#include "control.hpp"
#include "public_connection.hpp"
#include "registry.hpp"

namespace socketmaster::server {

master::master(asio::io_context& io, master_config cfg, logger& log) : io_(io), cfg_(std::move(cfg)), log_(log) {
  registry_ = std::make_unique<registry>(io_.get_executor(), cfg_, log_,
                                         [this](listener_info& l, asio::ip::tcp::socket s, const asio::ip::tcp::endpoint& peer) {
                                           serve_public_connection(*registry_, l, std::move(s), peer);
                                         });
  control_ = std::make_unique<control_listener>(io_.get_executor(), cfg_, *registry_, log_);
}

master::~master() = default;

std::error_code master::start(std::string& what) {
  if (auto problem = cfg_.validate(); !problem.empty()) {
    what = problem;
    return std::make_error_code(std::errc::invalid_argument);
  }
  if (cfg_.token.empty() && !cfg_.allow_insecure_control && !control_address_is_local(cfg_.control_address)) {
    what = "the control address " + cfg_.control_address +
           " is not loopback and no token is set; set a token or pass --allow-insecure-control";
    return std::make_error_code(std::errc::permission_denied);
  }
  if (auto ec = control_->bind()) {
    const auto part = control_->bind_problem();
    what = "cannot listen on the control address " + cfg_.control_address + (part.empty() ? "" : ", " + part) + ": " +
           ec.message();
    return ec;
  }
  control_->start();
  const auto same_host = control_->same_host_name();
  log_.info("control port listening on ", control_->bound_address(),
            same_host.empty() ? "" : " and, for services on this host, " + same_host,
            cfg_.token.empty() ? "" : " (token required)");
  if (!cfg_.admin_address.empty()) {
    admin_ = std::make_unique<admin_server>(io_.get_executor(), *registry_, log_);
    if (auto ec = admin_->bind(cfg_.admin_address)) {
      what = "cannot listen on the admin address " + cfg_.admin_address + ": " + ec.message();
      return ec;
    }
    admin_->start();
    log_.info("admin server listening on ", admin_->bound_address());
  }
  return {};
}

std::string master::control_address() const { return control_->bound_address(); }
std::string master::admin_address() const { return admin_ ? admin_->bound_address() : std::string{}; }

// The admin server stays open through the drain: an operator (or an orchestrator's scraper) watches
// the connections go down to zero there. Admin connections are not public ones, so they do not hold
// the drain up; it closes at shutdown().
void master::stop_accepting() {
  control_->close();
  registry_->close_listeners();
}

void master::shutdown() {
  stop_accepting();
  if (admin_) admin_->close();
  registry_->shutdown();
}

std::size_t master::active_connections() const { return registry_->stats().active_connections; }

registry& master::routes() { return *registry_; }

}  // namespace socketmaster::server
