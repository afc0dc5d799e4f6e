// A type-erased, move-only completion handler for an asynchronous operation that completes later
// from elsewhere (the session's read loop, its writer, a peer's frame). It keeps the handler's
// executor busy with a work guard, and honours the handler's cancellation slot. It completes by
// posting, so a handler never runs inside the code that completes it, except where that code has
// finished and says so (finish, then dispatch).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <tuple>
#include <utility>

#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/dispatch.hpp>
#include <asio/post.hpp>

namespace socketmaster::yamux::detail {

// Whoever holds pending operations and can abandon one when its handler's slot is cancelled.
class cancel_target {
 public:
  // `key` is what the op was registered with (a stream id, or 0 for session-level operations).
  virtual void cancel_op(void* op, std::uint32_t key) = 0;

 protected:
  ~cancel_target() = default;
};

// An operation whose result is set and whose handler is still to run: posted, or run at once where
// the caller knows that is safe (session_core::run_inline_completions).
class finished_op {
 public:
  virtual ~finished_op() = default;
  // Hands the handler to its executor with post() or dispatch(); this object is gone afterwards.
  virtual void post() = 0;
  virtual void dispatch() = 0;
};

template <class... Args>
class pending_op : public finished_op {
 public:
  // Sets the result: the handler runs once post() or dispatch() is called.
  virtual finished_op* finish(Args... args) = 0;
  // Posts the handler with `args` and destroys this object.
  void complete(Args... args) { finish(std::move(args)...)->post(); }
};

template <class Handler, class Executor, class... Args>
class pending_op_impl final : public pending_op<Args...> {
 public:
  using handler_executor = asio::associated_executor_t<Handler, Executor>;

  pending_op_impl(Handler&& h, const Executor& ex, cancel_target* target, std::uint32_t key)
      : handler_(std::move(h)), work_(asio::get_associated_executor(handler_, ex)) {
    auto slot = asio::get_associated_cancellation_slot(handler_);
    if (slot.is_connected()) {
      slot_ = slot;
      slot.template emplace<canceller>(target, this, key);
    }
  }

  finished_op* finish(Args... args) override {
    if (slot_.is_connected()) slot_.clear();
    args_.emplace(std::move(args)...);
    return this;
  }
  // What is posted is this object itself (owned by the function object): moving the handler,
  // its work guard and the arguments into a new one cost more than the rest of a completion.
  void post() override {
    const auto ex = work_.get_executor();
    asio::post(ex, invoker{std::unique_ptr<pending_op_impl>(this)});
  }
  void dispatch() override {
    const auto ex = work_.get_executor();
    asio::dispatch(ex, invoker{std::unique_ptr<pending_op_impl>(this)});
  }

 private:
  // Runs the handler in place, then frees the op (and its work guard); never run, it frees it too.
  struct invoker {
    std::unique_ptr<pending_op_impl> op;
    void operator()() {
      auto& o = *op;
      std::apply(std::move(o.handler_), std::move(*o.args_));
      op.reset();
    }
  };

  struct canceller {
    canceller(cancel_target* t, void* o, std::uint32_t k) : target(t), op(o), key(k) {}
    cancel_target* target;
    void* op;
    std::uint32_t key;
    void operator()(asio::cancellation_type type) {
      if (type != asio::cancellation_type::none) target->cancel_op(op, key);
    }
  };

  Handler handler_;
  asio::executor_work_guard<handler_executor> work_;
  asio::cancellation_slot slot_;
  std::optional<std::tuple<Args...>> args_;
};

// Wraps `handler` for completion with `Args...` later; `target` is told when the handler's slot fires.
template <class... Args, class Handler, class Executor>
pending_op<Args...>* make_pending_op(Handler&& handler, const Executor& ex, cancel_target* target,
                                     std::uint32_t key = 0) {
  return new pending_op_impl<std::decay_t<Handler>, Executor, Args...>(std::forward<Handler>(handler), ex, target,
                                                                      key);
}

}  // namespace socketmaster::yamux::detail
