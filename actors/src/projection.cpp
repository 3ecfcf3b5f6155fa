#include "annals/actors/projection.hpp"

#include <algorithm>
#include <chrono>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include "internal/projection_actor.hpp"
#include "internal/sink.hpp"

namespace annals::actors {

using persistence::event_record;

// -- handlers and filters -----------------------------------------------------------------

projection_handler::~projection_handler() = default;
void projection_handler::reset() {}

bool event_filter::matches(const event_record& rec) const {
  if (!prefix_.empty() && !rec.persistence_id.starts_with(prefix_))
    return false;
  if (!tag_.empty() && std::find(rec.tags.begin(), rec.tags.end(), tag_) == rec.tags.end())
    return false;
  return true;
}

std::string to_string(projection_state st) {
  switch (st) {
    case projection_state::catching_up:
      return "catching_up";
    case projection_state::running:
      return "running";
    case projection_state::failed:
      return "failed";
  }
  return "unknown";
}

// -- the handle ---------------------------------------------------------------------------

struct projection::impl {
  caf::actor_system* sys = nullptr;
  caf::actor hdl;
  std::string name;
};

namespace {

caf::error from_request_error(const std::string& name, caf::error err) {
  if (err == caf::sec::request_timeout)
    return make_error(projection_errc::timeout, "projection '" + name + "' did not answer in time");
  if (err == caf::sec::request_receiver_down)
    return make_error(projection_errc::stopped, "projection '" + name + "' is stopped");
  return err;
}

template <class T, class... Ts>
caf::expected<T> ask(const projection::impl& p, std::chrono::milliseconds timeout, Ts... xs) {
  if (!p.hdl)
    return make_error(projection_errc::stopped, "projection '" + p.name + "' is stopped");
  caf::expected<T> result{make_error(projection_errc::timeout, "no answer")};
  caf::scoped_actor self{*p.sys};
  self->request(p.hdl, caf::duration{timeout}, xs...)
    .receive([&](T& x) { result = std::move(x); },
             [&](caf::error& err) { result = from_request_error(p.name, std::move(err)); });
  return result;
}

} // namespace

projection::projection(std::shared_ptr<impl> ptr) : impl_(std::move(ptr)) {}
projection::projection(projection&&) noexcept = default;

projection& projection::operator=(projection&& other) noexcept {
  if (this != &other) {
    stop();
    impl_ = std::move(other.impl_);
  }
  return *this;
}

projection::~projection() {
  stop();
}

const std::string& projection::name() const {
  static const std::string none;
  return impl_ ? impl_->name : none;
}

caf::expected<projection_status> projection::status(std::chrono::milliseconds timeout) const {
  if (!impl_)
    return make_error(projection_errc::stopped, "an empty projection handle");
  return ask<projection_status>(*impl_, timeout, projection_status_atom::value);
}

caf::expected<projection_status> projection::await_offset(std::uint64_t offset,
                                                          std::chrono::milliseconds timeout) const {
  if (!impl_)
    return make_error(projection_errc::stopped, "an empty projection handle");
  // The actor gives up after `timeout`; the request's own bound is a backstop above it.
  return ask<projection_status>(*impl_, timeout + std::chrono::seconds{5},
                                projection_await_atom::value, offset,
                                static_cast<std::uint64_t>(timeout.count()));
}

caf::error projection::rebuild(std::chrono::milliseconds timeout) const {
  if (!impl_)
    return make_error(projection_errc::stopped, "an empty projection handle");
  auto res = ask<caf::ok_atom>(*impl_, timeout, projection_rebuild_atom::value);
  return res ? caf::error{} : std::move(res.error());
}

void projection::stop() {
  if (!impl_ || !impl_->hdl)
    return;
  // Wait (bounded) for the actor to end, so that a projection restarted under the same name
  // never runs beside the old one's last batch.
  caf::scoped_actor self{*impl_->sys};
  self->monitor(impl_->hdl);
  caf::anon_send_exit(impl_->hdl, caf::exit_reason::user_shutdown);
  self->receive([](const caf::down_msg&) {}, caf::after(std::chrono::seconds{30}) >> [] {});
  impl_->hdl = caf::actor{};
}

caf::actor projection::actor() const {
  return impl_ ? impl_->hdl : caf::actor{};
}

projection spawn_projection(caf::actor_system& sys, persistence::journal_ptr journal,
                            std::shared_ptr<projection_handler> handler, projection_options opts) {
  if (!opts.offsets)
    opts.offsets = std::make_shared<memory_offset_store>();
  auto out = internal::make_handler_sink(opts.name, opts.filter, std::move(handler), opts.offsets);
  return spawn_projection(sys, std::move(journal), std::move(out),
                          sink_options{opts.name, opts.page_size, opts.max_queued_batches});
}

projection spawn_projection(caf::actor_system& sys, persistence::journal_ptr journal,
                            std::shared_ptr<sqlite_projection_handler> handler,
                            sqlite_projection_options opts) {
  sink_options so{opts.name, opts.page_size, opts.max_queued_batches};
  auto out = internal::make_sqlite_sink(std::move(opts), std::move(handler));
  return spawn_projection(sys, std::move(journal), std::move(out), std::move(so));
}

projection spawn_projection(caf::actor_system& sys, persistence::journal_ptr journal,
                            std::shared_ptr<projection_sink> sink, sink_options opts) {
  auto ptr = std::make_shared<projection::impl>();
  ptr->sys = &sys;
  ptr->name = opts.name;
  ptr->hdl = internal::spawn_projection_actor(
    sys, {std::move(opts.name), std::move(journal), std::move(sink),
          std::max<std::size_t>(opts.page_size, 1), opts.max_queued_batches});
  return projection{std::move(ptr)};
}

} // namespace annals::actors
